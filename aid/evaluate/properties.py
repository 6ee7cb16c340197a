"""Statistical properties of the downscaled fields (xsdba) and the fraction of cells aid improves.

Why: CRPS and MAE score day-by-day agreement; a climate-impact user asks whether the *statistics*
of the product are right: the tails (1 % / 99 % quantiles), how long warm, dry and wet spells last,
day-to-day persistence (lag-1 autocorrelation), how far a weather pattern stays coherent in space
(spatial correlogram, decorrelation length) and how variance is spread over spatial scales
(spectral variance, Denis et al. 2002). These are xsdba's statistical properties, compared with
xsdba's measures (bias for most, ratio for the spectral variance), as Ouranos' xscen diagnostics do.

Summary (xscen's ``measures_improvement``): for each property, the fraction of points (grid cells,
or seasons x cells, distance bins, wavenumber bands) where ``|measure(aid)| <= |measure(baseline)|``
(``|ratio - 1|`` for ratios); ties count as improved as in xscen, and their fraction is reported
separately so a tie (e.g. two decorrelation lengths in the same distance bin) is not read as skill.
aid is compared sample by sample (each diffusion sample is a realistic field; the ensemble mean is
smooth by construction), so the fraction is over samples x points.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Property:
    """One xsdba statistical property with its arguments and the measure that compares it."""

    name: str            # column name in the tables, e.g. "q99"
    label: str           # what a reader sees
    xsdba: str           # attribute of xsdba.properties
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    measure: str = "bias"  # attribute of xsdba.measures: bias | ratio
    variables: tuple[str, ...] | None = None  # None: every variable
    time_mean: bool = False  # the property keeps a time axis (spectral variance per day): average it


#: Spatial properties need coordinates with CF attributes (xsdba finds them through cf_xarray).
_CF_COORDS = {"lat": {"standard_name": "latitude", "units": "degrees_north"},
              "lon": {"standard_name": "longitude", "units": "degrees_east"}}

PROPERTIES: tuple[Property, ...] = (
    Property("q01", "1 % quantile", "quantile", {"q": 0.01, "group": "time"}),
    Property("q99", "99 % quantile", "quantile", {"q": 0.99, "group": "time"}),
    Property("warm_spell", "mean warm-spell length (> local 90 % quantile)", "spell_length_distribution",
             {"method": "quantile", "op": ">", "thresh": 0.9, "stat": "mean", "group": "time"},
             variables=("tasmax", "tas")),
    Property("dry_spell", "mean dry-spell length (< 1 mm/d)", "spell_length_distribution",
             {"method": "amount", "op": "<", "thresh": "1 mm d-1", "stat": "mean", "group": "time"},
             variables=("pr",)),
    Property("wet_spell", "mean wet-spell length (>= 1 mm/d)", "spell_length_distribution",
             {"method": "amount", "op": ">=", "thresh": "1 mm d-1", "stat": "mean", "group": "time"},
             variables=("pr",)),
    Property("acf1", "lag-1 autocorrelation (per season)", "acf", {"lag": 1, "group": "time.season"}),
    Property("correlogram", "spatial correlogram (per distance bin)", "spatial_correlogram",
             {"dims": ["lat", "lon"], "bins": 20, "group": "time"}),
    Property("decorrelation", "decorrelation length (corr 0.5, within 500 km)", "decorrelation_length",
             {"dims": ["lat", "lon"], "radius": 500, "thresh": 0.5, "bins": 20, "group": "time"}),
    Property("spectral_variance", "spectral variance (per wavenumber band)", "spectral_variance",
             {"dims": ["lat", "lon"], "group": "time"}, measure="ratio", time_mean=True),
)


def _time_axis(times: np.ndarray) -> Any:
    """ISO date strings (the evaluation aligns systems by date) -> a time axis xsdba can group."""
    keys = [str(t)[:10] for t in times]
    try:
        return pd.to_datetime(keys, format="%Y-%m-%d") + pd.Timedelta(hours=12)
    except ValueError:  # 360_day dates such as 02-30
        import cftime

        return [cftime.Datetime360Day(int(k[:4]), int(k[5:7]), int(k[8:10]), 12) for k in keys]


def prepare(da: xr.DataArray, units: str) -> xr.DataArray:
    """A (time, lat, lon) field ready for xsdba: real time axis, CF coordinates, ``units``."""
    da = da.transpose("time", "lat", "lon")
    if da["time"].dtype.kind in "OUS":
        da = da.assign_coords(time=_time_axis(da["time"].values))
    da = da.assign_coords(lat=da["lat"].assign_attrs(_CF_COORDS["lat"]), lon=da["lon"].assign_attrs(_CF_COORDS["lon"]))
    return da.astype("float64").assign_attrs(units=da.attrs.get("units") or units)


def applicable(prop: Property, variable: str, available: set[str]) -> bool:
    """A property applies to its variables; the warm spell to tasmax, or to tas when there is no tasmax."""
    if prop.variables is None:
        return True
    if prop.name == "warm_spell":
        return variable == ("tasmax" if "tasmax" in available else "tas")
    return variable in prop.variables


def compute_property(prop: Property, da: xr.DataArray) -> xr.DataArray:
    """The xsdba property of one prepared field (loaded into memory)."""
    import xsdba

    func: Callable[..., xr.DataArray] = getattr(xsdba.properties, prop.xsdba)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # xsdba/xclim metadata warnings (missing cell_methods, ...)
        out = func(da, **prop.kwargs)
    if prop.time_mean and "time" in out.dims:
        out = out.mean("time", keep_attrs=True)
    return out.load()


def compute_measure(prop: Property, sim: xr.DataArray, ref: xr.DataArray) -> xr.DataArray:
    """xsdba measure (bias or ratio) of a property of ``sim`` against the reference's."""
    import xsdba

    func = getattr(xsdba.measures, prop.measure)
    sim, ref = xr.align(sim, ref, join="inner")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return func(sim, ref).load()


def _error(prop: Property, meas: xr.DataArray) -> xr.DataArray:
    return abs(meas - 1) if prop.measure == "ratio" else abs(meas)


def improvement(prop: Property, meas_new: xr.DataArray, meas_old: xr.DataArray) -> tuple[float, float, int]:
    """(fraction improved incl. ties, fraction tied, number of points compared), xscen's rule."""
    new, old = xr.broadcast(_error(prop, meas_new), _error(prop, meas_old))
    diff = (old - new).values.ravel()
    ok = np.isfinite(diff)
    n = int(ok.sum())
    if n == 0:
        return math.nan, math.nan, 0
    # equal up to float32 round-off of the inputs counts as a tie
    tol = 1e-6 * np.maximum(np.abs(old.values.ravel()[ok]), 1e-12)
    d = diff[ok]
    return float(np.mean(d >= -tol)), float(np.mean(np.abs(d) <= tol)), n


def _mean_error(prop: Property, meas: xr.DataArray) -> float:
    e = _error(prop, meas).values
    e = e[np.isfinite(e)]
    return float(e.mean()) if e.size else math.nan


def property_table(
    variable: str,
    ref: xr.DataArray,
    ens: xr.DataArray | None,
    systems: Mapping[str, xr.DataArray],
    units: str,
    available: set[str],
    baseline: str = "bicubic",
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Rows (variable, property, measure, mean |error| per system, fraction of points aid improves).

    ``ref`` and every system are (time, lat, lon) on the same days; ``ens`` is (sample, time, lat, lon).
    ``names`` restricts the properties (default: all of :data:`PROPERTIES`).
    """
    rows: list[dict[str, Any]] = []
    refp = prepare(ref, units)
    fields = {name: prepare(da, units) for name, da in systems.items()}
    members = [prepare(ens.isel(sample=i, drop=True), units) for i in range(ens.sizes["sample"])] if ens is not None else []
    for prop in PROPERTIES:
        if names is not None and prop.name not in names:
            continue
        if not applicable(prop, variable, available):
            continue
        try:
            pref = compute_property(prop, refp)
            meas = {name: compute_measure(prop, compute_property(prop, da), pref) for name, da in fields.items()}
            aid_meas = [compute_measure(prop, compute_property(prop, m), pref) for m in members]
        except (ValueError, KeyError, IndexError) as exc:  # e.g. too few days for a seasonal acf
            log.warning("property %s of %s not computed: %s: %s", prop.name, variable, type(exc).__name__, exc)
            continue
        row: dict[str, Any] = dict(variable=variable, property=prop.name, label=prop.label, measure=prop.measure)
        stacked = xr.concat(aid_meas, dim="sample") if aid_meas else None
        if stacked is not None:
            row["aid"] = _mean_error(prop, stacked)
        for name, m in meas.items():
            row[name] = _mean_error(prop, m)
        if stacked is not None:
            for name, m in meas.items():
                frac, tie, n = improvement(prop, stacked, m)
                row[f"improved_vs_{name}"] = frac
                row[f"tied_vs_{name}"] = tie
                row["n_points"] = n
        rows.append(row)
        log.info("property %s/%s: %s", variable, prop.name,
                 {k: round(v, 4) for k, v in row.items() if isinstance(v, float) and np.isfinite(v)})
    if baseline not in systems:
        log.info("no %s baseline for %s: fractions are against the other systems only", baseline, variable)
    return rows


__all__ = ["PROPERTIES", "Property", "applicable", "compute_measure", "compute_property", "improvement",
           "prepare", "property_table"]
