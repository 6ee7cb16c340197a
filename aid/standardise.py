"""Standardise one variable of a CMIP6-like dataset to aid's internal conventions.

Why one function: every later stage (regrid, bias adjustment, the model, indices) assumes the same
names, units, axis order and time stamps (see ``docs/CONTRACTS.md``). Real archives disagree on all
of them: CMIP6 longitudes run 0..360, some grids store latitude north-to-south, precipitation is a
mass flux (kg m-2 s-1), daily stamps sit at 00:00, 09:00 or 12:00, and calendars are ``noleap`` or
``360_day``. :func:`standardise` fixes names, units, axes and stamps, and *keeps* the model calendar
(it is converted only at bias adjustment, where a reference calendar is chosen deliberately).

Conventions after :func:`standardise`:

- the variable carries its CF name (``tas tasmax tasmin pr uas vas sfcWind``), dims ``(time, lat, lon)``
  when the input is gridded (point data keep their station dimension);
- units ``K`` for temperatures, ``mm d-1`` for precipitation (a mass flux is converted with xclim's
  ``hydro`` context, i.e. divided by the density of water: kg m-2 s-1 x 86400 = mm d-1), ``m s-1``
  for winds; missing or unconvertible units raise :class:`~aid.errors.DataError` naming the file;
- longitudes in -180..180 ascending, latitudes ascending;
- cell bounds, auxiliary variables and scalar coordinates (e.g. ``height``) dropped: nothing downstream
  uses them, and scalar coordinates that differ between variables (2 m vs 10 m) break merges;
- daily time stamps at 12:00 of their day, in the file's own calendar, recorded in ``attrs["calendar"]``;
- duplicate time steps dropped (first kept) and counted in ``attrs["aid_duplicate_time_steps"]``;
  time steps that are NaN everywhere counted in ``attrs["aid_nan_only_time_steps"]`` (and logged) so
  the completeness check can refuse them.
"""

from __future__ import annotations

import datetime as _dt
import logging
from typing import Any

import numpy as np
import xarray as xr

from aid.errors import DataError
from aid.variables import VARIABLES

log = logging.getLogger(__name__)

#: Canonical units, CF standard names and other names per variable (from the registry).
CANONICAL_UNITS: dict[str, str] = {v: m.units for v, m in VARIABLES.items()}
STANDARD_NAMES: dict[str, str] = {v: m.standard_name for v, m in VARIABLES.items()}
ALIASES: dict[str, tuple[str, ...]] = {v: m.aliases for v, m in VARIABLES.items()}

_LAT_NAMES = ("lat", "latitude", "nav_lat", "y_lat")
_LON_NAMES = ("lon", "longitude", "nav_lon", "x_lon")


def rename_coords(ds: xr.Dataset) -> xr.Dataset:
    """Rename latitude/longitude coordinates (by name or CF standard_name) to ``lat``/``lon``."""
    ren: dict[str, str] = {}
    for name in list(ds.variables):
        sname = str(ds[name].attrs.get("standard_name", ""))
        if name != "lat" and "lat" not in ds.variables and (name in _LAT_NAMES or sname == "latitude"):
            ren.setdefault(name, "lat")
        if name != "lon" and "lon" not in ds.variables and (name in _LON_NAMES or sname == "longitude"):
            ren.setdefault(name, "lon")
    if "valid_time" in ds.variables and "time" not in ds.dims and "valid_time" in ds.dims:
        ren["valid_time"] = "time"
    return ds.rename(ren) if ren else ds


def _find_variable(ds: xr.Dataset, variable: str, where: str) -> str:
    if variable in ds.data_vars:
        return variable
    for alias in ALIASES.get(variable, ()):
        if alias in ds.data_vars:
            return alias
    raise DataError(
        f"{where}: variable '{variable}' not found (data variables: {sorted(map(str, ds.data_vars))}).",
        f"check the catalog's variable_id for this file, or rename the variable to '{variable}'.",
    )


def _is_daily(time: xr.DataArray) -> bool:
    """True for daily steps, or a single step (a one-day file, e.g. MIROC6 2015-01-01)."""
    from aid.frequency import detect_frequency

    return detect_frequency(time).name in ("day", "single")


def _calendar(ds: xr.Dataset) -> str:
    if "time" not in ds.variables:
        return "none"
    cal = ds["time"].encoding.get("calendar") or ds["time"].attrs.get("calendar")
    if cal is None:
        try:
            cal = ds["time"].dt.calendar
        except Exception:
            cal = "standard"
    cal = str(cal)
    return "standard" if cal == "gregorian" else cal


_AMOUNT_DIMS = ({"[length]": 1}, {"[mass]": 1, "[length]": -2})
#: Dimensionalities accepted per canonical unit. Checked *before* xclim converts, because xclim may
#: reinterpret a variable through its standard_name (flux <-> amount) and accept nonsense units.
_ALLOWED_DIMS: dict[str, tuple[dict[str, float], ...]] = {
    "K": ({"[temperature]": 1},),
    "m s-1": ({"[length]": 1, "[time]": -1},),
    "mm d-1": ({"[length]": 1, "[time]": -1}, {"[mass]": 1, "[length]": -2, "[time]": -1}, *_AMOUNT_DIMS),
}


def _dimensionality(units: str) -> dict[str, float] | None:
    from xclim.core.units import units as ureg

    try:
        return dict(ureg.Quantity(1, str(units)).dimensionality)
    except Exception:
        return None


def _is_amount(units: str) -> bool:
    """True for a precipitation *amount* (a length, or a mass per area), not a rate."""
    return _dimensionality(units) in _AMOUNT_DIMS


def convert_units(da: xr.DataArray, variable: str, where: str) -> xr.DataArray:
    """Convert ``da`` to the canonical units of ``variable`` with xclim (pint underneath).

    Precipitation as a mass flux (kg m-2 s-1) needs xclim's ``hydro`` context (water density
    1000 kg m-3); precipitation given as a daily *amount* (m, mm, kg m-2 per day) is turned into a
    rate with :func:`xclim.core.units.amount2rate`.
    """
    from xclim.core.units import amount2rate, convert_units_to

    target = CANONICAL_UNITS.get(variable)
    if target is None:
        raise DataError(f"{where}: no canonical units known for variable '{variable}'.",
                        f"use one of {', '.join(CANONICAL_UNITS)}.")
    units = da.attrs.get("units")
    if units is None or str(units).strip() == "":
        raise DataError(
            f"{where}: variable '{da.name}' has no 'units' attribute; cannot convert to {target}.",
            f"set its units attribute (e.g. ncatted -a units,{da.name},o,c,'{target}' FILE) and re-run.",
        )
    if str(units).strip() == target:  # already canonical: skip pint (and xclim's slow import)
        out = da.copy()
        out.attrs["units"] = target
        return out
    context = "hydro" if variable == "pr" else None
    dim = _dimensionality(str(units))
    if dim is None or dim not in _ALLOWED_DIMS[target]:
        # Written out by hand: pint's own repr of the exponents (1 vs 1.0) depends on import order.
        dims = " ".join(k if float(v) == 1 else f"{k}^{float(v):g}" for k, v in sorted(dict(dim or {}).items()))
        what = "are not known units" if dim is None else f"have dimensions {dims}"
        raise DataError(
            f"{where}: variable '{da.name}' has units '{units}' that cannot be converted to {target} ({what}).",
            f"fix the units attribute of '{da.name}' in this file (expected something convertible to {target}).",
        )
    try:
        out = convert_units_to(da, target, context=context)
    except Exception as exc:  # pint's UndefinedUnitError / DimensionalityError, xclim's ValidationError
        out = None
        if variable == "pr" and "time" in da.dims and _is_amount(units):
            try:  # an amount per time step (ERA5 tp in m, kg m-2 per day) -> rate
                out = convert_units_to(amount2rate(da, dim="time", out_units=target), target, context="hydro")
            except Exception:
                out = None
        if out is None:
            raise DataError(
                f"{where}: variable '{da.name}' has units '{units}' that cannot be converted to {target} "
                f"({type(exc).__name__}: {exc}).",
                f"fix the units attribute of '{da.name}' in this file (expected something convertible to {target}).",
            ) from exc
    out.attrs["units"] = target
    return out


def _normalise_daily_stamps(ds: xr.Dataset) -> xr.Dataset:
    """Put daily stamps at 12:00 of their (calendar) day, whatever the calendar."""
    floored = ds["time"].dt.floor("D")
    noon = floored + np.timedelta64(12, "h") if np.issubdtype(floored.dtype, np.datetime64) else floored + _dt.timedelta(hours=12)
    enc = dict(ds["time"].encoding)
    attrs = dict(ds["time"].attrs)
    ds = ds.assign_coords(time=noon.values)
    ds["time"].attrs.update(attrs)
    ds["time"].encoding.update({k: v for k, v in enc.items() if k in ("units", "calendar", "dtype")})
    return ds


def standardise(ds: xr.Dataset, variable: str, path_or_key: str) -> xr.Dataset:
    """Return a dataset with only ``variable`` in aid's conventions (see module docstring).

    ``path_or_key`` names the source (file path or catalog dataset key) in every error message.
    """
    from aid.frequency import ensure_time_dim

    where = str(path_or_key)
    ds = rename_coords(ensure_time_dim(ds))
    name = _find_variable(ds, variable, where)
    calendar = _calendar(ds)
    da = ds[name]
    if name != variable:
        da = da.rename(variable)
    da = convert_units(da, variable, where)
    da.attrs["standard_name"] = STANDARD_NAMES.get(variable, da.attrs.get("standard_name", variable))
    keep_attrs = {k: v for k, v in da.attrs.items() if k in ("standard_name", "long_name", "units", "cell_methods", "comment")}
    da.attrs = keep_attrs
    # Only dimension coordinates survive (drops height, bounds, time_bnds, ...).
    drop = [c for c in da.coords if c not in da.dims and c not in ("lat", "lon")]
    da = da.drop_vars(drop)
    out = da.to_dataset()
    out.attrs = dict(ds.attrs)

    if "lon" in out.variables:
        lon = out["lon"]
        wrapped = ((lon + 180.0) % 360.0) - 180.0
        # 180 stays 180 rather than -180 only if nothing else sits at -180; keep the CF -180 form.
        out = out.assign_coords(lon=wrapped.assign_attrs(lon.attrs))
        out["lon"].attrs.update({"units": "degrees_east", "standard_name": "longitude", "axis": "X"})
        if "lon" in out.dims:
            out = out.sortby("lon")
    if "lat" in out.variables:
        out["lat"].attrs.update({"units": "degrees_north", "standard_name": "latitude", "axis": "Y"})
        if "lat" in out.dims:
            out = out.sortby("lat")
    if "lat" in out.dims and "lon" in out.dims and "time" in out.dims:
        other = [d for d in out[variable].dims if d not in ("time", "lat", "lon")]
        out[variable] = out[variable].transpose("time", "lat", "lon", *other)
    for c in ("lat", "lon"):
        if c in out.variables:
            out[c].attrs.pop("bounds", None)

    if "time" in out.dims:
        if _is_daily(out["time"]):
            out = _normalise_daily_stamps(out)
        idx = out.indexes["time"]
        dup = idx.duplicated()
        n_dup = int(dup.sum())
        if n_dup:
            log.warning("%s: %d duplicate time steps (first kept), e.g. %s", where, n_dup, idx[dup][:3].tolist())
            out = out.isel(time=~dup)
        if not out.indexes["time"].is_monotonic_increasing:
            out = out.sortby("time")
        out.attrs["aid_duplicate_time_steps"] = n_dup
        spatial = [d for d in out[variable].dims if d != "time"]
        nan_only = out[variable].isnull().all(dim=spatial) if spatial else out[variable].isnull()
        n_nan = int(nan_only.sum())
        if n_nan:
            first = out["time"].values[np.asarray(nan_only.values)][:3]
            log.warning("%s: %d time steps are NaN everywhere, e.g. %s", where, n_nan, [str(t) for t in first])
        out.attrs["aid_nan_only_time_steps"] = n_nan
        out["time"].encoding["calendar"] = calendar
        out["time"].attrs.pop("bounds", None)
        out["time"].attrs.update({"standard_name": "time", "axis": "T"})
    out.attrs["calendar"] = calendar
    out.attrs["variable_id"] = variable
    return out


def describe(ds: xr.Dataset) -> dict[str, Any]:
    """Small summary (used in logs and tests): sizes, calendar, lon/lat ranges."""
    info: dict[str, Any] = {"sizes": dict(ds.sizes), "calendar": ds.attrs.get("calendar")}
    for c in ("lat", "lon"):
        if c in ds.variables:
            info[c] = (float(ds[c].min()), float(ds[c].max()))
    return info
