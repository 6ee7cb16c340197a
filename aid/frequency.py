"""The time frequency of a dataset, read from its time steps (never from its header).

Why from the steps: headers lie (the MPI-ESM1-2-LR DCPP daily files say ``frequency = mon``), many
catalogs have no ``frequency`` column, and ERA5 as users download it is hourly with nothing in
the file saying so. A daily stage fed hourly data silently trains on 24 "days" per day, and a
monthly file fails much later with a misleading message, so every stage that needs daily data
asks :func:`require_daily` at the point it opens a file.

The step is the median difference of consecutive time stamps (robust to a gap or a missing day);
:func:`xarray.infer_freq` would return ``None`` for any series with a gap, which is the normal
state of a real archive.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass

import numpy as np
import xarray as xr

from aid.errors import DataError

log = logging.getLogger(__name__)

_HOUR = 3600.0
_DAY = 86400.0


@dataclass(frozen=True)
class Frequency:
    """What the time axis holds: ``name`` is ``Nh`` (sub-daily), ``day``, ``mon``, ``year``,
    ``single`` (one time step: nothing to infer) or ``irregular``; ``step_seconds`` the median step."""

    name: str
    step_seconds: float | None

    @property
    def subdaily(self) -> bool:
        return self.name.endswith("h")

    @property
    def daily(self) -> bool:
        return self.name == "day"

    def describe(self) -> str:
        words = {"day": "daily", "mon": "monthly", "year": "yearly", "single": "a single time step"}
        if self.subdaily:
            return f"sub-daily ({self.name}, {self.steps_per_day} steps a day)"
        if self.name == "irregular":
            return f"irregular (median step {self.step_seconds / _DAY:.3g} days)"
        return words.get(self.name, self.name)

    @property
    def steps_per_day(self) -> int:
        if not self.subdaily or not self.step_seconds:
            return 1
        return int(round(_DAY / self.step_seconds))


def _seconds(a: object, b: object) -> float:
    d = b - a  # type: ignore[operator]
    if isinstance(d, np.timedelta64):
        return float(d / np.timedelta64(1, "s"))
    if isinstance(d, _dt.timedelta):
        return d.total_seconds()
    return float(d)  # numeric time axis (undecoded): unknown units, treated as given


def detect_frequency(time: xr.DataArray | np.ndarray) -> Frequency:
    """Frequency of a time axis from the median step of its sorted stamps (see module doc)."""
    vals = np.asarray(time.values if isinstance(time, xr.DataArray) else time).ravel()
    if vals.size < 2:
        return Frequency("single", None)
    vals = np.sort(vals)
    secs = np.array([_seconds(a, b) for a, b in zip(vals[:-1], vals[1:])])
    secs = secs[secs > 0]
    if secs.size == 0:
        return Frequency("single", None)
    step = float(np.median(secs))
    if step < 20 * _HOUR:
        hours = step / _HOUR
        name = f"{hours:g}h" if abs(hours - round(hours)) > 1e-6 else f"{int(round(hours))}h"
        return Frequency(name, step)
    if step <= 1.5 * _DAY:
        return Frequency("day", step)
    if 27 * _DAY <= step <= 32 * _DAY:
        return Frequency("mon", step)
    if 359 * _DAY <= step <= 367 * _DAY:
        return Frequency("year", step)
    return Frequency("irregular", step)


def time_coordinate(ds: xr.Dataset) -> xr.DataArray | None:
    """The time axis of ``ds`` (``time``, or ``valid_time`` as the new CDS NetCDF layout names it)."""
    for name in ("time", "valid_time"):
        if name in ds.variables and ds[name].ndim <= 1:
            return ds[name]
    return None


def ensure_time_dim(ds: xr.Dataset) -> xr.Dataset:
    """Give a single-time dataset (one GRIB field: ``time`` is a scalar coordinate) a length-1
    ``time`` dimension, so every stage sees ``(time, lat, lon)``; others are returned unchanged."""
    if "time" in ds.dims:
        return ds
    if "valid_time" in ds.dims:
        return ds
    for name in ("valid_time", "time"):
        if name in ds.coords and ds[name].ndim == 0:
            ds = ds.drop_vars([c for c in ("time", "valid_time") if c in ds.coords and c != name])
            ds = ds.expand_dims(name)
            if name != "time":
                ds = ds.rename({name: "time"})
            return ds
    return ds


def require_daily(ds: xr.Dataset, where: str, fix_subdaily: str, allow_single: bool = True) -> Frequency:
    """Refuse anything but daily data: sub-daily, monthly, yearly or irregular time steps raise a
    DataError naming ``where`` (the file), the detected frequency and the fix. One time step cannot
    be told apart from a day and is accepted when ``allow_single``."""
    t = time_coordinate(ds)
    if t is None:
        raise DataError(
            f"{where}: no time axis (variables {sorted(map(str, ds.variables))}); a daily time series is required.",
            "give files with a 'time' (or 'valid_time') axis of daily steps.",
        )
    freq = detect_frequency(t)
    if allow_single and freq.name == "single":
        log.warning("%s: one time step, so its frequency cannot be checked; it is taken as one day", where)
        return freq
    if freq.daily:
        return freq
    if freq.subdaily:
        raise DataError(
            f"{where}: the data are {freq.describe()}, {t.size} time steps from {str(t.values.min())[:16]} to "
            f"{str(t.values.max())[:16]}; daily data are required.",
            fix_subdaily,
        )
    raise DataError(
        f"{where}: the data are {freq.describe()} ({t.size} time steps from {str(t.values.min())[:10]} to "
        f"{str(t.values.max())[:10]}); daily data are required.",
        "use the daily (table 'day') files of this dataset; aid cannot make daily fields from monthly means.",
    )
