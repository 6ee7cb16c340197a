"""Fetch one (source, experiment, member, variable) from any intake-esm catalog; check completeness.

Why intake-esm only for the *search*: any site catalog (ESM collection JSON + CSV) works, including
intake-esm's own sample catalogs whose CSV holds paths relative to a folder above the JSON. The files
of the one dataset found are then opened with :func:`aid.io.open_dataset`, so a corrupt or truncated
file fails with a message naming *that file*, and each file is standardised
(:func:`aid.standardise.standardise`) before the files are concatenated along time.

What :func:`fetch_dataset` does, in order:

1. open the catalog (missing/unreadable -> :class:`DataError`);
2. search ``source_id, experiment_id, member_id, table_id`` (config ``search.table_id``),
   ``frequency`` (config ``search.frequency``), ``variable_id`` -- facets only where the catalog has the
   column; an empty result names the first facet that matched nothing and lists the values of that
   facet that *do* exist under the facets before it;
3. keep the newest ``version`` when several exist; refuse several grids;
4. open, standardise, concatenate the files along time (overlaps: first file wins);
5. keep the years ``search.experiments[experiment]`` and the box ``domain`` plus
   ``halo_cells * grid.coarse_resolution`` degrees on each side (cells whose extent overlaps it);
6. write one CF NetCDF (atomic) with provenance attributes.

:func:`check_completeness` is the gate after fetch: daily coverage of the requested years in the
model's own calendar, no all-NaN days, physical bounds; it writes a JSON summary or raises.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from aid.errors import ConfigError, DataError
from aid.frequency import require_daily
from aid.io import open_dataset, write_netcdf, write_text
from aid.provenance import provenance_attrs, relpath_or_name
from aid.standardise import CANONICAL_UNITS, standardise

log = logging.getLogger(__name__)

#: Physical plausibility bounds in canonical units (inclusive), per variable.
PHYSICAL_BOUNDS: dict[str, tuple[float, float]] = {
    "tas": (150.0, 350.0),
    "tasmax": (150.0, 350.0),
    "tasmin": (150.0, 350.0),
    "pr": (0.0, 2000.0),
    "uas": (-150.0, 150.0),
    "vas": (-150.0, 150.0),
    "sfcWind": (0.0, 150.0),
}

#: The fix for a sub-daily file where daily data are required.
_NOT_DAILY_FIX = (
    "fetch the daily files of this dataset: set search.table_id: day (and search.frequency: day where the catalog "
    "has a frequency column), or keep only daily files in the catalog."
)

#: CMIP6 global attributes carried over from the source file.
_KEEP_GLOBAL = (
    "Conventions",
    "activity_id",
    "experiment_id",
    "source_id",
    "institution_id",
    "institution",
    "variant_label",
    "sub_experiment_id",
    "further_info_url",
    "license",
    "grid_label",
    "nominal_resolution",
    "title",
    "comment",
)


def open_catalog(catalog_path: str | os.PathLike[str]) -> Any:
    """Open an ESM collection JSON with intake-esm; clear error if missing or unreadable."""
    import intake

    path = Path(catalog_path)
    if not path.is_file():
        raise DataError(
            f"catalog {path} does not exist.",
            "build one with `aid catalog build ROOT --out CATALOG.json` or set catalog.path in the config.",
        )
    try:
        return intake.open_esm_datastore(str(path))
    except Exception as exc:  # pydantic validation, JSON errors, missing CSV
        raise DataError(
            f"catalog {path} cannot be opened as an intake-esm ESM collection ({type(exc).__name__}: {exc}).",
            "check the JSON (esmcat_version, catalog_file, assets) and that its CSV exists.",
        ) from exc


def _search_facets(config: Mapping[str, Any], source: str, experiment: str, member: str, variable: str) -> list[tuple[str, str]]:
    """Facets in search order: the variable last, so its error lists the variables of that member."""
    search = config.get("search", {})
    facets = [("source_id", source), ("experiment_id", experiment), ("member_id", member)]
    if search.get("table_id"):
        facets.append(("table_id", str(search["table_id"])))
    if search.get("frequency"):
        facets.append(("frequency", str(search["frequency"])))
    facets.append(("variable_id", variable))
    return facets


def search_dataset(
    df: pd.DataFrame, facets: Sequence[tuple[str, str]], catalog_name: str
) -> pd.DataFrame:
    """Filter ``df`` facet by facet; on an empty result list what exists for the failing facet."""
    sub = df
    used: list[tuple[str, str]] = []
    all_facets = ", ".join(f"{k}={v}" for k, v in facets if k in df.columns)
    for col, value in facets:
        if col not in df.columns:
            log.debug("catalog %s has no column %s; facet %s=%s not applied", catalog_name, col, col, value)
            continue
        nxt = sub[sub[col].astype(str) == str(value)]
        if nxt.empty:
            avail = sorted(map(str, sub[col].dropna().unique()))
            under = " for " + ", ".join(f"{k}={v}" for k, v in used) if used else ""
            raise DataError(
                f"catalog {catalog_name}: no dataset for {all_facets}; available {col}{under}: {avail}",
                f"pick one of the available {col} values in the config (search.*) or add the data to the catalog.",
            )
        used.append((col, value))
        sub = nxt
    return sub


def _resolve_asset(path: str, catalog_path: Path) -> Path:
    """Absolute path of a catalog asset; relative paths are tried against the catalog's folder and
    its parents (intake-esm's sample CSV is relative to two folders above its JSON), then the cwd."""
    p = Path(path)
    if p.is_absolute():
        return p
    here = catalog_path.resolve().parent
    for base in (here, *here.parents, Path.cwd()):
        cand = (base / p).resolve()
        if cand.exists():
            return cand
    return (here / p).resolve()


def _pick_version(rows: pd.DataFrame, key: str) -> pd.DataFrame:
    if "grid_label" in rows.columns and rows["grid_label"].nunique() > 1:
        raise DataError(
            f"{key}: several grids in the catalog ({sorted(rows['grid_label'].unique())}).",
            "keep one grid_label per source in the catalog (or filter the CSV).",
        )
    if "version" in rows.columns and rows["version"].nunique() > 1:
        newest = sorted(rows["version"].astype(str).unique())[-1]
        log.warning("%s: several versions %s; using the newest %s", key, sorted(rows["version"].unique()), newest)
        rows = rows[rows["version"].astype(str) == newest]
    return rows


def dataset_key(row: Mapping[str, Any]) -> str:
    """``activity.institution.source.experiment.member.table.variable.grid`` (facets present only)."""
    cols = ("activity_id", "institution_id", "source_id", "experiment_id", "member_id", "table_id", "variable_id", "grid_label")
    return ".".join(str(row[c]) for c in cols if c in row and pd.notna(row[c]))


def _region_box(config: Mapping[str, Any]) -> tuple[float, float, float, float, str]:
    dom = config["domain"]
    halo = int(dom.get("halo_cells", 0)) * float(config.get("grid", {}).get("coarse_resolution", 0.0))
    la0, la1 = float(dom["lat"][0]) - halo, float(dom["lat"][1]) + halo
    lo0 = ((float(dom["lon"][0]) + 180.0) % 360.0) - 180.0 - halo
    lo1 = ((float(dom["lon"][1]) + 180.0) % 360.0) - 180.0 + halo
    if lo1 < lo0:
        raise ConfigError(
            f"domain.lon {dom['lon']} crosses the antimeridian, which fetch does not support.",
            "use a domain within -180..180.",
        )
    desc = f"lat {la0:g}..{la1:g}, lon {lo0:g}..{lo1:g} (domain + {dom.get('halo_cells', 0)} halo cells of {config.get('grid', {}).get('coarse_resolution')} deg)"
    return la0, la1, lo0, lo1, desc


def _bounds_halfwidths(raw: xr.Dataset) -> dict[str, dict[float, float]]:
    """Half cell widths from the file's own ``lat_bnds``/``lon_bnds`` keyed by (wrapped) centre.

    Why: sub-sampled files (every 100th point of a 1 deg grid) have centres far apart, so widths
    inferred from the spacing would be far too large; the bounds say what each cell really covers.
    """
    out: dict[str, dict[float, float]] = {}
    for std, names in (("lat", ("lat", "latitude")), ("lon", ("lon", "longitude"))):
        name = next((n for n in names if n in raw.variables), None)
        if name is None:
            continue
        bname = raw[name].attrs.get("bounds")
        if not bname or bname not in raw.variables or raw[bname].ndim != 2:
            continue
        centres = np.atleast_1d(raw[name].values).astype("float64")
        b = np.asarray(raw[bname].values, dtype="float64")
        half = np.abs(b[:, 1] - b[:, 0]) / 2.0
        if std == "lon":
            centres = ((centres + 180.0) % 360.0) - 180.0
        out[std] = {round(float(c), 6): float(h) for c, h in zip(centres, half)}
    return out


def _overlap_mask(coord: np.ndarray, lo: float, hi: float, halfwidths: Mapping[float, float] | None = None) -> np.ndarray:
    """Cells (centres ``coord``; half-widths from the file's bounds, else from the local spacing)
    whose extent overlaps [lo, hi]."""
    if halfwidths and all(round(float(c), 6) in halfwidths for c in coord):
        half = np.array([halfwidths[round(float(c), 6)] for c in coord])
        return (coord + half > lo) & (coord - half < hi)
    if coord.size > 1:
        d = np.abs(np.diff(coord))
        half = np.concatenate([[d[0]], np.minimum(d[:-1], d[1:]), [d[-1]]]) / 2 if coord.size > 2 else np.array([d[0], d[0]]) / 2
    else:
        half = np.zeros_like(coord)
    return (coord + half > lo) & (coord - half < hi)


def subset_region(
    ds: xr.Dataset, config: Mapping[str, Any], key: str, halfwidths: Mapping[str, Mapping[float, float]] | None = None
) -> xr.Dataset:
    """Keep cells overlapping the domain + halo box; DataError when none do."""
    la0, la1, lo0, lo1, desc = _region_box(config)
    if "lat" not in ds.dims or "lon" not in ds.dims:
        raise DataError(f"{key}: data have no lat/lon grid dimensions (dims {dict(ds.sizes)}).", "fetch gridded data only.")
    hw = halfwidths or {}
    mlat = _overlap_mask(ds["lat"].values, la0, la1, hw.get("lat"))
    mlon = _overlap_mask(ds["lon"].values, lo0, lo1, hw.get("lon"))
    if not mlat.any() or not mlon.any():
        raise DataError(
            f"{key}: region {desc} does not intersect the data (lat {float(ds.lat.min()):g}..{float(ds.lat.max()):g}, "
            f"lon {float(ds.lon.min()):g}..{float(ds.lon.max()):g}).",
            "check domain.lat/domain.lon in the config or choose a dataset that covers the region.",
        )
    return ds.isel(lat=np.flatnonzero(mlat), lon=np.flatnonzero(mlon))


def subset_years(ds: xr.Dataset, years: Sequence[int], key: str) -> xr.Dataset:
    """Keep the calendar years ``years[0]..years[1]``; DataError when none of them is in the data."""
    y0, y1 = int(years[0]), int(years[1])
    yr = ds["time"].dt.year.values
    keep = (yr >= y0) & (yr <= y1)
    if not keep.any():
        t0, t1 = ds["time"].values[0], ds["time"].values[-1]
        raise DataError(
            f"{key}: requested years {y0}-{y1} are outside the data, which cover {str(t0)[:10]} to {str(t1)[:10]}.",
            "change search.experiments in the config to years the dataset covers.",
        )
    out = ds.isel(time=np.flatnonzero(keep))
    if yr[keep].min() > y0 or yr[keep].max() < y1:
        log.warning("%s: data cover only %d-%d of the requested %d-%d", key, yr[keep].min(), yr[keep].max(), y0, y1)
    return out


def _open_standardised(
    paths: Sequence[Path], variable: str, key: str
) -> tuple[xr.Dataset, list[dict[str, Any]], dict[str, dict[float, float]]]:
    parts: list[xr.Dataset] = []
    headers: list[dict[str, Any]] = []
    halfwidths: dict[str, dict[float, float]] = {}
    for p in paths:
        raw = open_dataset(p, chunks=None, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
        headers.append(dict(raw.attrs))
        for c, hw in _bounds_halfwidths(raw).items():
            halfwidths.setdefault(c, {}).update(hw)
        std = standardise(raw, variable, str(p))
        require_daily(std, f"{key}: {p}", _NOT_DAILY_FIX)  # headers and catalogs may not say; the time steps do
        parts.append(std.load())
        raw.close()
    if len(parts) == 1:
        return parts[0], headers, halfwidths
    cals = {d.attrs.get("calendar") for d in parts}
    if len(cals) > 1:
        which = "; ".join(f"{p}: {d.attrs.get('calendar')}" for p, d in zip(paths, parts))
        raise DataError(
            f"{key}: files use different calendars {sorted(map(str, cals))} ({which}).",
            "the files of one dataset must share a calendar: re-encode the odd file(s) in the dataset's calendar "
            "or remove them from the catalog.",
        )
    parts.sort(key=lambda d: d["time"].values[0])
    attrs = dict(parts[0].attrs)
    enc = dict(parts[0]["time"].encoding)
    ds = xr.concat(parts, dim="time", data_vars="minimal", coords="minimal", compat="override", join="override")
    idx = ds.indexes["time"]
    dup = idx.duplicated()
    if dup.any():
        log.warning("%s: %d time steps appear in more than one file (first kept)", key, int(dup.sum()))
        ds = ds.isel(time=~dup)
    attrs["aid_duplicate_time_steps"] = int(sum(int(d.attrs.get("aid_duplicate_time_steps", 0)) for d in parts) + dup.sum())
    attrs["aid_nan_only_time_steps"] = int(sum(int(d.attrs.get("aid_nan_only_time_steps", 0)) for d in parts))
    ds.attrs = attrs
    ds["time"].encoding.update({k: v for k, v in enc.items() if k in ("calendar", "units")})
    return ds, headers, halfwidths


def fetch_dataset(
    catalog_path: str | os.PathLike[str],
    config: Mapping[str, Any],
    source: str,
    experiment: str,
    member: str,
    variable: str,
    out_path: str | os.PathLike[str],
) -> Path:
    """Search, open, standardise, subset and write one variable of one member (see module doc)."""
    catalog_path = Path(catalog_path)
    cat = open_catalog(catalog_path)
    df = cat.df
    facets = _search_facets(config, source, experiment, member, variable)
    rows = search_dataset(df, facets, str(catalog_path))
    key = dataset_key(rows.iloc[0])
    rows = _pick_version(rows, key)
    path_col = cat.esmcat.assets.column_name
    paths = [_resolve_asset(str(p), catalog_path) for p in rows[path_col]]
    log.info("%s: %d file(s) from %s", key, len(paths), catalog_path)

    years = config.get("search", {}).get("experiments", {}).get(experiment)
    if years is None:
        raise ConfigError(
            f"experiment '{experiment}' is not in search.experiments.",
            f"add search.experiments.{experiment}: [first_year, last_year] to the config.",
        )
    ds, headers, halfwidths = _open_standardised(paths, variable, key)
    ds = subset_years(ds, years, key)
    ds = subset_region(ds, config, key, halfwidths)

    attrs: dict[str, Any] = {k: ds.attrs[k] for k in _KEEP_GLOBAL if k in ds.attrs}
    attrs.update(
        {
            "calendar": ds.attrs.get("calendar", "standard"),
            "variable_id": variable,
            "frequency": str(rows.iloc[0]["frequency"]) if "frequency" in rows.columns else ds.attrs.get("frequency", ""),
            "table_id": str(rows.iloc[0]["table_id"]) if "table_id" in rows.columns else ds.attrs.get("table_id", ""),
            "aid_duplicate_time_steps": ds.attrs.get("aid_duplicate_time_steps", 0),
            "aid_nan_only_time_steps": ds.attrs.get("aid_nan_only_time_steps", 0),
        }
    )
    tracking = " ".join(str(h["tracking_id"]) for h in headers if h.get("tracking_id"))
    licenses = sorted({str(h["license"]) for h in headers if h.get("license")})
    attrs.update(
        provenance_attrs(
            "fetch",
            catalog=relpath_or_name(catalog_path),
            dataset_key=key,
            source_tracking_id=tracking or "unknown",
            source_files=" ".join(relpath_or_name(p) for p in paths),
            years=f"{int(years[0])}-{int(years[1])}",
        )
    )
    attrs["license"] = licenses[0] if len(licenses) == 1 else (" | ".join(licenses) if licenses else "unknown (not stated in the source files)")
    ds.attrs = attrs
    enc = {variable: {"dtype": "float32", "zlib": True, "complevel": 1, "_FillValue": np.float32(1e20)}}
    enc["time"] = {"units": "days since 1850-01-01", "calendar": attrs["calendar"], "dtype": "float64"}
    for c in ("lat", "lon"):
        enc[c] = {"_FillValue": None}
    enc["time"]["_FillValue"] = None
    write_netcdf(ds, out_path, encoding=enc)
    return Path(out_path)


# ---------------------------------------------------------------------------------------------
# Completeness


def expected_days(calendar: str, y0: int, y1: int) -> xr.CFTimeIndex | pd.DatetimeIndex:
    """Every day (12:00) of years ``y0..y1`` in ``calendar`` (360_day: 360 days a year)."""
    return xr.date_range(f"{y0:04d}-01-01 12:00", end=_last_day(calendar, y1), freq="D", calendar=calendar, use_cftime=True)


def _last_day(calendar: str, year: int) -> str:
    return f"{year:04d}-12-30 12:00" if calendar == "360_day" else f"{year:04d}-12-31 12:00"


def _data_variable(ds: xr.Dataset, path: str) -> str:
    names = [v for v in ds.data_vars if v in CANONICAL_UNITS]
    if len(names) != 1:
        raise DataError(f"{path}: expected exactly one of {list(CANONICAL_UNITS)}, found {sorted(map(str, ds.data_vars))}.",
                        "pass files written by `aid fetch`.")
    return names[0]


def check_variable(ds: xr.Dataset, variable: str, years: Sequence[int], key: str) -> dict[str, Any]:
    """Completeness summary of one fetched variable; ``problems`` lists what is wrong."""
    cal = str(ds.attrs.get("calendar") or ds["time"].encoding.get("calendar", "standard"))
    y0, y1 = int(years[0]), int(years[1])
    problems: list[str] = []
    times = ds.indexes["time"]
    if not isinstance(times, xr.CFTimeIndex):
        times = _to_cftime(times, cal)
    have = {(t.year, t.month, t.day) for t in times}
    want = expected_days(cal, y0, y1)
    missing = [t for t in want if (t.year, t.month, t.day) not in have]
    n_dup = int(times.duplicated().sum())
    if missing:
        problems.append(
            f"{len(missing)} of {len(want)} days of {y0}-{y1} ({cal} calendar) are missing "
            f"(first: {', '.join(t.strftime('%Y-%m-%d') for t in missing[:3])})"
        )
    if n_dup:
        problems.append(f"{n_dup} duplicate time steps")
    da = ds[variable]
    spatial = [d for d in da.dims if d != "time"]
    nan_only = da.isnull().all(dim=spatial) if spatial else da.isnull()
    n_nan = int(nan_only.sum())
    if n_nan:
        first = [str(t)[:10] for t in ds["time"].values[np.asarray(nan_only.values)][:3]]
        problems.append(f"{n_nan} time steps are NaN everywhere (first: {', '.join(first)})")
    units = da.attrs.get("units")
    if units != CANONICAL_UNITS[variable]:
        problems.append(f"units '{units}' are not the canonical '{CANONICAL_UNITS[variable]}'")
    vmin = float(da.min(skipna=True)) if da.notnull().any() else float("nan")
    vmax = float(da.max(skipna=True)) if da.notnull().any() else float("nan")
    lo, hi = PHYSICAL_BOUNDS[variable]
    if np.isfinite(vmin) and (vmin < lo or vmax > hi):
        bad = int(((da < lo) | (da > hi)).sum())
        problems.append(f"{bad} values outside the physical bounds {lo:g}..{hi:g} {CANONICAL_UNITS[variable]} (min {vmin:.4g}, max {vmax:.4g})")
    return {
        "dataset_key": key,
        "calendar": cal,
        "n_time": int(ds.sizes["time"]),
        "expected_days": len(want),
        "missing_days": len(missing),
        "duplicate_time_steps": n_dup,
        "nan_only_time_steps": n_nan,
        "min": vmin,
        "max": vmax,
        "units": units,
        "problems": problems,
    }


def _to_cftime(times: pd.DatetimeIndex, cal: str) -> xr.CFTimeIndex:
    import cftime

    return xr.CFTimeIndex([cftime.datetime(t.year, t.month, t.day, t.hour, calendar=cal) for t in times])


def check_completeness(
    paths: Sequence[str | os.PathLike[str]],
    config: Mapping[str, Any],
    source: str,
    experiment: str,
    member: str,
    out_path: str | os.PathLike[str],
) -> Path:
    """Check every fetched variable of one (source, experiment, member); write a JSON summary.

    Raises :class:`DataError` naming the dataset and every problem found (coverage of the requested
    years in the data's calendar, all-NaN days, values outside physical bounds, variables missing);
    nothing is written then.
    """
    years = config["search"]["experiments"].get(experiment)
    if years is None:
        raise ConfigError(f"experiment '{experiment}' is not in search.experiments.", f"add search.experiments.{experiment}.")
    summary: dict[str, Any] = {"source": source, "experiment": experiment, "member": member,
                               "years": [int(years[0]), int(years[1])], "variables": {}}
    problems: list[str] = []
    for p in paths:
        ds = open_dataset(p, chunks=None, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
        try:
            var = _data_variable(ds, str(p))
            key = str(ds.attrs.get("aid_dataset_key", f"{source}.{experiment}.{member}.{var}"))
            info = check_variable(ds, var, years, key)
        finally:
            ds.close()
        info["file"] = relpath_or_name(p)
        summary["variables"][var] = info
        problems += [f"{key}: {msg}" for msg in info["problems"]]
    wanted = list(config["search"].get("variables", []))
    missing_vars = [v for v in wanted if v not in summary["variables"]]
    if missing_vars:
        problems.append(f"{source}.{experiment}.{member}: no fetched file for variable(s) {missing_vars}")
    if problems:
        raise DataError(
            f"fetched data of {source}/{experiment}/{member} failed the completeness check:\n  - " + "\n  - ".join(problems),
            "fix the source data or the catalog, or narrow search.experiments to the years the data cover.",
        )
    summary["ok"] = True
    write_text(json.dumps(summary, indent=2, default=str) + "\n", out_path)
    log.info("completeness OK for %s/%s/%s (%d variables)", source, experiment, member, len(summary["variables"]))
    return Path(out_path)
