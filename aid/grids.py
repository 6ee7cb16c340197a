"""Target grids, built explicitly.

Why explicit: a naive ``np.arange(0, 360.25, 0.25)`` gives 1441 longitudes, and a coarse grid whose
cell edges do not sit at multiples of its resolution does not nest with the reference. The model's
coarse grid is *cell-centred with edges at multiples of the resolution* (2 deg: edges at even
degrees, centres at odd), the fine grid is ERA5's 0.25 deg lattice (centres at multiples of 0.25).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from aid.errors import ConfigError


def _bounds(centres: np.ndarray, res: float) -> np.ndarray:
    return np.stack([centres - res / 2, centres + res / 2], axis=-1)


def make_grid(lat: np.ndarray, lon: np.ndarray, res_lat: float, res_lon: float | None = None) -> xr.Dataset:
    """A rectilinear grid dataset with CF coordinates and cell bounds."""
    res_lon = res_lat if res_lon is None else res_lon
    lat = np.asarray(lat, dtype="float64")
    lon = np.asarray(lon, dtype="float64")
    ds = xr.Dataset(
        coords={
            "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y", "bounds": "lat_bnds"}),
            "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east", "axis": "X", "bounds": "lon_bnds"}),
        }
    )
    ds["lat_bnds"] = (("lat", "bnds"), np.clip(_bounds(lat, res_lat), -90, 90))
    ds["lon_bnds"] = (("lon", "bnds"), _bounds(lon, res_lon))
    ds.attrs["resolution_deg"] = float(res_lat)
    return ds


def fine_grid(cfg: Mapping[str, Any]) -> xr.Dataset:
    """The deliverables' 0.25 deg grid: centres ``domain.lat``/``domain.lon`` inclusive."""
    res = float(cfg["grid"]["fine_resolution"])
    (la0, la1), (lo0, lo1) = cfg["domain"]["lat"], cfg["domain"]["lon"]
    for v in (la0, la1, lo0, lo1):
        if abs(v / res - round(v / res)) > 1e-6:
            raise ConfigError(
                f"domain edge {v} is not on the {res} deg reference lattice.",
                f"use multiples of {res} for domain.lat and domain.lon (cell centres).",
            )
    lo0, lo1 = (((lo0 + 180) % 360) - 180, ((lo1 + 180) % 360) - 180)
    lat = np.round(np.arange(round(la0 / res), round(la1 / res) + 1) * res, 6)
    if lo1 >= lo0:
        lon = np.round(np.arange(round(lo0 / res), round(lo1 / res) + 1) * res, 6)
    else:  # crosses the antimeridian: keep longitudes monotonic by running past 180
        lon = np.round(np.arange(round(lo0 / res), round((lo1 + 360) / res) + 1) * res, 6)
    return make_grid(lat, lon, res)


def coarse_grid(cfg: Mapping[str, Any]) -> xr.Dataset:
    """The model's coarse grid: cells whose centres lie inside the fine domain's outer edges."""
    res = float(cfg["grid"]["coarse_resolution"])
    fine = fine_grid(cfg)
    fres = float(cfg["grid"]["fine_resolution"])
    la0, la1 = float(fine.lat[0]) - fres / 2, float(fine.lat[-1]) + fres / 2
    lo0, lo1 = float(fine.lon[0]) - fres / 2, float(fine.lon[-1]) + fres / 2
    lat = np.arange(np.floor(la0 / res), np.ceil(la1 / res) + 1) * res + res / 2
    lon = np.arange(np.floor(lo0 / res), np.ceil(lo1 / res) + 1) * res + res / 2
    lat = lat[(lat >= la0) & (lat <= la1)]
    lon = lon[(lon >= lo0) & (lon <= lo1)]
    if lat.size == 0 or lon.size == 0:
        raise ConfigError(
            f"domain {cfg['domain']['lat']} x {cfg['domain']['lon']} holds no complete {res} deg coarse cell centre.",
            "enlarge the domain to at least one coarse cell in each direction.",
        )
    return make_grid(np.round(lat, 6), np.round(lon, 6), res)


def global_grid(resolution: float) -> xr.Dataset:
    """Global cell-centred grid (2 deg: 90 x 180, centres +-89, +-179)."""
    n_lat = int(round(180 / resolution))
    n_lon = int(round(360 / resolution))
    lat = -90 + resolution * (np.arange(n_lat) + 0.5)
    lon = -180 + resolution * (np.arange(n_lon) + 0.5)
    return make_grid(np.round(lat, 6), np.round(lon, 6), resolution)


def era5_global_grid() -> xr.Dataset:
    """ERA5's 0.25 deg lattice: 721 x 1440, lat -90..90, lon -180..179.75 (no duplicate 180)."""
    lat = np.round(np.arange(-360, 361) * 0.25, 6)
    lon = np.round(np.arange(-720, 720) * 0.25, 6)
    return make_grid(lat, lon, 0.25)
