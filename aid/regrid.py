"""Regridding: conservative to the model grid, and back up to 0.25 deg.

Why one module: the coarse field the diffusion model is trained on and the coarse field it is
given at inference must come from the same code path (:func:`coarsen` / :func:`regrid`), and the
upsampled conditioning the model sees must be the one the bicubic baseline delivers
(:func:`upsample`). xarray-regrid is the default backend; xESMF is used only when ESMF imports.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from aid.errors import ConfigError, DataError

log = logging.getLogger(__name__)

METHODS = ("conservative", "bilinear", "nearest")


def _rename_latlon(ds: xr.Dataset) -> xr.Dataset:
    """lat/lon names, cell-bounds variables dropped; the data are not touched (no copy)."""
    ren = {k: v for k, v in {"latitude": "lat", "longitude": "lon"}.items() if k in ds.dims or k in ds.coords}
    if ren:
        ds = ds.rename(ren)
    drop = [v for v in ds.data_vars if v.endswith(("_bnds", "_bounds")) or v in ("lat_bnds", "lon_bnds")]
    return ds.drop_vars(drop, errors="ignore")


def normalise_coords(ds: xr.Dataset) -> xr.Dataset:
    """lat/lon names, latitude ascending, longitudes in -180..180 sorted.

    An axis already in order is left alone: ``sortby`` always copies the whole array (fancy
    indexing), which for 100 global 0.25 deg fields is ~0.5 s per axis for nothing.
    """
    ds = _rename_latlon(ds)
    if "lon" in ds.coords and float(ds.lon.max()) > 180:
        ds = ds.assign_coords(lon=((ds.lon + 180) % 360) - 180)
    for dim in ("lon", "lat"):
        if dim in ds.dims and not ds.indexes[dim].is_monotonic_increasing:
            ds = ds.sortby(dim)
    return ds


def _target_coords(target: xr.Dataset) -> xr.Dataset:
    """Bare lat/lon of a target grid, latitude ascending; longitudes kept as given (may run past 180)."""
    ren = {k: v for k, v in {"latitude": "lat", "longitude": "lon"}.items() if k in target.coords}
    target = target.rename(ren) if ren else target
    lat = np.sort(np.asarray(target["lat"].values, dtype="float64"))
    lon = np.sort(np.asarray(target["lon"].values, dtype="float64"))
    return xr.Dataset(coords={"lat": lat, "lon": lon})


def _spacing(values: np.ndarray, default: float = 1.0) -> float:
    return float(np.median(np.diff(values))) if values.size > 1 else default


def _outer_edges(values: np.ndarray) -> tuple[float, float]:
    """Outer cell edges of a regular centre axis (half a spacing beyond the first/last centre)."""
    h = _spacing(values)
    return float(values[0] - h / 2), float(values[-1] + h / 2)


def align_longitudes(ds: xr.Dataset, target_lon: np.ndarray) -> xr.Dataset:
    """Express ``ds``'s longitudes in the 360-degree window centred on the target's longitudes.

    Why: a regional target crossing the antimeridian runs e.g. 170..190 (see
    :func:`aid.grids.fine_grid`), and a 0..360 source must meet a -180..180 target; shifting the
    source (not the target) keeps the target's coordinates exactly as requested. A global source
    gets one periodic column on each side, so cells straddling the seam get their full overlap.
    """
    if "lon" not in ds.dims:
        return ds
    tlon = np.asarray(target_lon, dtype="float64")
    base = 0.5 * (float(tlon.min()) + float(tlon.max())) - 180.0
    lon = ds["lon"].values.astype("float64")
    new = (lon - base) % 360.0 + base
    ds = ds.assign_coords(lon=("lon", new, ds["lon"].attrs)).sortby("lon")
    lon = ds["lon"].values
    h = _spacing(lon)
    if lon.size > 2 and abs(lon.size * h - 360.0) < 1e-6 * 360.0:
        first = ds.isel(lon=[0]).assign_coords(lon=[float(lon[0]) + 360.0])
        last = ds.isel(lon=[-1]).assign_coords(lon=[float(lon[-1]) - 360.0])
        ds = xr.concat([last, ds, first], dim="lon", data_vars="minimal", coords="minimal", compat="override")
    return ds


def _pad_edges(src: xr.Dataset) -> xr.Dataset:
    """One ghost cell on each side of lat and lon (lon only if not already global), repeating the edge values.

    The real edge cells keep their exact extent (the midpoint to a ghost one spacing away is the
    edge), so a target inside an edge cell gets that cell's value and one straddling two edge
    cells their area-weighted mean, as a conservative regridder would give.
    """
    for dim in ("lat", "lon"):
        vals = src[dim].values.astype("float64")
        if vals.size < 2:
            continue
        h = _spacing(vals)
        if dim == "lon" and vals[-1] - vals[0] + h >= 360.0 - 1e-6 * h:
            # a global source already has its periodic columns (align_longitudes): a ghost here
            # would sit on a real column modulo 360 with the wrong data, and xarray-regrid, which
            # wraps longitudes and keeps the first of two coinciding columns, used the ghost
            # (seen: polar rim rows at 177E took the 179E value)
            continue
        g0, g1 = float(vals[0]) - h, float(vals[-1]) + h
        if dim == "lat":
            # a ghost beyond a pole would get a negative spherical weight (sin decreasing past
            # 90 deg) and cancel the edge row; keep it just inside the pole instead
            g0, g1 = max(g0, -90.0 + 1e-3 * h), min(g1, 90.0 - 1e-3 * h)
        lo = src.isel({dim: [0]}).assign_coords({dim: [g0]})
        hi = src.isel({dim: [-1]}).assign_coords({dim: [g1]})
        src = xr.concat([lo, src, hi], dim=dim, data_vars="minimal", coords="minimal", compat="override")
    return src


def _rim_blocks(tvals: np.ndarray, svals: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous target index blocks beyond the first/last source centre.

    Returned as (indices to regrid, mask of those that are rim); each block carries one inward
    neighbour so it has at least two centres (xarray-regrid derives cell edges from neighbours).
    """
    blocks = []
    n = tvals.size
    low = np.flatnonzero(tvals < svals.min())
    high = np.flatnonzero(tvals > svals.max())
    if low.size:
        idx = np.arange(0, min(low.max() + 2, n))
        blocks.append((idx, tvals[idx] < svals.min()))
    if high.size:
        idx = np.arange(max(high.min() - 1, 0), n)
        blocks.append((idx, tvals[idx] > svals.max()))
    return blocks


# --------------------------------------------------------------------------------------------
# Conservative regridding: xarray-regrid's weights, applied per axis as banded matrix products
# --------------------------------------------------------------------------------------------
#
# Why this exists (issue 8): ``ds.regrid.conservative`` is the reference engine, but on 100 global
# 0.25 deg fields it took ~5x ``cdo remapcon``'s time. Profiling (cProfile, 0.25 -> 2 deg) put the
# time in (1) reordering/copying the data before any arithmetic: ``normalise_coords``/``sortby``
# (lat 90 -> -90, lon 0..360 -> -180..180), ``align_longitudes``' periodic ``concat``, and
# xarray-regrid's own padding, each a full 415 MB copy with fancy indexing; (2) the contraction
# itself: with the ``sparse`` package importable xarray-regrid turns its weights into ``sparse.COO``
# and ``xr.dot`` ends in ``sparse.tensordot`` (plus ~2 s of numba compilation in every new process);
# without ``sparse`` it is a dense einsum, ~23 GFLOP for 1440 -> 180 x 721 -> 90 of which >98 % are
# products with zero weights.
#
# What we do instead: xarray-regrid's conservative scheme is separable (its own docstring says so:
# one 1-D weight matrix per axis, latitude rows weighted by sin-band area). So we let xarray-regrid
# (a) format a *proxy* of the source grid exactly as the accessor formats the real data
# (``format_for_regrid``: longitude wrap/padding, polar rows), the proxy's data being each cell's
# stored row/column index, and (b) compute the 1-D weights (``get_weights`` +
# ``apply_spherical_correction``); the formatted proxy then maps every weight row back to the
# row/column of the data *as stored in the file*. Reordering, periodic duplication and dropped
# duplicate columns all fold into the weight matrices, so the data are never copied or sorted.
# The weights are applied as two dense BLAS products over short contiguous blocks of the band (a
# target block only ever touches a few dozen source rows), which costs a few times the ideal
# sparse flop count but runs at BLAS speed with no transposes: latitude first when it shrinks the
# data, longitude first otherwise; long time series are split over one thread per core.
# Result (bench/regrid.py, 100 fields, 2 shared cores): 0.25 -> 2 deg compute ~0.15 s instead of
# ~5.8 s, 2 -> 0.25 deg ~0.45 s instead of ~2.3 s; file -> file both below ``cdo remapcon``.
# Everything else is kept from xarray-regrid's ``conservative_regrid``: the polar rows it adds
# (zonal nan-mean of the edge row), NaN handling (numerator over filled data, denominator over the
# valid mask, kept where the valid weight >= 1e-6, i.e. ``nan_threshold=1``), the mask of targets
# outside the source centres, and the arithmetic dtype (float32 for float32 data, else float64).
# ``tests/test_regrid.py`` checks this path against the accessor on real ERA5 fields.

_VALID_MIN = 1e-6  # xarray-regrid's valid-weight threshold for nan_threshold=1.0
_PLAN_CACHE: dict[tuple[Any, ...], _ConservativePlan] = {}
_PLAN_CACHE_SIZE = 8  # a plan holds two dense weight matrices (<= ~20 MB for 0.25 deg <-> 0.25 deg)


class _PlanError(ValueError):
    """The formatted source grid cannot be mapped back onto the stored one (use the accessor)."""


def _band_blocks(w: np.ndarray, max_span: int) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Split the rows (targets) of ``w`` into consecutive blocks touching few source columns.

    Returns (first target, end target, contiguous source runs). A block grows while its source
    runs stay within ``max_span`` columns, so each BLAS call multiplies a short dense slab; a block
    crossing the periodic seam simply has two runs.
    """
    nz = w != 0
    blocks: list[tuple[int, int, list[tuple[int, int]]]] = []
    j0, nt = 0, w.shape[0]
    while j0 < nt:
        used = nz[j0].copy()
        j1 = j0 + 1
        while j1 < nt:
            cand = used | nz[j1]
            if int(cand.sum()) > max_span and used.any():
                break
            used, j1 = cand, j1 + 1
        idx = np.flatnonzero(used)
        cut = np.flatnonzero(np.diff(idx) > 1) + 1
        runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(idx, cut) if r.size]
        blocks.append((j0, j1, runs))
        j0 = j1
    return blocks


class _Stage:
    """One axis of the separable regridding: ``w`` (targets x stored sources) as banded blocks."""

    def __init__(self, w: np.ndarray) -> None:
        self.w = w
        self.n_target, self.n_source = w.shape
        band = int((w != 0).sum(axis=1).max()) if w.size else 1
        # a span of ~4 bands keeps BLAS calls few and the multiplied zeros under ~4x the non-zeros
        self.blocks = _band_blocks(w, max(16, 4 * band))
        self._cast: dict[np.dtype, list[tuple[int, int, list[tuple[int, int, np.ndarray]]]]] = {}

    def _typed(self, dtype: np.dtype) -> list[tuple[int, int, list[tuple[int, int, np.ndarray]]]]:
        if dtype not in self._cast:
            self._cast[dtype] = [
                (j0, j1, [(s0, s1, np.ascontiguousarray(self.w[j0:j1, s0:s1], dtype=dtype)) for s0, s1 in runs])
                for j0, j1, runs in self.blocks
            ]
        return self._cast[dtype]

    def rows(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Contract axis 1 of ``x`` (n, source, m) -> (n, target, m)."""
        if out is None:
            out = np.empty((x.shape[0], self.n_target, x.shape[2]), dtype=x.dtype)
        for j0, j1, runs in self._typed(x.dtype):
            dst = out[:, j0:j1, :]
            if not runs:
                dst[...] = 0
            for k, (s0, s1, wb) in enumerate(runs):
                if k == 0:
                    np.matmul(wb, x[:, s0:s1, :], out=dst)
                else:
                    dst += np.matmul(wb, x[:, s0:s1, :])
        return out

    def cols(self, x: np.ndarray, out3: np.ndarray | None = None) -> np.ndarray:
        """Contract the last axis of ``x`` (n, m, source) -> (n, m, target) in one 2-D product per block."""
        n, m, _ = x.shape
        x2 = np.ascontiguousarray(x).reshape(n * m, self.n_source)
        if out3 is None or not out3.flags.c_contiguous:
            given, out3 = out3, np.empty((n, m, self.n_target), dtype=x.dtype)
            if given is not None:
                given[...] = self.cols(x, out3)
                return given
        out = out3.reshape(n * m, self.n_target)  # C-contiguous: a view
        for j0, j1, runs in self._typed(x.dtype):
            dst = out[:, j0:j1]
            if not runs:
                dst[...] = 0
            for k, (s0, s1, wb) in enumerate(runs):
                if k == 0:
                    np.matmul(x2[:, s0:s1], wb.T, out=dst)
                else:
                    dst += x2[:, s0:s1] @ wb.T
        return out3


class _ConservativePlan:
    """xarray-regrid's conservative operator for one (stored source grid, target grid) pair.

    ``lat``/``lon`` hold the 1-D weights against the stored rows/columns; ``poles`` the polar rows
    xarray-regrid adds to a global source that stops short of the poles (stored edge row, its
    target weights); ``zonal`` the weights of the zonal mean that fills them (stored columns counted
    as often as they appear in the aligned source); ``cov_lat``/``cov_lon`` the targets between
    the outermost formatted source centres (xarray-regrid sets the rest to NaN).
    """

    def __init__(
        self,
        lat: np.ndarray,
        lon: np.ndarray,
        poles: list[tuple[int, np.ndarray]],
        zonal: np.ndarray,
        cov_lat: np.ndarray,
        cov_lon: np.ndarray,
        aligned_lat: np.ndarray,
        aligned_lon: np.ndarray,
    ) -> None:
        self.lat, self.lon = _Stage(lat), _Stage(lon)
        self.poles = [(row, np.flatnonzero(w), w[w != 0]) for row, w in poles if np.any(w != 0)]
        self.zonal = zonal
        self.lon_sum = lon.sum(axis=1)
        self.cov_lat, self.cov_lon = cov_lat, cov_lon
        self.aligned_lat, self.aligned_lon = aligned_lat, aligned_lon
        ns_lat, ns_lon, nt_lat, nt_lon = lat.shape[1], lon.shape[1], lat.shape[0], lon.shape[0]
        # the stage that shrinks the data more goes first (latitude when coarsening, longitude on
        # the small array when refining): compare the sizes of the two possible intermediates
        self.lat_first = nt_lat * ns_lon <= ns_lat * nt_lon

    @property
    def target_shape(self) -> tuple[int, int]:
        return self.lat.n_target, self.lon.n_target

    def _contract(self, x: np.ndarray, pole_vals: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray:
        """Both 1-D stages (into ``out`` if given), plus the polar rows' contribution."""
        if self.lat_first:
            y = self.lon.cols(self.lat.rows(x), out)
        else:
            y = self.lat.rows(self.lon.cols(x), out)
        if pole_vals is not None:
            # a polar row is constant along longitude, so after the longitude stage it is its
            # value times each target column's weight sum
            for k, (_, rows, w) in enumerate(self.poles):
                y[:, rows, :] += (w[None, :, None] * pole_vals[:, k, None, None]) * self.lon_sum[None, None, :].astype(y.dtype)
        return y

    def _poles(self, x: np.ndarray, zonal: np.ndarray) -> np.ndarray | None:
        return np.stack([x[:, row, :] @ zonal for row, _, _ in self.poles], axis=1) if self.poles else None

    def _apply3(self, x: np.ndarray, out: np.ndarray) -> None:
        """Regrid ``x`` (n, stored lat, stored lon) into ``out`` (n, target lat, target lon)."""
        dtype = x.dtype
        zonal = self.zonal.astype(dtype)
        nt_lat, nt_lon = self.target_shape
        # look for NaN in the smaller of input and output (a NaN always reaches the output:
        # through its own weight, a zero weight in the same BLAS block, or a polar row)
        if x[0].size <= nt_lat * nt_lon:
            has_nan = bool(np.isnan(x).any())
            if not has_nan:
                self._contract(x, self._poles(x, zonal), out)
        else:
            self._contract(x, self._poles(x, zonal), out)
            has_nan = bool(np.isnan(out).any())
        if has_nan:
            # xarray-regrid's skipna: weights renormalised over the valid cells
            valid = ~np.isnan(x)
            filled = np.where(valid, x, dtype.type(0))
            vf = valid.astype(dtype)
            p_num = p_den = None
            if self.poles:
                s, c = self._poles(filled, zonal), self._poles(vf, zonal)
                with np.errstate(invalid="ignore", divide="ignore"):
                    p_num = np.where(c > 0, s / c, 0).astype(dtype)  # nan-mean of the edge row, then fillna(0)
                p_den = (c > 0).astype(dtype)
            num = self._contract(filled, p_num, out)
            den = self._contract(vf, p_den)
            with np.errstate(invalid="ignore", divide="ignore"):
                np.divide(num, den, out=out)
            out[~(den >= _VALID_MIN)] = np.nan
        if not self.cov_lat.all():
            out[:, ~self.cov_lat, :] = np.nan
        if not self.cov_lon.all():
            out[:, :, ~self.cov_lon] = np.nan

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Regrid ``data`` (..., stored lat, stored lon) -> (..., target lat, target lon).

        Large inputs are split along the leading (time) axis over one thread per core, each
        running single-threaded BLAS: the block products are small, and OpenBLAS's own threads
        spin-wait per call, which on a shared 2-core machine made a run 10x slower at random.
        """
        dtype = np.result_type(np.float32, data.dtype)
        lead = data.shape[:-2]
        x = np.asarray(data, dtype=dtype).reshape((-1,) + data.shape[-2:])
        nt_lat, nt_lon = self.target_shape
        out = np.empty((x.shape[0], nt_lat, nt_lon), dtype=dtype)
        n = x.shape[0]
        workers = min(_n_workers(), n) if x.size + out.size >= _PARALLEL_MIN_SIZE else 1
        with _single_threaded_blas():
            if workers <= 1:
                self._apply3(x, out)
            else:
                from concurrent.futures import ThreadPoolExecutor

                edges = np.linspace(0, n, workers + 1).astype(int)
                with ThreadPoolExecutor(workers) as pool:
                    jobs = [pool.submit(self._apply3, x[i0:i1], out[i0:i1]) for i0, i1 in zip(edges[:-1], edges[1:])]
                    for job in jobs:
                        job.result()
        return out.reshape(lead + (nt_lat, nt_lon))


_PARALLEL_MIN_SIZE = 4_000_000  # elements in + out below which threads cost more than they save


def _n_workers() -> int:
    """Cores this process may use (affinity-aware, capped by ``OMP_NUM_THREADS`` as SLURM/CDO use it), at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return max(1, min(n, 8))


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread while :meth:`_ConservativePlan.apply` runs its own threads.

    threadpoolctl is optional (not a declared dependency): without it BLAS keeps its threads,
    which is correct, only slower when the cores are oversubscribed.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _build_plan(src_lat: np.ndarray, src_lon: np.ndarray, target: xr.Dataset, align: bool) -> _ConservativePlan:
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
    return _ConservativePlan(lat, lon, poles, zonal, cov_lat, cov_lon, aligned_lat, aligned_lon)


def _conservative_plan(src_lat: np.ndarray, src_lon: np.ndarray, target: xr.Dataset, align: bool) -> _ConservativePlan:
    """Cached :func:`_build_plan`: a pipeline regrids many files between the same two grids."""
    arrays = [np.ascontiguousarray(a, dtype="float64") for a in (src_lat, src_lon, target["lat"].values, target["lon"].values)]
    key = (align,) + tuple((a.size, a.tobytes()) for a in arrays)
    plan = _PLAN_CACHE.get(key)
    if plan is None:
        plan = _build_plan(arrays[0], arrays[1], target, align)
        if len(_PLAN_CACHE) >= _PLAN_CACHE_SIZE:
            _PLAN_CACHE.pop(next(iter(_PLAN_CACHE)))
        _PLAN_CACHE[key] = plan
    return plan


def _conservative(src: xr.Dataset, target: xr.Dataset, align: bool) -> xr.Dataset | None:
    """``src.regrid.conservative(target, latitude_coord="lat")`` without moving the data.

    With ``align`` the source is taken as stored (any latitude order, 0..360 or -180..180) and
    the plan includes :func:`normalise_coords` + :func:`align_longitudes`, so the result equals the
    accessor applied to ``align_longitudes(normalise_coords(src), target.lon)``. Dask-backed
    variables stay lazy (one call per chunk of the non-spatial dims). Returns None when the grid
    cannot be mapped (the caller then uses the accessor itself).
    """
    try:
        plan = _conservative_plan(src["lat"].values, src["lon"].values, target, align)
    except _PlanError as exc:
        log.warning("conservative regrid: fast path unavailable (%s); using xarray-regrid's accessor", exc)
        return None
    nt_lat, nt_lon = plan.target_shape
    out = {}
    for name, da in src.data_vars.items():
        res = xr.apply_ufunc(
            plan.apply,
            da,
            input_core_dims=[["lat", "lon"]],
            output_core_dims=[["lat", "lon"]],
            exclude_dims={"lat", "lon"},
            dask="parallelized",
            output_dtypes=[np.result_type(np.float32, da.dtype)],
            dask_gufunc_kwargs={"output_sizes": {"lat": nt_lat, "lon": nt_lon}, "allow_rechunk": True},
            keep_attrs=True,
        )
        out[name] = res.transpose(*da.dims)
    res_ds = xr.Dataset(out, attrs=dict(src.attrs))
    return res_ds.assign_coords(lat=target["lat"].values, lon=target["lon"].values)


def _xarray_regrid(src: xr.Dataset, target: xr.Dataset, method: str, spatial: list[str]) -> xr.Dataset:
    """One xarray-regrid call per method on an aligned source (as :func:`regrid`'s rim pass has).

    Conservative goes through :func:`_conservative` (xarray-regrid's weights, banded products);
    only if that cannot map the grid does it call the accessor, skipping NaNs only when there are
    any (``skipna`` costs a second contraction).
    """
    if method == "conservative":
        fast = _conservative(src[spatial], target, align=False)
        if fast is not None:
            return fast
        has_nan = any(bool(src[v].isnull().any()) for v in spatial)
        return src.regrid.conservative(target, latitude_coord="lat", skipna=has_nan)
    if method == "bilinear":
        return src.regrid.linear(target)
    return src.regrid.nearest(target)


def _regrid_rim(
    out: xr.Dataset, src: xr.Dataset, target: xr.Dataset, method: str, everywhere: bool = False
) -> xr.Dataset:
    """Fill the target rim xarray-regrid masks: centres beyond the outermost source *centre*.

    xarray-regrid treats only targets between the first and last source centres as covered, so
    when refining it leaves half a source cell NaN at each edge (the polar rows on a global grid,
    the domain edges of a regional one) although those cells lie inside the outer source cells.
    Those rows/columns are regridded again from an edge-padded source (:func:`_pad_edges`), then
    targets whose centre lies beyond the source's outer cell edges are set back to NaN (or, with
    ``everywhere``, for upsampling, filled from the nearest source cell).
    """
    tlat, tlon = target["lat"].values, target["lon"].values
    slat, slon = src["lat"].values, src["lon"].values
    blocks = [("lat", b) for b in _rim_blocks(tlat, slat)] + [("lon", b) for b in _rim_blocks(tlon, slon)]
    if not blocks:
        return out
    padded = _pad_edges(src)
    spatial = [v for v in out.data_vars if {"lat", "lon"} <= set(out[v].dims)]
    for dim, (idx, is_rim) in blocks:
        sub_t = target.isel({dim: idx})
        sub = _xarray_regrid(padded, sub_t, method, spatial)
        if dim == "lat":
            # a target row centred on the pole lies beyond the (clamped) ghost: it sits in the same
            # source row as its neighbour, so it takes the neighbour's value
            sub = sub.ffill("lat", limit=1).bfill("lat", limit=1) if sub.sizes["lat"] > 1 else sub
        sub = sub.isel({dim: np.flatnonzero(is_rim)})
        for v in spatial:
            upd = sub[v].transpose(*out[v].dims).astype(out[v].dtype)
            if isinstance(out[v].data, np.ndarray):
                # ``out`` is always a fresh result of this module: write the few rim rows in
                # place rather than copying a (100, 721, 1440) array once per block
                out[v][{dim: idx[is_rim]}] = upd.values
            else:
                out[v] = out[v].copy()
                out[v].loc[{dim: upd[dim].values}] = upd.values if not hasattr(upd.data, "dask") else upd.compute().values
    la0, la1 = _outer_edges(slat)
    lo0, lo1 = _outer_edges(slon)
    lat_in = (tlat >= max(la0, -90.0) - 1e-9) & (tlat <= min(la1, 90.0) + 1e-9)
    lon_in = (tlon >= lo0 - 1e-9) & (tlon <= lo1 + 1e-9)
    if not everywhere and lat_in.all() and lon_in.all():
        return out
    if not everywhere and all(isinstance(out[v].data, np.ndarray) for v in spatial):
        for v in spatial:  # in place, as above
            if not lat_in.all():
                out[v][{"lat": np.flatnonzero(~lat_in)}] = np.nan
            if not lon_in.all():
                out[v][{"lon": np.flatnonzero(~lon_in)}] = np.nan
        return out
    inside = lat_in[:, None] & lon_in[None, :]
    mask = xr.DataArray(inside, dims=("lat", "lon"), coords={"lat": tlat, "lon": tlon})
    if everywhere:
        near = src.sel(lat=xr.DataArray(tlat, dims="lat"), lon=xr.DataArray(tlon, dims="lon"), method="nearest")
        near = near.assign_coords(lat=tlat, lon=tlon)
        for v in spatial:
            out[v] = out[v].where(mask | out[v].notnull(), near[v].transpose(*out[v].dims))
    else:
        for v in spatial:
            out[v] = out[v].where(mask)
    return out


def _xesmf_regrid(ds: xr.Dataset, target: xr.Dataset, method: str) -> xr.Dataset:
    try:
        import xesmf
    except Exception as exc:  # ImportError, or ESMF's own failures at import
        raise ConfigError(
            "regrid.backend is 'xesmf': xesmf backend needs ESMF/esmpy, which cannot be imported here "
            f"({type(exc).__name__}: {exc}).",
            "conda install -c conda-forge xesmf (envs/regrid.yaml); or set regrid.backend: xarray-regrid.",
        ) from exc

    def with_bounds(d: xr.Dataset) -> xr.Dataset:
        from aid.grids import make_grid

        g = make_grid(d.lat.values, d.lon.values, _spacing(d.lat.values), _spacing(d.lon.values))
        return g.assign_coords(
            lat_b=np.append(g.lat_bnds.values[:, 0], g.lat_bnds.values[-1, 1]),
            lon_b=np.append(g.lon_bnds.values[:, 0], g.lon_bnds.values[-1, 1]),
        )

    xe_method = {"conservative": "conservative_normed", "bilinear": "bilinear", "nearest": "nearest_s2d"}[method]
    rg = xesmf.Regridder(with_bounds(ds), with_bounds(target), xe_method, unmapped_to_nan=True)
    return rg(ds, keep_attrs=True, skipna=method == "conservative")


def regrid(
    ds: xr.Dataset, target_grid: xr.Dataset, method: str = "conservative", backend: str = "xarray-regrid"
) -> xr.Dataset:
    """Regrid ``ds`` (..., lat, lon) onto ``target_grid``'s lat/lon cell centres.

    Handles 0..360 and -180..180 sources, descending latitudes, global sources (periodic seam),
    targets crossing the antimeridian, and the rim xarray-regrid leaves NaN when refining.
    Conservative regridding is NaN-aware: each target is the area-weighted mean over its *valid*
    overlap (renormalised), so masked variables keep their coastlines; targets with no valid
    overlap and targets wholly outside the source stay NaN. Float32 input gives float32 output.

    Conservative with the xarray-regrid backend never reorders or copies the input: xarray-regrid
    formats the grid and computes the 1-D weights, which are folded onto the stored rows/columns
    and applied as banded products (see the comment above ``_VALID_MIN``); the aligned source is
    built only when a rim must be filled. Other methods/backends align the data first.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown regrid method {method!r}.", f"use one of {', '.join(METHODS)}.")
    if backend not in ("xarray-regrid", "xesmf"):
        raise ConfigError(f"unknown regrid backend {backend!r}.", "set regrid.backend to xarray-regrid or xesmf.")
    ds = _rename_latlon(ds)
    target = _target_coords(target_grid)
    tlon = target["lon"].values
    for c in ("lat", "lon"):
        if c not in ds.dims:
            raise DataError(
                f"dataset with variables {sorted(map(str, ds.data_vars))} has no '{c}' dimension; cannot regrid.",
                "regrid only gridded (time, lat, lon) fields; point/station data are not supported.",
            )
    if ds.sizes["lat"] < 2 or ds.sizes["lon"] < 2:
        what = ds.attrs.get("aid_dataset_key") or ds.attrs.get("source_id") or f"dataset with variables {sorted(map(str, ds.data_vars))}"
        raise DataError(
            f"{what}: the source grid has {ds.sizes['lat']} row(s) x {ds.sizes['lon']} column(s); regridding needs "
            "at least 2 of each (cell edges are taken half-way between neighbouring centres).",
            "fetch a larger box around the domain (domain.halo_cells, or a larger domain) or use a source "
            "with more than one cell in each direction.",
        )
    spatial = [v for v in ds.data_vars if {"lat", "lon"} <= set(ds[v].dims)]
    other = [v for v in ds.data_vars if v not in spatial]
    out = None
    aux = ds  # where the non-gridded variables and the attributes come from
    if backend == "xarray-regrid":
        import xarray_regrid  # noqa: F401  (registers the .regrid accessor)

    if backend == "xarray-regrid" and method == "conservative":
        # the data stay as stored; sorting, longitude alignment and the periodic seam live in
        # the weights (see _conservative); only a rim to fill needs the aligned source itself
        out = _conservative(ds[spatial], target, align=True)
        if out is not None:
            plan = _conservative_plan(ds["lat"].values, ds["lon"].values, target, True)
            if _rim_blocks(target["lat"].values, plan.aligned_lat) or _rim_blocks(tlon, plan.aligned_lon):
                out = _regrid_rim(out, align_longitudes(normalise_coords(ds[spatial]), tlon), target, method)
            aux = align_longitudes(normalise_coords(ds[other]), tlon) if other else ds
    if out is None:
        ds = aux = align_longitudes(normalise_coords(ds), tlon)
        src = ds[spatial]
        if backend == "xesmf":
            out = _xesmf_regrid(src, target, method)
        else:
            out = _xarray_regrid(src, target, method, spatial)
            out = _regrid_rim(out, src, target, method)
    for name in spatial:
        out[name].attrs = dict(ds[name].attrs)
        if ds[name].dtype.kind == "f" and out[name].dtype != ds[name].dtype:
            out[name] = out[name].astype(ds[name].dtype)
    for name in other:
        out[name] = aux[name]
    out = out.assign_coords(lat=target["lat"].values, lon=target["lon"].values)
    out["lat"].attrs.update({"standard_name": "latitude", "units": "degrees_north", "axis": "Y"})
    out["lon"].attrs.update({"standard_name": "longitude", "units": "degrees_east", "axis": "X"})
    out.attrs = dict(ds.attrs)
    return out


def coarsen(fine: xr.Dataset, cfg: Mapping[str, Any]) -> xr.Dataset:
    """Reference fine fields -> the model's coarse grid, conservatively.

    Why always conservative: this is the single code path for the model's training pairs and its
    inference inputs (coarsened reference in the evaluation run), and a coarse cell must be the
    area mean of the fine cells in it for the pair to be consistent. ``regrid.method`` applies to
    GCM regridding only; ``regrid.backend`` is honoured here too.
    """
    from aid.grids import coarse_grid

    backend = cfg.get("regrid", {}).get("backend", "xarray-regrid")
    return regrid(fine, coarse_grid(cfg), "conservative", backend)


def regrid_file(in_path: str | os.PathLike[str], config: Mapping[str, Any], out_path: str | os.PathLike[str]) -> Path:
    """Rule ``regrid``: one fetched GCM variable -> the model coarse grid (``coarse_grid(config)``).

    Keeps the model calendar (time encoding) and the file's attributes, adds provenance. Refuses
    (DataError, nothing written) a source that leaves coarse cells without any value, which means
    the fetch box was too small for the configured domain.
    """
    from aid.grids import coarse_grid
    from aid.io import open_dataset, write_netcdf
    from aid.provenance import append_history, provenance_attrs, relpath_or_name

    rcfg = config.get("regrid", {})
    method = rcfg.get("method", "conservative")
    backend = rcfg.get("backend", "xarray-regrid")
    ds = open_dataset(in_path)
    time_encoding = dict(ds["time"].encoding) if "time" in ds.variables else {}
    target = coarse_grid(config)
    out = regrid(ds, target, method, backend).load()
    for name, da in out.data_vars.items():
        if not {"lat", "lon"} <= set(da.dims):
            continue
        reduce = [d for d in da.dims if d not in ("lat", "lon")]
        empty = da.isnull().all(dim=reduce) if reduce else da.isnull()
        if bool(empty.any()):
            bad = empty.where(empty, drop=True)
            raise DataError(
                f"{in_path}: variable '{name}' does not cover the model coarse grid after {method} regridding "
                f"({int(empty.sum())} coarse cells without data, e.g. lat {float(bad.lat[0])}, lon {float(bad.lon[0])}; "
                f"source lat {float(ds.lat.min())}..{float(ds.lat.max())}, lon {float(ds.lon.min())}..{float(ds.lon.max())}).",
                "fetch a larger box (domain.halo_cells) or check domain.lat/domain.lon against the GCM's coverage.",
            )
    if "time" in out.variables:
        out["time"].encoding.update({k: v for k, v in time_encoding.items() if k in ("units", "calendar", "dtype")})
    out.attrs.update(
        provenance_attrs(
            "regrid",
            regrid_method=method,
            regrid_backend=backend,
            regrid_target=f"{target.sizes['lat']}x{target.sizes['lon']} cells of {target.attrs.get('resolution_deg')} deg",
            regrid_input=relpath_or_name(in_path),
        )
    )
    out.attrs["history"] = append_history(ds.attrs, f"regrid ({method}, {backend}) of {relpath_or_name(in_path)}")
    encoding = {v: {"zlib": True, "complevel": 4} for v in out.data_vars}
    return write_netcdf(out, out_path, encoding=encoding)


def _cubic_weights(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Matrix W (len(dst) x len(src)) of Keys cubic convolution (a = -0.5) on a regular 1-D axis.

    Points outside the source range use linearly extrapolated ghost cells, so edge cells are
    never NaN and a linear field is reproduced exactly.
    """
    n = src.size
    if n == 1:
        return np.ones((dst.size, 1))
    h = float(src[1] - src[0])
    x = (dst - src[0]) / h
    W = np.zeros((dst.size, n))
    a = -0.5

    def kern(t: np.ndarray) -> np.ndarray:
        t = np.abs(t)
        return np.where(
            t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1, np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0)
        )

    base = np.floor(x).astype(int)
    for off in (-1, 0, 1, 2):
        j = base + off
        w = kern(x - j)
        # ghost cells: linear extrapolation f(-k) = f0 + k (f0 - f1), f(n-1+k) = f_{n-1} + k (f_{n-1} - f_{n-2})
        for i_dst, (jj, ww) in enumerate(zip(j, w)):
            if ww == 0:
                continue
            if jj < 0:
                k = -jj
                W[i_dst, 0] += ww * (1 + k)
                W[i_dst, 1] -= ww * k
            elif jj > n - 1:
                k = jj - (n - 1)
                W[i_dst, n - 1] += ww * (1 + k)
                W[i_dst, n - 2] -= ww * k
            else:
                W[i_dst, jj] += ww
    return W


def upsample(coarse: xr.Dataset, fine_grid: xr.Dataset, method: str = "bicubic") -> xr.Dataset:
    """Bring a coarse field back to the fine grid: ``bicubic`` (smooth) or ``conservative`` (blocky).

    Bicubic is separable Keys cubic convolution through the coarse cell centres with linear edge
    extrapolation: no NaN on the fine domain, linear fields reproduced exactly.
    """
    coarse = normalise_coords(coarse)
    if method == "conservative":
        target = _target_coords(fine_grid)
        src = align_longitudes(coarse, target["lon"].values)
        out = regrid(coarse, fine_grid, "conservative")
        # fine cells beyond the coarse cover (domain rim): the nearest coarse cell's value
        return _regrid_rim(out, src, target, "conservative", everywhere=True)
    if method != "bicubic":
        raise ConfigError(f"unknown upsampling method {method!r}.", "use bicubic or conservative.")
    coarse = align_longitudes(coarse, np.asarray(fine_grid["lon"].values, dtype=float))
    Wy = _cubic_weights(coarse.lat.values, np.asarray(fine_grid.lat.values, dtype=float))
    Wx = _cubic_weights(coarse.lon.values, np.asarray(fine_grid.lon.values, dtype=float))
    out = xr.Dataset(coords={k: v for k, v in coarse.coords.items() if "lat" not in v.dims and "lon" not in v.dims})
    out = out.assign_coords(lat=fine_grid.lat.values, lon=fine_grid.lon.values)
    for name, da in coarse.data_vars.items():
        if not {"lat", "lon"} <= set(da.dims):
            continue
        if bool(da.isnull().any()):
            raise DataError(
                f"variable {name!r} has NaN cells on the coarse grid; bicubic upsampling would spread them.",
                "fill or mask the coarse input before downscaling (check the regrid/adjust outputs).",
            )
        arr = da.transpose(..., "lat", "lon")
        vals = np.einsum("ij,...jk,lk->...il", Wy, arr.values.astype("float64"), Wx)
        out[name] = (arr.dims, vals.astype(da.dtype if da.dtype.kind == "f" else "float64"), dict(da.attrs))
    out.attrs = dict(coarse.attrs)
    return out
