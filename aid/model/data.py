"""Training pairs and conditioning channels, shared by training and inference.

Why shared: the conditioning the network sees at inference must be built exactly as in training:
the coarse fields brought back to 0.25 deg with :func:`aid.regrid.upsample` (the same function the
bicubic baseline uses), the static fields at the fine grid, and the latitude/longitude channels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


@dataclass
class Pairs:
    """Training pairs in physical units on the fine grid."""

    variables: list[str]
    fine: np.ndarray  # (N, C, H, W)
    up: np.ndarray  # (N, C, H, W) upsampled coarse
    times: np.ndarray
    lat: np.ndarray
    lon: np.ndarray


def _open_vars(paths: Sequence[str | os.PathLike[str]], variables: Sequence[str], what: str) -> xr.Dataset:
    from aid.io import open_dataset
    from aid.regrid import normalise_coords

    found: dict[str, xr.DataArray] = {}
    for p in paths:
        ds = normalise_coords(open_dataset(p, chunks=None))
        for v in variables:
            if v in ds.data_vars and v not in found:
                found[v] = ds[v]
    missing = [v for v in variables if v not in found]
    if missing:
        raise DataError(f"{what} files {[str(p) for p in paths]} hold no variable(s) {missing}.",
                        "re-run the reference rule, or drop these variables from search.variables.")
    return xr.Dataset({v: found[v].drop_vars([c for c in found[v].coords if c not in ("time", "lat", "lon")])
                       for v in variables})


def load_pairs(
    cfg: Mapping[str, Any],
    fine_paths: Sequence[str | os.PathLike[str]],
    coarse_paths: Sequence[str | os.PathLike[str]],
) -> Pairs:
    """Read reference fine/coarse files over ``model.train.years`` and build upsampled pairs."""
    from aid.grids import fine_grid

    variables = list(cfg["search"]["variables"])
    y0, y1 = cfg["model"]["train"].get("years", [None, None])
    fine = _open_vars(fine_paths, variables, "reference fine")
    coarse = _open_vars(coarse_paths, variables, "reference coarse")
    if y0 is not None:
        fine = fine.sel(time=fine.time.dt.year.isin(list(range(int(y0), int(y1) + 1))))
        coarse = coarse.sel(time=coarse.time.dt.year.isin(list(range(int(y0), int(y1) + 1))))
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
    fine = fine.load()
    coarse = coarse.load()
    f = np.stack([fine[v].transpose("time", "lat", "lon").values.astype(np.float64) for v in variables], axis=1)
    if not np.isfinite(f).all():
        raise DataError(f"reference fine files {[str(p) for p in fine_paths]} contain NaN/inf on the domain.",
                        "fill or mask the reference before training.")
    method = cfg["model"].get("upsample", "bicubic")
    up = upsampled(coarse, lat, lon, variables, method)
    log.info("training pairs: %d time steps, %d channels, %d x %d fine cells (upsample %s)",
             f.shape[0], f.shape[1], f.shape[2], f.shape[3], method)
    return Pairs(variables, f, up, fine.time.values, lat, lon)
