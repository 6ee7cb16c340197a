"""Fetch one (source, experiment, member, variable) from any intake-esm catalog; check completeness.

Why intake-esm only for the *search*: any site catalog (ESM collection JSON + CSV) works, including
intake-esm's own sample catalogs whose CSV holds paths relative to a folder above the JSON. The assets
of the one dataset found are then opened with :func:`aid.assets.open_asset`, so a corrupt or
truncated file fails with a message naming *that file*, and each file's crop is standardised
(:func:`aid.standardise.standardise`) before the crops are concatenated along time.

What :func:`fetch_dataset` does, in order:

1. open the catalog (missing/unreadable -> :class:`DataError`);
2. search ``source_id, experiment_id, member_id, table_id`` (config ``search.table_id``),
   ``frequency`` (config ``search.frequency``), ``variable_id`` -- facets only where the catalog has the
   column; an empty result names the first facet that matched nothing and lists the values of that
   facet that *do* exist under the facets before it;
3. keep the newest ``version`` when several exist; refuse several grids;
4. resolve the assets (:mod:`aid.assets`: NetCDF or Zarr by the catalog's ``assets.format`` or
   ``format_column_name``; URLs through fsspec with ``catalog.storage_options``);
5. open each asset lazily and select, *on the data as stored*, the years ``search.experiments[experiment]``
   and the cells overlapping the box ``domain`` plus ``halo_cells * grid.coarse_resolution`` degrees on
   each side (also across the antimeridian); only that crop is read, then standardised; crops are
   concatenated along time (overlaps: first file wins);
6. write one CF NetCDF (atomic) with provenance attributes. Longitudes are in -180..180, except for a
   domain across the antimeridian, whose box keeps running past 180 (e.g. 173..186.75), as the
   deliverables' grid does (:func:`aid.grids.fine_grid`).

:func:`check_completeness` is the gate after fetch: daily coverage of the requested years in the
model's own calendar, no all-NaN days, physical bounds; it writes a JSON summary or raises.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from aid.assets import Asset, catalog_assets, open_asset
from aid.config import load_schema
from aid.errors import ConfigError, DataError
from aid.frequency import require_daily
from aid.io import open_dataset, write_netcdf, write_text
from aid.provenance import provenance_attrs, relpath_or_name
from aid.standardise import rename_coords, standardise
from aid.variables import VARIABLES

log = logging.getLogger(__name__)

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
    search = config["search"]
    facets = [("source_id", source), ("experiment_id", experiment), ("member_id", member)]
    for facet in ("table_id", "frequency"):  # a facet taken out of the search (None or absent) filters nothing
        if search.get(facet):
            facets.append((facet, str(search[facet])))
    facets.append(("variable_id", variable))
    return facets


def accepted_facet_patterns() -> dict[str, str]:
    """The schema's pattern for each facet the config names (``search.sources``/``experiments``/``members``).

    Why: an empty search lists what the catalog holds, and a suggestion the config would then
    refuse (a member id with a typo'd sub-experiment, a source with an underscore) is no help.
    """
    search = load_schema()["properties"]["search"]["properties"]
    return {
        "source_id": search["sources"]["items"]["pattern"],
        "experiment_id": search["experiments"]["propertyNames"]["pattern"],
        "member_id": search["members"]["items"]["pattern"],
    }


def search_dataset(
    df: pd.DataFrame, facets: Sequence[tuple[str, str]], catalog_name: str, accepted: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Filter ``df`` facet by facet; on an empty result list what exists for the failing facet.

    ``accepted`` (facet -> regex) limits that list to values the config accepts; how many others
    the catalog holds is said, not listed.
    """
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
            pattern = (accepted or {}).get(col)
            refused = [v for v in avail if pattern and not re.fullmatch(pattern, v)]
            avail = [v for v in avail if v not in refused]
            under = " for " + ", ".join(f"{k}={v}" for k, v in used) if used else ""
            extra = f" ({len(refused)} other value(s) in the catalog do not fit the config's pattern {pattern})" if refused else ""
            raise DataError(
                f"catalog {catalog_name}: no dataset for {all_facets}; available {col}{under}: {avail}{extra}",
                f"pick one of the available {col} values in the config (search.*) or add the data to the catalog.",
            )
        used.append((col, value))
        sub = nxt
    return sub


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


@dataclass(frozen=True)
class Box:
    """The fetch box: domain + halo, longitudes as a west..east window (east > west, east may pass 180).

    ``split`` is the middle of the longitudes *outside* the box: expressing any longitude in
    ``[split - 360, split)`` puts every cell that overlaps the box in one contiguous run, also when
    the domain crosses the antimeridian (Fiji 175E..175.25W: west 173, east 186.75 with a 2 deg halo).
    """

    south: float
    north: float
    west: float
    east: float
    desc: str

    @property
    def split(self) -> float:
        return self.east + (360.0 - (self.east - self.west)) / 2.0

    @property
    def crosses_antimeridian(self) -> bool:
        return self.west < -180.0 or self.east > 180.0

    def window(self, lon: np.ndarray) -> np.ndarray:
        """``lon`` expressed in the 360-degree window that keeps the box contiguous."""
        return (np.asarray(lon, dtype="float64") - self.split) % 360.0 + self.split - 360.0


def region_box(config: Mapping[str, Any]) -> Box:
    """Domain + ``halo_cells * grid.coarse_resolution`` degrees on each side."""
    dom = config["domain"]
    halo = int(dom["halo_cells"]) * float(config["grid"]["coarse_resolution"])
    la0, la1 = float(dom["lat"][0]) - halo, float(dom["lat"][1]) + halo
    w = ((float(dom["lon"][0]) + 180.0) % 360.0) - 180.0
    e = ((float(dom["lon"][1]) + 180.0) % 360.0) - 180.0
    if e < w:  # crosses the antimeridian
        e += 360.0
    desc = (f"lat {la0:g}..{la1:g}, lon {w - halo:g}..{e + halo:g} (domain + {dom['halo_cells']} halo cells "
            f"of {config['grid']['coarse_resolution']} deg)")
    return Box(la0, la1, w - halo, e + halo, desc)


def _bounds_halfwidths(raw: xr.Dataset) -> dict[str, np.ndarray]:
    """Half cell widths from the file's own ``lat_bnds``/``lon_bnds``, in the file's order.

    Why: sub-sampled files (every 100th point of a 1 deg grid) have centres far apart, so widths
    inferred from the spacing would be far too large; the bounds say what each cell really covers.
    """
    out: dict[str, np.ndarray] = {}
    for name in ("lat", "lon"):
        if name not in raw.variables:
            continue
        bname = raw[name].attrs.get("bounds")
        if not bname or bname not in raw.variables or raw[bname].ndim != 2 or raw[bname].shape[0] != raw[name].size:
            continue
        b = np.asarray(raw[bname].values, dtype="float64")
        out[name] = np.abs(b[:, 1] - b[:, 0]) / 2.0
    return out


def _spacing_halfwidths(coord: np.ndarray) -> np.ndarray:
    """Half cell widths inferred from the local spacing of the centres (the smaller neighbour gap)."""
    if coord.size < 2:
        return np.zeros_like(coord)
    d = np.abs(np.diff(coord))
    if coord.size == 2:
        return np.array([d[0], d[0]]) / 2
    return np.concatenate([[d[0]], np.minimum(d[:-1], d[1:]), [d[-1]]]) / 2


def _overlap_mask(coord: np.ndarray, lo: float, hi: float, half: np.ndarray | None = None) -> np.ndarray:
    """Cells (centres ``coord``, half-widths ``half``, else from the spacing) whose extent overlaps [lo, hi]."""
    half = _spacing_halfwidths(coord) if half is None else half
    return (coord + half > lo) & (coord - half < hi)


def crop_region(ds: xr.Dataset, box: Box, key: str, halfwidths: Mapping[str, np.ndarray] | None = None) -> xr.Dataset:
    """Keep the cells overlapping ``box``, on the data as stored (any longitude convention, any
    latitude order); nothing is read but the coordinates. DataError when no cell overlaps."""
    if "lat" not in ds.dims or "lon" not in ds.dims:
        raise DataError(f"{key}: data have no lat/lon grid dimensions (dims {dict(ds.sizes)}).", "fetch gridded data only.")
    hw = halfwidths or {}
    lat = np.asarray(ds["lat"].values, dtype="float64")
    lon = np.asarray(ds["lon"].values, dtype="float64")
    # half-widths on the stored (monotonic) longitudes, before they are moved into the box's window
    lon_half = hw.get("lon") if hw.get("lon") is not None else _spacing_halfwidths(lon)
    mlat = _overlap_mask(lat, box.south, box.north, hw.get("lat"))
    mlon = _overlap_mask(box.window(lon), box.west, box.east, lon_half)
    if not mlat.any() or not mlon.any():
        wrapped = ((lon + 180.0) % 360.0) - 180.0
        raise DataError(
            f"{key}: region {box.desc} does not intersect the data (lat {lat.min():g}..{lat.max():g}, "
            f"lon {wrapped.min():g}..{wrapped.max():g}).",
            "check domain.lat/domain.lon in the config or choose a dataset that covers the region.",
        )
    return _isel_runs(_isel_runs(ds, "lat", np.flatnonzero(mlat)), "lon", np.flatnonzero(mlon))


def _isel_runs(ds: xr.Dataset, dim: str, idx: np.ndarray) -> xr.Dataset:
    """``ds.isel({dim: idx})`` as one slice per contiguous run of ``idx``.

    Why: an index array with a jump (the UK box on a 0..360 grid: columns 1392..1439 and 0..7)
    reaches netCDF4 as a non-uniform index list, which it reads element by element; slices are
    read as hyperslabs (bench/fetch_memory.py).
    """
    if idx.size == 0:
        return ds.isel({dim: idx})
    cuts = np.flatnonzero(np.diff(idx) != 1) + 1
    runs = [slice(int(r[0]), int(r[-1]) + 1) for r in np.split(idx, cuts)]
    if len(runs) == 1:
        return ds.isel({dim: runs[0]})
    return xr.concat([ds.isel({dim: r}) for r in runs], dim=dim, data_vars="minimal", coords="minimal",
                     compat="override", join="override")


def box_longitudes(ds: xr.Dataset, box: Box) -> xr.Dataset:
    """A domain across the antimeridian keeps its longitudes monotonic past 180 (as
    :func:`aid.grids.fine_grid` does), so the fetched box is one contiguous block; others stay in
    -180..180."""
    if not box.crosses_antimeridian or "lon" not in ds.dims:
        return ds
    lon = ds["lon"]
    return ds.assign_coords(lon=("lon", box.window(lon.values), dict(lon.attrs))).sortby("lon")


def _year_mask(ds: xr.Dataset, years: Sequence[int]) -> np.ndarray:
    yr = ds["time"].dt.year.values
    return (yr >= int(years[0])) & (yr <= int(years[1]))


def subset_years(ds: xr.Dataset, years: Sequence[int], key: str) -> xr.Dataset:
    """Keep the calendar years ``years[0]..years[1]``; DataError when none of them is in the data."""
    y0, y1 = int(years[0]), int(years[1])
    keep = _year_mask(ds, years)
    if not keep.any():
        t0, t1 = ds["time"].values[0], ds["time"].values[-1]
        _raise_years_outside(key, y0, y1, str(t0)[:10], str(t1)[:10])
    out = ds.isel(time=np.flatnonzero(keep))
    yr = out["time"].dt.year.values
    if yr.min() > y0 or yr.max() < y1:
        log.warning("%s: data cover only %d-%d of the requested %d-%d", key, yr.min(), yr.max(), y0, y1)
    return out


def _raise_years_outside(key: str, y0: int, y1: int, first: str, last: str) -> None:
    raise DataError(
        f"{key}: requested years {y0}-{y1} are outside the data, which cover {first} to {last}.",
        "change search.experiments in the config to years the dataset covers.",
    )


def _open_standardised(
    assets: Sequence[Asset], variable: str, key: str, years: Sequence[int], box: Box,
    storage_options: Mapping[str, Any] | None,
) -> tuple[xr.Dataset, list[dict[str, Any]]]:
    """Open each asset lazily, crop it to ``years`` and ``box`` as stored, then read and standardise
    only that crop: memory scales with the box and years, not with the file (bench/fetch_memory.py)."""
    parts: list[xr.Dataset] = []
    headers: list[dict[str, Any]] = []
    kept: list[Asset] = []
    first_last: list[tuple[str, str]] = []
    for a in assets:
        raw = open_asset(a, storage_options, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
        try:
            header = dict(raw.attrs)
            raw = rename_coords(raw)
            if "time" in raw.dims:
                keep = _year_mask(raw, years)
                if raw.sizes["time"]:
                    first_last.append((str(raw["time"].values[0])[:10], str(raw["time"].values[-1])[:10]))
                if not keep.any():
                    log.debug("%s: %s holds none of the years %s", key, a.location, years)
                    continue
                raw = _isel_runs(raw, "time", np.flatnonzero(keep))
            if "lat" in raw.dims and "lon" in raw.dims:
                raw = crop_region(raw, box, key, _bounds_halfwidths(raw))
            std = _with_lat_bounds(standardise(raw, variable, a.location), raw)
            require_daily(std, f"{key}: {a.location}", _NOT_DAILY_FIX)  # headers and catalogs may not say; the time steps do
            parts.append(std.load())
            headers.append(header)
            kept.append(a)
        finally:
            raw.close()
    if not parts:
        first = min(first_last)[0] if first_last else "?"
        last = max(f[1] for f in first_last) if first_last else "?"
        _raise_years_outside(key, int(years[0]), int(years[1]), first, last)
    if len(parts) == 1:
        return parts[0], headers
    cals = {d.attrs.get("calendar") for d in parts}
    if len(cals) > 1:
        which = "; ".join(f"{a.location}: {d.attrs.get('calendar')}" for a, d in zip(kept, parts))
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
    return ds, headers


def _with_lat_bounds(std: xr.Dataset, raw: xr.Dataset) -> xr.Dataset:
    """Carry the file's latitude cell bounds (``lat_bnds``) into the standardised crop when they
    say more than the mid-points between centres (a Gaussian grid): regridding uses them
    (:func:`aid.regrid.grid.source_lat_bounds`)."""
    from aid.regrid.grid import source_lat_bounds

    if "lat" not in std.dims or "lat" not in raw.dims:
        return std
    b = source_lat_bounds(raw)
    if b is None:
        return std
    by_centre = {round(float(c), 6): row for c, row in zip(np.asarray(raw["lat"].values, dtype="float64"), b)}
    rows = np.array([by_centre[round(float(c), 6)] for c in std["lat"].values])
    std["lat_bnds"] = (("lat", "bnds"), rows, {"units": "degrees_north"})
    std["lat"].attrs["bounds"] = "lat_bnds"
    return std


def _asset_name(a: Asset) -> str:
    return a.location if a.remote else relpath_or_name(a.location)


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
    rows = search_dataset(df, facets, str(catalog_path), accepted_facet_patterns())
    key = dataset_key(rows.iloc[0])
    rows = _pick_version(rows, key)
    assets = catalog_assets(cat, rows, catalog_path)
    log.info("%s: %d asset(s) from %s", key, len(assets), catalog_path)

    years = config["search"]["experiments"].get(experiment)
    if years is None:
        raise ConfigError(
            f"experiment '{experiment}' is not in search.experiments.",
            f"add search.experiments.{experiment}: [first_year, last_year] to the config.",
        )
    box = region_box(config)
    storage_options = config["catalog"]["storage_options"]
    ds, headers = _open_standardised(assets, variable, key, years, box, storage_options)
    ds = subset_years(ds, years, key)
    ds = box_longitudes(ds, box)

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
            source_files=" ".join(_asset_name(a) for a in assets),
            years=f"{int(years[0])}-{int(years[1])}",
        )
    )
    attrs["license"] = licenses[0] if len(licenses) == 1 else (" | ".join(licenses) if licenses else "unknown (not stated in the source files)")
    ds.attrs = attrs
    enc = {variable: {"dtype": "float32", "zlib": True, "complevel": 1, "_FillValue": np.float32(1e20)}}
    enc["time"] = {"units": "days since 1850-01-01", "calendar": attrs["calendar"], "dtype": "float64"}
    for c in ("lat", "lon", "lat_bnds"):
        if c in ds.variables:
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
    names = [v for v in ds.data_vars if v in VARIABLES]
    if len(names) != 1:
        raise DataError(f"{path}: expected exactly one of {list(VARIABLES)}, found {sorted(map(str, ds.data_vars))}.",
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
    meta = VARIABLES[variable]
    units = da.attrs.get("units")
    if units != meta.units:
        problems.append(f"units '{units}' are not the canonical '{meta.units}'")
    vmin = float(da.min(skipna=True)) if da.notnull().any() else float("nan")
    vmax = float(da.max(skipna=True)) if da.notnull().any() else float("nan")
    lo, hi = meta.bounds
    below, above = meta.out_of_bounds(da)
    bad = int((below | above).sum())
    if bad:
        problems.append(f"{bad} values outside the physical bounds {lo:g}..{hi:g} {meta.units} (min {vmin:.4g}, max {vmax:.4g})")
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
    wanted = list(config["search"]["variables"])
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
