"""Training pairs read lazily from the reference files, and the conditioning channels.

Why shared: the conditioning the network sees at inference must be built exactly as in training:
the coarse fields brought back to 0.25 deg with :func:`aid.regrid.upsample` (the same function the
bicubic baseline uses), the static fields at the fine grid, and the latitude/longitude channels.

Why lazy: decades of a continental 0.25 deg domain do not fit in host memory. :class:`Archive`
keeps the reference files open as dask-backed arrays and reads (time block, spatial tile) pieces
on demand; the upsampling is the separable linear operator of :func:`aid.regrid.upsample`
(probed once and verified), applied per piece, so a piece's conditioning is identical to the
whole domain's. :class:`WindowStream` turns pieces into training batches through a bounded
cache; with a cache as large as the archive it is the in-memory loader (one code path).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from aid.errors import DataError

log = logging.getLogger(__name__)

#: Static conditioning channels: orography (km), land-sea mask (-1..1), sin(lat), sin/cos(lon).
STATIC_NAMES = ("orography", "land_sea_mask", "latitude", "sin_lon", "cos_lon")
N_STATIC = len(STATIC_NAMES)
G0 = 9.80665


def _to_lat_lon(ds: xr.Dataset) -> xr.Dataset:
    ren = {k: v for k, v in {"latitude": "lat", "longitude": "lon"}.items() if k in ds.dims or k in ds.coords}
    return ds.rename(ren) if ren else ds


def static_fields(static_path: str | os.PathLike[str], lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Orography (m) and land-sea mask (0..1) of the ERA5 constants file at the fine grid.

    The file runs lat 90 -> -90 and lon 0 -> 359.75; cells are selected exactly (0.25 deg lattice).
    """
    from aid.io import open_dataset

    ds = _to_lat_lon(open_dataset(static_path, chunks=None))
    for name in ("z", "lsm"):
        if name not in ds:
            raise DataError(f"{static_path}: static file lacks variable {name!r} (needs z and lsm).",
                            "point reference.static at the ERA5 constants file (z, lsm).")
    lon360 = np.mod(np.asarray(lon, dtype=float), 360.0)
    try:
        sel = ds[["z", "lsm"]].sel(lat=np.asarray(lat, dtype=float), lon=lon360, method="nearest", tolerance=1e-3)
    except KeyError as exc:
        raise DataError(f"{static_path}: does not cover the fine grid ({exc}).",
                        "use a global 0.25 deg static file.") from exc
    z = sel["z"].squeeze(drop=True).transpose("lat", "lon").values.astype(np.float64)
    lsm = sel["lsm"].squeeze(drop=True).transpose("lat", "lon").values.astype(np.float64)
    return z / G0, lsm


def static_channels(orography_m: np.ndarray, lsm: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(N_STATIC, H, W) float32 conditioning: scaled orography, mask, latitude, periodic longitude."""
    h, w = orography_m.shape
    la = np.broadcast_to(np.deg2rad(np.asarray(lat, dtype=float))[:, None], (h, w))
    lo = np.broadcast_to(np.deg2rad(np.asarray(lon, dtype=float))[None, :], (h, w))
    return np.stack([orography_m / 1000.0, 2 * lsm - 1, np.sin(la), np.sin(lo), np.cos(lo)]).astype(np.float32)


def _calendar_parts(times: Sequence[Any]) -> list[tuple[int, int, int, int, int]]:
    """(year, month, day, hour, day-of-year) for numpy datetime64 or cftime values."""
    import pandas as pd

    out = []
    for t in times:
        if isinstance(t, np.datetime64):
            t = pd.Timestamp(t)
        doy = getattr(t, "dayofyr", None) or getattr(t, "dayofyear")
        out.append((int(t.year), int(t.month), int(t.day), int(t.hour), int(doy)))
    return out


def date_keys(times: Sequence[Any]) -> list[str]:
    """YYYYMMDDHH strings: the date part of every member's noise seed."""
    return [f"{y:04d}{m:02d}{d:02d}{h:02d}" for y, m, d, h, _ in _calendar_parts(times)]


def lagged_date_keys(times: Sequence[Any], lags: int) -> list[list[str]]:
    """For each time, the :func:`date_keys` of the same hour 0..``lags`` calendar days earlier.

    Days are counted in the times' own calendar (cftime arithmetic for noleap/360_day), so the
    same date gets the same keys whichever job or batch holds it.
    """
    import datetime

    import pandas as pd

    out = []
    for t in times:
        if isinstance(t, np.datetime64):
            t = pd.Timestamp(t)
        out.append(date_keys([t - datetime.timedelta(days=j) for j in range(lags + 1)]))
    return out


def time_features(times: Sequence[Any]) -> np.ndarray:
    """(N, 4) float32: sin/cos of day-of-year (period 365.25) and of hour (period 24)."""
    parts = _calendar_parts(times)
    doy = np.array([p[4] - 1 + p[3] / 24.0 for p in parts]) * 2 * np.pi / 365.25
    hour = np.array([p[3] for p in parts]) * 2 * np.pi / 24.0
    return np.stack([np.sin(doy), np.cos(doy), np.sin(hour), np.cos(hour)], axis=1).astype(np.float32)


def upsampled(coarse: xr.Dataset, lat: np.ndarray, lon: np.ndarray, variables: Sequence[str], method: str) -> np.ndarray:
    """(N, C, H, W) float64: coarse fields brought to the fine grid with :func:`aid.regrid.upsample`."""
    from aid.grids import make_grid
    from aid.regrid import upsample

    grid = make_grid(np.asarray(lat), np.asarray(lon), 0.25)
    up = upsample(coarse[list(variables)], grid, method)
    return np.stack([up[v].transpose("time", "lat", "lon").values.astype(np.float64) for v in variables], axis=1)


def _open_vars(paths: Sequence[str | os.PathLike[str]], variables: Sequence[str], what: str) -> xr.Dataset:
    """The variables of ``paths``, lazily (dask chunks), with normalised coordinates."""
    from aid.io import open_dataset
    from aid.regrid import normalise_coords

    found: dict[str, xr.DataArray] = {}
    for p in paths:
        ds = normalise_coords(open_dataset(p))
        for v in variables:
            if v in ds.data_vars and v not in found:
                found[v] = ds[v]
    missing = [v for v in variables if v not in found]
    if missing:
        raise DataError(f"{what} files {[str(p) for p in paths]} hold no variable(s) {missing}.",
                        "re-run the reference rule, or drop these variables from search.variables.")
    return xr.Dataset({v: found[v].drop_vars([c for c in found[v].coords if c not in ("time", "lat", "lon")])
                       for v in variables})


def upsample_operator(coarse_lat: np.ndarray, coarse_lon: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                      method: str) -> tuple[np.ndarray, np.ndarray]:
    """(Wy, Wx) with ``upsample(X) == Wy @ X @ Wx.T`` for every coarse field X, float64.

    Probed from :func:`aid.regrid.upsample` itself (one-hot rows and columns), then checked on a
    random field, so training pieces get exactly the conditioning inference builds for the domain.
    """
    from aid.grids import make_grid
    from aid.regrid import upsample

    na, no = len(coarse_lat), len(coarse_lon)
    grid = make_grid(np.asarray(lat), np.asarray(lon), 0.25)
    coords = {"lat": np.asarray(coarse_lat, dtype=float), "lon": np.asarray(coarse_lon, dtype=float)}
    probe = np.zeros((na + no + 1, na, no))
    for j in range(na):
        probe[j, j, :] = 1.0
    for j in range(no):
        probe[na + j, :, j] = 1.0
    rng = np.random.default_rng(0)
    probe[-1] = rng.normal(size=(na, no))
    ds = xr.Dataset({"p": (("k", "lat", "lon"), probe)}, coords=coords)
    out = upsample(ds, grid, method)["p"].transpose("k", "lat", "lon").values.astype(np.float64)
    wy = out[:na, :, 0].T.copy()
    wx = out[na : na + no, 0, :].T.copy()
    # rows of the one-hot-in-lon probe at lat 0 are Wy.sum(1)[0] * Wx; normalise that factor out
    wx /= max(float(wy[0].sum()), 1e-12)
    check = wy @ probe[-1] @ wx.T
    if not np.allclose(check, out[-1], atol=1e-8 * max(1.0, float(np.abs(out[-1]).max()))):
        raise DataError(f"upsampling method {method!r} is not a separable linear map on this grid; the streaming "
                        "loader cannot apply it per piece.", "use model.upsample: bicubic.")
    return wy, wx


@dataclass
class Archive:
    """Reference (fine, coarse) pairs of the training period, kept lazy on disk.

    ``fine``/``coarse`` hold the variables as dask-backed arrays; :meth:`read` returns one
    (time block, rows, columns) piece in physical units. Nothing here scales with the period.
    """

    variables: list[str]
    fine: xr.Dataset
    coarse: xr.Dataset
    lat: np.ndarray
    lon: np.ndarray
    wy: np.ndarray
    wx: np.ndarray
    fine_paths: list[str]
    coarse_paths: list[str]
    times: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.times = self.fine["time"].values

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.lat), len(self.lon)

    @property
    def periodic(self) -> bool:
        """The fine grid spans 360 degrees of longitude (windows then wrap around)."""
        return abs(len(self.lon) * 0.25 - 360.0) < 1e-6

    def _read_raw(self, t0: int, t1: int, rows: slice, cols: np.ndarray, cr: np.ndarray,
                  cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = np.stack([self.fine[v].isel(time=slice(t0, t1), lat=rows, lon=cols).transpose("time", "lat", "lon")
                      .values.astype(np.float64) for v in self.variables], axis=1)
        c = np.stack([self.coarse[v].isel(time=slice(t0, t1), lat=cr, lon=cc).transpose("time", "lat", "lon")
                      .values.astype(np.float64) for v in self.variables], axis=1)
        return f, c

    def read(self, t0: int, t1: int, rows: slice, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fine, upsampled coarse) of time steps t0:t1 on ``rows`` x ``cols``, (T, C, h, w) float64."""
        import dask

        cols = np.asarray(cols)
        wy, wx = self.wy[rows], self.wx[cols]
        cr = np.flatnonzero(np.abs(wy).sum(0) > 0)
        cc = np.flatnonzero(np.abs(wx).sum(0) > 0)
        try:
            with dask.config.set(scheduler="synchronous"):
                f, c = self._read_raw(t0, t1, rows, cols, cr, cc)
        except (OSError, RuntimeError, ValueError) as exc:  # netCDF4/h5py: a file damaged after opening
            raise DataError(f"reference files {self.fine_paths} / {self.coarse_paths}: time steps {t0}-{t1} cannot be "
                            f"read ({type(exc).__name__}: {exc}); a file is corrupt or truncated.",
                            "regenerate the reference files, then re-run.") from exc
        if not (np.isfinite(f).all() and np.isfinite(c).all()):
            raise DataError(f"reference files {self.fine_paths} / {self.coarse_paths} contain NaN/inf on the domain "
                            f"(time steps {t0}-{t1}).", "fill or mask the reference before training.")
        up = np.einsum("ij,tcjk,lk->tcil", wy[:, cr], c, wx[:, cc], optimize=True)
        return f, up

    def domain_mean(self, t0: int, t1: int) -> np.ndarray:
        """(T, C) whole-domain mean of the upsampled coarse field of steps t0:t1, physical units.

        Read from the coarse file alone: the upsampling is linear, so the mean of the upsampled
        field is the coarse field weighted by the column means of the upsampling operator.
        """
        a, b = self.wy.mean(0), self.wx.mean(0)
        cr, cc = np.flatnonzero(a != 0), np.flatnonzero(b != 0)
        c = np.stack([self.coarse[v].isel(time=slice(t0, t1), lat=cr, lon=cc).transpose("time", "lat", "lon")
                      .values.astype(np.float64) for v in self.variables], axis=1)
        if not np.isfinite(c).all():
            raise DataError(f"reference files {self.coarse_paths} contain NaN/inf on the domain (time steps {t0}-{t1}).",
                            "fill or mask the reference before training.")
        return np.einsum("j,tcjk,k->tc", a[cr], c, b[cc], optimize=True)


#: HDF5 chunk cache per open variable while streaming, bytes. netCDF-C's default (64 MiB per
#: variable) fills up over a long period and is what made a 20-year run's RSS exceed a 1-year
#: run's; pieces are read in time-contiguous blocks, so a chunk is rarely read twice anyway.
CHUNK_CACHE_BYTES = 4 * 2**20
#: Arrays above this many bytes are mmap-allocated and returned to the OS when freed (glibc). The
#: dynamic threshold otherwise rises to 32 MiB and the per-piece temporaries fragment the heap.
MMAP_THRESHOLD_BYTES = 1 * 2**20


def _bounded_process_memory() -> None:
    """Process-wide settings that keep a streaming run's memory flat (see the constants above)."""
    with contextlib.suppress(Exception):
        import netCDF4

        _, nelems, preemption = netCDF4.get_chunk_cache()
        netCDF4.set_chunk_cache(CHUNK_CACHE_BYTES, nelems, preemption)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD_BYTES)  # M_MMAP_THRESHOLD


def open_archive(
    cfg: Mapping[str, Any],
    fine_paths: Sequence[str | os.PathLike[str]],
    coarse_paths: Sequence[str | os.PathLike[str]],
) -> Archive:
    """Open the reference fine/coarse files over ``model.train.years`` lazily, on the domain grid."""
    from aid.grids import fine_grid

    _bounded_process_memory()
    variables = list(cfg["search"]["variables"])
    y0, y1 = cfg["model"]["train"]["years"]
    fine = _open_vars(fine_paths, variables, "reference fine")
    coarse = _open_vars(coarse_paths, variables, "reference coarse")
    if y0 is not None:
        years = list(range(int(y0), int(y1) + 1))
        fine = fine.sel(time=fine.time.dt.year.isin(years))
        coarse = coarse.sel(time=coarse.time.dt.year.isin(years))
    fine, coarse = xr.align(fine, coarse, join="inner", exclude=["lat", "lon"])
    if fine.sizes["time"] == 0:
        raise DataError(
            f"reference files {[str(p) for p in fine_paths]} have no common time steps with the coarse files in "
            f"model.train.years {[y0, y1]}.",
            "set model.train.years inside the reference period (reference rule outputs).",
        )
    grid = fine_grid(cfg)
    lat, lon = grid.lat.values, grid.lon.values
    try:
        fine = fine.sel(lat=lat, lon=lon, method="nearest", tolerance=1e-4)
    except KeyError as exc:
        raise DataError(f"reference fine files {[str(p) for p in fine_paths]} do not cover the domain grid ({exc}).",
                        "regenerate the reference with the current domain.") from exc
    method = cfg["model"]["upsample"]
    wy, wx = upsample_operator(coarse.lat.values, coarse.lon.values, lat, lon, method)
    log.info("training archive: %d time steps, %d channels, %d x %d fine cells (upsample %s), read lazily",
             fine.sizes["time"], len(variables), len(lat), len(lon), method)
    return Archive(variables, fine, coarse, np.asarray(lat, dtype=float), np.asarray(lon, dtype=float), wy, wx,
                   [str(p) for p in fine_paths], [str(p) for p in coarse_paths])


def validation_split(times: Sequence[Any], val_fraction: float, block_days: float) -> tuple[np.ndarray, np.ndarray]:
    """(training, validation) time indices: every k-th block of consecutive steps is validation.

    Why blocks spread over the period (k = round(1 / val_fraction)): the last 10 % of a period is
    one season, and a checkpoint chosen on it is chosen for that season. Blocks (``block_days``
    long, shortened for short periods so that at least three blocks per group exist) keep
    neighbouring, strongly correlated steps on the same side of the split. The middle block of
    each group of k is held out, so validation never sits only at the period's ends. A block is
    never shorter than a day: the hours of a day are near-copies of each other, so validation hours
    between training hours of the same day would score the network on fields it has practically
    seen, and the sampler tuned on them (aid.model.tune) would be under-dispersed on new days. A
    period shorter than k blocks (a few days of hours) holds out its middle block instead.
    """
    n = len(times)
    if val_fraction <= 0 or n < 20:
        return np.arange(n), np.arange(0)
    k = max(2, int(round(1.0 / val_fraction)))
    tt = np.asarray(times)
    if n > 1 and np.issubdtype(tt.dtype, np.datetime64):
        step_days = float(np.median(np.diff(tt).astype("timedelta64[s]").astype(np.float64))) / 86400.0
    else:
        step_days = 1.0
    per_block = max(1, int(round(block_days / max(step_days, 1e-9))))
    per_day = max(1, int(round(1.0 / max(step_days, 1e-9))))
    per_block = max(per_day, min(per_block, n // (3 * k)))
    block = np.arange(n) // per_block
    n_blocks = int(block[-1]) + 1
    if n_blocks >= k:
        val = block % k == k // 2
    elif n_blocks >= 2:  # fewer whole days than one group: hold out the middle day(s) block
        val = block == n_blocks // 2
        log.warning("validation: %d steps make only %d blocks of %d steps; the middle block (%.0f %% of the "
                    "steps, more than val_fraction %g) is held out", n, n_blocks, per_block, 100.0 / n_blocks,
                    val_fraction)
    else:
        log.warning("validation: %d steps are one block of %d; no validation fields (no early stopping, "
                    "no sampler tuning)", n, per_block)
        return np.arange(n), np.arange(0)
    return np.flatnonzero(~val), np.flatnonzero(val)


def tile_starts_cover(n: int, tile: int, window: int, periodic: bool = False) -> list[int]:
    """Starts of tiles of length ``tile`` such that every window of length ``window`` lies in one."""
    if tile >= n:
        return [0]
    stride = max(1, tile - window)
    if periodic:
        return list(range(0, n, stride))
    starts = list(range(0, n - tile + 1, stride))
    if starts[-1] != n - tile:
        starts.append(n - tile)
    return starts


@dataclass
class Unit:
    """One cacheable piece of the training stream: consecutive training steps x a spatial tile."""

    times: np.ndarray  # archive time indices (consecutive training steps)
    rows: slice
    cols: np.ndarray


#: Samples drawn per time step of a loaded unit while it is in the active set (see WindowStream).
REUSE = 4


class WindowStream:
    """Training batches of random (time, window) pieces through a bounded cache of units.

    The stream of step ``s`` is a pure function of (seed, s, rank), so a resumed run draws exactly
    what the uninterrupted run would have. Units (``block`` training steps x a tile) are visited
    in a seeded random order; at any step a sliding set of ``active`` units is in play, and each
    sample of a batch picks one of them, then a time and a window position inside it. The active
    set advances by one unit every ``dwell`` steps, so each unit is read once per pass and serves
    about :data:`REUSE` samples per time step it holds (random windows: distinct samples).
    ``active`` is as many units as ``cache_mb`` holds: with a cache as large as the archive every
    sample draws from all training steps (the former in-memory loader).

    ``make`` builds a unit's tensors, (y, cond) float32 (T, C, h, w) in model units; under DDP each
    rank draws its own shard of the sample stream (rank enters every seed).
    """

    def __init__(self, units: list[Unit], make: Callable[[Unit], tuple[np.ndarray, np.ndarray]], window: tuple[int, int],
                 batch: int, seed: int, rank: int, world: int, bytes_per_unit: int, cache_mb: float) -> None:
        self.units, self.make, self.window = units, make, window
        self.batch, self.seed, self.rank, self.world = batch, seed, rank, world
        cap = int(max(1.0, cache_mb) * 2**20 // max(1, bytes_per_unit))
        self.active = max(1, min(len(units), cap))
        mean_len = float(np.mean([len(u.times) for u in units]))
        self.dwell = max(1, int(round(REUSE * mean_len / max(1, batch))))
        self.full = self.active >= len(units)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self.loads = 0

    def _order(self, rnd: int) -> np.ndarray:
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 7919 * rnd + 13)
        return torch.randperm(len(self.units), generator=g).numpy()

    def _active_units(self, step: int) -> np.ndarray:
        if self.full:
            return np.arange(len(self.units))
        pos = step // self.dwell + self.rank * (len(self.units) // max(1, self.world))
        rnd, off = divmod(pos, len(self.units))
        order = np.concatenate([self._order(rnd), self._order(rnd + 1)])
        return order[off : off + self.active]

    def _get(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        if u in self._cache:
            self._cache.move_to_end(u)
            return self._cache[u]
        data = self.make(self.units[u])
        self.loads += 1
        self._cache[u] = data
        while len(self._cache) > self.active:
            self._cache.popitem(last=False)
        return data

    def batch_at(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(y, cond, time index, window row start, window col start) of ``step``'s batch."""
        import torch

        g = torch.Generator().manual_seed(self.seed * 1_000_003 + 7 * step + 104729 * self.rank + 3)
        act = self._active_units(step)
        ph, pw = self.window
        ys, cs, ts, r0s, c0s = [], [], [], [], []
        picks = act[torch.randint(len(act), (self.batch,), generator=g).numpy()]
        for u in picks:
            unit = self.units[int(u)]
            y, c = self._get(int(u))
            th, tw = y.shape[-2:]
            ti = int(torch.randint(len(unit.times), (1,), generator=g))
            r = int(torch.randint(th - ph + 1, (1,), generator=g))
            cc = int(torch.randint(tw - pw + 1, (1,), generator=g))
            ys.append(y[ti, :, r : r + ph, cc : cc + pw])
            cs.append(c[ti, :, r : r + ph, cc : cc + pw])
            ts.append(unit.times[ti])
            r0s.append(unit.rows.start + r)
            c0s.append(int(unit.cols[cc]))
        return np.stack(ys), np.stack(cs), np.asarray(ts), np.asarray(r0s), np.asarray(c0s)


class StepDataset:
    """``torch.utils.data.Dataset`` view of a :class:`WindowStream`: item ``s`` is step ``s``'s batch.

    With ``DataLoader(batch_size=None, num_workers=N)`` the workers prepare the next steps' batches
    in parallel, each with its own cache (``cache_mb`` is per worker).
    """

    def __init__(self, stream: WindowStream, first: int, last: int) -> None:
        self.stream, self.first, self.last = stream, first, last

    def __len__(self) -> int:
        return max(0, self.last - self.first)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        import torch

        y, c, t, r0, c0 = self.stream.batch_at(self.first + int(i))
        return (torch.from_numpy(np.ascontiguousarray(y)), torch.from_numpy(np.ascontiguousarray(c)),
                torch.from_numpy(t), torch.from_numpy(r0), torch.from_numpy(c0))


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)


def step_loader(stream: WindowStream, first: int, last: int, workers: int) -> Any:
    """The training batches of steps first..last-1, in order (DataLoader with ``workers`` processes)."""
    from torch.utils.data import DataLoader

    ds = StepDataset(stream, first, last)
    if workers <= 0:
        return (ds[i] for i in range(len(ds)))
    return DataLoader(ds, batch_size=None, shuffle=False, num_workers=workers, worker_init_fn=_worker_init,
                      persistent_workers=False, prefetch_factor=2)
