"""Daily reference fields from ERA5 as users download it (hourly single levels, or the CDS daily statistics).

Why a stage of its own: the reference the model learns from must be *daily*, and ERA5 comes hourly
from the CDS (NetCDF in the old ``time`` layout or the new ``valid_time``/``expver`` layout, or
GRIB) and from cloud ARCO Zarr stores. Taking hourly steps as days trains on 24 "days" a day and
makes hourly ``tp`` 24 daily rates, so hourly input is aggregated here, by ERA5's own conventions:

- ``tas`` = mean of the 24 instantaneous hourly ``t2m`` of the day (00:00 .. 23:00 UTC);
- ``tasmax``/``tasmin`` = max/min of the hourly ``mx2t``/``mn2t`` when the input has them, else the
  max/min of the 24 hourly ``t2m`` (which misses the peak between two hours; the ``aid_daily_method``
  attribute says which was used);
- ``pr`` = the daily total of ``tp``. An ERA5 accumulation (``tp``) and an extreme "since the previous
  post-processing" (``mx2t``, ``mn2t``) stamped hh:00 covers the *preceding* step, so day D is the
  values stamped 01:00 of D .. 00:00 of D+1 (ECMWF's documented rule for ERA5 daily totals); the
  total in m of water is written as the pipeline's rate in ``mm d-1``;
- ``uas``/``vas`` = mean of the 24 hourly ``u10``/``v10``.

A day is kept only when every one of its steps is present (24 for hourly data); incomplete days
(the first and last day of a download, for ``tp`` both the first and last) are dropped and logged,
never averaged over what is there. The output holds the days complete in every variable.

The CDS "daily statistics" product (``derived-era5-single-levels-daily-statistics``) is daily
already; one statistic per file, so the caller says which (``statistic``): ``t2m`` mean/max/min
give tas/tasmax/tasmin, ``tp`` sum (or mean of the hourly accumulations, x 24) gives pr.

Everything stays lazy (dask, a day of steps per chunk) until the atomic write, so a year of global
hourly 0.25 deg fields never sits in memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from aid.errors import DataError
from aid.frequency import Frequency, detect_frequency, ensure_time_dim
from aid.variables import VARIABLES

log = logging.getLogger(__name__)

#: ERA5 variable (CDS short name) -> the names it goes by: GRIB shortName, ARCO Zarr long name.
ERA5_NAMES: dict[str, tuple[str, ...]] = {
    "t2m": ("t2m", "2t", "2m_temperature"),
    "mx2t": ("mx2t", "maximum_2m_temperature_since_previous_post_processing"),
    "mn2t": ("mn2t", "minimum_2m_temperature_since_previous_post_processing"),
    "tp": ("tp", "total_precipitation"),
    "u10": ("u10", "10u", "10m_u_component_of_wind"),
    "v10": ("v10", "10v", "10m_v_component_of_wind"),
}

#: ERA5 variables valid over the step *ending* at their stamp (accumulations, extremes since the
#: previous post-processing); instantaneous ones are valid at the stamp.
OVER_PRECEDING_STEP = frozenset({"tp", "mx2t", "mn2t"})

#: Daily variable -> (ERA5 source, reduction) in order of preference.
HOURLY_RECIPES: dict[str, tuple[tuple[str, str], ...]] = {
    "tas": (("t2m", "mean"),),
    "tasmax": (("mx2t", "max"), ("t2m", "max")),
    "tasmin": (("mn2t", "min"), ("t2m", "min")),
    "pr": (("tp", "sum"),),
    "uas": (("u10", "mean"),),
    "vas": (("v10", "mean"),),
}

#: CDS daily statistics: (ERA5 variable, statistic) -> daily variable.
DAILY_STATISTICS: dict[tuple[str, str], str] = {
    ("t2m", "mean"): "tas",
    ("t2m", "max"): "tasmax",
    ("t2m", "min"): "tasmin",
    ("mx2t", "max"): "tasmax",
    ("mn2t", "min"): "tasmin",
    ("tp", "sum"): "pr",
    ("tp", "mean"): "pr",
    ("u10", "mean"): "uas",
    ("v10", "mean"): "vas",
}

STATISTICS = ("mean", "max", "min", "sum")

_CELL_METHOD = {"mean": "mean", "max": "maximum", "min": "minimum", "sum": "mean"}

#: Steps per dask chunk along time (a day of hourly fields: ~100 MB for a global 0.25 deg float32 day).
TIME_CHUNK = 24


# ---------------------------------------------------------------------------------------------
# Opening


def _is_zarr(path: str) -> bool:
    p = path.rstrip("/")
    remote_file = "://" in p and p.lower().endswith((".nc", ".nc4", ".grib", ".grb", ".grib2", ".grb2"))
    return p.endswith(".zarr") or ("://" in p and not remote_file) or (Path(p).is_dir() and (Path(p) / ".zgroup").exists()) or (
        Path(p).is_dir() and (Path(p) / "zarr.json").exists()
    )


def open_raw(path: str | os.PathLike[str]) -> xr.Dataset:
    """A NetCDF/GRIB file (:func:`aid.io.open_dataset`, no dask yet) or a Zarr store, as stored."""
    from aid.io import open_dataset

    where = str(path)
    if _is_zarr(where):
        if "://" not in where and not Path(where).exists():
            raise DataError(f"{where}: file does not exist.", "check the path.")
        try:
            raw = xr.open_dataset(where, engine="zarr", chunks={})
        except Exception as exc:  # zarr, fsspec and network errors
            raise DataError(
                f"{where}: cannot be opened as a Zarr store ({type(exc).__name__}: {exc}).",
                "check the path or URL (remote stores need the fsspec backend, e.g. gcsfs for gs://).",
            ) from exc
    else:
        raw = open_dataset(where, chunks=None)
    return raw


def open_era5(path: str | os.PathLike[str]) -> xr.Dataset:
    """One ERA5 file or store, lazily, in one layout: ``time`` axis of valid times, ERA5 short
    names, ``lat``/``lon``; CDS NetCDF (old and new layout), GRIB (cfgrib) and Zarr (a local
    ``.zarr`` folder or a URL fsspec can open)."""
    return normalise_layout(open_raw(path), str(path))


def normalise_layout(ds: xr.Dataset, where: str) -> xr.Dataset:
    """Put any of the ERA5 layouts into one: see :func:`open_era5`."""
    ds = ensure_time_dim(ds)
    # GRIB accumulations: (time = forecast start, step) -> one axis of valid times.
    if "step" in ds.dims and "valid_time" in ds.coords and ds["valid_time"].ndim == 2:
        ds = ds.stack(_vt=ds["valid_time"].dims)
        ds = ds.drop_vars([c for c in ("time", "step", "_vt") if c in ds.coords]).rename({"_vt": "time"})
        ds = ds.assign_coords(time=ds["valid_time"].values).drop_vars("valid_time")
        valid = ds[list(ds.data_vars)[0]].notnull().any([d for d in ds[list(ds.data_vars)[0]].dims if d != "time"])
        ds = ds.isel(time=np.flatnonzero(valid.values))
    elif "valid_time" in ds.dims and "time" not in ds.dims:  # new CDS NetCDF layout
        ds = ds.drop_vars([c for c in ("time",) if c in ds.variables]).rename({"valid_time": "time"})
    elif "valid_time" in ds.coords and ds["valid_time"].dims == ("time",):  # GRIB analyses: valid == reference time
        ds = ds.assign_coords(time=ds["valid_time"].values).drop_vars("valid_time")
    if "expver" in ds.dims:  # old CDS layout mixing ERA5 (1) and ERA5T (5): one of them is NaN at each time
        parts = [ds.isel(expver=i, drop=True) for i in range(ds.sizes["expver"])]
        merged = parts[0]
        for p in parts[1:]:
            merged = merged.combine_first(p)
        log.info("%s: merged %d expver layers (ERA5 and ERA5T)", where, len(parts))
        ds = merged
    drop = [c for c in ("expver", "number", "step", "surface", "heightAboveGround", "valid_time") if c in ds.coords and c not in ds.dims]
    ds = ds.drop_vars(drop)
    ren: dict[str, str] = {}
    for short, names in ERA5_NAMES.items():
        for n in names:
            if n in ds.data_vars and short not in ds.data_vars and short not in ren.values():
                ren[n] = short
                break
    for old, new in (("latitude", "lat"), ("longitude", "lon")):
        if old in ds.variables and new not in ds.variables:
            ren[old] = new
    ds = ds.rename(ren) if ren else ds
    keep = [v for v in ERA5_NAMES if v in ds.data_vars]
    if not keep:
        raise DataError(
            f"{where}: no ERA5 variable aid can use (data variables {sorted(map(str, ds.data_vars))}).",
            f"give ERA5 single-level files with one of {', '.join(ERA5_NAMES)} (CDS short names, GRIB names or ARCO long names).",
        )
    ds = ds[keep]
    if "time" not in ds.dims:
        raise DataError(f"{where}: no time axis (dims {dict(ds.sizes)}).", "give files with a time or valid_time axis.")
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise DataError(f"{where}: the time axis is not decoded to dates (dtype {ds['time'].dtype}).",
                        "give ERA5 files with CF time units (hours/seconds since ...).")
    return ds


def select(ds: xr.Dataset, where: str, start: str | None = None, end: str | None = None,
           lat: Sequence[float] | None = None, lon: Sequence[float] | None = None) -> xr.Dataset:
    """The days ``start``..``end`` (inclusive; plus 00:00 of the day after, which closes ``end`` for
    accumulations) and the box ``lat`` = (south, north), ``lon`` = (west, east) in degrees east, either
    -180..180 or 0..360 (a box across 0 deg in a 0..360 file is taken from both ends) -- so a
    remote ARCO store is read only where it is needed."""
    if start is not None or end is not None:
        t0 = pd.Timestamp(start) if start is not None else None
        t1 = pd.Timestamp(end) + pd.Timedelta(days=1) if end is not None else None
        ds = ds.sel(time=slice(t0, t1))
        if ds.sizes["time"] == 0:
            raise DataError(f"{where}: no time step between {start} and {end}.", "check --start/--end against the data.")
    if lat is not None:
        s_, n_ = sorted(float(x) for x in lat)
        keep = np.flatnonzero((ds["lat"].values >= s_ - 1e-9) & (ds["lat"].values <= n_ + 1e-9))
        ds = ds.isel(lat=keep)
    if lon is not None:
        w, e = (float(x) for x in lon)
        vals = ds["lon"].values
        keep = np.flatnonzero(((vals - w) % 360.0) <= ((e - w) % 360.0) + 1e-9)
        ds = ds.isel(lon=keep)
        wrapped = ((ds["lon"] + 180.0) % 360.0) - 180.0
        ds = ds.assign_coords(lon=wrapped.values).sortby("lon")
    if (lat is not None and ds.sizes["lat"] == 0) or (lon is not None and ds.sizes["lon"] == 0):
        raise DataError(f"{where}: the box lat {lat}, lon {lon} holds no grid cell.", "check --lat/--lon against the data.")
    return ds


# ---------------------------------------------------------------------------------------------
# Aggregation


@dataclass
class _Series:
    """One ERA5 variable concatenated over all inputs, with its frequency."""

    name: str
    data: xr.DataArray
    freq: Frequency
    files: list[str]


def _collect(datasets: Sequence[tuple[str, xr.Dataset]], wanted: Iterable[str]) -> dict[str, _Series]:
    by_var: dict[str, list[tuple[str, xr.DataArray]]] = {}
    for where, ds in datasets:
        for v in ds.data_vars:
            if v in wanted:
                by_var.setdefault(str(v), []).append((where, ds[v]))
    out: dict[str, _Series] = {}
    for v, parts in by_var.items():
        das = [p for _, p in parts]
        da = das[0] if len(das) == 1 else xr.concat(das, dim="time", coords="minimal", compat="override", join="override")
        da = da.sortby("time")
        idx = da.indexes["time"]
        if idx.duplicated().any():
            log.warning("%s: %d time steps appear more than once in the inputs (first kept)", v, int(idx.duplicated().sum()))
            da = da.isel(time=~idx.duplicated())
        out[v] = _Series(v, da, detect_frequency(da["time"]), [w for w, _ in parts])
    return out


def _day_labels(time: pd.DatetimeIndex, shift: pd.Timedelta) -> pd.DatetimeIndex:
    return (time - shift).floor("D")


def complete_days(time: pd.DatetimeIndex, freq: Frequency, over_preceding: bool, name: str) -> tuple[pd.DatetimeIndex, dict[str, int]]:
    """Days with all ``freq.steps_per_day`` steps, and {day: steps} of the incomplete ones.

    A value valid over the step ending at its stamp (``over_preceding``) belongs to the day of
    ``stamp - step`` (so 00:00 of D+1 closes day D); an instantaneous one to the day of its stamp.
    """
    step = pd.Timedelta(seconds=float(freq.step_seconds))
    if abs(86400.0 / float(freq.step_seconds) - freq.steps_per_day) > 1e-6:
        raise DataError(f"{name}: the time step ({step}) does not divide a day.", "give hourly (or 3- or 6-hourly) ERA5 data.")
    labels = _day_labels(time, step if over_preceding else pd.Timedelta(0))
    counts = pd.Series(1, index=labels).groupby(level=0).size()
    full = counts.index[counts.values == freq.steps_per_day]
    part = {d.strftime("%Y-%m-%d"): int(n) for d, n in counts.items() if n != freq.steps_per_day}
    return pd.DatetimeIndex(full), part


def _units_factor_to_m(units: str, where: str) -> float:
    from xclim.core.units import units as ureg

    try:
        return float(ureg.Quantity(1.0, str(units)).to("m").magnitude)
    except Exception as exc:
        raise DataError(
            f"{where}: tp has units '{units}', not a depth of water (ERA5 gives m).",
            "fix the units attribute of tp (ERA5 total precipitation is in m of water equivalent).",
        ) from exc


def _finish(out: xr.DataArray, variable: str, src: xr.DataArray, where: str) -> xr.DataArray:
    """Canonical units and CF metadata of a daily variable."""
    from aid.standardise import convert_units

    if variable != "pr":  # precipitation arrives here already as mm d-1 (m of water per day x 1000)
        out.attrs["units"] = src.attrs.get("units", "")
        out.name = variable
        out = convert_units(out, variable, where)
    meta = VARIABLES[variable]
    out = out.astype("float32")
    out.attrs = {"standard_name": meta.standard_name, "units": meta.units, "long_name": meta.long_name}
    return out.rename(variable)


def _reduce_hourly(series: _Series, variable: str, how: str, days: pd.DatetimeIndex) -> xr.DataArray:
    """The daily ``how`` of one hourly series on ``days`` (all complete), lazily."""
    da = series.data
    step = pd.Timedelta(seconds=float(series.freq.step_seconds))
    shift = step if series.name in OVER_PRECEDING_STEP else pd.Timedelta(0)
    labels = _day_labels(da.indexes["time"], shift)
    da = da.assign_coords(time=labels)
    keep = np.flatnonzero(labels.isin(days))
    da = da.isel(time=keep)
    if da.chunks is None:
        da = da.chunk({"time": TIME_CHUNK})
    grouped = da.astype("float64").groupby("time")
    if how == "mean":
        red = grouped.mean(skipna=False)
    elif how == "max":
        red = grouped.max(skipna=False)
    elif how == "min":
        red = grouped.min(skipna=False)
    else:
        red = grouped.sum(skipna=False)
    red = red.sel(time=days)
    where = ", ".join(series.files[:3]) + (" ..." if len(series.files) > 3 else "")
    if variable == "pr":
        factor = _units_factor_to_m(series.data.attrs.get("units", ""), where) * 1000.0  # m of water -> mm
        red = (red * factor).clip(min=0.0)  # GRIB packing leaves ~-1e-17 m hours
    return _finish(red, variable, series.data, where)


def _hhmm(seconds: float) -> str:
    return f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}"


def _method_text(variable: str, source: str, how: str, freq: Frequency) -> tuple[str, str]:
    n = freq.steps_per_day
    hours = freq.step_seconds / 3600.0 if freq.step_seconds else 1.0
    interval = f"{hours:g} hour" + ("s" if hours != 1 else "")
    first, last = _hhmm(hours * 3600.0), _hhmm(86400.0 - hours * 3600.0)
    if source in OVER_PRECEDING_STEP:
        window = f"the {n} values stamped {first} of the day to 00:00 of the next day (each covers the {interval} ending at its stamp)"
    else:
        window = f"the {n} instantaneous values stamped 00:00 to {last} of the day"
    what = {"mean": "mean", "max": "maximum", "min": "minimum", "sum": "total"}[how]
    text = f"{what} of {source} over {window}"
    if variable == "pr":
        text += "; m of water per day x 1000 = mm d-1"
    if variable in ("tasmax", "tasmin") and source == "t2m":
        text += f" ({'mx2t' if variable == 'tasmax' else 'mn2t'} not in the input: the extreme between two hours is missed)"
    cm = f"time: {_CELL_METHOD[how]} (interval: {interval})"
    return text, cm


def _time_axis(days: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    noon = (days + pd.Timedelta(hours=12)).values
    bnds = np.stack([days.values, (days + pd.Timedelta(days=1)).values], axis=1)
    return noon, bnds


def daily_from_hourly(series: Mapping[str, _Series], variables: Sequence[str] | None,
                      start: str | None = None, end: str | None = None) -> xr.Dataset:
    """Daily variables from hourly ERA5 series (see module doc); the days complete in all of them
    (within ``start``..``end`` when given)."""
    plan: dict[str, tuple[str, str]] = {}
    for var, recipes in HOURLY_RECIPES.items():
        if variables is not None and var not in variables:
            continue
        for src, how in recipes:
            if src in series:
                plan[var] = (src, how)
                break
    if variables is not None:
        missing = [v for v in variables if v not in plan]
        if missing:
            need = {v: " or ".join(s for s, _ in HOURLY_RECIPES.get(v, ())) for v in missing}
            raise DataError(
                f"the inputs have no ERA5 variable for {missing} (found {sorted(series)}).",
                "add " + "; ".join(f"{v}: {s}" for v, s in need.items()) + " to the inputs.",
            )
    if not plan:
        raise DataError(f"the inputs hold none of {sorted({s for r in HOURLY_RECIPES.values() for s, _ in r})}.",
                        "give ERA5 hourly single-level files of t2m, mx2t, mn2t, tp, u10 or v10.")
    days_per: dict[str, pd.DatetimeIndex] = {}
    for src in sorted({s for s, _ in plan.values()}):
        s = series[src]
        full, part = complete_days(s.data.indexes["time"], s.freq, src in OVER_PRECEDING_STEP, src)
        lo = pd.Timestamp(start) if start is not None else pd.Timestamp.min
        hi = pd.Timestamp(end) if end is not None else pd.Timestamp.max
        full = full[(full >= lo) & (full <= hi)]
        part = {d: n for d, n in part.items() if lo <= pd.Timestamp(d) <= hi}
        if part:
            rule = " (a value stamped hh:00 covers the preceding step, so day D needs 01:00 of D to 00:00 of D+1)" if src in OVER_PRECEDING_STEP else ""
            log.warning(
                "%s: dropped %d incomplete day(s) of %d steps each%s: %s",
                src, len(part), s.freq.steps_per_day, rule,
                ", ".join(f"{d} ({n} steps)" for d, n in list(part.items())[:5]) + (" ..." if len(part) > 5 else ""),
            )
        days_per[src] = full
    common = None
    for full in days_per.values():
        common = full if common is None else common.intersection(full)
    assert common is not None
    if len(common) == 0:
        detail = "; ".join(f"{src}: {len(full)} complete" for src, full in days_per.items())
        raise DataError(
            f"no day is complete in every input variable ({detail}; files {', '.join(sorted({f for s in series.values() for f in s.files}))}).",
            "give every hour of each day; for tp and mx2t/mn2t also 00:00 of the next day (it closes the day).",
        )
    for src, full in days_per.items():
        extra = len(full) - len(common)
        if extra:
            log.warning("%s: %d complete day(s) left out because another variable is incomplete on them", src, extra)
    noon, bnds = _time_axis(common)
    out: dict[str, xr.DataArray] = {}
    for var, (src, how) in plan.items():
        da = _reduce_hourly(series[src], var, how, common)
        text, cm = _method_text(var, src, how, series[src].freq)
        da.attrs.update({"cell_methods": cm, "aid_daily_method": text, "aid_daily_source": src})
        out[var] = da.assign_coords(time=noon)
    ds = xr.Dataset(out)
    ds.attrs.update({f"aid_daily_{v}": da.attrs["aid_daily_method"] for v, da in out.items()})
    ds["time_bnds"] = (("time", "bnds"), bnds)
    return ds


def daily_from_statistics(series: Mapping[str, _Series], statistic: str, variables: Sequence[str] | None) -> xr.Dataset:
    """CDS daily statistics (already daily): rename, convert, annotate."""
    if statistic not in STATISTICS:
        raise DataError(f"unknown daily statistic '{statistic}'.", f"use one of {', '.join(STATISTICS)}.")
    out: dict[str, xr.DataArray] = {}
    for src, s in series.items():
        var = DAILY_STATISTICS.get((src, statistic))
        if var is None or (variables is not None and var not in variables):
            continue
        where = ", ".join(s.files[:3])
        da = s.data
        if da.chunks is None:
            da = da.chunk({"time": 31})
        if var == "pr":
            per_day = 24.0 if statistic == "mean" else 1.0  # mean of the hourly accumulations -> daily total
            red = (da.astype("float64") * _units_factor_to_m(da.attrs.get("units", ""), where) * 1000.0 * per_day).clip(min=0.0)
            da = _finish(red, var, s.data, where)
            text = "CDS daily statistics: " + ("daily mean of hourly tp x 24 h" if statistic == "mean" else "daily sum of hourly tp") + ", m x 1000 = mm d-1"
        else:
            da = _finish(da.astype("float64"), var, s.data, where)
            text = f"CDS daily statistics: daily {statistic} of hourly {src}"
        da.attrs.update({"cell_methods": f"time: {_CELL_METHOD[statistic]}", "aid_daily_method": text, "aid_daily_source": src})
        out[var] = da
    if not out:
        raise DataError(
            f"the daily inputs hold {sorted(series)}, none of which gives a daily variable as '{statistic}'.",
            f"pass the statistic the files hold ({', '.join(sorted({f'{v}:{st}' for (v, st) in DAILY_STATISTICS}))}).",
        )
    ds = xr.Dataset(out)
    ds.attrs.update({f"aid_daily_{v}": da.attrs["aid_daily_method"] for v, da in out.items()})
    days = pd.DatetimeIndex(ds.indexes["time"]).floor("D")
    if days.duplicated().any():
        raise DataError("the daily inputs have several time steps on one day.", "give one file per statistic, one value a day.")
    noon, bnds = _time_axis(days)
    ds = ds.assign_coords(time=noon)
    ds["time_bnds"] = (("time", "bnds"), bnds)
    return ds


def era5_daily(
    paths: Sequence[str | os.PathLike[str]],
    variables: Sequence[str] | None = None,
    statistic: str | None = None,
    **selection: Any,
) -> xr.Dataset:
    """The daily dataset (lazy) from ERA5 files: hourly inputs are aggregated, daily ones (CDS
    daily statistics, with ``statistic``) converted. ``variables`` limits the output (default: all
    that the inputs give); ``selection`` (start, end, lat, lon) is passed to :func:`select`."""
    if not paths:
        raise DataError("no input files given.", "pass ERA5 files (NetCDF, GRIB or Zarr).")
    return daily_from_datasets([(str(p), open_raw(p)) for p in paths], variables, statistic, **selection)


def daily_from_datasets(
    named: Sequence[tuple[str, xr.Dataset]],
    variables: Sequence[str] | None = None,
    statistic: str | None = None,
    start: str | None = None,
    end: str | None = None,
    lat: Sequence[float] | None = None,
    lon: Sequence[float] | None = None,
) -> xr.Dataset:
    """:func:`era5_daily` of datasets already opened (``(name for messages, dataset as stored)``);
    the reference stage passes the files it opened to detect their frequency (a GRIB is indexed once)."""
    opened = [(where, select(normalise_layout(ds, where), where, start, end, lat, lon)) for where, ds in named]
    wanted = set(ERA5_NAMES)
    series = _collect(opened, wanted)
    freqs = {s.freq.name for s in series.values()}
    sub = {n for n in freqs if n.endswith("h")}
    if sub and sub != freqs or len(sub) > 1:
        which = "; ".join(f"{s.name}: {s.freq.describe()} ({', '.join(s.files[:2])})" for s in series.values())
        raise DataError(f"the inputs mix time frequencies ({which}).", "give files of one frequency (all hourly, or all daily statistics).")
    if sub:
        ds = daily_from_hourly(series, variables, start, end)
        kind = f"ERA5 {next(iter(sub))} single levels"
    elif freqs == {"single"} and statistic is None:
        files = ", ".join(sorted({f for s in series.values() for f in s.files})[:3])
        when = str(next(iter(series.values())).data["time"].values[0])[:16]
        raise DataError(
            f"{files}: one time step ({when}), so no day can be made from it: a daily value needs every hour of the day.",
            "give all hours of the days you need (for tp also 00:00 of the next day); if the file is one day of the "
            "CDS daily statistics, pass --statistic.",
        )
    elif freqs <= {"day", "single"}:
        if statistic is None:
            files = ", ".join(sorted({f for s in series.values() for f in s.files})[:3])
            raise DataError(
                f"{files}: the data are already daily (the CDS daily statistics product?), and one file holds one statistic.",
                "say which with --statistic mean|max|min|sum (e.g. t2m daily maximum -> --statistic max gives tasmax).",
            )
        ds = daily_from_statistics(series, statistic, variables)
        kind = f"CDS ERA5 daily statistics ({statistic})"
    else:
        which = "; ".join(f"{s.name}: {s.freq.describe()} ({', '.join(s.files[:2])})" for s in series.values())
        raise DataError(f"the inputs are neither hourly nor daily ({which}).",
                        "give ERA5 hourly single levels or the CDS daily statistics; monthly means cannot make daily fields.")
    if start is not None or end is not None:
        days = pd.DatetimeIndex(ds.indexes["time"]).floor("D")
        inside = np.ones(len(days), bool)
        if start is not None:
            inside &= days >= pd.Timestamp(start)
        if end is not None:
            inside &= days <= pd.Timestamp(end)
        ds = ds.isel(time=np.flatnonzero(inside))
    ds = ds.transpose("time", ..., "bnds") if "bnds" in ds.dims else ds
    for v in ds.data_vars:
        if v != "time_bnds" and {"lat", "lon"} <= set(ds[v].dims):
            other = [d for d in ds[v].dims if d not in ("time", "lat", "lon")]
            ds[v] = ds[v].transpose("time", "lat", "lon", *other)
    ds["time"].attrs.update({"standard_name": "time", "axis": "T", "bounds": "time_bnds"})
    for c, std, units in (("lat", "latitude", "degrees_north"), ("lon", "longitude", "degrees_east")):
        if c in ds.coords:
            ds[c].attrs = {"standard_name": std, "units": units, "axis": "Y" if c == "lat" else "X"}
    ds.attrs["aid_era5_input"] = kind
    return ds


def write_era5_daily(
    paths: Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
    variables: Sequence[str] | None = None,
    statistic: str | None = None,
    **selection: Any,
) -> Path:
    """``aid era5-daily``: write :func:`era5_daily` of ``paths`` as one CF NetCDF (atomic)."""
    from aid.io import write_netcdf
    from aid.provenance import provenance_attrs, relpath_or_name

    ds = era5_daily(paths, variables, statistic, **selection)
    if ds.sizes["time"] == 0:
        raise DataError(f"no complete day between {selection.get('start')} and {selection.get('end')}.",
                        "widen --start/--end or give the missing hours.")
    names = [relpath_or_name(p) if "://" not in str(p) else str(p) for p in paths]
    ds.attrs.update(provenance_attrs(
        "era5-daily",
        source_files=" ".join(names[:10]) + (" ..." if len(names) > 10 else ""),
    ))
    ds.attrs.update({"Conventions": "CF-1.8", "frequency": "day", "source": "ERA5 (Copernicus Climate Change Service)",
                     "license": "Contains modified Copernicus Climate Change Service information (CC-BY 4.0)"})
    enc: dict[str, Any] = {v: {"dtype": "float32", "zlib": True, "complevel": 4, "_FillValue": np.float32(1e20)}
                           for v in ds.data_vars if v != "time_bnds"}
    enc["time"] = {"units": "days since 1940-01-01", "calendar": "standard", "dtype": "float64", "_FillValue": None}
    enc["time_bnds"] = {"units": "days since 1940-01-01", "calendar": "standard", "dtype": "float64", "_FillValue": None}
    for c in ("lat", "lon"):
        if c in ds.variables:
            enc[c] = {"_FillValue": None}
    log.info("era5-daily: %d days of %s from %d input(s)", ds.sizes["time"], ", ".join(v for v in ds.data_vars if v != "time_bnds"), len(paths))
    return write_netcdf(ds, out_path, encoding=enc)
