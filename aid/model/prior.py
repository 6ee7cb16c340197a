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

Design matrix of pixel (i, j): the normalised upsampled coarse field of every channel at
(i + a r, j + b r) for a, b in [-k, k] (r = coarse / fine resolution, indices clamped at the
domain edge), and calendar terms (hour sin/cos and their 2nd harmonic, day-of-year sin/cos when
the model uses them). Features and targets are centred per pixel (the intercept is not penalised);
the ridge penalty is ``lam * n`` with ``lam`` chosen per channel by blocked cross-validation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
    """``model.prior`` with defaults filled in, or None when the prior is off (absent or null)."""
    p = mcfg.get("prior")
    if not p:
        return None
    return {"half_width": int(p.get("half_width", 1)), "mode": str(p.get("mode", "condition"))}


def calendar_terms(tfeat: np.ndarray, use_doy: bool) -> np.ndarray:
    """(N, T) calendar regressors from :func:`aid.model.data.time_features` (doy sin/cos, hour sin/cos)."""
    sh, ch = tfeat[:, 2].astype(np.float64), tfeat[:, 3].astype(np.float64)
    cols = [sh, ch, 2 * sh * ch, ch**2 - sh**2]  # hour harmonics 1 and 2
    if use_doy:
        cols += [tfeat[:, 0].astype(np.float64), tfeat[:, 1].astype(np.float64)]
    return np.stack(cols, axis=1)


def _design(cond_t: np.ndarray, cal: np.ndarray, ratio: int, k: int, rows: slice) -> np.ndarray:
    """(P, N, F) design matrices of the pixels in ``rows`` (all columns), float64.

    ``cond_t`` is the conditioning as (H, W, N, C), so every stencil offset is a contiguous gather.
    """
    h, w, n, c = cond_t.shape
    ri_all = np.arange(h)[rows]
    nr = len(ri_all)
    x = np.empty((nr, w, n, (2 * k + 1) ** 2 * c + cal.shape[1]), dtype=np.float64)
    j = 0
    for a in range(-k, k + 1):
        sub = cond_t[np.clip(ri_all + a * ratio, 0, h - 1)]
        for b in range(-k, k + 1):
            x[..., j : j + c] = sub[:, np.clip(np.arange(w) + b * ratio, 0, w - 1)]
            j += c
    x[..., j:] = cal[None, None]
    return x.reshape(nr * w, n, -1)


def _folds(n: int) -> list[np.ndarray]:
    edges = np.linspace(0, n, min(FOLDS, n) + 1).round().astype(int)
    return [np.arange(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def _fold_sums(x: np.ndarray, y: np.ndarray, folds: list[np.ndarray]) -> list[tuple[np.ndarray, ...]]:
    """Per fold: (X^T X, X^T Y, sum X, sum Y, n) of its fields, per pixel (batched BLAS matmuls)."""
    out = []
    for fi in folds:
        xf, yf = x[:, fi], y[:, fi]
        xt = xf.transpose(0, 2, 1)
        out.append((xt @ xf, xt @ yf, xf.sum(1), yf.sum(1), len(fi)))
    return out


def _centred(sums: list[tuple[np.ndarray, ...]], skip: int | None) -> tuple[np.ndarray, ...]:
    """Centred Gram, cross-product and means of all folds but ``skip``: (G, X^T y, x_mean, y_mean, n)."""
    parts = [t for i, t in enumerate(sums) if i != skip]
    sxx, sxy, sx, sy = (sum(t[j] for t in parts) for j in range(4))
    n = sum(t[4] for t in parts)
    xm, ym = sx / n, sy / n
    return sxx - n * xm[:, :, None] * xm[:, None, :], sxy - n * xm[:, :, None] * ym[:, None, :], xm, ym, n


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
    #: linear map extrapolate into unphysical values (heavy-rain days of a scenario did). None for
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


def fit(cond: np.ndarray, tfeat: np.ndarray, y: np.ndarray, ratio: int, half_width: int, use_doy: bool,
        mode: str = "condition") -> tuple[RidgePrior, np.ndarray]:
    """Fit the prior on training fields; returns it and the cross-fitted (N, C, H, W) predictions.

    ``cond``/``y``: normalised upsampled coarse fields and residuals (N, C, H, W). The penalty of
    each channel is the one with the lowest blocked-CV squared error over all pixels.
    """
    n, c, h, w = y.shape
    cal = calendar_terms(tfeat, use_doy)
    cond_t = np.ascontiguousarray(cond.transpose(2, 3, 0, 1))
    y_t = np.ascontiguousarray(y.transpose(2, 3, 0, 1), dtype=np.float64)
    folds = _folds(n)
    n_feat = cal.shape[1] + cond.shape[1] * (2 * half_width + 1) ** 2

    def chunks():  # noqa: ANN202
        for r0 in range(0, h, ROW_CHUNK):
            rows = slice(r0, min(h, r0 + ROW_CHUNK))
            x = _design(cond_t, cal, ratio, half_width, rows)
            yy = y_t[rows].reshape(x.shape[0], n, c)
            yield rows, x, yy, _fold_sums(x, yy, folds)

    # pass 1: choose the penalty per channel (one eigen-decomposition serves every penalty)
    sse = np.zeros((len(LAMBDAS), c))
    for _, x, yy, sums in chunks():
        for f, fi in enumerate(folds):
            g, xy, xm, ym, n_tr = _centred(sums, f)
            e, v = np.linalg.eigh(g)
            vb = v.transpose(0, 2, 1) @ xy  # V^T X^T y
            xv = (x[:, fi] - xm[:, None]) @ v
            for li, lam in enumerate(LAMBDAS):
                pred = xv @ (vb / (e + lam * n_tr)[:, :, None]) + ym[:, None]
                sse[li] += ((pred - yy[:, fi]) ** 2).sum(axis=(0, 1))
    lam = np.array([LAMBDAS[i] for i in sse.argmin(0)])
    eye = np.eye(n_feat)

    def solve(g: np.ndarray, xy: np.ndarray, n_tr: int) -> np.ndarray:
        return np.stack([np.linalg.solve(g + lam[ci] * n_tr * eye, xy[:, :, ci : ci + 1])[..., 0] for ci in range(c)],
                        axis=2)

    # pass 2: cross-fitted training predictions and the final fit on all fields
    cv = np.empty((n, c, h, w), dtype=np.float32)
    coef = np.empty((h, w, n_feat, c))
    x_mean = np.empty((h, w, n_feat))
    y_mean = np.empty((h, w, c))
    for rows, x, yy, sums in chunks():
        nr = rows.stop - rows.start
        for f, fi in enumerate(folds):
            g, xy, xm, ym, n_tr = _centred(sums, f)
            p = (x[:, fi] - xm[:, None]) @ solve(g, xy, n_tr) + ym[:, None]
            cv[fi, :, rows] = p.reshape(nr, w, len(fi), c).transpose(2, 3, 0, 1)
        g, xy, xm, ym, n_tr = _centred(sums, None)
        coef[rows] = solve(g, xy, n_tr).reshape(nr, w, n_feat, c)
        x_mean[rows] = xm.reshape(nr, w, -1)
        y_mean[rows] = ym.reshape(nr, w, -1)
    rms_res = np.sqrt((y.astype(np.float64) ** 2).mean(axis=(0, 2, 3)))
    rms_cv = np.sqrt(((y - cv).astype(np.float64) ** 2).mean(axis=(0, 2, 3)))
    log.info("residual prior (ridge, %dx%d coarse stencil): cross-validated residual RMS %s (penalty %s)",
             2 * half_width + 1, 2 * half_width + 1,
             ", ".join(f"{a:.3f}->{b:.3f}" for a, b in zip(rms_res, rms_cv)), ", ".join(f"{v:g}" for v in lam))
    lo, hi = cv.min(axis=(0, 2, 3)).astype(np.float64), cv.max(axis=(0, 2, 3)).astype(np.float64)
    return RidgePrior(half_width, ratio, use_doy, mode, coef, x_mean, y_mean, lam, lo, hi), cv
