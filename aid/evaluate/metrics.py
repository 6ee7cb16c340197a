"""Verification scores of gridded fields and ensembles against a reference.

Why area weights: on a regular lat-lon grid a cell's area scales with cos(latitude); an unweighted
mean over-counts the northern rows of the domain. All spatial means here use cos-lat weights.

Why the *fair* CRPS: with a small ensemble (a few diffusion samples) the ordinary ensemble CRPS
rewards under-dispersion; the fair estimator (Ferro 2014) is unbiased for the CRPS of the
underlying distribution whatever the ensemble size, so scores of 3 and 30 samples compare.
Why the sqrt((M+1)/M) factor in the spread-skill ratio: for a calibrated M-member ensemble the
expected squared error of the ensemble mean is (M+1)/M times the expected (unbiased) ensemble
variance (Fortin et al. 2014), so the corrected ratio is 1 for a perfect ensemble of any size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from aid.errors import DataError

SPATIAL_DIMS: tuple[str, str] = ("lat", "lon")


def lat_weights(lat: xr.DataArray | np.ndarray) -> xr.DataArray:
    """cos(latitude) area weights (unnormalised), as a DataArray on ``lat``."""
    if not isinstance(lat, xr.DataArray):
        lat = xr.DataArray(np.asarray(lat, dtype=float), dims=("lat",), name="lat")
    w = np.cos(np.deg2rad(lat.astype(float)))
    return w.clip(min=0.0).rename("weights")


def weighted_mean(da: xr.DataArray, dims: Sequence[str] | None = None) -> xr.DataArray:
    """cos-lat weighted mean over ``dims`` (default: lat, lon and time when present).

    NaNs are skipped (their weight is dropped), so masked cells do not bias the mean.
    """
    if dims is None:
        dims = [d for d in ("time", "lat", "lon") if d in da.dims]
    if "lat" not in da.coords:
        return da.mean(dims)
    return da.weighted(lat_weights(da["lat"])).mean(list(dims))


def bias(fcst: xr.DataArray, obs: xr.DataArray, dims: Sequence[str] | None = None) -> xr.DataArray:
    """Area-weighted mean error ``fcst - obs``."""
    return weighted_mean(fcst - obs, dims)


def mae(fcst: xr.DataArray, obs: xr.DataArray, dims: Sequence[str] | None = None) -> xr.DataArray:
    """Area-weighted mean absolute error."""
    return weighted_mean(abs(fcst - obs), dims)


def rmse(fcst: xr.DataArray, obs: xr.DataArray, dims: Sequence[str] | None = None) -> xr.DataArray:
    """Root of the area-weighted mean squared error."""
    return np.sqrt(weighted_mean((fcst - obs) ** 2, dims))


def crps_fair(ens: xr.DataArray, obs: xr.DataArray, member_dim: str = "sample") -> xr.DataArray:
    """Pointwise fair CRPS of ensemble ``ens`` (member dim ``member_dim``) for ``obs``.

    Uses ``scoringrules.crps_ensemble(..., estimator="fair")``; needs at least 2 members.
    """
    import scoringrules as sr

    m = ens.sizes.get(member_dim, 0)
    if m < 2:
        raise DataError(f"fair CRPS needs an ensemble of >= 2 members along '{member_dim}', got {m}.",
                        "set downscale.n_samples >= 2.")
    ens, obs = xr.align(ens, obs, join="exact")
    return xr.apply_ufunc(
        lambda o, f: np.asarray(sr.crps_ensemble(o, f, m_axis=-1, estimator="fair", backend="numpy")),
        obs,
        ens,
        input_core_dims=[[], [member_dim]],
        output_dtypes=[float],
    ).rename("crps")


def spread_skill_ratio(
    ens: xr.DataArray, obs: xr.DataArray, member_dim: str = "sample", dims: Sequence[str] | None = None
) -> xr.DataArray:
    """sqrt((M+1)/M * mean unbiased variance) / RMSE of the ensemble mean (area-weighted).

    1 means calibrated, < 1 under-dispersive (overconfident), > 1 over-dispersive.
    """
    m = ens.sizes.get(member_dim, 0)
    if m < 2:
        raise DataError(f"spread-skill needs >= 2 members along '{member_dim}', got {m}.", "set downscale.n_samples >= 2.")
    var = ens.var(member_dim, ddof=1)
    mse = (ens.mean(member_dim) - obs) ** 2
    spread = np.sqrt((m + 1) / m * weighted_mean(var, dims))
    skill = np.sqrt(weighted_mean(mse, dims))
    return (spread / skill).rename("spread_skill_ratio")


def rank_histogram(
    ens: xr.DataArray, obs: xr.DataArray, member_dim: str = "sample", seed: int = 0
) -> np.ndarray:
    """Counts of the rank of ``obs`` among the M members (M+1 bins), ties broken at random.

    Why random ties: precipitation has many exact zeros in both obs and members; always ranking
    the observation first (or last) would make a calibrated ensemble look biased.
    """
    m = ens.sizes[member_dim]
    ens, obs = xr.broadcast(*xr.align(ens, obs, join="exact"), exclude=[member_dim])
    f = np.moveaxis(ens.transpose(*obs.dims, member_dim).values, -1, 0).reshape(m, -1)
    o = obs.values.reshape(-1)
    ok = np.isfinite(o) & np.all(np.isfinite(f), axis=0)
    f, o = f[:, ok], o[ok]
    below = (f < o).sum(axis=0)
    ties = (f == o).sum(axis=0)
    rng = np.random.default_rng(seed)
    rank = below + np.floor(rng.random(o.size) * (ties + 1)).astype(int)
    return np.bincount(rank, minlength=m + 1)


def rank_histogram_chi2(counts: np.ndarray) -> tuple[float, float]:
    """Chi-square statistic and p-value of a rank histogram against flatness.

    Daily neighbouring grid cells are not independent, so the p-value is a guide, not a test.
    """
    from scipy import stats

    counts = np.asarray(counts, dtype=float)
    expected = np.full_like(counts, counts.sum() / counts.size)
    chi2, p = stats.chisquare(counts, expected)
    return float(chi2), float(p)


def quantiles(values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Quantiles of finite values (Hyndman-Fan type 8, as for the index thresholds)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.full(len(qs), np.nan)
    return np.quantile(v, qs, method="median_unbiased")


__all__ = [
    "bias",
    "crps_fair",
    "lat_weights",
    "mae",
    "quantiles",
    "rank_histogram",
    "rank_histogram_chi2",
    "rmse",
    "spread_skill_ratio",
    "weighted_mean",
]
