"""Linear residual prior: a per-pixel ridge regression of the residual on the nearby coarse field.

Why: with a few hundred training fields, the conditional mean of the fine-scale residual is what
a diffusion network learns worst (it memorises the training days), while most of it is linear in
the coarse field around the pixel (a sea breeze or an inversion shows up as a coarse-scale
gradient, a diurnal phase as the hour), and a ridge regression of each fine pixel's residual on
the coarse values in a small coarse-cell stencil captures it (bench/model_skill.py scores the prior
alone against bicubic and the network). The
prior is handed to the network as extra conditioning channels (``mode: condition``) or also
subtracted from its target (``mode: offset``); the network then adds the non-linear part and the
spread. Training uses cross-fitted predictions (each block of days predicted by a regression fitted
on the other blocks), so the network sees a prior exactly as good as it is on unseen days.

Design matrix of pixel (i, j): the conditioning (:func:`aid.model.transforms.normalise_coarse`:
level-free for temperatures, so a uniformly warmer coarse field gives the same design and the same
prediction; a linear map of absolute temperatures would add sum(coefficients) x warming to the
residual, and the range guard below would then clip it) of every channel at
(i + a r, j + b r) for a, b in [-k, k] (r = coarse / fine resolution, indices clamped at the
domain edge), and calendar terms (hour sin/cos and their 2nd harmonic, day-of-year sin/cos when
the model uses them). Features and targets are centred per pixel (the intercept is not penalised);
the ridge penalty is ``lam * n`` with ``lam`` chosen per channel by blocked cross-validation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

#: Candidate ridge penalties (times the number of training fields); chosen per channel by CV.
LAMBDAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: Contiguous blocks of the training period for cross-validation and cross-fitting.
FOLDS = 5
#: Fine-grid rows per chunk (bounds memory: chunk x W x N x F doubles).
ROW_CHUNK = 4


def settings(mcfg: Mapping[str, Any]) -> dict[str, Any] | None:
    """``model.prior`` as typed values, or None when the prior is off (null)."""
    p = mcfg["prior"]
    if not p:
        return None
    return {"half_width": int(p["half_width"]), "mode": str(p["mode"])}


def calendar_terms(tfeat: np.ndarray, use_doy: bool) -> np.ndarray:
    """(N, T) calendar regressors from :func:`aid.model.data.time_features` (doy sin/cos, hour sin/cos)."""
    sh, ch = tfeat[:, 2].astype(np.float64), tfeat[:, 3].astype(np.float64)
    cols = [sh, ch, 2 * sh * ch, ch**2 - sh**2]  # hour harmonics 1 and 2
    if use_doy:
        cols += [tfeat[:, 0].astype(np.float64), tfeat[:, 1].astype(np.float64)]
    return np.stack(cols, axis=1)


def _design(cond_t: np.ndarray, cal: np.ndarray, ratio: int, k: int, rows: slice | np.ndarray,
            cols: np.ndarray | None = None, origin: tuple[int, int] = (0, 0),
            full: tuple[int, int] | None = None) -> np.ndarray:
    """(P, N, F) design matrices of the pixels ``rows`` x ``cols`` (domain indices), float64.

    ``cond_t`` is the conditioning as (h, w, N, C) over the domain rows/columns starting at
    ``origin`` (a piece of a domain of shape ``full``; default: the whole domain), so every stencil
    offset is a contiguous gather; offsets are clamped at the *domain* edge, so a piece with a
    halo of ``k * ratio`` cells gives exactly the whole domain's design.
    """
    h, w, n, c = cond_t.shape
    hf, wf = full or (h, w)
    ri = np.arange(hf)[rows] if isinstance(rows, slice) else np.asarray(rows)
    ci = np.arange(wf) if cols is None else np.asarray(cols)
    x = np.empty((len(ri), len(ci), n, (2 * k + 1) ** 2 * c + cal.shape[1]), dtype=np.float64)
    j = 0
    for a in range(-k, k + 1):
        sub = cond_t[np.clip(ri + a * ratio, 0, hf - 1) - origin[0]]
        for b in range(-k, k + 1):
            x[..., j : j + c] = sub[:, np.clip(ci + b * ratio, 0, wf - 1) - origin[1]]
            j += c
    x[..., j:] = cal[None, None]
    return x.reshape(len(ri) * len(ci), n, -1)


def _folds(n: int) -> list[np.ndarray]:
    edges = np.linspace(0, n, min(FOLDS, n) + 1).round().astype(int)
    return [np.arange(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def fold_of(n: int) -> np.ndarray:
    """Cross-fitting fold of each of ``n`` training fields (contiguous blocks in time order)."""
    out = np.empty(n, dtype=np.int64)
    for f, fi in enumerate(_folds(n)):
        out[fi] = f
    return out


class _Sums:
    """Per-fold sufficient statistics of the pixels of one row chunk, added block by block."""

    def __init__(self, n_folds: int, p: int, f: int, c: int) -> None:
        self.sxx = np.zeros((n_folds, p, f, f))
        self.sxy = np.zeros((n_folds, p, f, c))
        self.sx = np.zeros((n_folds, p, f))
        self.sy = np.zeros((n_folds, p, c))
        self.syy = np.zeros((n_folds, p, c))
        self.n = np.zeros(n_folds, dtype=np.int64)

    def add(self, x: np.ndarray, y: np.ndarray, folds: np.ndarray) -> None:
        for f in np.unique(folds):
            sel = folds == f
            xf, yf = x[:, sel], y[:, sel]
            xt = xf.transpose(0, 2, 1)
            self.sxx[f] += xt @ xf
            self.sxy[f] += xt @ yf
            self.sx[f] += xf.sum(1)
            self.sy[f] += yf.sum(1)
            self.syy[f] += (yf**2).sum(1)
            self.n[f] += int(sel.sum())

    def fold(self, f: int) -> tuple[np.ndarray, ...]:
        return self.sxx[f], self.sxy[f], self.sx[f], self.sy[f], int(self.n[f])

    def centred(self, skip: int | None) -> tuple[np.ndarray, ...]:
        """Centred Gram, cross-product and means of all folds but ``skip``: (G, X^T y, x_mean, y_mean, n)."""
        keep = [f for f in range(len(self.n)) if f != skip]
        sxx, sxy = self.sxx[keep].sum(0), self.sxy[keep].sum(0)
        sx, sy = self.sx[keep].sum(0), self.sy[keep].sum(0)
        n = int(self.n[keep].sum())
        xm, ym = sx / n, sy / n
        return sxx - n * xm[:, :, None] * xm[:, None, :], sxy - n * xm[:, :, None] * ym[:, None, :], xm, ym, n


def _held_out_sse(beta: np.ndarray, xm: np.ndarray, ym: np.ndarray, held: tuple[np.ndarray, ...]) -> np.ndarray:
    """Per channel: sum over the held-out fold's fields and pixels of (y - ym - (x - xm) beta)^2.

    Computed from the fold's sums alone, so choosing the penalty needs no second read of the data.
    """
    sxx, sxy, sx, sy, n, syy = held
    a = ym - np.einsum("pf,pfc->pc", xm, beta)  # intercept of the prediction a + x beta
    quad = np.einsum("pfc,pfg,pgc->pc", beta, sxx, beta)
    cross = np.einsum("pfc,pfc->pc", beta, sxy)
    sse = syy - 2 * a * sy - 2 * cross + n * a**2 + 2 * a * np.einsum("pf,pfc->pc", sx, beta) + quad
    return sse.sum(0)


@dataclass
class CrossFit:
    """Coefficients fitted without each fold: the training fields' honest (cross-fitted) prior."""

    ratio: int
    half_width: int
    use_doy: bool
    coef: np.ndarray  # (folds, H, W, F, C)
    x_mean: np.ndarray  # (folds, H, W, F)
    y_mean: np.ndarray  # (folds, H, W, C)
    folds: np.ndarray  # (n,) fold of each training field
    #: per-channel RMS of (residual - cross-fitted prior) over the training fields
    rms: np.ndarray | None = None

    def predict(self, cond: np.ndarray, tfeat: np.ndarray, positions: np.ndarray, rows: slice, cols: np.ndarray,
                origin: tuple[int, int], full: tuple[int, int]) -> np.ndarray:
        """(m, C, h, w) float32 cross-fitted prior of training fields ``positions`` on ``rows`` x ``cols``.

        ``cond`` (m, C, hr, wr) covers the domain piece starting at ``origin`` (with a halo).
        """
        cal = calendar_terms(tfeat, self.use_doy)
        cond_t = np.ascontiguousarray(cond.transpose(2, 3, 0, 1))
        ri, ci = np.arange(full[0])[rows], np.asarray(cols)
        out = np.empty((len(positions), self.coef.shape[-1], len(ri), len(ci)), dtype=np.float32)
        fo = self.folds[np.asarray(positions)]
        for r0 in range(0, len(ri), ROW_CHUNK):
            rr = ri[r0 : r0 + ROW_CHUNK]
            x = _design(cond_t, cal, self.ratio, self.half_width, rr, ci, origin, full)
            for f in np.unique(fo):
                sel = fo == f
                coef = self.coef[f][rr][:, ci].reshape(len(rr) * len(ci), *self.coef.shape[3:])
                xm = self.x_mean[f][rr][:, ci].reshape(len(rr) * len(ci), -1)
                ym = self.y_mean[f][rr][:, ci].reshape(len(rr) * len(ci), -1)
                p = (x[:, sel] - xm[:, None]) @ coef + ym[:, None]
                out[np.flatnonzero(sel), :, r0 : r0 + len(rr)] = p.reshape(len(rr), len(ci), int(sel.sum()), -1) \
                    .transpose(2, 3, 0, 1)
        return out


@dataclass
class RidgePrior:
    """Fitted per-pixel ridge coefficients (stored in the checkpoint as plain tensors)."""

    half_width: int
    ratio: int
    use_doy: bool
    mode: str
    coef: np.ndarray  # (H, W, F, C)
    x_mean: np.ndarray  # (H, W, F)
    y_mean: np.ndarray  # (H, W, C)
    lam: np.ndarray  # (C,)
    #: per-channel range of the cross-fitted training predictions; predictions are clipped to it, so
    #: a coarse field outside the training climate (a scenario's heavy-rain day) cannot make the
    #: linear map extrapolate into unphysical values (heavy-rain days of a scenario did). A uniform
    #: warming does not reach this guard: temperature features are level-free. None for
    #: checkpoints written before the guard.
    lo: np.ndarray | None = None  # (C,)
    hi: np.ndarray | None = None  # (C,)

    def predict(self, cond: np.ndarray, tfeat: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 prior residual (normalised units) for normalised coarse ``cond``."""
        n, _, h, w = cond.shape
        cal = calendar_terms(tfeat, self.use_doy)
        cond_t = np.ascontiguousarray(cond.transpose(2, 3, 0, 1))
        out = np.empty((n, self.coef.shape[-1], h, w), dtype=np.float32)
        for r0 in range(0, h, ROW_CHUNK):
            rows = slice(r0, min(h, r0 + ROW_CHUNK))
            x = _design(cond_t, cal, self.ratio, self.half_width, rows)
            nr = rows.stop - rows.start
            coef = self.coef[rows].reshape(nr * w, *self.coef.shape[2:])
            xm = self.x_mean[rows].reshape(nr * w, -1)
            ym = self.y_mean[rows].reshape(nr * w, -1)
            p = (x - xm[:, None]) @ coef + ym[:, None]
            out[:, :, rows] = p.reshape(nr, w, n, -1).transpose(2, 3, 0, 1)
        if self.lo is not None and self.hi is not None:
            np.clip(out, self.lo.astype(np.float32)[None, :, None, None],
                    self.hi.astype(np.float32)[None, :, None, None], out=out)
        return out

    def predict_piece(self, cond: np.ndarray, tfeat: np.ndarray, rows: slice, cols: np.ndarray,
                      origin: tuple[int, int], full: tuple[int, int]) -> np.ndarray:
        """:meth:`predict` on ``rows`` x ``cols`` of the domain from a conditioning piece with a halo."""
        one = CrossFit(self.ratio, self.half_width, self.use_doy, self.coef[None], self.x_mean[None],
                       self.y_mean[None], np.zeros(cond.shape[0], dtype=np.int64))
        out = one.predict(cond, tfeat, np.arange(cond.shape[0]), rows, cols, origin, full)
        if self.lo is not None and self.hi is not None:
            np.clip(out, self.lo.astype(np.float32)[None, :, None, None],
                    self.hi.astype(np.float32)[None, :, None, None], out=out)
        return out

    def to_content(self) -> dict[str, Any]:
        return {"half_width": self.half_width, "ratio": self.ratio, "use_doy": self.use_doy, "mode": self.mode,
                "coef": torch.from_numpy(self.coef.astype(np.float32)),
                "x_mean": torch.from_numpy(self.x_mean.astype(np.float32)),
                "y_mean": torch.from_numpy(self.y_mean.astype(np.float32)),
                "lam": torch.from_numpy(self.lam.astype(np.float64)),
                **({"lo": torch.from_numpy(self.lo.astype(np.float64)), "hi": torch.from_numpy(self.hi.astype(np.float64))}
                   if self.lo is not None and self.hi is not None else {})}

    @classmethod
    def from_content(cls, c: Mapping[str, Any]) -> RidgePrior | None:
        if not c:
            return None
        return cls(int(c["half_width"]), int(c["ratio"]), bool(c["use_doy"]), str(c["mode"]),
                   c["coef"].numpy().astype(np.float64), c["x_mean"].numpy().astype(np.float64),
                   c["y_mean"].numpy().astype(np.float64), c["lam"].numpy(),
                   c["lo"].numpy() if "lo" in c else None, c["hi"].numpy() if "hi" in c else None)


Reader = Callable[[slice, int], Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]


def fit_stream(reader: Reader, n: int, shape: tuple[int, int], n_channels: int, ratio: int, half_width: int,
               use_doy: bool, mode: str = "condition", budget_mb: float = 256.0) -> tuple[RidgePrior, CrossFit]:
    """Fit the prior on ``n`` training fields read piece by piece; returns it and its cross-fit.

    ``reader(rows, halo)`` yields, for consecutive blocks of training fields, (positions in
    0..n-1, normalised conditioning (m, C, rows +- halo clamped to the domain, W), normalised
    residual (m, C, rows, W), time features (m, 4)). Memory: one row chunk's per-fold sums (sized
    to ``budget_mb``) and one block's design matrices; never the whole period. The penalty of each
    channel is the one with the lowest blocked-CV squared error over all pixels.
    """
    h, w = shape
    c = n_channels
    k = int(half_width)
    folds = fold_of(n)
    n_folds = int(folds.max()) + 1
    n_feat = calendar_terms(np.zeros((1, 4), dtype=np.float32), use_doy).shape[1] + c * (2 * k + 1) ** 2
    per_row = w * n_folds * (n_feat * n_feat + n_feat * c + n_feat + 2 * c) * 8
    rows_per = max(1, min(h, int(budget_mb * 2**20 // per_row)))
    chunks = [slice(r0, min(h, r0 + rows_per)) for r0 in range(0, h, rows_per)]
    halo = k * ratio

    def sums_of(rows: slice) -> _Sums:
        s = _Sums(n_folds, (rows.stop - rows.start) * w, n_feat, c)
        for pos, cond, y, tfeat in reader(rows, halo):
            origin = (max(0, rows.start - halo), 0)
            x = _design(np.ascontiguousarray(cond.transpose(2, 3, 0, 1)), calendar_terms(tfeat, use_doy), ratio, k,
                        rows, None, origin, shape)
            yy = np.ascontiguousarray(y.transpose(2, 3, 0, 1), dtype=np.float64).reshape(x.shape[0], len(pos), c)
            s.add(x, yy, folds[pos])
        return s

    # pass 1: choose the penalty per channel (one eigen-decomposition serves every penalty)
    sse = np.zeros((len(LAMBDAS), c))
    kept: dict[int, _Sums] = {}
    for i, rows in enumerate(chunks):
        s = sums_of(rows)
        for f in range(n_folds):
            g, xy, xm, ym, n_tr = s.centred(f)
            e, v = np.linalg.eigh(g)
            vb = v.transpose(0, 2, 1) @ xy  # V^T X^T y
            held = (*s.fold(f), s.syy[f])
            for li, lam in enumerate(LAMBDAS):
                beta = v @ (vb / (e + lam * n_tr)[:, :, None])
                sse[li] += _held_out_sse(beta, xm, ym, held)
        if len(chunks) == 1:
            kept[i] = s
    lam = np.array([LAMBDAS[i] for i in sse.argmin(0)])
    eye = np.eye(n_feat)

    def solve(g: np.ndarray, xy: np.ndarray, n_tr: int) -> np.ndarray:
        return np.stack([np.linalg.solve(g + lam[ci] * n_tr * eye, xy[:, :, ci : ci + 1])[..., 0] for ci in range(c)],
                        axis=2)

    # pass 2: coefficients without each fold (cross-fitting) and on all fields
    cf = np.empty((n_folds, h, w, n_feat, c))
    cfx = np.empty((n_folds, h, w, n_feat))
    cfy = np.empty((n_folds, h, w, c))
    coef = np.empty((h, w, n_feat, c))
    x_mean = np.empty((h, w, n_feat))
    y_mean = np.empty((h, w, c))
    for i, rows in enumerate(chunks):
        s = kept.pop(i, None) or sums_of(rows)
        nr = rows.stop - rows.start
        for f in range(n_folds):
            g, xy, xm, ym, n_tr = s.centred(f)
            cf[f, rows] = solve(g, xy, n_tr).reshape(nr, w, n_feat, c)
            cfx[f, rows] = xm.reshape(nr, w, -1)
            cfy[f, rows] = ym.reshape(nr, w, -1)
        g, xy, xm, ym, n_tr = s.centred(None)
        coef[rows] = solve(g, xy, n_tr).reshape(nr, w, n_feat, c)
        x_mean[rows] = xm.reshape(nr, w, -1)
        y_mean[rows] = ym.reshape(nr, w, -1)
    cross = CrossFit(ratio, k, use_doy, cf, cfx, cfy, folds)

    # pass 3: range and error of the cross-fitted training predictions
    lo, hi = np.full(c, np.inf), np.full(c, -np.inf)
    s_res, s_cv, cnt = np.zeros(c), np.zeros(c), 0
    for rows in chunks:
        for pos, cond, y, tfeat in reader(rows, halo):
            cv = cross.predict(cond, tfeat, pos, rows, np.arange(w), (max(0, rows.start - halo), 0), shape)
            lo, hi = np.minimum(lo, cv.min(axis=(0, 2, 3))), np.maximum(hi, cv.max(axis=(0, 2, 3)))
            s_res += (y.astype(np.float64) ** 2).sum(axis=(0, 2, 3))
            s_cv += ((y - cv).astype(np.float64) ** 2).sum(axis=(0, 2, 3))
            cnt += y.shape[0] * y.shape[2] * y.shape[3]
    log.info("residual prior (ridge, %dx%d coarse stencil): cross-validated residual RMS %s (penalty %s)",
             2 * k + 1, 2 * k + 1, ", ".join(f"{a:.3f}->{b:.3f}" for a, b in zip(np.sqrt(s_res / cnt), np.sqrt(s_cv / cnt))),
             ", ".join(f"{v:g}" for v in lam))
    cross.rms = np.sqrt(s_cv / max(cnt, 1))
    return RidgePrior(k, ratio, use_doy, mode, coef, x_mean, y_mean, lam, lo, hi), cross


def array_reader(cond: np.ndarray, tfeat: np.ndarray, y: np.ndarray, block: int = 256) -> Reader:
    """A :data:`Reader` over in-memory (N, C, H, W) fields (tests, small data)."""
    h = y.shape[2]

    def read(rows: slice, halo: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        r0, r1 = max(0, rows.start - halo), min(h, rows.stop + halo)
        for t0 in range(0, y.shape[0], block):
            pos = np.arange(t0, min(y.shape[0], t0 + block))
            yield pos, cond[pos, :, r0:r1], y[pos, :, rows], tfeat[pos]

    return read


def fit(cond: np.ndarray, tfeat: np.ndarray, y: np.ndarray, ratio: int, half_width: int, use_doy: bool,
        mode: str = "condition") -> tuple[RidgePrior, np.ndarray]:
    """:func:`fit_stream` on in-memory fields; returns the prior and the cross-fitted (N, C, H, W) predictions."""
    n, c, h, w = y.shape
    prior, cross = fit_stream(array_reader(cond, tfeat, y), n, (h, w), c, ratio, half_width, use_doy, mode)
    cv = cross.predict(cond, tfeat, np.arange(n), slice(0, h), np.arange(w), (0, 0), (h, w))
    return prior, cv
