"""Normalisation, residual prior and validation split of a lazily read training archive.

Why a separate pass before training: the per-channel statistics, sigma_data and the residual
prior must be known before the first batch, and they must come from the *training* part only
(validation scores unseen fields; statistics that include them leak their climate). Every pass
reads the archive piece by piece (:meth:`aid.model.data.Archive.read`), so memory is bounded by
one piece, never by the number of years. :meth:`Prepared.piece` then gives any (time steps,
rows, columns) piece in model units for the training stream, validation and sampler tuning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aid.errors import ConfigError
from aid.model import prior as residual_prior
from aid.model import transforms
from aid.model.data import Archive, open_archive, static_channels, static_fields, time_features, validation_split
from aid.model.precond import EDM_SIGMA_DATA

log = logging.getLogger(__name__)

#: Memory one statistics/prior piece may take (float64 working arrays), MiB.
PIECE_MB = 128.0


def contiguous_runs(idx: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Split sorted indices into runs of consecutive values, each at most ``max_len`` long."""
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    out = []
    for run in np.split(idx, breaks):
        out += [run[i : i + max_len] for i in range(0, len(run), max_len)]
    return out


@dataclass
class Prepared:
    """A lazily read training archive plus everything inference needs to rebuild its conditioning."""

    variables: list[str]
    archive: Archive
    train_idx: np.ndarray  # archive time indices of the training fields
    val_idx: np.ndarray  # archive time indices of the validation fields
    tfeat: np.ndarray  # (n, 4) time features of every archive time step
    static: np.ndarray  # (N_STATIC, H, W)
    mean: np.ndarray
    std: np.ndarray
    sigma_data: np.ndarray
    #: per-channel factor the model-space residual was divided by (ones unless sigma_relative)
    res_scale: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    orography: np.ndarray
    lsm: np.ndarray
    pr_transform: str
    ratio: int
    prior: residual_prior.RidgePrior | None = None
    cross: residual_prior.CrossFit | None = None
    #: (C,) channels conditioned level-free (:func:`aid.model.transforms.normalise_coarse`)
    free: np.ndarray | None = None
    #: (n, C) reference level of the level-free channels (:func:`aid.model.transforms.common_level`
    #: of the whole domain's upsampled coarse field, model space) of every archive step
    level: np.ndarray | None = None

    @property
    def level_free_variables(self) -> list[str]:
        """Names of the level-free channels (recorded in the checkpoint)."""
        free = self.free if self.free is not None else np.zeros(len(self.variables), bool)
        return [v for v, f in zip(self.variables, free) if f]

    @property
    def n_cond(self) -> int:
        """Conditioning channels besides the static ones (upsampled coarse, + prior)."""
        c = len(self.variables)
        return 2 * c if self.prior is not None else c

    def _normalised(self, t: np.ndarray, rows: slice, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(normalised upsampled coarse, normalised residual) of archive steps ``t`` (sorted)."""
        f, up = self.archive.read(int(t[0]), int(t[-1]) + 1, rows, cols)
        keep = t - t[0]
        f, up = f[keep], up[keep]
        f_t = transforms.forward_stack(self.variables, f, self.pr_transform)
        u_t = transforms.forward_stack(self.variables, up, self.pr_transform)
        free = self.free if self.free is not None else np.zeros(len(self.variables), bool)
        level = self.level[t] if self.level is not None else None
        cond = transforms.normalise_coarse(u_t, self.mean, self.std, free, level)
        return cond, (f_t - u_t) / self.std[None, :, None, None]

    def piece(self, t: np.ndarray, rows: slice, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(y, cond) float32 (T, C, h, w) of archive steps ``t`` (sorted) in model units.

        ``y`` is the residual the diffusion learns (minus the prior in mode "offset", divided by
        res_scale); ``cond`` the normalised upsampled coarse field plus the prior's channels:
        cross-fitted for training fields, the final fit for all others (as at inference).
        """
        t = np.asarray(t)
        cols = np.asarray(cols)
        h, w = self.archive.shape
        if self.prior is None:
            cond, y = self._normalised(t, rows, cols)
        else:
            halo = self.prior.half_width * self.prior.ratio
            r0, r1 = max(0, rows.start - halo), min(h, rows.stop + halo)
            c0, c1 = max(0, int(cols.min()) - halo), min(w, int(cols.max()) + 1 + halo)
            cond_h, y_h = self._normalised(t, slice(r0, r1), np.arange(c0, c1))
            inner = (slice(rows.start - r0, rows.stop - r0), cols - c0)
            cond = cond_h[:, :, inner[0]][..., inner[1]]
            y = y_h[:, :, inner[0]][..., inner[1]]
            pos = np.searchsorted(self.train_idx, t)
            is_train = (pos < len(self.train_idx)) & (self.train_idx[np.minimum(pos, len(self.train_idx) - 1)] == t)
            cv = np.empty(y.shape, dtype=np.float32)
            if is_train.any() and self.cross is not None:
                sel = np.flatnonzero(is_train)
                cv[sel] = self.cross.predict(cond_h[sel], self.tfeat[t[sel]], pos[sel], rows, cols, (r0, c0), (h, w))
            if (~is_train).any():
                sel = np.flatnonzero(~is_train)
                cv[sel] = self.prior.predict_piece(cond_h[sel], self.tfeat[t[sel]], rows, cols, (r0, c0), (h, w))
            if self.prior.mode == "offset":
                y = y - cv
            cond = np.concatenate([cond, cv], axis=1)
        y = y / self.res_scale[None, :, None, None]
        return y.astype(np.float32), cond.astype(np.float32)


    def arrays(self, t: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(y, cond, tfeat) of archive steps ``t`` (default: the training fields), whole domain, in memory.

        For tests and diagnostics on small archives; training itself reads through the stream.
        """
        t = self.train_idx if t is None else np.asarray(t)
        h, w = self.archive.shape
        y, cond = self.piece(t, slice(0, h), np.arange(w))
        return y, cond, self.tfeat[t]


def _pieces(archive: Archive, idx: np.ndarray) -> Iterator[tuple[np.ndarray, slice]]:
    """(time steps, rows) pieces covering ``idx`` x the whole domain within :data:`PIECE_MB`."""
    h, w = archive.shape
    per_row = w * len(archive.variables) * 8 * 6
    rows_per = max(1, min(h, int(PIECE_MB * 2**20 // per_row)))
    t_per = max(1, int(PIECE_MB * 2**20 // (per_row * rows_per)))
    for r0 in range(0, h, rows_per):
        for run in contiguous_runs(idx, t_per):
            yield run, slice(r0, min(h, r0 + rows_per))


def _stats(archive: Archive, idx: np.ndarray, pr_transform: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel mean, std (floored like :func:`transforms.channel_stats`) of the transformed fine
    field and RMS of the transformed residual (fine - upsampled coarse), over ``idx`` only."""
    c = len(archive.variables)
    shift = None
    s1, s2, sr, cnt = np.zeros(c), np.zeros(c), np.zeros(c), 0
    for run, rows in _pieces(archive, idx):
        f, up = archive.read(int(run[0]), int(run[-1]) + 1, rows, np.arange(archive.shape[1]))
        f_t = transforms.forward_stack(archive.variables, f, pr_transform)
        u_t = transforms.forward_stack(archive.variables, up, pr_transform)
        if shift is None:  # shifted sums: no cancellation for fields far from zero (K)
            shift = f_t.mean(axis=(0, 2, 3))
        d = f_t - shift[None, :, None, None]
        s1 += d.sum(axis=(0, 2, 3))
        s2 += (d**2).sum(axis=(0, 2, 3))
        sr += ((f_t - u_t) ** 2).sum(axis=(0, 2, 3))
        cnt += f.shape[0] * f.shape[2] * f.shape[3]
    assert shift is not None
    mean = shift + s1 / cnt
    var = np.maximum(s2 / cnt - (s1 / cnt) ** 2, 0.0)
    return mean, np.maximum(np.sqrt(var), 1e-6), np.sqrt(sr / cnt)


def _levels(archive: Archive, free: np.ndarray) -> np.ndarray:
    """(n, C) reference level (:func:`transforms.common_level`) of every archive step from the
    whole-domain means of its upsampled coarse field; zeros for the channels that are not
    level-free (their conditioning uses the training mean instead).

    Level-free channels have the identity transform (:data:`transforms.LEVEL_FREE_VARIABLES` are
    temperatures), so the mean of the physical field is the mean in model space.
    """
    c = len(archive.variables)
    level = np.zeros((archive.n, c))
    if not free.any():
        return level
    per_step = max(1, archive.coarse[archive.variables[0]].isel(time=0).size * c * 8)
    block = max(1, int(PIECE_MB * 2**20 // per_step))
    for t0 in range(0, archive.n, block):
        t1 = min(archive.n, t0 + block)
        level[t0:t1] = transforms.common_level(archive.domain_mean(t0, t1), free)
    return level


def prepare_training(
    cfg: Mapping[str, Any],
    fine_paths: Sequence[str | os.PathLike[str]],
    coarse_paths: Sequence[str | os.PathLike[str]],
    static_path: str | os.PathLike[str],
    val_fraction: float | None = None,
) -> Prepared:
    """Open the archive lazily, split off validation, compute statistics and the prior on training.

    Temperature channels are conditioned level-free (:func:`aid.model.transforms.normalise_coarse`):
    each step's reference level is the whole-domain mean of its upsampled coarse field, computed
    once here for every archive step so that every piece is normalised as the whole domain is at
    inference.

    sigma_data is the RMS of the normalised residual per channel (not 1: the residual is a small
    part of the field), floored at 0.01 so a channel without sub-grid detail stays well posed.
    ``model.prior`` (:func:`aid.model.prior.settings`) fits the linear residual prior; its
    cross-fitted predictions join the conditioning (and, in mode "offset", are taken off the
    target first).

    ``model.train.sigma_relative`` divides each channel's residual by sigma_data / 0.5, so the
    diffusion runs with sigma_data 0.5 in every channel, the scale EDM's noise distribution, sigma_max
    80 and loss weighting were designed for: the residuals' RMS differs several-fold between
    channels, and one noise level per sample otherwise buries the smoothest channel long before
    the others (measurements: bench/model_skill.py, bench/sampler_settings.py, README).
    """
    mcfg = cfg["model"]
    tcfg = mcfg["train"]
    pr_transform = str(mcfg["pr_transform"])
    archive = open_archive(cfg, fine_paths, coarse_paths)
    vf = float(tcfg["val_fraction"] if val_fraction is None else val_fraction)
    tr, va = validation_split(archive.times, vf, float(tcfg["val_block_days"]))
    ratio = int(round(float(cfg["grid"]["coarse_resolution"]) / float(cfg["grid"]["fine_resolution"])))
    orography, lsm = static_fields(static_path, archive.lat, archive.lon)
    tfeat = time_features(archive.times)
    mean, std, res_rms = _stats(archive, tr, pr_transform)
    c = len(archive.variables)
    free = transforms.level_free(archive.variables)
    prep = Prepared(list(archive.variables), archive, tr, va, tfeat, static_channels(orography, lsm, archive.lat,
                    archive.lon), mean, std, np.ones(c), np.ones(c), archive.lat, archive.lon, orography, lsm,
                    pr_transform, ratio, free=free, level=_levels(archive, free))
    sigma = res_rms / std
    pset = residual_prior.settings(mcfg)
    if pset:
        if archive.periodic:
            raise ConfigError("model.prior is set, but the domain spans 360 degrees of longitude: the per-pixel "
                              "prior clamps its stencil at the domain edge and has no periodic form.",
                              "set model.prior: null for global domains.")
        use_doy = bool(tcfg["use_doy"])
        h, w = archive.shape

        def reader(rows: slice, halo: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
            r0, r1 = max(0, rows.start - halo), min(h, rows.stop + halo)
            per = max(1, int(PIECE_MB * 2**20 // max(1, (r1 - r0) * w * c * 8 * 4)))
            for run in contiguous_runs(tr, per):
                cond, y = prep._normalised(run, slice(r0, r1), np.arange(w))
                yield (np.searchsorted(tr, run), cond.astype(np.float32),
                       y[:, :, rows.start - r0 : rows.stop - r0].astype(np.float32), tfeat[run])

        prep.prior, prep.cross = residual_prior.fit_stream(reader, len(tr), (h, w), c, ratio, int(pset["half_width"]),
                                                           use_doy, str(pset["mode"]))
        if prep.prior.mode == "offset":
            assert prep.cross.rms is not None
            sigma = prep.cross.rms
    sigma_data = np.maximum(sigma, 0.01)
    log.info("%d training / %d validation fields (validation: every %d-th block, statistics from training only); "
             "sigma_data per channel (normalised residual RMS): %s", len(tr), len(va),
             max(2, int(round(1.0 / vf))) if vf > 0 else 0,
             ", ".join(f"{v}={s:.3f}" for v, s in zip(archive.variables, sigma_data)))
    prep.res_scale = np.ones_like(sigma_data)
    if bool(tcfg["sigma_relative"]):
        prep.res_scale = sigma_data / EDM_SIGMA_DATA
        sigma_data = np.full_like(sigma_data, EDM_SIGMA_DATA)
        log.info("residual channels scaled to sigma_data %.1f (sigma_relative)", EDM_SIGMA_DATA)
    prep.sigma_data = sigma_data
    return prep
