"""The model's public interface for the downscale stage: :class:`Downscaler` (docs/CONTRACTS.md).

Why a class around the checkpoint: loading verifies the hash once and builds the network, the
normalisation and the static conditioning once; ``sample`` is then called per batch of days.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from aid.errors import CheckpointError, ConfigError
from aid.model import transforms
from aid.model.checkpoint import load_checkpoint
from aid.model.conserve import CellMap
from aid.model.conserve import kind as conserve_kind
from aid.model.data import lagged_date_keys, static_channels, static_fields, time_features, upsampled
from aid.model.precond import EDMDenoiser
from aid.model.prior import RidgePrior
from aid.model.sampler import CPU_MICRO_BATCH, DayNoise, chunked, day_weights, heun_sample, member_seed
from aid.model.tiling import tiled_apply
from aid.model.tune import FALLBACK
from aid.model.unet import UNet
from aid.variables import VARIABLES

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but torch sees no CUDA device.", "use device auto or cpu.")
    return str(device)


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """torch.use_deterministic_algorithms for the duration (restored afterwards)."""
    if not enabled:
        yield
        return
    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


class Downscaler:
    """A trained residual EDM downscaler.

    Attributes: ``variables`` (channel order), ``checkpoint_sha256`` (content hash, verified),
    ``config`` (training config), ``lat``/``lon`` (fine grid), ``orography``/``land_sea_mask``,
    ``training_domain`` (region and period the network learnt on).

    The network is fully convolutional and conditioned on position only through the static
    channels (orography, land-sea mask, latitude, periodic longitude), so :meth:`for_grid` moves
    it to any 0.25 deg grid by rebuilding those channels from the global static file; domains
    larger than the training patch are sampled in blended tiles (:mod:`aid.model.tiling`).
    """

    def __init__(self, content: dict[str, Any], sha256: str, path: str | os.PathLike[str], device: str = "cpu",
                 compile: bool | None = None) -> None:
        self.path = Path(path)
        self.device = device
        #: torch.compile the denoiser on CUDA (default: on when the device is CUDA). Never on CPU:
        #: the CPU path must stay bit-reproducible per seed, and compiled kernels may fuse and
        #: reorder float operations differently from eager.
        self.compile = bool(compile if compile is not None else True) and str(device).startswith("cuda")
        self._compiled: Any = None
        self.variables: list[str] = list(content["variables"])
        self.checkpoint_sha256: str = sha256
        self.config: dict[str, Any] = json.loads(content["config_json"])
        kwargs = json.loads(content["model_kwargs_json"])
        try:
            net = UNet(**kwargs)
            net.load_state_dict(content.get("best_ema") or content["ema"])
        except (TypeError, RuntimeError) as exc:
            raise CheckpointError(f"{self.path}: weights do not fit the stored architecture ({exc}).",
                                  "the checkpoint comes from an incompatible aid version; retrain.") from exc
        self.den = EDMDenoiser(net, content["sigma_data"]).to(device).eval()
        self.mean = content["norm_mean"].numpy()
        self.std = content["norm_std"].numpy()
        #: channels conditioned level-free (aid.model.transforms.normalise_coarse); checkpoints
        #: written before level-free conditioning have none and keep their absolute conditioning
        self.level_free = np.array([v in set(content.get("level_free") or []) for v in self.variables], dtype=bool)
        #: per-channel scale of the model-space residual (sigma_relative training); ones for others
        self.res_scale = (content["res_scale"].numpy().astype(np.float64) if "res_scale" in content
                          else np.ones(len(self.variables)))
        self.sigma_min = float(content["sigma_min"])
        self.sigma_max = float(content["sigma_max"])
        self.pr_transform = str(content["pr_transform"])
        self.upsample_method = str(content["upsample"])
        self.lat = content["fine_lat"].numpy()
        self.lon = content["fine_lon"].numpy()
        self.static = content["static"].to(torch.float32)
        self.orography = content["orography"].numpy()
        self.land_sea_mask = content["land_sea_mask"].numpy()
        self.patch = int(content["patch"])
        self.periodic_lon = abs(len(self.lon) * 0.25 - 360.0) < 1e-6
        #: default sampler settings: tuned at the end of training (aid.model.tune), else the fallback
        tuned = content.get("sampler") or {}
        self.sampler_defaults: dict[str, Any] = {
            "steps": int(tuned.get("steps", FALLBACK["steps"])), "churn": float(tuned.get("churn", FALLBACK["churn"])),
            "rho": float(tuned.get("rho", FALLBACK["rho"])), "sigma_max": float(tuned.get("sigma_max", self.sigma_max)),
            # lag-1-day correlation of the training residual (aid.model.train._day_correlation);
            # checkpoints trained before it existed sample independent days
            "day_correlation": float((content.get("day_correlation") or {}).get("value", 0.0)),
            # per-variable noise factors chosen on validation fields (aid.model.tune.tune_noise_scale);
            # checkpoints tuned before they existed sample every channel at factor 1
            "noise_scale": {str(k): float(v) for k, v in (tuned.get("noise_scale") or {}).items()}}
        #: linear residual prior (aid.model.prior), None for checkpoints trained without one
        self.prior = RidgePrior.from_content(content.get("prior") or {})
        #: region (cell centres) and period of the training data
        self.training_domain: dict[str, Any] = json.loads(content.get("training_domain_json") or "null") or {
            "lat": [float(self.lat[0]), float(self.lat[-1])], "lon": [float(self.lon[0]), float(self.lon[-1])]}
        #: the static file used at training (default of :meth:`for_grid`)
        self.static_path: str = str(content.get("static_path") or self.config.get("reference", {}).get("static") or "")
        self._train_lat, self._train_lon = self.lat.copy(), self.lon.copy()

    def outside_training(self, lat: np.ndarray, lon: np.ndarray) -> str:
        """Why the grid ``lat`` x ``lon`` is not inside the training region ('' when it is)."""
        (la0, la1), (lo0, lo1) = self.training_domain["lat"], self.training_domain["lon"]
        lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
        lon_in = np.mod(lon - lo0 + 1e-6, 360.0) <= (lo1 - lo0) % 360.0 + 2e-6 if lo1 - lo0 < 359.0 else np.ones(
            lon.shape, bool)
        if (lat.min() >= la0 - 1e-6 and lat.max() <= la1 + 1e-6) and bool(lon_in.all()):
            return ""
        return (f"target grid lat {lat.min():g}..{lat.max():g}, lon {lon.min():g}..{lon.max():g} extends beyond the "
                f"training region lat {la0:g}..{la1:g}, lon {lo0:g}..{lo1:g}")

    def for_grid(self, lat: np.ndarray, lon: np.ndarray, static_path: str | os.PathLike[str] | None = None) -> Downscaler:
        """This model on another 0.25 deg grid (cell centres ``lat`` x ``lon``).

        The static channels are rebuilt from ``static_path`` (default: the file recorded at
        training); a grid beyond the training region is allowed but logged as a warning (the
        network has not seen that climate). A checkpoint with a residual prior is refused: the
        prior is a per-pixel regression of the training grid.
        """
        lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
        if lat.shape == self.lat.shape and lon.shape == self.lon.shape and np.allclose(lat, self.lat) and \
                np.allclose(lon, self.lon):
            return self
        if self.prior is not None:
            raise CheckpointError(
                f"{self.path}: the checkpoint has a per-pixel residual prior of its training grid "
                f"(lat {self._train_lat[0]:g}..{self._train_lat[-1]:g}, lon {self._train_lon[0]:g}..{self._train_lon[-1]:g}); "
                f"it cannot downscale lat {lat[0]:g}..{lat[-1]:g}, lon {lon[0]:g}..{lon[-1]:g}.",
                "use the training domain, or train a checkpoint for any region with model.prior: null.")
        path = static_path or self.static_path
        if not path:
            raise CheckpointError(f"{self.path}: no static file recorded in the checkpoint.",
                                  "pass --static (the global ERA5 z/lsm file).")
        oro, lsm = static_fields(path, lat, lon)
        new = copy.copy(self)
        new.lat, new.lon = lat, lon
        new.orography, new.land_sea_mask = oro.astype(np.float32), lsm.astype(np.float32)
        new.static = torch.from_numpy(static_channels(oro, lsm, lat, lon))
        new.periodic_lon = abs(len(lon) * 0.25 - 360.0) < 1e-6
        why = new.outside_training(lat, lon)
        if why:
            log.warning("%s: %s; the network has not seen this region's climate and static fields", self.path, why)
        return new

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str = "auto",
             expect_variables: Sequence[str] | None = None, compile: bool | None = None) -> Downscaler:
        """Load with ``torch.load(weights_only=True)`` and verify the content hash.

        ``compile`` (CUDA only, default on there): wrap the denoiser in ``torch.compile``; ignored on CPU.
        """
        content, digest = load_checkpoint(path, expect_variables=expect_variables)
        dev = resolve_device(device)
        log.info("loaded checkpoint %s (sha256 %s, variables %s, size %s) on %s",
                 path, digest[:12], content["variables"], content.get("size"), dev)
        return cls(content, digest, path, dev, compile=compile)

    # ------------------------------------------------------------------------------------------
    def _network(self) -> Any:
        """The denoiser to call: eager on CPU; on CUDA ``torch.compile``d when enabled.

        If compilation fails (no compiler toolchain, unsupported op), the eager module is used
        from then on and a warning is logged, so a GPU run never dies for want of a compiler.
        """
        if not self.compile:
            return self.den
        if self._compiled is None:
            try:
                torch.backends.cudnn.benchmark = True
                self._compiled = torch.compile(self.den, dynamic=False)
            except Exception as exc:  # noqa: BLE001
                log.warning("torch.compile unavailable (%s); using the eager network", exc)
                self.compile = False
                return self.den
        return self._compiled

    def _call_network(self, xs: torch.Tensor, sigma: torch.Tensor, cs: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        net = self._network()
        if net is self.den:
            return self.den(xs, sigma, cs, ts)
        try:
            return net(xs, sigma, cs, ts)
        except Exception as exc:  # noqa: BLE001  (compilation happens lazily, at the first call)
            log.warning("torch.compile failed at the first call (%s); falling back to the eager network", exc)
            self.compile, self._compiled = False, None
            return self.den(xs, sigma, cs, ts)

    def _denoise_fn(self, sigma: torch.Tensor, tfeat: torch.Tensor):  # noqa: ANN202
        """``fn(x_tile, cond_tile, rows, cols)`` for :func:`tiled_apply`.

        ``cond_tile`` already holds the static channels (joined once per batch in :meth:`sample`,
        not at every network evaluation: slicing commutes with concatenation, so this is exact).
        """
        micro = CPU_MICRO_BATCH if not str(self.device).startswith("cuda") else None

        def fn(xt: torch.Tensor, ct: torch.Tensor, rs: slice, ci: torch.Tensor) -> torch.Tensor:
            return chunked(lambda xs, cs, ts: self._call_network(xs, sigma, cs, ts), micro, xt, ct, tfeat)

        return fn

    def sample_normalised(
        self,
        cond: np.ndarray,
        tfeat: np.ndarray,
        keys: Sequence[str],
        samples: Sequence[int],
        seed: int,
        steps: int,
        churn: float = 0.0,
        rho: float = 7.0,
        max_batch: int = 256,
        progress: bool = False,
        sigma_max: float | None = None,
        static: np.ndarray | torch.Tensor | None = None,
        tile: int | None = None,
        *,
        stream: str,
        day_correlation: float = 0.0,
        noise_scale: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Sampled residuals in normalised units, (sample, time, C, H, W) float64.

        The diffusion runs in model units (normalised / :attr:`res_scale`); the result is scaled back.
        ``cond`` is the normalised conditioning without the static channels (upsampled coarse,
        then the prior's channels when the checkpoint has a prior), ``keys`` the date keys of the
        member seeds, ``stream`` the driving run's noise stream (:func:`aid.model.sampler.noise_stream`).
        :meth:`sample` builds these from a coarse dataset; training's sampler tuning calls this directly
        on its validation fields (``static``: their static channels when they are a window of the
        grid). ``tile`` (default: the training patch) is the tile size on larger domains.
        ``day_correlation`` > 0 correlates the noise of consecutive days
        (:func:`aid.model.sampler.day_weights`); ``keys`` then holds, per time, the keys of that
        date and of the days before it (:func:`aid.model.data.lagged_date_keys`). ``noise_scale``
        is the per-channel noise factor (:func:`aid.model.sampler.heun_sample`; None: all 1).
        """
        weights = day_weights(day_correlation)
        lagged = [[k] if isinstance(k, str) else list(k) for k in keys]
        if any(len(k) < len(weights) for k in lagged):
            raise ValueError(f"sample_normalised: day_correlation {day_correlation} needs the keys of {len(weights) - 1} "
                             "earlier days per time (aid.model.data.lagged_date_keys)")
        samples = [int(s) for s in samples]
        nt, _, h, w = cond.shape
        c = len(self.variables)
        ns = len(samples)
        res = np.empty((ns, nt, c, h, w), dtype=np.float64)
        days_per_batch = max(1, max_batch // max(ns, 1))
        cuda = self.device.startswith("cuda")
        tile = int(tile or self.patch)
        overlap = max(2, tile // 4)
        static = torch.as_tensor(self.static if static is None else static, dtype=torch.float32).to(self.device)
        with torch.inference_mode(), _deterministic(not cuda), (
            torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
        ):
            for d0 in range(0, nt, days_per_batch):
                days = range(d0, min(nt, d0 + days_per_batch))
                rows = [(d, s) for d in days for s in samples]
                gens = [self._noise(seed, stream, s, lagged[d], weights) for d, s in rows]
                di = torch.tensor([d for d, _ in rows])
                cb = torch.from_numpy(np.ascontiguousarray(cond, dtype=np.float32))[di].to(self.device)
                # the static channels joined once per batch (not once per network evaluation)
                cb = torch.cat([cb, static[None].expand(cb.shape[0], -1, -1, -1)], dim=1)
                tb = torch.from_numpy(np.ascontiguousarray(tfeat, dtype=np.float32))[di].to(self.device)

                def denoise(x: torch.Tensor, sigma: torch.Tensor, cb: torch.Tensor = cb, tb: torch.Tensor = tb) -> torch.Tensor:
                    fn = self._denoise_fn(sigma, tb)
                    return tiled_apply(fn, x, cb, (tile, tile), overlap, self.periodic_lon)

                r = heun_sample(denoise, gens, (c, h, w), steps, self.sigma_min, sigma_max or self.sigma_max, rho, churn,
                                device=self.device, progress=progress, noise_scale=noise_scale).float().cpu().numpy()
                for k, (d, s) in enumerate(rows):
                    res[samples.index(s), d] = r[k]
        return res * self.res_scale[None, None, :, None, None]

    @staticmethod
    def _noise(seed: int, stream: str, sample: int, keys: Sequence[str], weights: np.ndarray) -> torch.Generator | DayNoise:
        """The noise source of one (sample, date): its own generator, or mixed with the earlier days'."""
        gens = [torch.Generator().manual_seed(member_seed(seed, stream, sample, k)) for k in keys[: len(weights)]]
        return gens[0] if len(weights) == 1 else DayNoise(gens, weights)

    def training_domain_attr(self) -> str:
        """``aid_training_domain`` attribute: the training region, and whether this grid is outside it."""
        d = self.training_domain
        text = f"lat {d['lat'][0]:g}..{d['lat'][1]:g}, lon {d['lon'][0]:g}..{d['lon'][1]:g}"
        if d.get("period"):
            text += f", {d['period'][0]}..{d['period'][1]}"
        why = self.outside_training(self.lat, self.lon)
        return text + ("; WARNING: " + why if why else "")

    def conditioning(self, coarse: xr.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(upsampled coarse in model space, its normalised form, time features, prior residual or None).

        ``coarse`` is on the model grid with normalised coordinates and all :attr:`variables`; the
        prior residual is in normalised units, as the network sees it. Level-free channels
        (:attr:`level_free`) are normalised against this grid's own level per time step
        (:func:`aid.model.transforms.domain_level`), so a
        uniformly warmer input gives the same conditioning and residual. One place for what
        :meth:`sample` conditions on, so diagnostics (bench/model_skill.py) score the same prior.
        """
        up = upsampled(coarse.load(), self.lat, self.lon, self.variables, self.upsample_method)
        up_t = transforms.forward_stack(self.variables, up, self.pr_transform)
        cond = transforms.normalise_coarse(up_t, self.mean, self.std, self.level_free,
                                           transforms.domain_level(up_t, self.level_free)).astype(np.float32)
        tfeat = time_features(coarse["time"].values)
        prior = self.prior.predict(cond, tfeat) if self.prior is not None else None
        return up_t, cond, tfeat, prior

    def sample(
        self,
        coarse: xr.Dataset,
        samples: Sequence[int],
        seed: int,
        steps: int,
        churn: float = 0.0,
        rho: float = 7.0,
        max_batch: int = 256,
        progress: bool = False,
        sigma_max: float | None = None,
        tile: int | None = None,
        *,
        stream: str,
        conserve: Sequence[str] = (),
        day_correlation: float = 0.0,
        noise_scale: Mapping[str, float] | None = None,
    ) -> xr.Dataset:
        """Downscale ``coarse`` (time, lat, lon; physical units) -> (sample, time, lat, lon) float32.

        Each (sample, time) member starts from noise seeded by (seed, stream, sample, date) only, so
        any subset of samples or days reproduces bit-identically on CPU, and different driving runs
        (``stream``, :func:`aid.model.sampler.noise_stream`) get independent noise. pr is clipped to >= 0.
        ``sigma_max`` overrides the checkpoint's starting noise level (normalised units). The
        output grid is :attr:`lat` x :attr:`lon` (see :meth:`for_grid`). Every variable in
        ``conserve`` is renormalised so that each sample averages back to ``coarse`` over every
        coarse cell (:mod:`aid.model.conserve`). ``day_correlation`` correlates the noise of
        consecutive days (:func:`aid.model.sampler.day_weights`; 0: independent days).
        ``noise_scale`` maps variables to their noise factor (:func:`aid.model.sampler.heun_sample`;
        variables not named, or None: 1).
        """
        from aid.regrid import normalise_coords

        missing = [v for v in self.variables if v not in coarse.data_vars]
        if missing:
            raise CheckpointError(
                f"{self.path}: checkpoint expects variables {self.variables}; the coarse input lacks {missing}.",
                "provide all variables the model was trained on, or use a checkpoint for this variable set.",
            )
        samples = [int(s) for s in samples]
        coarse = normalise_coords(coarse[self.variables])
        times = coarse["time"].values
        up_t, cond, tfeat, prior = self.conditioning(coarse)
        offset = prior if prior is not None and self.prior.mode == "offset" else None
        if prior is not None:
            cond = np.concatenate([cond, prior], axis=1)
        keys = lagged_date_keys(times, len(day_weights(day_correlation)) - 1)
        factors = self.noise_factors(noise_scale)
        r = self.sample_normalised(cond, tfeat, keys, samples, seed, steps, churn, rho, max_batch,
                                   progress, sigma_max, tile=tile, stream=stream, day_correlation=day_correlation,
                                   noise_scale=factors)
        if offset is not None:
            r = r + offset[None]
        ns, nt, c, h, w = r.shape
        res = up_t[None] + r * self.std[None, None, :, None, None]
        phys = transforms.inverse_stack(self.variables, res.reshape(ns * nt, c, h, w), self.pr_transform)
        phys = phys.reshape(ns, nt, c, h, w)
        conserved = self._conserve(phys, coarse, conserve)
        phys = phys.astype(np.float32)
        out = xr.Dataset(coords={"sample": ("sample", np.asarray(samples, dtype=np.int32)), "time": coarse["time"],
                                 "lat": ("lat", self.lat, {"units": "degrees_north", "standard_name": "latitude"}),
                                 "lon": ("lon", self.lon, {"units": "degrees_east", "standard_name": "longitude"})})
        for i, v in enumerate(self.variables):
            attrs = dict(coarse[v].attrs)
            attrs.setdefault("units", VARIABLES[v].units)
            out[v] = (("sample", "time", "lat", "lon"), phys[:, :, i], attrs)
        out.attrs.update({"aid_checkpoint_sha256": self.checkpoint_sha256, "aid_sampler_seed": str(seed),
                          "aid_sampler_steps": str(steps), "aid_sampler_churn": str(churn), "aid_sampler_rho": str(rho),
                          "aid_sampler_noise_stream": stream, "aid_training_domain": self.training_domain_attr(),
                          "aid_coarse_cell_conservation": conserved,
                          "aid_sampler_day_correlation": str(float(day_correlation)),
                          "aid_sampler_noise_scale": self.noise_scale_text(factors)})
        return out

    def noise_factors(self, noise_scale: Mapping[str, float] | None) -> list[float]:
        """Per-channel noise factors from a {variable: factor} mapping (unnamed variables: 1)."""
        scale = dict(noise_scale or {})
        unknown = sorted(set(scale) - set(self.variables))
        if unknown:
            raise CheckpointError(f"{self.path}: noise_scale names {unknown}, which this checkpoint does not downscale "
                                  f"(it has {self.variables}).", "name only the checkpoint's variables in noise_scale.")
        return [float(scale.get(v, 1.0)) for v in self.variables]  # values checked by heun_sample

    def noise_scale_text(self, factors: Sequence[float]) -> str:
        """Provenance text of per-channel noise factors, e.g. "tas 1, pr 0.8"."""
        return ", ".join(f"{v} {f:g}" for v, f in zip(self.variables, factors))

    def _conserve(self, phys: np.ndarray, coarse: xr.Dataset, variables: Sequence[str]) -> str:
        """Apply :mod:`aid.model.conserve` in place to ``phys`` (sample, time, C, H, W) for
        ``variables``; returns the provenance text ("none" when the list is empty)."""
        unknown = [v for v in variables if v not in self.variables]
        if unknown:
            raise CheckpointError(f"{self.path}: conservation asked for {unknown}, which this checkpoint does not "
                                  f"downscale (it has {self.variables}).",
                                  "list only the checkpoint's variables in downscale.conserve.")
        if not variables:
            return "none"
        cmap = CellMap.build(self.lat, self.lon, coarse["lat"].values, coarse["lon"].values)
        done = []
        for v in variables:
            i = self.variables.index(v)
            how = conserve_kind(v)
            phys[:, :, i] = cmap.conserve(phys[:, :, i], coarse[v].transpose("time", "lat", "lon").values, how)
            done.append(f"{v} {'multiplicative' if how == '*' else 'additive'}")
        return "; ".join(done) + " (area-weighted mean over every coarse cell = the coarse input)"
