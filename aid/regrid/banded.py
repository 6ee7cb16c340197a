"""Applying separable conservative weights: banded BLAS products per axis, NaN-aware.

The weights come from :mod:`aid.regrid.weights`; this module only multiplies them onto data as
stored (see the comment above ``_VALID_MIN``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import numpy as np


# --------------------------------------------------------------------------------------------
# Conservative regridding: xarray-regrid's weights, applied per axis as banded matrix products
# --------------------------------------------------------------------------------------------
#
# Why this exists: ``ds.regrid.conservative`` is the reference engine, but on global 0.25 deg fields
# its time goes into (1) reordering/copying the data before any arithmetic: ``normalise_coords``/
# ``sortby`` (lat 90 -> -90, lon 0..360 -> -180..180), ``align_longitudes``' periodic ``concat``, and
# xarray-regrid's own padding, each a full copy of the input with fancy indexing; (2) the contraction
# itself: with the ``sparse`` package importable xarray-regrid turns its weights into ``sparse.COO``
# and ``xr.dot`` ends in ``sparse.tensordot`` (plus numba compilation in every new process); without
# ``sparse`` it is a dense einsum whose products are almost all with zero weights (a target cell
# overlaps only a few source rows and columns).
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
# Its speed against the accessor and ``cdo remapcon`` is measured by ``bench/regrid.py`` (figures in
# the README's benchmark table).
# Everything else is kept from xarray-regrid's ``conservative_regrid``: the polar rows it adds
# (zonal nan-mean of the edge row), NaN handling (numerator over filled data, denominator over the
# valid mask, kept where the valid weight >= 1e-6, i.e. ``nan_threshold=1``), the mask of targets
# outside the source centres, and the arithmetic dtype (float32 for float32 data, else float64).
# ``tests/test_regrid.py`` checks this path against the accessor on real ERA5 fields.

_VALID_MIN = 1e-6  # xarray-regrid's valid-weight threshold for nan_threshold=1.0


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

        Called from the main thread, large inputs are split along the leading (time) axis over one
        thread per core, each running single-threaded BLAS: the block products are small, and
        OpenBLAS's own threads spin-wait per call, which on oversubscribed cores makes run times
        erratic. Called from any other thread (a dask task: xarray's ``apply_ufunc`` with
        ``dask="parallelized"`` runs one call per chunk in dask's pool) it computes in that thread
        and leaves BLAS's thread count alone: OpenBLAS's ``openblas_set_num_threads`` is
        process-wide and not safe while another thread is inside a BLAS call, so toggling it from
        several dask threads at once can crash the process. Callers that run dask wrap the compute
        in :func:`single_threaded_blas` from the main thread instead (:func:`aid.regrid.remap.regrid_file`).
        """
        dtype = np.result_type(np.float32, data.dtype)
        lead = data.shape[:-2]
        x = np.asarray(data, dtype=dtype).reshape((-1,) + data.shape[-2:])
        nt_lat, nt_lon = self.target_shape
        out = np.empty((x.shape[0], nt_lat, nt_lon), dtype=dtype)
        n = x.shape[0]
        main = threading.current_thread() is threading.main_thread()
        workers = min(_n_workers(), n) if main and x.size + out.size >= _PARALLEL_MIN_SIZE else 1
        if workers <= 1:
            self._apply3(x, out)
        else:
            from concurrent.futures import ThreadPoolExecutor

            edges = np.linspace(0, n, workers + 1).astype(int)
            with single_threaded_blas(), ThreadPoolExecutor(workers) as pool:
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
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread for the duration; enter it only from the main thread, before any
    other thread of the process runs BLAS (the setting is process-wide; see :meth:`_ConservativePlan.apply`).

    threadpoolctl is optional (not a declared dependency): without it BLAS keeps its threads,
    which is correct, only slower when the cores are oversubscribed.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("single_threaded_blas() changes a process-wide setting: enter it from the main thread")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
