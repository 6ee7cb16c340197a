"""Day-to-day coherence of the downscaled ensemble against the reference.

Why: the sampler draws each day's fine-scale detail with its own noise, so the detail of consecutive
days is only as correlated as the coarse input and the network make it. Indices built from
consecutive days (WSDI, CSDI, CWD, CDD, RX5day) then see spells at 0.25 deg that may be shorter or
longer than real ones. This module measures it, per variable, on the evaluation run (the only run
with day-by-day truth):

- lag-1 autocorrelation of the fine-scale residual, the field minus its own coarse-cell mean
  (the part the downscaler adds): per fine cell the Pearson correlation of consecutive days,
  averaged over cells; the ensemble's value is the mean over members;
- mean spell lengths, pooled over cells (days in spells / number of spells): warm spells (days
  above the reference's per-cell 90th percentile of the period; tasmax, tas and tasmin each
  against their own percentile), dry spells (pr < 1 mm/d) and wet spells (pr >= 1 mm/d), the
  thresholds of CDD/CWD.

Each figure comes with ``relative_difference`` = (ensemble - reference) / |reference| (issue 19's
criterion is 10 %).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TEMPERATURES = ("tas", "tasmax", "tasmin")
#: Wet-day threshold (mm/d), as in the CWD/CDD indices.
WET_MM = 1.0
#: Per-cell percentile of the reference above which a day is warm.
WARM_Q = 0.9


def cell_labels(lat: np.ndarray, lon: np.ndarray, coarse_resolution: float) -> np.ndarray:
    """(H, W) int label of the coarse cell holding each fine cell centre (edges at multiples of the
    resolution, as the model's coarse grid; aid.grids)."""
    r = np.floor(np.asarray(lat, float) / coarse_resolution + 1e-9).astype(np.int64)
    c = np.floor(np.asarray(lon, float) / coarse_resolution + 1e-9).astype(np.int64)
    r, c = r - r.min(), c - c.min()
    return r[:, None] * (c.max() + 1) + c[None, :]


def fine_residual(field: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``field`` (..., H, W) minus the mean of its coarse cell (``labels`` from :func:`cell_labels`)."""
    flat = labels.ravel()
    n = np.bincount(flat).astype(np.float64)
    x = field.reshape(-1, flat.size).astype(np.float64)
    sums = np.stack([np.bincount(flat, weights=row, minlength=n.size) for row in x])
    means = sums / np.maximum(n, 1)[None]
    return (x - means[:, flat]).reshape(field.shape)


def cell_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per cell, the Pearson correlation along axis 0 of ``a`` and ``b`` (same shape); NaN where
    either series is constant."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    a, b = a - a.mean(0), b - b.mean(0)
    den = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    return np.where(den > 0, (a * b).sum(0) / np.where(den > 0, den, 1.0), np.nan)


def lag1_autocorrelation(x: np.ndarray) -> float:
    """Mean over cells of the Pearson correlation of consecutive days of ``x`` (time, H, W).

    Cells whose series is constant (no residual) are left out.
    """
    r = cell_correlation(x[:-1], x[1:])
    return float(np.nanmean(r)) if np.isfinite(r).any() else float("nan")


def mean_spell_length(mask: np.ndarray) -> float:
    """Days in spells / number of spells of ``mask`` (time, H, W) along time, pooled over cells."""
    m = np.asarray(mask, dtype=bool)
    starts = m[0].sum() + (m[1:] & ~m[:-1]).sum()
    return float(m.sum() / starts) if starts else float("nan")


def _compare(ref: float, ens: Sequence[float]) -> dict[str, Any]:
    e = float(np.mean(ens))
    return {"reference": ref, "ensemble": e, "members": [float(v) for v in ens],
            "relative_difference": (e - ref) / abs(ref) if ref else float("nan")}


def coherence(ensemble: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], lat: np.ndarray,
              lon: np.ndarray, coarse_resolution: float) -> dict[str, dict[str, Any]]:
    """Per variable: lag-1 autocorrelation of the fine-scale residual and mean spell lengths.

    ``ensemble[v]`` is (sample, time, H, W), ``reference[v]`` (time, H, W), on the same
    consecutive days and the grid ``lat`` x ``lon``; physical units (pr in mm/d).
    """
    labels = cell_labels(lat, lon, coarse_resolution)
    out: dict[str, dict[str, Any]] = {}
    for v in ensemble:
        if v not in reference:
            continue
        ens, ref = np.asarray(ensemble[v]), np.asarray(reference[v])
        row: dict[str, Any] = {"lag1_autocorrelation_fine_residual": _compare(
            lag1_autocorrelation(fine_residual(ref, labels)),
            [lag1_autocorrelation(fine_residual(e, labels)) for e in ens])}
        if v in TEMPERATURES:
            thr = np.quantile(ref, WARM_Q, axis=0)[None]
            row["warm_spell_mean_days"] = _compare(mean_spell_length(ref > thr), [mean_spell_length(e > thr) for e in ens])
        if v == "pr":
            row["dry_spell_mean_days"] = _compare(mean_spell_length(ref < WET_MM), [mean_spell_length(e < WET_MM) for e in ens])
            row["wet_spell_mean_days"] = _compare(mean_spell_length(ref >= WET_MM),
                                                  [mean_spell_length(e >= WET_MM) for e in ens])
        out[v] = row
        log.info("coherence %s: lag-1 residual autocorrelation ensemble %.3f vs reference %.3f", v,
                 row["lag1_autocorrelation_fine_residual"]["ensemble"],
                 row["lag1_autocorrelation_fine_residual"]["reference"])
    return out


def coherence_of_run(downscaled: Sequence[str | os.PathLike[str]], reference: Sequence[str | os.PathLike[str]],
                     period: Sequence[int], coarse_resolution: float) -> dict[str, dict[str, Any]]:
    """:func:`coherence` of an evaluation run's deliverables against the reference files, on the
    days of ``period`` (first and last year) they share; the days must be consecutive."""
    from aid.errors import DataError
    from aid.evaluate.run import _date_coord, _in_period, _on_grid, load_ensemble
    from aid.indices import load_variables

    ref_ds = load_variables(reference, "reference")
    ens_all = load_ensemble(downscaled, "downscaled")
    ens_np: dict[str, np.ndarray] = {}
    ref_np: dict[str, np.ndarray] = {}
    lat = lon = None
    for v, ens in ens_all.items():
        if v not in ref_ds:
            continue
        ref = _in_period(_date_coord(ref_ds[v].astype("float32")), period)
        ens = _on_grid(ens, ref, "downscaled")
        days = sorted(set(ref["time"].values.tolist()) & set(ens["time"].values.tolist()))
        if len(days) < 3:
            raise DataError(f"coherence: fewer than 3 common days for '{v}' between the reference and the downscaled "
                            f"files in period {list(period)}.", "pass the evaluation run's files of that period.")
        d = np.array(days, dtype="datetime64[D]")
        if (np.diff(d) != np.timedelta64(1, "D")).any():
            raise DataError(f"coherence: the common days of '{v}' are not consecutive (lag-1 and spells need them).",
                            "pass whole years of the evaluation run.")
        ref_np[v] = ref.sel(time=days).transpose("time", "lat", "lon").values
        ens_np[v] = ens.sel(time=days).transpose("sample", "time", "lat", "lon").values
        lat, lon = ref["lat"].values, ref["lon"].values
    if lat is None:
        raise DataError("coherence: no variable is both in the downscaled and the reference files.",
                        "pass the evaluation run's deliverables and the matching reference files.")
    return coherence(ens_np, ref_np, lat, lon, coarse_resolution)


__all__ = ["cell_correlation", "cell_labels", "fine_residual", "lag1_autocorrelation", "mean_spell_length", "coherence",
           "coherence_of_run"]