"""Extremes indices (ETCCDI-style) of the deliverables, the reference and the ensemble.

Why xclim indicators and not hand-written loops: they check units and missing values, convert
``mm d-1``/``kg m-2 s-1`` and K/degC themselves, and write CF metadata (``standard_name``,
``cell_methods``, ``history``) that downstream users rely on. Every index is configured by its
ETCCDI-style name (config ``indices.names``) in :data:`INDEX_SPECS`.

Percentile-based indices (TX90p, TN10p, WSDI, CSDI, R95pTOT) compare each day with thresholds
computed on the *base period* (config ``indices.base_period``) of the same member and diffusion
sample: for a scenario run that is the member+sample's historical run (``base_paths``), so the
indices measure change against the model's own climate, not the model's bias. Temperature
thresholds are day-of-year percentiles over a 5-day window (``xclim.core.calendar.percentile_doy``,
Hyndman-Fan type 8 like ETCCDI); the R95p threshold is the 95th percentile of wet days
(>= 1 mm d-1) over the base period. xclim's in-base bootstrapping is not applied (it costs ~100x
and only matters for years inside the base period).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from aid.errors import ConfigError, DataError
from aid.io import open_dataset, write_netcdf
from aid.deliverables import to_internal_units
from aid.naming import parse_index_path, parse_name
from aid.provenance import provenance_attrs, relpath_or_name
from aid.variables import MODEL_VARIABLES, VARIABLES

log = logging.getLogger(__name__)

#: Variables the indices read (daily CF names; the registry's model variables).
INPUT_VARIABLES = MODEL_VARIABLES

#: Percentile thresholds used by the percentile-based indices: key -> (variable, percentile, kind).
#: kind ``doy``: day-of-year percentile (5-day window); ``wet``: percentile of wet days (>= 1 mm/d).
THRESHOLDS: dict[str, tuple[str, float, str]] = {
    "tasmax_per90": ("tasmax", 90.0, "doy"),
    "tasmin_per10": ("tasmin", 10.0, "doy"),
    "pr_per95": ("pr", 95.0, "wet"),
}

#: Wet-day threshold for the R95p percentile (ETCCDI).
WET_DAY = 1.0  # mm d-1
#: Day-of-year percentile window (days, centred), as in ETCCDI.
DOY_WINDOW = 5


@dataclass(frozen=True)
class IndexSpec:
    """How to compute one named index.

    ``indicator`` is the xclim indicator's attribute path below ``xclim.indicators``; ``inputs``
    maps the indicator's argument names to aid variables (``sfcWind`` is derived from uas/vas);
    ``thresholds`` maps argument names to keys of :data:`THRESHOLDS`.
    """

    indicator: str
    inputs: Mapping[str, str]
    params: Mapping[str, Any] = field(default_factory=dict)
    thresholds: Mapping[str, str] = field(default_factory=dict)

    @property
    def variables(self) -> set[str]:
        out = set()
        for v in self.inputs.values():
            out |= {"uas", "vas"} if v == "sfcWind" else {v}
        for key in self.thresholds.values():
            out.add(THRESHOLDS[key][0])
        return out


#: The indices aid knows, by the name used in config ``indices.names`` and in output files.
INDEX_SPECS: dict[str, IndexSpec] = {
    "TXx": IndexSpec("atmos.tx_max", {"tasmax": "tasmax"}),
    "TNn": IndexSpec("atmos.tn_min", {"tasmin": "tasmin"}),
    "TX90p": IndexSpec("atmos.tx90p", {"tasmax": "tasmax"}, thresholds={"tasmax_per": "tasmax_per90"}),
    "TN10p": IndexSpec("atmos.tn10p", {"tasmin": "tasmin"}, thresholds={"tasmin_per": "tasmin_per10"}),
    "WSDI": IndexSpec(
        "atmos.warm_spell_duration_index", {"tasmax": "tasmax"}, {"window": 6},
        thresholds={"tasmax_per": "tasmax_per90"},
    ),
    "CSDI": IndexSpec(
        "atmos.cold_spell_duration_index", {"tasmin": "tasmin"}, {"window": 6},
        thresholds={"tasmin_per": "tasmin_per10"},
    ),
    "SU": IndexSpec("atmos.tx_days_above", {"tasmax": "tasmax"}, {"thresh": "25 degC"}),
    "FD": IndexSpec("atmos.frost_days", {"tasmin": "tasmin"}, {"thresh": "0 degC"}),
    "ID": IndexSpec("atmos.ice_days", {"tasmax": "tasmax"}, {"thresh": "0 degC"}),
    "TR": IndexSpec("atmos.tropical_nights", {"tasmin": "tasmin"}, {"thresh": "20 degC"}),
    "DTR": IndexSpec("atmos.daily_temperature_range", {"tasmin": "tasmin", "tasmax": "tasmax"}),
    "RX1day": IndexSpec("atmos.max_1day_precipitation_amount", {"pr": "pr"}),
    "RX5day": IndexSpec("atmos.max_n_day_precipitation_amount", {"pr": "pr"}, {"window": 5}),
    "R10mm": IndexSpec("atmos.wetdays", {"pr": "pr"}, {"thresh": "10 mm/day", "op": ">="}),
    "R20mm": IndexSpec("atmos.wetdays", {"pr": "pr"}, {"thresh": "20 mm/day", "op": ">="}),
    "R95pTOT": IndexSpec(
        "atmos.fraction_over_precip_thresh", {"pr": "pr"}, {"thresh": f"{WET_DAY} mm/day"},
        thresholds={"pr_per": "pr_per95"},
    ),
    "CDD": IndexSpec("atmos.maximum_consecutive_dry_days", {"pr": "pr"}, {"thresh": f"{WET_DAY} mm/day"}),
    "CWD": IndexSpec("atmos.maximum_consecutive_wet_days", {"pr": "pr"}, {"thresh": f"{WET_DAY} mm/day"}),
    "SDII": IndexSpec("atmos.daily_pr_intensity", {"pr": "pr"}, {"thresh": f"{WET_DAY} mm/day"}),
    "PRCPTOT": IndexSpec("atmos.precip_accumulation", {"pr": "pr"}),
    "sfcWind_mean": IndexSpec("atmos.sfcWind_mean", {"sfcWind": "sfcWind"}),
    "sfcWind_p99": IndexSpec("aid:sfcWind_p99", {"sfcWind": "sfcWind"}),
}

#: Indices whose change is also reported relative to the base period (precipitation amounts).
RELATIVE_CHANGE = ("RX1day", "RX5day", "PRCPTOT", "SDII")



# ----------------------------------------------------------------------------------------------
# xclim glue
# ----------------------------------------------------------------------------------------------
_CUSTOM: dict[str, Any] = {}


def _sfcwind_p99_indicator() -> Any:
    """An xclim ResamplingIndicator for the 99th percentile of daily wind speed.

    Why custom: xclim has sfcWind_mean/max but no percentile indicator; building it on xclim's
    ``select_resample_op`` keeps units checks, missing-value masking and CF metadata.
    """
    if "sfcWind_p99" in _CUSTOM:
        return _CUSTOM["sfcWind_p99"]
    from xclim.core.indicator import ResamplingIndicator
    from xclim.core.units import declare_units
    from xclim.indices.generic import select_resample_op

    def percentile_99(da: xr.DataArray, dim: str = "time") -> xr.DataArray:
        return da.quantile(0.99, dim=dim, method="median_unbiased").drop_vars("quantile")

    @declare_units(sfcWind="[speed]")
    def sfcwind_p99(sfcWind: xr.DataArray, freq: str = "YS") -> xr.DataArray:
        """99th percentile of daily mean near-surface wind speed per period."""
        return select_resample_op(sfcWind, op=percentile_99, freq=freq, out_units=sfcWind.attrs["units"])

    ind = ResamplingIndicator(
        identifier="aid_sfcWind_p99",
        module="aid",
        realm="atmos",
        units=VARIABLES["sfcWind"].units,
        standard_name=VARIABLES["sfcWind"].standard_name,
        long_name="99th percentile of daily mean near-surface wind speed",
        description="{freq} 99th percentile of daily mean near-surface (10 m) wind speed.",
        cell_methods="time: percentile over days",
        compute=sfcwind_p99,
    )
    _CUSTOM["sfcWind_p99"] = ind
    return ind


def get_indicator(name: str) -> Any:
    """The xclim indicator object computing index ``name`` (see :data:`INDEX_SPECS`)."""
    spec = INDEX_SPECS[name]
    if spec.indicator == "aid:sfcWind_p99":
        return _sfcwind_p99_indicator()
    import xclim.indicators

    obj: Any = xclim.indicators
    for part in spec.indicator.split("."):
        obj = getattr(obj, part)
    return obj


def check_index_names(names: Sequence[str]) -> list[str]:
    """Return ``names`` if all are known; otherwise a :class:`ConfigError` listing the known ones."""
    unknown = [n for n in names if n not in INDEX_SPECS]
    if unknown:
        raise ConfigError(
            f"config 'indices.names': unknown index name(s) {', '.join(unknown)}.",
            f"use names from: {', '.join(INDEX_SPECS)}.",
        )
    return list(names)


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
#: CF standard names of the index outputs where xclim's contradict the CF standard-name table
#: (v93) or the unit: counts of days carry ``days`` but the table's ``number_of_days_*`` names are
#: dimensionless, and some names are not in the table; None drops it (long_name says what it is).
INDEX_STANDARD_NAMES: dict[str, str | None] = {
    "TX90p": None, "TN10p": None, "WSDI": None, "CSDI": None, "SU": None, "FD": None, "ID": None, "TR": None,
    "R10mm": None, "R20mm": None, "R95pTOT": None,
    "CDD": "spell_length_of_days_with_lwe_thickness_of_precipitation_amount_below_threshold",
    "CWD": "spell_length_of_days_with_lwe_thickness_of_precipitation_amount_above_threshold",
    "RX1day": "lwe_precipitation_rate",  # the largest daily amount, in mm/day
    "SDII": "lwe_precipitation_rate",
}
#: cell_methods ``name:`` parts that name an input variable (xclim's ``tasmax: area: mean ...``),
#: which CF 7.3 does not allow: only dimensions, scalar coordinates and ``area`` may be named.
_CM_INPUT_NAME = re.compile(r"\b(?!area:|time:|lat:|lon:)[A-Za-z_][A-Za-z0-9_]*:\s+(?=[A-Za-z_][A-Za-z0-9_]*:)")


#: Label variable of the ensemble files' ``statistic`` dimension: CF (4, 5) allows string-valued
#: coordinates only as auxiliary coordinates, not as the dimension's coordinate variable.
STAT_LABEL = "statistic_label"


def open_index_file(path: str | os.PathLike[str]) -> xr.Dataset:
    """An index or ensemble file with its ``statistic`` labels as the dimension's index again
    (``ds[v].sel(statistic="median")``), as before it was written (:func:`write_cf`)."""
    return restore_statistic_labels(open_dataset(path, chunks=None))


def restore_statistic_labels(ds: xr.Dataset) -> xr.Dataset:
    """``statistic`` indexed by its labels (p10, median, p90) again, from the auxiliary
    :data:`STAT_LABEL` coordinate the files hold (also the output catalog's ``preprocess``)."""
    if STAT_LABEL in ds.variables:
        lab = ds[STAT_LABEL]
        ds = ds.drop_vars(STAT_LABEL).assign_coords(statistic=("statistic", lab.values.astype(str), lab.attrs))
    return ds


def _cf_variable_attrs(name: str, attrs: dict[str, Any], dims: tuple[str, ...]) -> dict[str, Any]:
    attrs = dict(attrs)
    index = str(attrs.get("aid_index", name))
    if name.endswith("_change_rel"):
        attrs.pop("standard_name", None)  # a percentage of the base value, not the quantity
    elif index in INDEX_STANDARD_NAMES:
        if INDEX_STANDARD_NAMES[index] is None:
            attrs.pop("standard_name", None)
        else:
            attrs["standard_name"] = INDEX_STANDARD_NAMES[index]
    if "cell_methods" in attrs:
        cm = _CM_INPUT_NAME.sub("", str(attrs["cell_methods"]))
        # CF has no percentile method: the statistic is in long_name
        attrs["cell_methods"] = cm.replace(" time: percentile over days", "").strip()
        if "time" not in dims:  # climatologies and changes: CF 7.3 names only dimensions there
            attrs["aid_index_cell_methods"] = attrs.pop("cell_methods")
    if "climatology" in attrs:  # CF reserves 'climatology' for the time coordinate's bounds variable
        attrs["aid_base_period"] = attrs.pop("climatology")
    return attrs


def write_cf(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write index files as the CF checker accepts them (docs/CF.md): CF standard names and
    cell_methods (:data:`INDEX_STANDARD_NAMES`), no references to bounds the file does not hold, no
    fill values on coordinates (CF 5), string labels of ``statistic`` as an auxiliary coordinate
    (:data:`STAT_LABEL`; :func:`open_index_file` reads them back), a ``history``."""
    from aid.provenance import append_history

    ds = ds.copy()
    if "statistic" in ds.coords and ds["statistic"].dtype.kind in "OUS":
        lab = ds["statistic"]
        ds = ds.drop_vars("statistic").assign_coords({STAT_LABEL: ("statistic", lab.values.astype(str), lab.attrs)})
    for name in list(ds.variables):
        b = ds[name].attrs.get("bounds")
        if b is not None and b not in ds.variables:
            ds[name].attrs.pop("bounds")
    for name in ds.data_vars:
        ds[name].attrs = _cf_variable_attrs(str(name), ds[name].attrs, tuple(map(str, ds[name].dims)))
    ds.attrs["Conventions"] = "CF-1.11"
    ds.attrs["history"] = append_history(ds.attrs, f"{ds.attrs.get('aid_stage', 'indices')} written as {Path(path).name}")
    return write_netcdf(ds, path, encoding={c: {"_FillValue": None} for c in ds.coords if ds[c].dtype.kind == "f"})


# ----------------------------------------------------------------------------------------------
# Reading inputs
# ----------------------------------------------------------------------------------------------
def load_variables(paths: Sequence[str | os.PathLike[str]], what: str = "run") -> xr.Dataset:
    """Open yearly (or whole-period) files and join them per variable along time.

    Each file may hold one or several of :data:`INPUT_VARIABLES`; anything else is ignored.
    Duplicated days (overlapping files) are an error because they would double-count in indices.
    """
    pieces: dict[str, list[xr.DataArray]] = {}
    for p in paths:
        ds = open_dataset(p, chunks=None)
        found = [v for v in INPUT_VARIABLES if v in ds.data_vars]
        if not found:
            raise DataError(
                f"{p}: none of the variables {', '.join(INPUT_VARIABLES)} in the file ({what} input).",
                "pass deliverable/reference files of aid's CF variables.",
            )
        for v in found:
            da = ds[v]
            if "units" not in da.attrs:
                raise DataError(f"{p}: variable '{v}' has no 'units' attribute.", "write CF units (K, mm d-1, m s-1).")
            if "time" not in da.dims:
                raise DataError(f"{p}: variable '{v}' has no time dimension.", "pass daily files with dims (time, lat, lon).")
            # deliverables carry pr in kg m-2 s-1 (CORDEX); every consumer here computes in mm d-1
            pieces.setdefault(v, []).append(to_internal_units(da, v))
    out = {}
    for v, das in pieces.items():
        da = xr.concat(das, dim="time", join="exact", combine_attrs="override") if len(das) > 1 else das[0]
        da = da.sortby("time")
        t = da.indexes["time"]
        if t.has_duplicates:
            raise DataError(
                f"{what} input: variable '{v}' has duplicated days across its files "
                f"({', '.join(relpath_or_name(p) for p in paths[:3])}...).",
                "pass each year's file once.",
            )
        out[v] = da.load()
    return xr.Dataset(out)


def _years_of(da: xr.DataArray) -> np.ndarray:
    return np.asarray(da["time"].dt.year.values)


def select_years(da: xr.DataArray, years: Sequence[int]) -> xr.DataArray:
    """Days of ``da`` within the inclusive year range ``years`` (any calendar)."""
    y = da["time"].dt.year
    return da.isel(time=np.flatnonzero(((y >= int(years[0])) & (y <= int(years[1]))).values))


# ----------------------------------------------------------------------------------------------
# Thresholds and indices
# ----------------------------------------------------------------------------------------------
def compute_thresholds(base: xr.Dataset, keys: Sequence[str], base_period: Sequence[int], what: str = "base") -> dict[str, xr.DataArray]:
    """Percentile thresholds (:data:`THRESHOLDS`) from the base period of ``base``.

    Raises :class:`DataError` when the base data do not cover the base period at all.
    """
    from xclim.core.calendar import percentile_doy
    from xclim.core.units import convert_units_to

    out: dict[str, xr.DataArray] = {}
    for key in keys:
        var, per, kind = THRESHOLDS[key]
        if var not in base:
            continue
        da = select_years(base[var], base_period)
        if da.sizes["time"] == 0:
            years = sorted(set(_years_of(base[var]).tolist()))
            raise DataError(
                f"{what} data for '{var}' cover years {years[0]}-{years[-1]}, none inside "
                f"'indices.base_period' {list(base_period)}; percentile thresholds cannot be computed.",
                "set indices.base_period inside the historical years, or pass the historical files as base.",
            )
        got = sorted(set(_years_of(da).tolist()))
        if got[0] != int(base_period[0]) or got[-1] != int(base_period[1]):
            log.warning("%s data for %s cover only %s-%s of base period %s", what, var, got[0], got[-1], list(base_period))
        if kind == "doy":
            thr = percentile_doy(da, window=DOY_WINDOW, per=per).sel(percentiles=per, drop=True)
        else:
            pr = convert_units_to(da, "mm/d", context="hydro")
            wet = pr.where(pr >= WET_DAY)
            thr = wet.quantile(per / 100.0, dim="time", method="median_unbiased", skipna=True).drop_vars("quantile")
            thr.attrs.update(units="mm/d", long_name=f"{per:g}th percentile of wet-day (>= {WET_DAY} mm/d) precipitation")
            thr.attrs["climatology_bounds"] = [str(got[0]) + "-01-01", str(got[-1]) + "-12-31"]
        out[key] = thr
    return out


def _derived_inputs(data: xr.Dataset) -> dict[str, xr.DataArray]:
    """Input arrays by name, incl. sfcWind from (uas, vas) through xclim's conversion."""
    inputs: dict[str, xr.DataArray] = {v: data[v] for v in data.data_vars}
    if "uas" in data and "vas" in data:
        from xclim.indicators import convert

        ws, _ = convert.wind_speed_from_vector(uas=data["uas"], vas=data["vas"])
        inputs["sfcWind"] = ws
    return inputs


def compute_indices(
    data: xr.Dataset,
    names: Sequence[str],
    freq: str,
    thresholds: Mapping[str, xr.DataArray] | None = None,
) -> xr.Dataset:
    """Compute the named indices of daily ``data``; skip (with a log line) those lacking inputs.

    ``thresholds`` comes from :func:`compute_thresholds`; percentile indices without their
    threshold are skipped too. Returns one variable per index, named as in ``names``.
    """
    import warnings

    check_index_names(names)
    thresholds = thresholds or {}
    inputs = _derived_inputs(data)
    out: dict[str, xr.DataArray] = {}
    for name in names:
        spec = INDEX_SPECS[name]
        missing = sorted(spec.variables - set(data.data_vars))
        if missing:
            log.info("index %s skipped: variable(s) %s not in this run", name, ", ".join(missing))
            continue
        kwargs: dict[str, Any] = {arg: inputs[v] for arg, v in spec.inputs.items()}
        for arg, key in spec.thresholds.items():
            if key not in thresholds:
                log.info("index %s skipped: no base-period threshold %s", name, key)
                break
            kwargs[arg] = thresholds[key]
        else:
            ind = get_indicator(name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                da = ind(**kwargs, **spec.params, freq=freq)
            da = da.rename(name)
            da.attrs["xclim_identifier"] = ind.identifier
            da.attrs["aid_index"] = name
            out[name] = da
            log.info("index %s computed (%s)", name, ind.identifier)
    if not out:
        raise DataError(
            f"none of the indices {', '.join(names)} could be computed from variables "
            f"{', '.join(map(str, data.data_vars))}.",
            "check config indices.names against search.variables.",
        )
    ds = xr.Dataset(out)
    for c in ("percentiles", "dayofyear"):
        if c in ds.coords:
            ds = ds.drop_vars(c)
    return ds


def _config_indices(config: Mapping[str, Any]) -> tuple[list[str], str, list[int]]:
    ic = config["indices"]
    names = check_index_names(ic["names"])
    freq = ic["freq"]
    if "base_period" not in ic:
        raise ConfigError("config 'indices.base_period' is missing.", "set it to the [first, last] year of the base period.")
    return names, freq, [int(y) for y in ic["base_period"]]


#: CMIP ``frequency`` of an index file from its resampling frequency (``indices.freq``); seasons
#: are ``qtr`` as in the output catalog (aid.catalog_out, xscen's vocabulary; CMIP6 has none).
FREQUENCY: dict[str, str] = {"YS": "yr", "MS": "mon", "QS-DEC": "qtr"}


def identity_attrs(config: Mapping[str, Any], freq: str, experiment: str | None = None, source: str | None = None,
                   members: Sequence[str] = ()) -> dict[str, str]:
    """The CORDEX-CMIP6 identity the daily deliverables carry (``frequency``, ``domain_id``,
    ``driving_*``), for the files derived from them, so a user can tell what an index file
    summarises without its name. Files of several members list them space-separated."""
    out = {"frequency": FREQUENCY[freq], "domain_id": str(config["domain"]["id"])}
    if source:
        out["driving_source_id"] = str(source)
    if experiment:
        out["driving_experiment_id"] = str(experiment)
    if members:
        out["driving_variant_label"] = " ".join(members)
    return out


def _facets(paths: Sequence[str | os.PathLike[str]]) -> dict[str, str]:
    facets = [parse_name(p) for p in paths]
    facets = [f for f in facets if f]
    if not facets:
        return {}
    keep = {}
    for k in ("source", "experiment", "member", "sample", "domain"):
        vals = {f[k] for f in facets}
        if len(vals) == 1:
            keep[k] = vals.pop()
    return keep


def compute_sample_indices(
    config: Mapping[str, Any],
    run_paths: Sequence[str | os.PathLike[str]],
    base_paths: Sequence[str | os.PathLike[str]],
    experiment: str,
    out_path: str | os.PathLike[str],
) -> Path:
    """Indices of one (source, experiment, member, sample): all yearly files of all variables.

    ``base_paths`` are the same member+sample's historical files (empty for the historical and
    evaluation experiments, whose own data hold the base period).
    """
    names, freq, base_period = _config_indices(config)
    if not run_paths:
        raise DataError(f"no input files for {out_path}.", "check that the downscale jobs produced deliverables.")
    data = load_variables(run_paths, "run")
    base = load_variables(base_paths, "base") if base_paths else data
    keys = sorted({k for n in names for k in INDEX_SPECS[n].thresholds.values()})
    thresholds = compute_thresholds(base, keys, base_period, what="historical base" if base_paths else experiment)
    ds = compute_indices(data, names, freq, thresholds)
    facets = _facets(run_paths)
    ds.attrs.update(
        provenance_attrs(
            "indices",
            experiment=experiment,
            source=facets.get("source"),
            member=facets.get("member"),
            sample=facets.get("sample"),
            base_period=f"{base_period[0]}-{base_period[1]}",
            base_data="historical run of the same member and sample" if base_paths else "this run",
            index_freq=freq,
            inputs=" ".join(relpath_or_name(p) for p in run_paths),
        )
    )
    ds.attrs.update(identity_attrs(config, freq, experiment, facets.get("source"),
                                   [facets["member"]] if "member" in facets else []))
    ds.attrs["title"] = f"xclim extremes indices of {facets.get('source', '?')} {experiment} {facets.get('member', '?')} sample r{facets.get('sample', '?')}"
    return write_cf(ds, out_path)


def compute_reference_indices(config: Mapping[str, Any], paths: Sequence[str | os.PathLike[str]], out_path: str | os.PathLike[str]) -> Path:
    """The same indices from the 0.25 deg reference (thresholds from its own base period)."""
    names, freq, base_period = _config_indices(config)
    data = load_variables(paths, "reference")
    keys = sorted({k for n in names for k in INDEX_SPECS[n].thresholds.values()})
    thresholds = compute_thresholds(data, keys, base_period, what="reference")
    ds = compute_indices(data, names, freq, thresholds)
    ds.attrs.update(
        provenance_attrs(
            "reference_indices",
            reference=config["reference"]["name"],
            base_period=f"{base_period[0]}-{base_period[1]}",
            index_freq=freq,
            inputs=" ".join(relpath_or_name(p) for p in paths),
        )
    )
    ds.attrs.update(identity_attrs(config, freq))
    ds.attrs["title"] = "xclim extremes indices of the 0.25 deg reference"
    return write_cf(ds, out_path)


# ----------------------------------------------------------------------------------------------
# Ensemble statistics
# ----------------------------------------------------------------------------------------------
STAT_QUANTILES: dict[str, float] = {"p10": 0.1, "median": 0.5, "p90": 0.9}


def _realization_key(path: str | os.PathLike[str], ds: xr.Dataset) -> str:
    member = ds.attrs.get("aid_member")
    sample = ds.attrs.get("aid_sample")
    if member is None or sample is None:
        f = parse_index_path(path)
        if f:
            member, sample = f["member"], f["sample"]
    if member is None or sample is None:
        raise DataError(f"{path}: cannot tell its member and sample (no aid_member/aid_sample attrs).",
                        "pass index files written by aid.indices.compute_sample_indices.")
    return f"{member}_r{sample}"


def _open_ensemble(paths: Sequence[str | os.PathLike[str]], what: str) -> xr.Dataset:
    """Index files stacked on a ``realization`` dimension labelled ``<member>_r<sample>``."""
    dss, keys = [], []
    for p in paths:
        ds = open_dataset(p, chunks=None)
        keys.append(_realization_key(p, ds))
        dss.append(ds.load())
    if len(set(keys)) != len(keys):
        raise DataError(f"{what} index files repeat a (member, sample): {sorted(keys)}.", "pass each file once.")
    common = set.intersection(*(set(d.data_vars) for d in dss))
    for d, p in zip(dss, paths):
        extra = set(d.data_vars) - common
        if extra:
            log.warning("%s: indices %s missing in other members; dropped", p, sorted(extra))
    out = xr.concat([d[sorted(common)] for d in dss], dim="realization", join="outer", combine_attrs="drop_conflicts")
    return out.assign_coords(realization=keys)


def _stats(da: xr.DataArray) -> xr.DataArray:
    q = da.quantile(list(STAT_QUANTILES.values()), dim="realization", skipna=True)
    q = q.rename(quantile="statistic").assign_coords(statistic=list(STAT_QUANTILES))
    return q


def ensemble_stats(
    config: Mapping[str, Any],
    run_paths: Sequence[str | os.PathLike[str]],
    base_paths: Sequence[str | os.PathLike[str]],
    experiment: str,
    out_path: str | os.PathLike[str],
) -> Path:
    """Median, 10th and 90th percentiles across members x samples, and the change vs the base.

    Output variables per index ``X`` (``statistic`` = p10, median, p90 across realizations):

    - ``X`` (statistic, time, lat, lon): the yearly index;
    - ``X_base`` (statistic, lat, lon): climatology of the historical run over ``indices.base_period``;
    - ``X_change`` (statistic, lat, lon): per realization, mean over this experiment's years minus
      its own base climatology (pairs member+sample, so the spread is that of the change);
    - ``X_change_rel`` (percent) for precipitation amounts (:data:`RELATIVE_CHANGE`).
    """
    _, freq, base_period = _config_indices(config)
    if not run_paths:
        raise DataError(f"no index files for {out_path}.", "check the indices jobs.")
    run = _open_ensemble(run_paths, experiment)
    base = _open_ensemble(base_paths, "historical") if base_paths else run
    missing = sorted(set(run.realization.values) - set(base.realization.values))
    if missing:
        raise DataError(
            f"historical index files lack realization(s) {missing} present in {experiment}.",
            "compute historical indices for every member and sample of the scenario.",
        )
    base = base.sel(realization=run.realization.values)
    byears = base["time"].dt.year
    in_base = ((byears >= base_period[0]) & (byears <= base_period[1])).values
    if not in_base.any():
        raise DataError(
            f"historical indices cover years {int(byears.min())}-{int(byears.max())}, none inside "
            f"'indices.base_period' {base_period}.",
            "set indices.base_period inside the historical experiment's years.",
        )
    base_clim = base.isel(time=np.flatnonzero(in_base)).mean("time", keep_attrs=True)
    run_clim = run.mean("time", keep_attrs=True)
    out: dict[str, xr.DataArray] = {}
    for name in run.data_vars:
        attrs = {k: v for k, v in run[name].attrs.items() if k not in ("history",)}
        units = attrs.get("units", "")
        out[name] = _stats(run[name]).assign_attrs(attrs, ensemble_statistic="quantiles across members and samples")
        out[f"{name}_base"] = _stats(base_clim[name]).assign_attrs(
            attrs, long_name=f"{attrs.get('long_name', name)}: base-period climatology",
            climatology=f"{base_period[0]}-{base_period[1]}",
        )
        change = run_clim[name] - base_clim[name]
        cattrs = dict(units=units, long_name=f"change of {name} vs base period {base_period[0]}-{base_period[1]}",
                      aid_index=name)
        if units in ("K", "degC"):
            cattrs["units_metadata"] = "temperature: difference"
        out[f"{name}_change"] = _stats(change).assign_attrs(cattrs)
        if name in RELATIVE_CHANGE:
            rel = 100.0 * change / base_clim[name].where(base_clim[name] != 0)
            out[f"{name}_change_rel"] = _stats(rel).assign_attrs(
                units="%", long_name=f"relative change of {name} vs base period", aid_index=name
            )
    ds = xr.Dataset(out)
    ds["statistic"].attrs["long_name"] = "ensemble statistic across GCM members and diffusion samples"
    ds.attrs.update(
        provenance_attrs(
            "ensemble_stats",
            experiment=experiment,
            realizations=" ".join(map(str, run.realization.values)),
            n_realizations=run.sizes["realization"],
            base_period=f"{base_period[0]}-{base_period[1]}",
            inputs=" ".join(relpath_or_name(p) for p in run_paths),
        )
    )
    members = sorted({str(k).rsplit("_r", 1)[0] for k in run.realization.values})
    ds.attrs.update(identity_attrs(config, freq, experiment,
                                   run.attrs.get("driving_source_id") or run.attrs.get("aid_source"), members))
    ds.attrs["title"] = f"Ensemble statistics of xclim extremes indices, {experiment}"
    return write_cf(ds, out_path)


__all__ = [
    "INDEX_SPECS",
    "IndexSpec",
    "check_index_names",
    "compute_indices",
    "compute_reference_indices",
    "compute_sample_indices",
    "compute_thresholds",
    "ensemble_stats",
    "get_indicator",
    "load_variables",
]

