"""Bias adjustment of the regridded GCM fields against the coarsened reference, with xsdba.

Why xsdba and why this shape: quantile mapping has many subtle details (quantile nodes, grouping
windows, trend preservation, jitter of dry days) that xsdba implements and tests; aid only chooses
the method per variable (config ``adjust.methods``) and takes care of what xsdba does not:

- calendars: xsdba refuses to train on ``ref`` and ``hist`` in different calendars, so both are
  converted to ``adjust.calendar`` before training (the conversion is recorded in the attributes);
  the trained factors (per month or day-of-year window) are then applied to each simulation in its
  *own* model calendar, so the output keeps the model calendar without a lossy round trip;
- training once per (source, member) and reusing the factors for every scenario: the trained
  xsdba datasets of all variables go into one NetCDF (names prefixed ``<var>__``);
- long runs: QDM ranks each value within the series it is given. Each block of
  ``adjust.step_years`` (1) is adjusted from the ``adjust.window_years`` (30) centred on it and only
  the block is kept (:func:`moving_windows`; the scheme of xsdba's ``stack_periods`` /
  ``unstack_periods`` and of GDPCIR, which adjusts year by year from 21-year windows). A year's
  values are then exactly those of adjusting its window alone, so QDM's promise (each quantile of
  the window changes like the raw model's) holds window by window, and that is how it is tested:
  the change of a target year's own window. Consecutive 30-year blocks keep the promise too but
  jump at every block edge; measured on CanESM2 vs NRCan (tasmax, Kugluktuk), switching to the next
  window moves a seasonal mean by up to 3.2 raw inter-annual standard deviations with 10-year
  steps and 0.4 with 1-year steps. What is given up: a period assembled from many windows
  (2071-2100 from thirty) is ranked in slightly different climates, so where the correction
  depends steeply on the quantile its own quantile change can differ from the raw one by a third
  (bench/adjust_canesm2.py);
- physical consistency by construction: under ``adjust.temperatures: range`` tasmax, the diurnal
  range ``dtr = tasmax - tasmin`` (multiplicative, stays >= 0) and the logit of tas's position in
  the range are adjusted, and tasmin and tas are derived from them (:func:`to_range_space`), so
  ``tasmin <= tas <= tasmax`` needs no repair (Agbazo & Grenier 2020; xclim's ``tasmin_from_dtr``).
  :func:`enforce_consistency` still runs as a check and records its (then zero) fix counts; with
  ``temperatures: independent`` it is the repair of the old path;
- MBCn (``adjust.multivariate``) only groups by a day-of-year window: ``adjust.group: time.month``
  is refused rather than silently replaced by one yearly group;
- clear errors (DataError/ConfigError naming the file and the fix) for inputs that would make the
  adjustment meaningless: no overlap in time, different grids, negative precipitation, cells
  that are NaN throughout, variables without a configured method.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from aid.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: xsdba class names per configured method.
METHOD_CLASSES = {"QDM": "QuantileDeltaMapping", "DQM": "DetrendedQuantileMapping", "EQM": "EmpiricalQuantileMapping"}
_XSDBA_ATTR = "_xsdba_adjustment"
#: Derived variables adjusted instead of tasmin and tas under ``adjust.temperatures: range``.
RANGE_VARS = ("dtr", "tas_position")
#: tas's position in [tasmin, tasmax] is clipped to [EPS, 1 - EPS] before the logit: a tas equal
#: to a bound (or a day without range) has no finite logit. 0.001 of the range is far below any
#: measurable difference (0.01 K on a 10 K range).
POSITION_EPS = 1e-3
_SEP = "__"
#: Seed of the jitter noise (xsdba draws it from numpy's global generator), with the year (:func:`_jitter`).
JITTER_SEED = 20240101


def method_of(config: Mapping[str, Any], variable: str) -> dict[str, Any]:
    """The configured ``adjust.methods[variable]`` (``adjust.range_methods`` for the derived
    ``dtr`` / ``tas_position``) or a ConfigError naming the key."""
    if variable in RANGE_VARS:
        return dict(config["adjust"]["range_methods"][variable])
    methods = config["adjust"]["methods"]
    if variable not in methods:
        raise ConfigError(
            f"variable '{variable}' has no bias-adjustment method in 'adjust.methods' "
            f"(configured: {', '.join(sorted(methods)) or 'none'}).",
            f"add adjust.methods.{variable}: {{method: QDM, kind: '+'}} (use kind '*' for pr).",
        )
    m = dict(methods[variable])
    if m.get("method") not in METHOD_CLASSES:
        raise ConfigError(f"adjust.methods.{variable}.method is {m.get('method')!r}.", f"use one of {', '.join(METHOD_CLASSES)}.")
    return m


def grouper(config: Mapping[str, Any]) -> Any:
    """xsdba Grouper from ``adjust.group`` (``time.month``) or a day-of-year window (``window``)."""
    import xsdba

    acfg = config["adjust"]
    if acfg["group"] == "window":
        return xsdba.Grouper("time.dayofyear", window=int(acfg["window"]))
    return xsdba.Grouper("time.month")


def group_label(config: Mapping[str, Any]) -> str:
    acfg = config["adjust"]
    if acfg["group"] == "window":
        return f"time.dayofyear, window {int(acfg['window'])} days"
    return "time.month"


def calendar_of(da: xr.DataArray | xr.Dataset) -> str:
    cal = str(da["time"].dt.calendar)
    return "standard" if cal in ("gregorian", "proleptic_gregorian") else cal


def to_calendar(da: xr.DataArray, calendar: str) -> tuple[xr.DataArray, str]:
    """Convert ``da`` to ``calendar`` (xarray ``convert_calendar``); returns it and a description.

    360_day <-> 365/366-day conversions use ``align_on="year"`` (days spread evenly over the year,
    so no season is stretched); standard -> noleap drops 29 February.
    """
    src = calendar_of(da)
    if src == calendar:
        return da, f"{src} (unchanged)"
    align = "year" if "360_day" in (src, calendar) else None
    out = da.convert_calendar(calendar, align_on=align, use_cftime=calendar != "standard")
    how = {None: "29 February dropped" if calendar == "noleap" else "dates kept", "year": "align_on=year"}[align]
    return out, f"{src} -> {calendar} ({how}, {da.sizes['time']} -> {out.sizes['time']} days)"


def _period(da: xr.DataArray, years: Sequence[int]) -> xr.DataArray:
    y0, y1 = int(years[0]), int(years[1])
    return da.sel(time=(da["time"].dt.year >= y0) & (da["time"].dt.year <= y1))


def _check_values(da: xr.DataArray, variable: str, where: str, spatial: Sequence[str]) -> None:
    """Negative precipitation and cells NaN throughout are refused (nothing is written)."""
    if variable == "pr":
        neg = int((da < 0).sum())
        if neg:
            raise DataError(
                f"{where}: {neg} negative precipitation values (min {float(da.min()):.4g} {da.attrs.get('units', '')}).",
                "fix the input (precipitation cannot be negative; clip tiny negative round-off to 0 upstream).",
            )
    if spatial:
        empty = da.isnull().all("time")
        if bool(empty.any()):
            idx = {d: empty[d].values[np.argwhere(empty.values)[0][i]] for i, d in enumerate(empty.dims)}
            raise DataError(
                f"{where}: {int(empty.sum())} grid cells of '{variable}' are NaN at every time step (e.g. {idx}).",
                "use a reference/model covering the whole coarse grid (check the reference files and the regrid step).",
            )


def _check_same_grid(ref: xr.DataArray, hist: xr.DataArray, ref_where: str, hist_where: str) -> None:
    for c in ("lat", "lon"):
        if c in ref.dims or c in hist.dims:
            a, b = ref[c].values, hist[c].values
            if a.shape != b.shape or not np.allclose(a, b, atol=1e-6):
                raise DataError(
                    f"{ref_where}: the reference is on a different grid than the model data {hist_where} "
                    f"({c}: {a.size} values {a.min():g}..{a.max():g} vs {b.size} values {b.min():g}..{b.max():g}).",
                    "regenerate the coarse reference with the current config (rule reference) so both are on coarse_grid(config).",
                )


def prepare_pair(
    ref: xr.DataArray, hist: xr.DataArray, variable: str, config: Mapping[str, Any], ref_where: str = "reference",
    hist_where: str = "model",
) -> tuple[xr.DataArray, xr.DataArray, dict[str, str]]:
    """Reference period, checks, and the common calendar: the (ref, hist) pair xsdba trains on."""
    acfg = config["adjust"]
    period = acfg["reference_period"]
    spatial = [d for d in hist.dims if d != "time"]
    _check_same_grid(ref, hist, ref_where, hist_where)
    r, h = _period(ref, period), _period(hist, period)
    if r.sizes["time"] == 0 or h.sizes["time"] == 0:
        def span(da: xr.DataArray) -> str:
            return f"{da.time.values[0]}..{da.time.values[-1]}" if da.sizes["time"] else "empty"

        raise DataError(
            f"reference and model not overlapping in time over adjust.reference_period {period[0]}-{period[1]}: "
            f"{ref_where} covers {span(ref)}, {hist_where} covers {span(hist)}.",
            "set adjust.reference_period to years both the reference and the historical run cover.",
        )
    ry = set(np.unique(r["time"].dt.year.values).tolist())
    hy = set(np.unique(h["time"].dt.year.values).tolist())
    common = sorted(ry & hy)
    if not common:
        raise DataError(
            f"reference and model not overlapping in time: {ref_where} has years {sorted(ry)}, {hist_where} has {sorted(hy)} "
            f"within adjust.reference_period {period[0]}-{period[1]}.",
            "set adjust.reference_period to years both cover.",
        )
    r = r.sel(time=r["time"].dt.year.isin(common))
    h = h.sel(time=h["time"].dt.year.isin(common))
    _check_values(r, variable, ref_where, spatial)
    _check_values(h, variable, hist_where, spatial)
    cal = acfg["calendar"]
    r, rconv = to_calendar(r, cal)
    h, hconv = to_calendar(h, cal)
    # same days on both sides (xsdba needs matching training times for DQM/EQM/QDM)
    r, h = xr.align(r, h, join="inner", exclude=spatial)
    info = {"reference_calendar_conversion": rconv, "model_calendar_conversion": hconv,
            "training_years": f"{common[0]}-{common[-1]}"}
    return r, h, info


def _jitter(da: xr.DataArray, variable: str, config: Mapping[str, Any]) -> xr.DataArray:
    """Values under ``jitter_under`` replaced by xsdba's uniform noise (so dry days have distinct
    ranks and finite quantile ratios), drawn year by year from numpy's generator seeded with
    (:data:`JITTER_SEED`, year).

    Why per year: a day's noise must not depend on which years the series passed in holds, or a
    dry day would get other noise inside its window alone than inside the whole run, hence another
    rank among the dry days and, where the reference is wetter than the model, another factor (a
    wet adjusted value instead of 0, or the reverse). Drawn per year, a year's values are those of
    its window adjusted alone (the moving-window promise, tests/test_adjust_windows.py) and a rerun
    on part of a run reproduces them."""
    m = method_of(config, variable)
    thresh = m.get("jitter_under")
    if thresh is None:
        return da
    from xsdba.processing import jitter_under_thresh

    quantity = f"{thresh} {da.attrs.get('units', 'mm d-1')}"
    years = da["time"].dt.year.values
    axis = da.get_axis_num("time")
    values = da.values.copy()
    state = np.random.get_state()
    try:
        for year in np.unique(years):
            idx = np.flatnonzero(years == year)
            np.random.seed([JITTER_SEED, int(year)])
            values[(slice(None),) * axis + (idx,)] = jitter_under_thresh(da.isel(time=idx), quantity).values
    finally:
        np.random.set_state(state)
    return da.copy(data=values)


def train_variable(ref: xr.DataArray, hist: xr.DataArray, variable: str, config: Mapping[str, Any]) -> Any:
    """Train the configured xsdba adjustment of one variable on an already prepared pair."""
    import xsdba

    m = method_of(config, variable)
    cls = getattr(xsdba, METHOD_CLASSES[m["method"]])
    nq = int(config["adjust"]["nquantiles"])
    ref, hist = _jitter(ref.load(), variable, config), _jitter(hist.load(), variable, config)
    return cls.train(ref, hist, nquantiles=nq, kind=m["kind"], group=grouper(config))


def apply_options(config: Mapping[str, Any]) -> dict[str, str]:
    """``interp`` and ``extrapolation`` for xsdba's ``adjust`` (config ``adjust.interp`` /
    ``adjust.extrapolation``; the schema says what each choice trades)."""
    acfg = config["adjust"]
    return {"interp": str(acfg["interp"]), "extrapolation": str(acfg["extrapolation"])}


def moving_windows(years: Sequence[int], anchor: int, step: int, window: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """``[((target_first, target_last), (window_first, window_last)), ...]`` covering ``years``.

    Targets are consecutive blocks of ``step`` years aligned on ``anchor`` (the first reference
    year); each is adjusted from the ``window`` years centred on it, shifted to stay inside the
    simulation at its two ends (so every window holds ``window`` years when the run is that long,
    and a short run is one window). Why centred and moving: the values of a target block are ranked
    against a climate of the same epoch, and neighbouring blocks share ``window - step`` years of
    it, so the correction changes smoothly from block to block instead of jumping at block edges.
    """
    ys = sorted({int(y) for y in years})
    first, last = ys[0], ys[-1]
    out = []
    b0 = anchor + ((first - anchor) // step) * step
    for t0 in range(b0, last + 1, step):
        t1 = t0 + step - 1
        if not any(t0 <= y <= t1 for y in ys):
            continue
        w0 = t0 - (window - step) // 2
        w1 = w0 + window - 1
        if w1 > last:
            w0, w1 = w0 - (w1 - last), last
        if w0 < first:
            w0, w1 = first, min(last, first + window - 1)
        out.append(((max(t0, first), min(t1, last)), (w0, w1)))
    return out


#: Windows adjusted together in one xsdba call (stacked along a ``period`` dimension): one call per
#: year is slow (xsdba's fixed cost per call), all at once holds window_years x the run in memory.
WINDOWS_PER_CALL = 16


def by_windows(sim: xr.DataArray, adjust: Any, config: Mapping[str, Any]) -> xr.DataArray:
    """``adjust`` (a function of one window of ``sim``) applied per moving window, each target
    block kept (``adjust.step_years`` / ``adjust.window_years``, :func:`moving_windows`).

    In calendars whose years all have the same length (noleap, 360_day, all_leap) the windows are
    stacked along a ``period`` dimension on the first window's time axis and adjusted
    :data:`WINDOWS_PER_CALL` at a time: each window is still ranked on its own (xsdba treats extra
    dimensions independently), so the values are those of adjusting each window alone.
    """
    acfg = config["adjust"]
    years = sim["time"].dt.year
    wins = moving_windows(np.unique(years.values), int(acfg["reference_period"][0]),
                          int(acfg["step_years"]), int(acfg["window_years"]))
    lengths = {int(n) for n in years.groupby(years).count().values}
    lengths_ok = len(lengths) == 1 and len({w1 - w0 for _, (w0, w1) in wins}) == 1
    parts = []
    if len(wins) > 1 and lengths_ok and calendar_of(sim) in ("noleap", "365_day", "360_day", "all_leap", "366_day"):
        (n_day,) = lengths
        first = int(years.values[0])
        span = (wins[0][1][1] - wins[0][1][0] + 1) * n_day
        axis = sim["time"].isel(time=slice((wins[0][1][0] - first) * n_day, (wins[0][1][0] - first) * n_day + span))
        for i in range(0, len(wins), WINDOWS_PER_CALL):
            chunk = wins[i:i + WINDOWS_PER_CALL]
            stack = xr.concat([sim.isel(time=slice((w0 - first) * n_day, (w0 - first) * n_day + span)).assign_coords(time=axis.values)
                               for _, (w0, _w1) in chunk], dim="period")
            adj = adjust(stack)
            for k, ((t0, t1), (w0, _w1)) in enumerate(chunk):
                lo = (t0 - w0) * n_day
                part = adj.isel(period=k, time=slice(lo, lo + (t1 - t0 + 1) * n_day)).drop_vars("period", errors="ignore")
                parts.append(part.assign_coords(time=sim["time"].isel(time=slice((t0 - first) * n_day, (t1 - first + 1) * n_day)).values))
    else:
        for (t0, t1), (w0, w1) in wins:
            adj = adjust(sim.isel(time=((years >= w0) & (years <= w1)).values))
            wy = adj["time"].dt.year
            parts.append(adj.isel(time=((wy >= t0) & (wy <= t1)).values))
    out = parts[0] if len(parts) == 1 else xr.concat(parts, dim="time")
    return out.transpose(*[d for d in sim.dims if d in out.dims], *[d for d in out.dims if d not in sim.dims])


def adjust_variable(trained: Any, sim: xr.DataArray, variable: str, config: Mapping[str, Any]) -> xr.DataArray:
    """Apply trained factors to ``sim`` in its own calendar; dry-day jitter undone, pr >= 0.

    QDM ranks each value within the series it is given, so a 150-year series would rank the
    historical days against a warmer future. Each block of ``adjust.step_years`` is adjusted from the
    ``adjust.window_years`` window centred on it (:func:`moving_windows`) and only the block is kept:
    its values are exactly those of adjusting that window alone, so QDM's promise (each quantile of
    the window changes like the raw model's) holds per window, and the correction has no seam.
    """
    m = method_of(config, variable)
    sim_j = _jitter(sim.load(), variable, config)
    opts = apply_options(config)
    out = by_windows(sim_j, lambda win: trained.adjust(win, **opts), config)
    out = out.rename(variable)
    out.attrs = dict(sim.attrs)
    if variable == "pr":
        thresh = float(m.get("jitter_under", 0.0))
        out = out.where(out >= thresh, 0.0).where(sim.notnull())
    return out.transpose(*sim.dims)


# ----------------------------------------------------------------------------- temperature order
def uses_range(config: Mapping[str, Any], variables: Sequence[str]) -> bool:
    """``adjust.temperatures: range`` and both tasmax and tasmin among ``variables``."""
    return config["adjust"]["temperatures"] == "range" and {"tasmax", "tasmin"} <= set(variables)


def to_range_space(fields: Mapping[str, xr.DataArray]) -> tuple[dict[str, xr.DataArray], int]:
    """(tasmax, tasmin[, tas]) -> (tasmax, dtr[, tas_position]); other variables pass through.

    Returns the fields and the number of input days with tasmin > tasmax (their range is set to 0:
    an inverted input has no range to scale).
    """
    out = {k: v for k, v in fields.items() if k not in ("tasmin", "tas")}
    tx, tn = fields["tasmax"], fields["tasmin"]
    raw = tx - tn
    inverted = int((raw < 0).sum())
    dtr = raw.clip(min=0).rename("dtr").assign_attrs(units=tx.attrs.get("units", "K"), long_name="diurnal temperature range")
    out["dtr"] = dtr
    if "tas" in fields:
        pos = ((fields["tas"] - tn) / dtr.where(dtr > 0)).fillna(0.5).clip(POSITION_EPS, 1 - POSITION_EPS)
        out["tas_position"] = np.log(pos / (1 - pos)).where(tx.notnull() & tn.notnull() & fields["tas"].notnull()).rename(
            "tas_position").assign_attrs(units="1", long_name="logit of (tas - tasmin) / (tasmax - tasmin)")
    return out, inverted


def from_range_space(adjusted: Mapping[str, xr.DataArray], attrs: Mapping[str, Mapping[str, Any]]) -> dict[str, xr.DataArray]:
    """Inverse of :func:`to_range_space` on adjusted fields; ``attrs`` are the inputs' attributes.

    Both bounds are computed from tasmax by subtracting non-negative amounts (dtr, and (1 - p) dtr
    with 0 < p < 1), so the order tasmin <= tas <= tasmax survives floating-point rounding and
    the cast to float32 (both monotonic).
    """
    out = {k: v for k, v in adjusted.items() if k not in RANGE_VARS}
    tx = adjusted["tasmax"]
    dtr = adjusted["dtr"].clip(min=0)
    out["tasmin"] = (tx - dtr).rename("tasmin").assign_attrs(attrs["tasmin"])
    if "tas_position" in adjusted:
        pos = 1.0 / (1.0 + np.exp(-adjusted["tas_position"]))
        out["tas"] = (tx - (1.0 - pos) * dtr).rename("tas").assign_attrs(attrs["tas"])
    return out


# ----------------------------------------------------------------------------- trained-file format
def _prefixed(ds: xr.Dataset, variable: str) -> xr.Dataset:
    keep = {"lat", "lon", "time", "location"}
    ren = {n: f"{variable}{_SEP}{n}" for n in list(ds.variables) if n not in keep}
    ren.update({d: f"{variable}{_SEP}{d}" for d in ds.dims if d not in keep and d not in ren})
    out = ds.rename(ren)
    for n in out.variables:
        out[n].attrs = {k: v for k, v in out[n].attrs.items() if isinstance(v, (str, int, float, np.number))}
    out.attrs = {}
    return out


def _unprefixed(ds: xr.Dataset, variable: str) -> xr.Dataset:
    pre = f"{variable}{_SEP}"
    names = [n for n in ds.variables if str(n).startswith(pre)]
    sub = ds[[n for n in names if n in ds.data_vars]]
    sub = sub.drop_vars([c for c in sub.coords if not (str(c).startswith(pre) or c in ("lat", "lon", "location"))])
    ren = {n: str(n)[len(pre):] for n in list(sub.variables) if str(n).startswith(pre)}
    ren.update({d: str(d)[len(pre):] for d in sub.dims if str(d).startswith(pre) and d not in ren})
    return sub.rename(ren)


def save_trained(trained: Mapping[str, Any], meta: Mapping[str, Any], out_path: str | os.PathLike[str]) -> Path:
    """All variables' trained xsdba datasets in one NetCDF (``<var>__<name>``), objects in attrs."""
    from aid.io import write_netcdf
    from aid.provenance import provenance_attrs

    parts, attrs = [], {}
    for var, obj in trained.items():
        parts.append(_prefixed(obj.ds, var))
        attrs[f"{var}{_SEP}{_XSDBA_ATTR}"] = obj.ds.attrs[_XSDBA_ATTR]
    ds = xr.merge(parts, compat="override", join="outer")
    ds.attrs.update(provenance_attrs("train_adjustment"))
    ds.attrs.update(attrs)
    ds.attrs["aid_adjust_variables"] = " ".join(trained)
    ds.attrs["aid_adjust_meta"] = json.dumps(meta, sort_keys=True)
    return write_netcdf(ds, out_path)


def load_trained(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inverse of :func:`save_trained`: ({var: xsdba object}, meta)."""
    from xsdba.adjustment import BaseAdjustment

    from aid.io import open_dataset

    ds = open_dataset(path, chunks=None).load()
    try:
        variables = ds.attrs["aid_adjust_variables"].split()
        meta = json.loads(ds.attrs["aid_adjust_meta"])
    except KeyError as exc:
        raise DataError(f"{path}: not an aid adjustment-factors file (attribute {exc} missing).",
                        "re-run rule train_adjustment (aid adjust train).") from exc
    out = {}
    for var in variables:
        sub = _unprefixed(ds, var)
        sub.attrs[_XSDBA_ATTR] = ds.attrs[f"{var}{_SEP}{_XSDBA_ATTR}"]
        out[var] = BaseAdjustment.from_dataset(sub)
    return out, meta


# ----------------------------------------------------------------------------- file-level stages
def _open_var(path: str | os.PathLike[str]) -> tuple[str, xr.DataArray]:
    from aid.io import open_dataset
    from aid.regrid import normalise_coords

    ds = normalise_coords(open_dataset(path, chunks=None))
    names = [v for v in ds.data_vars if "time" in ds[v].dims]
    if len(names) != 1:
        raise DataError(f"{path}: expected one (time, lat, lon) variable, found {names}.",
                        "pass one regridded variable per file (results/regrid/... or results/reference/coarse/...).")
    da = ds[names[0]]
    if "units" not in da.attrs:
        raise DataError(f"{path}: variable '{names[0]}' has no units.", "re-run the fetch/reference stage.")
    return str(names[0]), da.load()


def train_adjustment_files(
    hist_paths: Sequence[str | os.PathLike[str]],
    ref_paths: Sequence[str | os.PathLike[str]],
    config: Mapping[str, Any],
    out_path: str | os.PathLike[str],
) -> Path:
    """Rule ``train_adjustment``: train every variable of one (source, member), save the factors.

    Under ``adjust.temperatures: range`` tasmin and tas are trained as dtr and tas_position
    (:func:`to_range_space`) on both sides.
    """
    refs: dict[str, xr.DataArray] = {}
    ref_where: dict[str, str] = {}
    hists: dict[str, xr.DataArray] = {}
    hist_where: dict[str, str] = {}
    pairs: dict[str, tuple[xr.DataArray, xr.DataArray]] = {}
    for p in ref_paths:
        v, da = _open_var(p)
        refs[v], ref_where[v] = da, str(p)
    for p in hist_paths:
        var, hist = _open_var(p)
        method_of(config, var)
        if var not in refs:
            raise DataError(f"{p}: no reference file for variable '{var}' among {list(ref_where.values())}.",
                            f"add reference.files.{var} and re-run rule reference.")
        hists[var], hist_where[var] = hist, str(p)
    trained, meta = {}, {"variables": {}}
    acfg = config["adjust"]
    if acfg["multivariate"] == "MBCn":
        mbcn_group(config)  # refuse a grouping MBCn cannot honour before any training
    if uses_range(config, hists):
        hists, inverted_hist = to_range_space(hists)
        refs, inverted_ref = to_range_space({v: refs[v] for v in refs if v in hist_where})
        for v in RANGE_VARS:
            hist_where[v] = " and ".join(hist_where[x] for x in ("tasmax", "tasmin", "tas") if x in hist_where)
            ref_where[v] = " and ".join(ref_where[x] for x in ("tasmax", "tasmin", "tas") if x in ref_where)
        meta["temperatures"] = "range"
        meta["inverted_input_days"] = {"reference": inverted_ref, "model": inverted_hist}
    for var, hist in hists.items():
        m = method_of(config, var)
        r, h, info = prepare_pair(refs[var], hist, var, config, ref_where[var], hist_where[var])
        log.info("training %s %s (%s) on %s days, %s", var, m["method"], m["kind"], h.sizes["time"], info)
        trained[var] = train_variable(r, h, var, config)
        pairs[var] = (r, h)
        meta["variables"][var] = {"method": m["method"], "kind": m["kind"], **info,
                                  **({"jitter_under": f"{m['jitter_under']} {h.attrs.get('units', '')}"} if "jitter_under" in m else {})}
    if acfg["multivariate"] == "MBCn":
        meta["multivariate"] = "MBCn"
    meta.update({"group": group_label(config), "nquantiles": int(acfg["nquantiles"]),
                 "reference": config["reference"]["name"],
                 "reference_period": f"{acfg['reference_period'][0]}-{acfg['reference_period'][1]}",
                 "calendar": acfg["calendar"]})
    if acfg["multivariate"] == "MBCn":
        # MBCn needs the training series themselves at adjustment time: keep them (coarse, small)
        for var, (r, h) in pairs.items():
            trained[var].ds["mbcn_ref"] = r.rename(time="mbcn_time").drop_attrs()
            trained[var].ds["mbcn_hist"] = h.rename(time="mbcn_time").drop_attrs()
    return save_trained(trained, meta, out_path)


def enforce_consistency(ds: xr.Dataset) -> tuple[xr.Dataset, dict[str, int]]:
    """``tasmin <= tas <= tasmax`` and ``pr >= 0`` everywhere; returns the fixed dataset and counts.

    Why explicit: quantile mapping adjusts each variable alone, so on a few days the adjusted tasmin
    can exceed tas (or tas exceed tasmax). The fix moves the offending bound onto tas (tasmin :=
    tas, tasmax := tas), the smallest change restoring the order; without tas, tasmin/tasmax are
    swapped where crossed.
    """
    counts = {"tasmin_gt_tas": 0, "tas_gt_tasmax": 0, "tasmin_gt_tasmax": 0, "pr_negative": 0}
    ds = ds.copy()
    if "tas" in ds and "tasmin" in ds:
        bad = ds.tasmin > ds.tas
        counts["tasmin_gt_tas"] = int(bad.sum())
        ds["tasmin"] = xr.where(bad, ds.tas, ds.tasmin, keep_attrs=True)
    if "tas" in ds and "tasmax" in ds:
        bad = ds.tasmax < ds.tas
        counts["tas_gt_tasmax"] = int(bad.sum())
        ds["tasmax"] = xr.where(bad, ds.tas, ds.tasmax, keep_attrs=True)
    if "tasmin" in ds and "tasmax" in ds:
        bad = ds.tasmin > ds.tasmax
        counts["tasmin_gt_tasmax"] = int(bad.sum())
        lo, hi = xr.where(bad, ds.tasmax, ds.tasmin, keep_attrs=True), xr.where(bad, ds.tasmin, ds.tasmax, keep_attrs=True)
        ds["tasmin"], ds["tasmax"] = lo, hi
    if "pr" in ds:
        bad = ds.pr < 0
        counts["pr_negative"] = int(bad.sum())
        ds["pr"] = ds.pr.clip(min=0).assign_attrs(ds.pr.attrs)
    return ds, counts


def mbcn_group(config: Mapping[str, Any]) -> Any:
    """The day-of-year window Grouper MBCn runs with; ``adjust.group: time.month`` is refused.

    xsdba's MBCn rotates the whole multivariate distribution of a group and accepts only the whole
    year (``time``) or a day-of-year window: monthly groups would silently become one yearly group.
    """
    import xsdba

    acfg = config["adjust"]
    if acfg["group"] != "window":
        raise ConfigError(
            f"'adjust.group' is {acfg['group']}, which 'adjust.multivariate: MBCn' cannot honour "
            "(xsdba's MBCn groups by the whole year or by a day-of-year window, not by month).",
            "set adjust.group: window (with adjust.window, e.g. 31 days) for MBCn, or adjust.multivariate: null.",
        )
    return xsdba.Grouper("time.dayofyear", window=int(acfg["window"]))


def _mbcn_adjust(trained: Mapping[str, Any], sims: Mapping[str, xr.DataArray], config: Mapping[str, Any]) -> dict[str, xr.DataArray]:
    """Multivariate MBCn (xsdba) on all variables together, trained on the stored training pairs."""
    import xsdba

    variables = sorted(sims)
    refs, hists = {}, {}
    for var in variables:
        ds = trained[var].ds
        if "mbcn_ref" not in ds:
            raise ConfigError(
                "adjust.multivariate is MBCn but the adjustment factors were trained without it.",
                "re-run rule train_adjustment (delete results/adjust-factors/...) with adjust.multivariate: MBCn.",
            )
        units = sims[var].attrs.get("units", "")
        refs[var] = ds["mbcn_ref"].rename(mbcn_time="time").rename(var).assign_attrs(units=units)
        hists[var] = ds["mbcn_hist"].rename(mbcn_time="time").rename(var).assign_attrs(units=units)
    cal = config["adjust"]["calendar"]
    sim_c = {v: to_calendar(sims[v], cal)[0] for v in variables}
    ref = xsdba.stack_variables(xr.Dataset(refs))
    hist = xsdba.stack_variables(xr.Dataset(hists))
    sim = xsdba.stack_variables(xr.Dataset(sim_c))
    acfg = config["adjust"]
    group = mbcn_group(config)
    nq = int(acfg["nquantiles"])
    mb = xsdba.MBCn.train(ref, hist, base_kws={"nquantiles": nq, "group": group}, adj_kws=apply_options(config), n_iter=10)
    kws = {v: {"kind": method_of(config, v)["kind"], "nquantiles": nq} for v in variables}
    scen = by_windows(sim, lambda win: mb.adjust(win, ref, hist, base=xsdba.QuantileDeltaMapping, base_kws_vars=kws), config)
    out = xsdba.unstack_variables(scen)
    res = {}
    for v in variables:
        da = out[v]
        if calendar_of(da) != calendar_of(sims[v]):
            da = da.convert_calendar(calendar_of(sims[v]), align_on="year" if "360_day" in (calendar_of(da), calendar_of(sims[v])) else None,
                                     missing=np.nan, use_cftime=True)
            da = da.interpolate_na("time") if bool(da.isnull().any()) else da
        res[v] = da.assign_coords(time=sims[v].time.values).transpose(*sims[v].dims).assign_attrs(sims[v].attrs)
    return res


def adjust_files(
    sim_paths: Sequence[str | os.PathLike[str]],
    trained_path: str | os.PathLike[str],
    config: Mapping[str, Any],
    out_path: str | os.PathLike[str],
) -> Path:
    """Rule ``adjust``: all variables of one (source, experiment, member), all years, one dataset."""
    from aid.io import write_netcdf
    from aid.provenance import append_history, provenance_attrs, relpath_or_name

    trained, meta = load_trained(trained_path)
    sims: dict[str, xr.DataArray] = {}
    for p in sim_paths:
        var, da = _open_var(p)
        method_of(config, var)
        if var == "pr":
            _check_values(da, var, str(p), [])
        sims[var] = da
    ranged = uses_range(config, sims)
    if ranged != (meta.get("temperatures") == "range"):
        raise ConfigError(
            f"{trained_path}: the factors were trained with adjust.temperatures "
            f"{meta.get('temperatures', 'independent')}, the config asks for {config['adjust']['temperatures']}.",
            "re-run rule train_adjustment (aid adjust train) with the current config.",
        )
    attrs = {v: dict(da.attrs) for v, da in sims.items()}
    first = next(iter(sims.values()))
    inverted = 0
    if ranged:
        sims, inverted = to_range_space(sims)
    for var in sims:
        if var not in trained:
            raise DataError(f"{trained_path}: no trained adjustment for variable '{var}' (has {', '.join(trained)}).",
                            "re-run rule train_adjustment with this variable in search.variables.")
    if meta.get("multivariate") == "MBCn" and config["adjust"]["multivariate"] == "MBCn":
        adjusted = _mbcn_adjust(trained, sims, config)
        method_note = "MBCn (xsdba) with QDM marginals"
    else:
        adjusted = {v: adjust_variable(trained[v], da, v, config) for v, da in sims.items()}
        method_note = None
    if ranged:
        adjusted = from_range_space(adjusted, attrs)
    ds = xr.Dataset({v: adjusted[v].astype("float32") for v in attrs})
    # a safety net and a measurement: under temperatures: range it must find nothing to fix
    ds, counts = enforce_consistency(ds)
    counts["inverted_input_days"] = inverted
    for var in ds.data_vars:
        derived = ranged and var in ("tasmin", "tas")
        # each variable keeps its own CF metadata (tasmax: time: maximum), whatever the fixes copied
        ds[var].attrs = dict(attrs[var])
        if ds[var].attrs.get("units") == "K":
            ds[var].attrs["units_metadata"] = "temperature: on_scale"
        src = {"tasmin": "dtr", "tas": "tas_position"}[var] if derived else var
        vm = meta["variables"].get(src, {})
        ba = {
            "method": method_note or vm.get("method"),
            "kind": vm.get("kind"),
            **({"derived": "tasmax - dtr" if var == "tasmin" else
                "tasmax - (1 - expit(tas_position)) * dtr, tas_position = logit((tas - tasmin) / dtr)",
                "adjusted_variable": src} if derived else {}),
            "group": meta.get("group"),
            "nquantiles": meta.get("nquantiles"),
            **apply_options(config),
            "reference": meta.get("reference"),
            "period": meta.get("reference_period"),
            "calendar_conversion": f"training: reference {vm.get('reference_calendar_conversion')}, "
            f"model {vm.get('model_calendar_conversion')}; applied in the model calendar ({calendar_of(first)})",
            "moving_window": f"{config['adjust']['step_years']}-year blocks, each from the "
            f"{config['adjust']['window_years']}-year window centred on it",
            "library": "xsdba",
        }
        if "jitter_under" in vm:
            ba["jitter_under_thresh"] = vm["jitter_under"]
        ds[var].attrs["bias_adjustment"] = json.dumps(ba, sort_keys=True)
    ds.attrs.update(coarse_identity(sim_paths[0], config))
    ba_global = {"variables": {v: json.loads(ds[v].attrs["bias_adjustment"]) for v in ds.data_vars},
                 "consistency_fixes": counts}
    ds.attrs.update(provenance_attrs("adjust", adjust_factors=relpath_or_name(trained_path),
                                     consistency_fixes=json.dumps(counts, sort_keys=True)))
    ds.attrs["bias_adjustment"] = json.dumps(ba_global, sort_keys=True)
    ds.attrs["calendar"] = calendar_of(first)
    ds.attrs["history"] = append_history(ds.attrs, f"adjust ({', '.join(sorted(set(filter(None, (b['method'] for b in ba_global['variables'].values())))))}) written as {Path(out_path).name}")
    cal = calendar_of(first)
    if "time" in ds.variables:
        ds["time"].encoding.update({"calendar": cal, "units": "days since 1850-01-01"})
    log.info("adjusted %s; consistency fixes %s", list(ds.data_vars), counts)
    # CF 2.5.1: coordinate variables carry no _FillValue
    enc = {v: {"zlib": True, "complevel": 4} for v in ds.data_vars} | {c: {"_FillValue": None} for c in ds.coords}
    return write_netcdf(ds, out_path, encoding=enc)


#: Global attributes of a regridded GCM file that say which run it is, renamed to the CORDEX-CMIP6
#: ``driving_*`` names, so every stage after ``adjust`` (deliverables' driving attributes) finds them.
_DRIVING_KEYS = {"source_id": "driving_source_id", "experiment_id": "driving_experiment_id",
                 "variant_label": "driving_variant_label", "institution_id": "driving_institution_id",
                 "aid_source_tracking_id": "driving_tracking_id", "tracking_id": "driving_tracking_id"}


def coarse_identity(path: str | os.PathLike[str], config: Mapping[str, Any]) -> dict[str, str]:
    """Global attributes of the adjusted file: CF ``Conventions``/``title``, the ``frequency`` and
    ``domain_id`` it is cut to, and the driving run's identity (:data:`_DRIVING_KEYS`) from the
    regridded input, whose own history the adjusted file continues."""
    from aid.io import open_dataset

    src = open_dataset(path, chunks=None).attrs
    out = {new: " ".join(str(src[old]).split()) for old, new in _DRIVING_KEYS.items() if src.get(old)}
    out.update({k: str(src[k]) for k in ("institution", "license", "further_info_url", "history") if src.get(k)})
    out["Conventions"] = "CF-1.11"
    out["frequency"] = str(src.get("frequency", "day"))
    out["domain_id"] = str(config["domain"]["id"])
    out["title"] = (f"bias-adjusted coarse input: {out.get('driving_source_id', '?')} "
                    f"{out.get('driving_experiment_id', '?')} {out.get('driving_variant_label', '?')}")
    return out
