"""The demo archive: GCM-like CMIP6 daily files and a 0.25 deg reference, DERIVED FROM REAL ERA5.

Why: the machines that run aid's default configuration reach no data portal, and the only real daily
0.25 deg data available (``../shared/data/era5``) are one month of UK temperature and a few days of
winds and precipitation over the Low Countries. The pipeline needs several years of six variables,
two members and two experiments. This module builds them *from those real fields only* (no random
numbers as data; randomness only chooses which real day goes where), with a documented, exactly
known model error so tests can check that bias adjustment and downscaling recover it.

**Nothing here is GCM output.** Every file says so in its attributes:
``derived from ERA5 (Copernicus C3S, CC-BY 4.0); NOT GCM output``.

Recipe (constants below; all recorded in every file's ``aid_demo_recipe`` attribute and in the
manifest):

Grids
    fine (reference): 0.25 deg cell centres, lat 50..58, lon -10..0 (33 x 41), standard calendar.
    coarse (GCM-like): 2 deg cells with edges at even degrees, centres lat 51..57, lon 351..359
    (4 x 5; written with 0..360 longitudes and *descending* latitude, like many CMIP6 files),
    ``noleap`` calendar, CMIP6 units (K, kg m-2 s-1, m s-1).

Weather pools (real ERA5 days and hours)
    temperature: ``era5-2mt-2019-03-uk.grib`` hourly t2m, cropped to lon -10..0; daily mean, max and
    min of each of the 31 March days -> 31 (tas, tasmax, tasmin) field triples.
    precipitation: ``ERA5_2020-01-01_tp.nc``, ``ERA5_2021-07-15_tp.nc``, ``ERA5_2022-08-31_tp.nc``:
    each *hourly* field is used as one day's pattern (m per hour x 1000 x 24 -> mm/day, negatives from
    GRIB packing set to 0) -> 72 patterns.
    wind: ``ERA5_2020-01-01_{u10,v10}.nc``, each hourly (u, v) pair one day's pattern -> 24 patterns.
    The 41 x 41 box (45..55N, 0..10E) is *relocated*: its northern 33 rows (55..47N) and 41 columns
    become lat 58..50, lon -10..0 (shift +3 deg lat, -10 deg lon). Documented relocation, not a
    claim about UK weather.

Held-out split of every pool (:data:`POOL_SPLIT`)
    Each pool is split into a *training*, a *validation* and a *held-out* part, disjoint. The years
    of config ``evaluation.period`` (reference, GCM members and scenario alike) draw only from the
    held-out part, so the model and the bias adjustment, trained on other years, never see the
    weather they are scored on. In the other years, the days the model holds out for validation
    (:func:`aid.model.data.validation_split` on ``model.train.years`` with the config's
    ``val_fraction`` and ``val_block_days``) draw only from the validation part and all other days
    from the training part: as in a real archive, validation days are weather the network never
    trains on, so early stopping and the sampler tuning (aid.model.tune) are judged on new weather,
    not on copies of training days. Parts are contiguous in time (weather persists, so interleaving
    would leak): temperature days 1-21 train, 22-24 validation, 25-31 held out (the held-out week of
    bench/model_skill.py); precipitation 2020-01-01 and 2021-07-15 train, 2022-08-31 hours 00-05
    validation and 12-23 held out (hours 06-11 unused: consecutive hours are near-copies); wind
    hours 00-10 train, 13-15 validation, 18-23 held out (hours 11-12 and 16-17 unused gaps).

Day sequence
    For calendar year ``y`` and day-of-year index ``j`` (0..364 in a 365-day year; 29 February reuses
    28 February's index), the pattern drawn from a pool part of size ``P`` is its entry
    ``perm(y, j // P)[j % P]``, where ``perm`` is a permutation of ``range(P)`` drawn from
    ``numpy.random.default_rng([SEED, member_key, pool, y, block])``. The reference uses member key 0; the *first* configured member also uses key
    0 (it follows the reference's weather, like a nudged run, so its error is exactly known); member
    ``i`` uses key ``i``: different weather, same climate.

Seasonal cycle
    Daily-mean t2m of ``era5-hourly-2017-berlin-2x3.nc`` (mean of the 6 points) fitted with a mean +
    3 annual harmonics; the anomaly of that fit relative to its March mean is added to tas, tasmax
    and tasmin (so March keeps the real UK March climate). Precipitation is multiplied by
    ``1 + 0.25 cos(2 pi (j - 15) / 365)`` and winds by ``1 + 0.2 cos(2 pi (j - 15) / 365)``
    (wetter, windier winters).

GCM-like fields (per member, experiment, year)
    ``coarse = C(fine weather of that member)`` where ``C`` is the exact area-weighted (spherical,
    ``sin(lat)`` differences) conservative block mean of 0.25 deg cells onto the 2 deg cells
    (:func:`coarsen_to_demo_grid`), then a model error:
    ``tas += 1.5 K``, ``tasmax += 2.0 K``, ``tasmin += 1.0 K``, all three ``+ dT(y)``;
    ``pr *= 1.3 * (1 + 0.02 dT(y))``; ``uas = 0.8 uas + 0.5``, ``vas = 0.8 vas - 0.3`` (m s-1);
    ``dT(y) = 0.03 (y - y0)`` K for historical years (``y0`` the first historical year) and
    ``0.03 (y1 - y0) + 0.06 (y - y1)`` K after the last historical year ``y1`` (continuous).

Reference
    The fine weather (member key 0) plus the seasonal cycle, for the historical years only: the
    reference stands for observations, which bias adjustment and training use over the reference
    period; the scenario years stay unobserved, as in a real application.

Invariants (checked in tests): precipitation >= 0; tasmin <= tas <= tasmax in every field (the same
shifts are added to daily min/mean/max of the same real day, coarsening is a positive weighted mean
and the biases are ordered 1.0 <= 1.5 <= 2.0); deterministic output for a given config.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from aid.errors import ConfigError, DataError
from aid.io import open_dataset, write_netcdf, write_text
from aid.variables import MODEL_VARIABLES
from aid.variables import VARIABLES as REGISTRY

log = logging.getLogger(__name__)

DEMO_NOTE = "derived from ERA5 (Copernicus C3S, CC-BY 4.0); NOT GCM output"
LICENSE = (
    "Derived from ERA5 (Copernicus Climate Change Service, C3S), licensed CC-BY 4.0: "
    "'Generated using Copernicus Climate Change Service information'. NOT GCM output."
)
SEED = 20260101
VERSION = "v20260101"
VARIABLES = MODEL_VARIABLES

FINE_RES = 0.25
FINE_LAT = np.round(np.arange(200, 233) * FINE_RES, 6)  # 50.0 .. 58.0 (33)
FINE_LON = np.round(np.arange(-40, 1) * FINE_RES, 6)  # -10.0 .. 0.0 (41)
COARSE_RES = 2.0
COARSE_LAT = np.array([51.0, 53.0, 55.0, 57.0])
COARSE_LON = np.array([-9.0, -7.0, -5.0, -3.0, -1.0])

#: Additive model error (K) of the GCM-like temperatures.
TEMP_BIAS: dict[str, float] = {"tas": 1.5, "tasmax": 2.0, "tasmin": 1.0}
PR_FACTOR = 1.3
PR_PER_K = 0.02
WIND_FACTOR = 0.8
WIND_OFFSET: dict[str, float] = {"uas": 0.5, "vas": -0.3}
TREND_HIST = 0.03  # K per year
TREND_SCEN = 0.06  # K per year
PR_SEASONAL = 0.25
WIND_SEASONAL = 0.2
#: Relocation of the 41x41 box (45..55N, 0..10E) onto the demo grid.
BOX_SHIFT_LAT = 3.0
BOX_SHIFT_LON = -10.0

_POOL_SALT = {"temp": 0, "pr": 1, "wind": 2}
#: Pool entries (indices in time order) of the training, validation and held-out parts; see the
#: module docstring.
POOL_SPLIT: dict[str, dict[str, range]] = {
    "temp": {"train": range(0, 21), "validation": range(21, 24), "held_out": range(24, 31)},
    "pr": {"train": range(0, 48), "validation": range(48, 54), "held_out": range(60, 72)},
    "wind": {"train": range(0, 11), "validation": range(13, 16), "held_out": range(18, 24)},
}
_CUMDAYS = np.array([0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334])

#: Metadata from the registry (aid/variables.py): the GCM files carry the CMIP6 tables' attributes
#: (pr as precipitation_flux in kg m-2 s-1), the reference files aid's canonical ones.
CMIP6_META: dict[str, dict[str, str]] = {v: REGISTRY[v].cmip_attrs() for v in VARIABLES}
REF_UNITS = {v: REGISTRY[v].units for v in VARIABLES}
HEIGHT = {v: REGISTRY[v].height for v in VARIABLES if REGISTRY[v].height is not None}

ERA5_FILES = {
    "t2m": "era5-2mt-2019-03-uk.grib",
    "seasonal": "era5-hourly-2017-berlin-2x3.nc",
    "u10": "ERA5_2020-01-01_u10.nc",
    "v10": "ERA5_2020-01-01_v10.nc",
    "tp": ("ERA5_2020-01-01_tp.nc", "ERA5_2021-07-15_tp.nc", "ERA5_2022-08-31_tp.nc"),
}


def recipe() -> dict[str, Any]:
    """The constants of the derivation, as stored in files and the manifest."""
    return {
        "seed": SEED,
        "temperature_bias_K": TEMP_BIAS,
        "pr_factor": PR_FACTOR,
        "pr_change_per_K": PR_PER_K,
        "wind_factor": WIND_FACTOR,
        "wind_offset_m_s-1": WIND_OFFSET,
        "trend_historical_K_per_year": TREND_HIST,
        "trend_scenario_K_per_year": TREND_SCEN,
        "pr_seasonal_amplitude": PR_SEASONAL,
        "wind_seasonal_amplitude": WIND_SEASONAL,
        "box_relocation_deg": {"lat": BOX_SHIFT_LAT, "lon": BOX_SHIFT_LON},
        "coarsening": "exact area-weighted conservative block mean onto 2 deg cells (edges at even degrees)",
        "member_weather": "first member shares the reference's day sequence; member i uses permutation key i",
        "pool_split": {pool: {part: [r.start, r.stop] for part, r in parts.items()} for pool, parts in POOL_SPLIT.items()},
        "held_out_years": "the years of config evaluation.period draw only from each pool's held_out part",
        "validation_days": "the model's validation days (aid.model.data.validation_split on model.train.years) "
                           "draw only from each pool's validation part",
        "documentation": "aid/demo.py module docstring",
    }


# ---------------------------------------------------------------------------------------------
# Coarsening


def _overlap_weights(fine: np.ndarray, coarse: np.ndarray, fres: float, cres: float, spherical: bool) -> np.ndarray:
    """W[c, f] = area (or length) of fine cell f inside coarse cell c, rows normalised to 1."""
    f_lo, f_hi = fine - fres / 2, fine + fres / 2
    c_lo, c_hi = coarse - cres / 2, coarse + cres / 2
    lo = np.maximum(c_lo[:, None], f_lo[None, :])
    hi = np.minimum(c_hi[:, None], f_hi[None, :])
    if spherical:
        w = np.where(hi > lo, np.sin(np.deg2rad(hi)) - np.sin(np.deg2rad(lo)), 0.0)
    else:
        w = np.clip(hi - lo, 0.0, None)
    tot = w.sum(axis=1, keepdims=True)
    if np.any(tot <= 0):
        raise DataError("demo coarsening: a coarse cell has no fine cells.", "check the demo grid constants.")
    return w / tot


_WLAT = _overlap_weights(FINE_LAT, COARSE_LAT, FINE_RES, COARSE_RES, spherical=True)
_WLON = _overlap_weights(FINE_LON, COARSE_LON, FINE_RES, COARSE_RES, spherical=False)


def coarsen_fields(fields: np.ndarray) -> np.ndarray:
    """Exact area-weighted mean of ``(..., 33, 41)`` fine fields onto the ``(..., 4, 5)`` 2 deg cells.

    Fine cells straddling a coarse edge (centres at even degrees) count half in each neighbour.
    Lat ascending, lon -10..0, as :data:`FINE_LAT` / :data:`FINE_LON`.
    """
    return np.einsum("ai,...ij,bj->...ab", _WLAT, fields, _WLON)


def coarsen_to_demo_grid(fine: xr.DataArray) -> xr.DataArray:
    """:func:`coarsen_fields` for a DataArray on the demo fine grid (any lat/lon order)."""
    fine = fine.sortby("lat").sortby("lon")
    if fine.sizes["lat"] != FINE_LAT.size or fine.sizes["lon"] != FINE_LON.size or not (
        np.allclose(fine.lat, FINE_LAT) and np.allclose(fine.lon, FINE_LON)
    ):
        raise DataError("coarsen_to_demo_grid: input is not on the demo 0.25 deg grid (lat 50..58, lon -10..0).",
                        "pass a demo reference field.")
    dims = [d for d in fine.dims if d not in ("lat", "lon")]
    vals = coarsen_fields(fine.transpose(*dims, "lat", "lon").values)
    coords = {d: fine[d] for d in dims if d in fine.coords}
    return xr.DataArray(vals, dims=(*dims, "lat", "lon"), coords={**coords, "lat": COARSE_LAT, "lon": COARSE_LON},
                        attrs=dict(fine.attrs), name=fine.name)


# ---------------------------------------------------------------------------------------------
# Real ERA5 inputs


def _need(era5_dir: Path, name: str) -> Path:
    p = era5_dir / name
    if not p.exists():
        raise DataError(
            f"demo archive: ERA5 file {p} is missing.",
            "set demo_archive.era5_dir to the folder holding the shared ERA5 sample files (../shared/data/era5).",
        )
    return p


def _temperature_pools(era5_dir: Path) -> dict[str, np.ndarray]:
    ds = open_dataset(_need(era5_dir, ERA5_FILES["t2m"]), chunks=None)
    t2m = ds["t2m"].rename({"latitude": "lat", "longitude": "lon"}).sortby("lat")
    t2m = t2m.sel(lon=slice(-10.0, 0.0)).load()
    if t2m.sizes["lat"] != FINE_LAT.size or t2m.sizes["lon"] != FINE_LON.size:
        raise DataError(f"{era5_dir / ERA5_FILES['t2m']}: expected 33 x 41 points over 50..58N, 10W..0, got {dict(t2m.sizes)}.",
                        "use the shared era5-2mt-2019-03-uk.grib.")
    day = t2m.time.dt.floor("D")
    g = t2m.groupby(day)
    pools = {"tas": g.mean().values, "tasmax": g.max().values, "tasmin": g.min().values}
    ds.close()
    if pools["tas"].shape[0] != 31:
        raise DataError(f"{era5_dir / ERA5_FILES['t2m']}: expected 31 days, got {pools['tas'].shape[0]}.", "use the shared March 2019 file.")
    return {k: v.astype("float64") for k, v in pools.items()}


def _relocated_box(path: Path, var: str) -> np.ndarray:
    ds = open_dataset(path, chunks=None)
    da = ds[var].rename({"latitude": "lat", "longitude": "lon"})
    da = da.sel(lat=slice(55.0, 47.0)).sortby("lat").load()  # northern 33 rows, ascending
    if da.sizes["lat"] != 33 or da.sizes["lon"] != 41:
        raise DataError(f"{path}: expected the 41 x 41 box 45..55N, 0..10E, got {dict(da.sizes)}.", "use the shared WAM2layers ERA5 files.")
    if not (np.allclose(da.lat.values + BOX_SHIFT_LAT, FINE_LAT) and np.allclose(da.lon.values + BOX_SHIFT_LON, FINE_LON)):
        raise DataError(f"{path}: grid is not 0.25 deg over 47..55N, 0..10E.", "use the shared WAM2layers ERA5 files.")
    out = da.values.astype("float64")
    ds.close()
    return out


def _box_pools(era5_dir: Path) -> dict[str, np.ndarray]:
    tp = np.concatenate([_relocated_box(_need(era5_dir, f), "tp") for f in ERA5_FILES["tp"]])
    pr = np.clip(tp * 1000.0 * 24.0, 0.0, None)  # m per hour -> mm/day, GRIB packing negatives -> 0
    return {
        "pr": pr,
        "uas": _relocated_box(_need(era5_dir, ERA5_FILES["u10"]), "u10"),
        "vas": _relocated_box(_need(era5_dir, ERA5_FILES["v10"]), "v10"),
    }


def seasonal_anomaly(era5_dir: Path) -> np.ndarray:
    """Length-365 temperature anomaly (K) relative to March, from Berlin 2017 daily-mean t2m,
    smoothed with 3 annual harmonics."""
    ds = open_dataset(_need(era5_dir, ERA5_FILES["seasonal"]), chunks=None)
    t = ds["t2m"].mean(dim=[d for d in ds["t2m"].dims if d != "time"])
    daily = t.groupby(t.time.dt.floor("D")).mean().values.astype("float64")
    ds.close()
    daily = daily[:365]
    j = np.arange(daily.size)
    cols = [np.ones_like(j, dtype="float64")]
    for k in (1, 2, 3):
        cols += [np.cos(2 * np.pi * k * j / 365.0), np.sin(2 * np.pi * k * j / 365.0)]
    design = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(design, daily, rcond=None)
    jj = np.arange(365)
    full = np.stack([np.ones(365)] + [f(2 * np.pi * k * jj / 365.0) for k in (1, 2, 3) for f in (np.cos, np.sin)], axis=1) @ coef
    return full - full[59:90].mean()


def seasonal_factor(amplitude: float) -> np.ndarray:
    j = np.arange(365)
    return 1.0 + amplitude * np.cos(2 * np.pi * (j - 15) / 365.0)


# ---------------------------------------------------------------------------------------------
# Day sequences


def day_index(months: np.ndarray, days: np.ndarray) -> np.ndarray:
    """0-based day-of-year in a 365-day year; 29 February maps to 28 February."""
    j = _CUMDAYS[np.asarray(months) - 1] + np.asarray(days) - 1
    return np.where((np.asarray(months) == 2) & (np.asarray(days) == 29), 58, j)


def pattern_sequence(member_key: int, pool: str, year: int, pool_size: int) -> np.ndarray:
    """Pool index for each of the 365 day indices of ``year`` (permutation per block of ``pool_size``)."""
    blocks = -(-365 // pool_size)
    seq = [np.random.default_rng([SEED, member_key, _POOL_SALT[pool], year, b]).permutation(pool_size) for b in range(blocks)]
    return np.concatenate(seq)[:365]


def validation_days(config: Mapping[str, Any], held_out_years: Sequence[int]) -> list[tuple[int, int, int]]:
    """(year, month, day) of the days the model holds out for validation: the split of
    :func:`aid.model.data.validation_split` over the reference days of ``model.train.years``
    (standard calendar, as the model's archive), evaluation years excluded."""
    from aid.model.data import validation_split

    tcfg = config["model"]["train"]
    y0, y1 = (int(y) for y in tcfg["years"])
    times = pd.date_range(f"{y0:04d}-01-01 12:00", f"{y1:04d}-12-31 12:00", freq="D")
    _, va = validation_split(times.values, float(tcfg["val_fraction"]), float(tcfg["val_block_days"]))
    held = {int(y) for y in held_out_years}
    return [(int(t.year), int(t.month), int(t.day)) for t in times[va] if int(t.year) not in held]


def warming(year: int, hist_years: Sequence[int]) -> float:
    """dT(y) in K: 0.03 K/yr over the historical years, 0.06 K/yr after them (continuous)."""
    y0, y1 = int(hist_years[0]), int(hist_years[1])
    if year <= y1:
        return TREND_HIST * (year - y0)
    return TREND_HIST * (y1 - y0) + TREND_SCEN * (year - y1)


class _Pools:
    """Fine pools, their coarsened versions and the seasonal factors (built once)."""

    def __init__(self, era5_dir: Path, held_out_years: Sequence[int],
                 validation_days: Sequence[tuple[int, int, int]] = ()) -> None:
        self.held_out_years = {int(y) for y in held_out_years}
        self.validation_days = {tuple(int(x) for x in d) for d in validation_days}
        self.fine = {**_temperature_pools(era5_dir), **_box_pools(era5_dir)}
        self.coarse = {k: coarsen_fields(v) for k, v in self.fine.items()}
        self.anom = seasonal_anomaly(era5_dir)
        self.s_pr = seasonal_factor(PR_SEASONAL)
        self.s_wind = seasonal_factor(WIND_SEASONAL)

    def part(self, pool_name: str, year: int, validation: bool = False) -> range:
        """The pool entries a day of ``year`` may draw from: held out for the evaluation years, else
        validation for the model's validation days, else training."""
        if year in self.held_out_years:
            return POOL_SPLIT[pool_name]["held_out"]
        return POOL_SPLIT[pool_name]["validation" if validation else "train"]

    def fields(self, var: str, member_key: int, years: np.ndarray, months: np.ndarray, days: np.ndarray, coarse: bool) -> np.ndarray:
        """Weather + seasonal cycle (no model error) for the given dates."""
        src = self.coarse if coarse else self.fine
        pool_name = "temp" if var in TEMP_BIAS else ("pr" if var == "pr" else "wind")
        pool = src[var]
        j = day_index(months, days)
        idx = np.empty(j.size, dtype=int)
        val = np.array([(int(y), int(m), int(d)) in self.validation_days for y, m, d in zip(years, months, days)],
                       dtype=bool)
        for y in np.unique(years):
            for is_val in (False, True):
                sel = (years == y) & (val == is_val)
                part = np.asarray(self.part(pool_name, int(y), is_val))
                idx[sel] = part[pattern_sequence(member_key, pool_name, int(y), part.size)[j[sel]]]
        out = pool[idx]
        if var in TEMP_BIAS:
            out = out + self.anom[j][:, None, None]
        elif var == "pr":
            out = out * self.s_pr[j][:, None, None]
        else:
            out = out * self.s_wind[j][:, None, None]
        return out


def model_error(var: str, values: np.ndarray, dT: np.ndarray) -> np.ndarray:
    """Apply the documented GCM-like error (bias, trend) to coarse weather ``values``."""
    dT = dT[:, None, None]
    if var in TEMP_BIAS:
        return values + TEMP_BIAS[var] + dT
    if var == "pr":
        return values * PR_FACTOR * (1.0 + PR_PER_K * dT)
    return values * WIND_FACTOR + WIND_OFFSET[var]


# ---------------------------------------------------------------------------------------------
# Writers


def _common_attrs() -> dict[str, str]:
    from aid import __version__

    return {
        "aid_demo_note": DEMO_NOTE,
        "aid_demo_recipe": json.dumps(recipe(), sort_keys=True),
        "aid_version": __version__,
        "license": LICENSE,
        "source": f"ERA5 hourly reanalysis samples ({', '.join(sorted({f for v in ERA5_FILES.values() for f in ([v] if isinstance(v, str) else v)}))}); {DEMO_NOTE}",
    }


def _tracking_id(*parts: str) -> str:
    return "hdl:21.14100/" + str(uuid.uuid5(uuid.NAMESPACE_URL, "aid-demo/" + "/".join(parts)))


def _gcm_dataset(var: str, values: np.ndarray, time: xr.CFTimeIndex, meta: dict[str, str]) -> xr.Dataset:
    """One CMIP6-like file: noleap, 0..360 lon, descending lat, CMIP6 units."""
    lat = COARSE_LAT[::-1]
    lon = COARSE_LON % 360.0
    data = values[:, ::-1, :]  # descending latitude
    if var == "pr":
        data = data / 86400.0  # mm/day -> kg m-2 s-1
    ds = xr.Dataset(
        {var: (("time", "lat", "lon"), data.astype("float32"), dict(CMIP6_META[var]))},
        coords={
            "time": ("time", time, {"standard_name": "time", "axis": "T", "bounds": "time_bnds"}),
            "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y", "bounds": "lat_bnds"}),
            "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east", "axis": "X", "bounds": "lon_bnds"}),
        },
    )
    if var in HEIGHT:
        ds = ds.assign_coords(height=((), HEIGHT[var], {"standard_name": "height", "units": "m", "axis": "Z", "positive": "up"}))
        ds[var].attrs["coordinates"] = "height"
    import datetime as _dt

    starts = np.array([t - _dt.timedelta(hours=12) for t in time])
    ds["time_bnds"] = (("time", "bnds"), np.stack([starts, starts + _dt.timedelta(days=1)], axis=1))
    ds["lat_bnds"] = (("lat", "bnds"), np.stack([lat + COARSE_RES / 2, lat - COARSE_RES / 2], axis=1))
    ds["lon_bnds"] = (("lon", "bnds"), np.stack([lon - COARSE_RES / 2, lon + COARSE_RES / 2], axis=1))
    ds.attrs = meta
    return ds


def _encoding(var: str, calendar: str, compress: bool) -> dict[str, Any]:
    enc: dict[str, Any] = {
        var: {"dtype": "float32", "_FillValue": np.float32(1e20), "zlib": compress, **({"complevel": 1} if compress else {})},
        "time": {"units": "days since 1850-01-01", "calendar": calendar, "dtype": "float64", "_FillValue": None},
        "lat": {"_FillValue": None},
        "lon": {"_FillValue": None},
    }
    if not compress:
        enc["time_bnds"] = {"units": "days since 1850-01-01", "calendar": calendar, "dtype": "float64", "_FillValue": None}
    return enc


def _clean_previous(out_root: Path, institution: str, source_id: str) -> None:
    """Remove files of an earlier demo build (other years/members) so globs find only this one."""
    for p in sorted((out_root / "reference").glob("*_day_ERA5-derived_*.nc")):
        p.unlink()
    for activity in ("CMIP", "ScenarioMIP"):
        tree = out_root / "CMIP6" / activity / institution / source_id
        if tree.is_dir():
            for p in sorted(tree.rglob("*.nc")):
                p.unlink()


def write_demo_archive(
    config: Mapping[str, Any],
    era5_dir: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the demo DRS tree, the 0.25 deg reference and ``manifest.json``; return the manifest path.

    Layout under ``out_root``::

        CMIP6/{CMIP,ScenarioMIP}/<institution_id>/<source_id>/<experiment>/<member>/day/<var>/gn/v20260101/
            <var>_day_<source_id>_<experiment>_<member>_gn_<YYYY>0101-<YYYY>1231.nc   (one file per year)
        reference/<var>_day_ERA5-derived_<y0>0101-<y1>1231.nc
        manifest.json
    """
    from aid.provenance import sha256_file

    demo = config["demo_archive"]
    source_id = str(demo["source_id"])
    institution = str(demo["institution_id"])
    members = list(demo["members"])
    hist = [int(y) for y in demo["historical_years"]]
    scen_name = str(demo["scenario"])
    scen = [int(y) for y in demo["scenario_years"]]
    if hist[0] > hist[1] or scen[0] > scen[1]:
        raise ConfigError(f"demo_archive years are reversed (historical {hist}, scenario {scen}).", "write them as [first, last].")
    if scen[0] <= hist[1]:
        raise ConfigError(
            f"demo_archive.scenario_years {scen} overlap demo_archive.historical_years {hist}.",
            "start the scenario after the last historical year.",
        )
    era5_dir = Path(era5_dir)
    out_root = Path(out_root)
    manifest_path = Path(manifest_path) if manifest_path is not None else out_root / "manifest.json"
    ev = config.get("evaluation") or {}
    held_out = list(range(int(ev["period"][0]), int(ev["period"][1]) + 1)) if ev.get("period") else []
    validation = validation_days(config, held_out)
    pools = _Pools(era5_dir, held_out, validation)
    _clean_previous(out_root, institution, source_id)
    common = _common_attrs()
    files: list[dict[str, Any]] = []

    # (a) GCM-like DRS tree
    experiments = [("historical", "CMIP", hist), (scen_name, "ScenarioMIP", scen)]
    for mkey, member in enumerate(members):
        for exp, activity, (y0, y1) in experiments:
            for year in range(y0, y1 + 1):
                time = xr.date_range(f"{year:04d}-01-01 12:00", f"{year:04d}-12-31 12:00", freq="D", calendar="noleap", use_cftime=True)
                months = np.array([t.month for t in time])
                days = np.array([t.day for t in time])
                years = np.full(time.size, year)
                dT = np.full(time.size, warming(year, hist))
                for var in VARIABLES:
                    values = model_error(var, pools.fields(var, mkey, years, months, days, coarse=True), dT)
                    tid = _tracking_id(source_id, exp, member, var, str(year))
                    meta = {
                        "Conventions": "CF-1.7 CMIP-6.2",
                        "title": f"{source_id} {exp} {member} {var}: GCM-like demo data, {DEMO_NOTE}",
                        "activity_id": activity,
                        "experiment_id": exp,
                        "experiment": "all-forcing simulation of the recent past" if exp == "historical" else f"scenario {exp}",
                        "source_id": source_id,
                        "institution_id": institution,
                        "institution": "aid demo archive (data derived from ERA5, not a modelling centre)",
                        "variant_label": member,
                        "sub_experiment_id": "none",
                        "table_id": "day",
                        "frequency": "day",
                        "realm": "atmos",
                        "grid_label": "gn",
                        "grid": "2 deg regular lat-lon, cell edges at even degrees",
                        "nominal_resolution": "250 km",
                        "variable_id": var,
                        "mip_era": "CMIP6",
                        "product": "derived-demo-data",
                        "tracking_id": tid,
                        "further_info_url": "aid demo archive: recipe in aid/demo.py (module docstring) and this file's aid_demo_recipe attribute",
                        "comment": (
                            f"{DEMO_NOTE}. Coarsened real ERA5 weather (member weather key {mkey}) plus a documented "
                            f"model error: bias {TEMP_BIAS.get(var, 'n/a')}, warming {warming(year, hist):.3f} K in {year}."
                        ),
                        **common,
                    }
                    ds = _gcm_dataset(var, values, time, meta)
                    fname = f"{var}_day_{source_id}_{exp}_{member}_gn_{year:04d}0101-{year:04d}1231.nc"
                    rel = Path("CMIP6", activity, institution, source_id, exp, member, "day", var, "gn", VERSION, fname)
                    write_netcdf(ds, out_root / rel, encoding=_encoding(var, "noleap", compress=False))
                    files.append({"kind": "gcm", "path": str(rel), "variable": var, "experiment": exp, "member": member,
                                  "year": year, "tracking_id": tid})

    # (b) reference, historical years, standard calendar
    times = pd.date_range(f"{hist[0]:04d}-01-01 12:00", f"{hist[1]:04d}-12-31 12:00", freq="D")
    years = times.year.values
    months = times.month.values
    days = times.day.values
    for var in VARIABLES:
        values = pools.fields(var, 0, years, months, days, coarse=False)
        attrs = REGISTRY[var].cf_attrs()
        ds = xr.Dataset(
            {var: (("time", "lat", "lon"), values.astype("float32"), attrs)},
            coords={
                "time": ("time", times.values, {"standard_name": "time", "axis": "T"}),
                "lat": ("lat", FINE_LAT, {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
                "lon": ("lon", FINE_LON, {"standard_name": "longitude", "units": "degrees_east", "axis": "X"}),
            },
            attrs={
                "Conventions": "CF-1.8",
                "title": f"ERA5-derived daily {var} reference at 0.25 deg (aid demo archive); {DEMO_NOTE}",
                "comment": "Real ERA5 daily fields re-sequenced (member weather key 0) plus a seasonal cycle; see aid/demo.py.",
                "frequency": "day",
                "calendar": "standard",
                "variable_id": var,
                **common,
            },
        )
        fname = f"{var}_day_ERA5-derived_{hist[0]:04d}0101-{hist[1]:04d}1231.nc"
        rel = Path("reference", fname)
        enc = _encoding(var, "standard", compress=True)
        write_netcdf(ds, out_root / rel, encoding=enc)
        files.append({"kind": "reference", "path": str(rel), "variable": var, "years": hist})

    inputs = [ERA5_FILES["t2m"], ERA5_FILES["seasonal"], ERA5_FILES["u10"], ERA5_FILES["v10"], *ERA5_FILES["tp"]]
    manifest = {
        "description": "aid demo archive: GCM-like CMIP6 daily files and a 0.25 deg reference, " + DEMO_NOTE,
        "note": DEMO_NOTE,
        "license": LICENSE,
        "source_id": source_id,
        "institution_id": institution,
        "members": members,
        "experiments": {"historical": hist, scen_name: scen},
        "reference_years": hist,
        "held_out_years": held_out,
        "validation_days": [f"{y:04d}-{m:02d}-{d:02d}" for y, m, d in validation],
        "cmip6_root": "CMIP6",
        "recipe": recipe(),
        "era5_inputs": [{"file": f, "sha256": sha256_file(era5_dir / f)} for f in inputs],
        "files": files,
    }
    write_text(json.dumps(manifest, indent=2) + "\n", manifest_path)
    log.info("demo archive: %d files under %s", len(files), out_root)
    return manifest_path
