"""Conservative weights: xarray-regrid's 1-D weights folded onto the rows/columns as stored.

Uses xarray-regrid's private ``format_for_regrid``, ``get_weights``, ``create_dot_dataarray`` and
``apply_spherical_correction``; the version is pinned in pyproject.toml and
tests/test_regrid_api.py fails when those change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from aid.regrid.banded import _ConservativePlan
from aid.regrid.grid import align_longitudes, normalise_coords


_PLAN_CACHE: dict[tuple[Any, ...], _ConservativePlan] = {}


_PLAN_CACHE_SIZE = 8  # a plan holds two dense weight matrices (<= ~20 MB for 0.25 deg <-> 0.25 deg)


class _PlanError(ValueError):
    """The formatted source grid cannot be mapped back onto the stored one (use the accessor)."""


def lat_weights_from_bounds(src_bounds: np.ndarray, tlat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latitude weights (target x stored row) from the source's own cell bounds.

    Why: xarray-regrid puts a cell's edges half-way between neighbouring centres, which for a
    Gaussian grid is not where the model's cells are (the edge rows are wider than their spacing
    suggests: MIROC6's first row spans -90..-88.2 around a centre at -88.93). The weight of row s
    in target t is the overlap of the two cells in sin(latitude) (area on the sphere), normalised
    over the rows that overlap t; targets no row overlaps are returned as not covered.
    """
    tl = np.asarray(tlat, dtype="float64")
    mid = (tl[:-1] + tl[1:]) / 2 if tl.size > 1 else np.array([])
    h = float(np.median(np.diff(tl))) if tl.size > 1 else 1.0
    t_lo = np.clip(np.concatenate([[tl[0] - h / 2], mid]), -90.0, 90.0)
    t_hi = np.clip(np.concatenate([mid, [tl[-1] + h / 2]]), -90.0, 90.0)
    b = np.sort(np.asarray(src_bounds, dtype="float64"), axis=1)
    s_lo, s_hi = np.clip(b[:, 0], -90.0, 90.0), np.clip(b[:, 1], -90.0, 90.0)
    lo = np.maximum(t_lo[:, None], s_lo[None, :])
    hi = np.minimum(t_hi[:, None], s_hi[None, :])
    ov = np.where(hi > lo, np.sin(np.deg2rad(hi)) - np.sin(np.deg2rad(lo)), 0.0)
    tot = ov.sum(axis=1)
    covered = (tl >= s_lo.min() - 1e-9) & (tl <= s_hi.max() + 1e-9) & (tot > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(tot[:, None] > 0, ov / tot[:, None], 0.0)
    return w, covered


def _build_plan(
    src_lat: np.ndarray, src_lon: np.ndarray, target: xr.Dataset, align: bool, lat_bounds: np.ndarray | None = None
) -> _ConservativePlan:
    """Ask xarray-regrid for its formatted source grid and 1-D weights; fold them onto the stored grid.

    The proxy carries each stored cell's row and column index as data (broadcast views, no
    memory until an operation copies them), so whatever the formatting does to the data (sort,
    shift by 360, periodic columns, polar rows, ``drop_duplicates`` keeping the first of two
    columns that coincide modulo 360) it does to the indices too: formatted row/column k then
    says which stored row/column its data come from. Rows xarray-regrid adds at +-90 deg (zonal
    mean of the edge row) are recognised by their latitude, which no stored row has.
    """
    from xarray_regrid.methods.conservative import apply_spherical_correction, get_weights
    from xarray_regrid.utils import create_dot_dataarray, format_for_regrid

    tlat = np.asarray(target["lat"].values, dtype="float64")
    tlon = np.asarray(target["lon"].values, dtype="float64")
    shape = (src_lat.size, src_lon.size)
    rows = np.broadcast_to(np.arange(shape[0], dtype="float64")[:, None], shape)
    cols = np.broadcast_to(np.arange(shape[1], dtype="float64")[None, :], shape)
    proxy = xr.Dataset(
        {"_row": (("lat", "lon"), rows), "_col": (("lat", "lon"), cols)}, coords={"lat": src_lat, "lon": src_lon}
    )
    if align:
        proxy = align_longitudes(normalise_coords(proxy), tlon)
    aligned_lat, aligned_lon = proxy["lat"].values, proxy["lon"].values
    fmt = format_for_regrid(proxy, target)
    flat = np.asarray(fmt["lat"].values, dtype="float64")
    flon = np.asarray(fmt["lon"].values, dtype="float64")
    f_row = fmt["_row"].transpose("lat", "lon").values
    f_col = fmt["_col"].transpose("lat", "lon").values

    w_lat = create_dot_dataarray(get_weights(flat, tlat), "lat", tlat, flat)
    w_lat = np.asarray(apply_spherical_correction(w_lat, "lat").values, dtype="float64")  # (formatted, target)
    w_lon = np.asarray(get_weights(flon, tlon), dtype="float64")

    i_lat = np.rint(f_row[:, 0]).astype("int64")
    is_pole = (np.abs(np.abs(flat) - 90.0) < 1e-9) & (np.abs(flat - src_lat[i_lat]) > 1e-9)
    if is_pole.all():
        raise _PlanError("no stored row survives xarray-regrid's formatting")
    col_idx = f_col[int(np.flatnonzero(~is_pole)[0])]
    i_lon = np.rint(col_idx).astype("int64")
    if np.abs(col_idx - i_lon).max() > 1e-6 or np.abs(f_row[:, 0] - i_lat).max() > 1e-6:
        raise _PlanError("formatted rows/columns are not copies of stored ones")
    lat = np.zeros((tlat.size, src_lat.size))
    np.add.at(lat.T, i_lat[~is_pole], w_lat[~is_pole])
    poles = [(int(i_lat[f]), w_lat[f]) for f in np.flatnonzero(is_pole)]
    lon = np.zeros((tlon.size, src_lon.size))
    np.add.at(lon.T, i_lon, w_lon)
    # the polar rows are the mean over the columns the source had when they were made (before
    # xarray-regrid's own longitude padding): count each stored column as often as it appears there
    aligned_cols = np.rint(proxy["_col"].transpose("lat", "lon").values[0]).astype("int64")
    zonal = np.bincount(aligned_cols, minlength=src_lon.size).astype("float64")
    zonal /= zonal.sum()
    cov_lat = (tlat <= flat.max()) & (tlat >= flat.min())
    cov_lon = (tlon <= flon.max()) & (tlon >= flon.min())
    if lat_bounds is not None:
        # the file's own cell bounds replace the latitude stage; they reach the poles themselves
        lat, cov_lat = lat_weights_from_bounds(lat_bounds, tlat)
        poles = []
    return _ConservativePlan(lat, lon, poles, zonal, cov_lat, cov_lon, aligned_lat, aligned_lon)


def _conservative_plan(
    src_lat: np.ndarray, src_lon: np.ndarray, target: xr.Dataset, align: bool, lat_bounds: np.ndarray | None = None
) -> _ConservativePlan:
    """Cached :func:`_build_plan`: a pipeline regrids many files between the same two grids."""
    arrays = [np.ascontiguousarray(a, dtype="float64") for a in (src_lat, src_lon, target["lat"].values, target["lon"].values)]
    if lat_bounds is not None:
        arrays.append(np.ascontiguousarray(lat_bounds, dtype="float64"))
    key = (align, lat_bounds is not None) + tuple((a.size, a.tobytes()) for a in arrays)
    plan = _PLAN_CACHE.get(key)
    if plan is None:
        plan = _build_plan(arrays[0], arrays[1], target, align, lat_bounds)
        if len(_PLAN_CACHE) >= _PLAN_CACHE_SIZE:
            _PLAN_CACHE.pop(next(iter(_PLAN_CACHE)))
        _PLAN_CACHE[key] = plan
    return plan
