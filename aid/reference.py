"""The reference (ERA5) on the deliverables' 0.25 deg grid and on the model's coarse grid.

Why both from one function: the diffusion model learns coarse -> fine from exactly these two
files, and the evaluation run downscales the coarse one, so the coarse file must be the fine
reference coarsened by :func:`aid.regrid.coarsen` (the same code path as at inference), from the
reference *around* the domain (whole coarse cells), not from the cropped box alone.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from aid.errors import DataError

log = logging.getLogger(__name__)


def reference_files(config: Mapping[str, Any], variable: str) -> list[Path]:
    """The files of ``reference.files[variable]`` (a glob), sorted; none found is a DataError."""
    pattern = config["reference"]["files"].get(variable)
    if pattern is None:
        raise DataError(
            f"no reference files configured for variable '{variable}' (reference.files.{variable}).",
            f"add reference.files.{variable}: a glob of ERA5 daily files.",
        )
    files = sorted(Path(p) for p in glob.glob(str(pattern)))
    if not files:
        raise DataError(
            f"reference.files.{variable}: pattern '{pattern}' matches no file.",
            "check the path/glob (relative to the working directory) or build the demo archive.",
        )
    return files


def open_reference(config: Mapping[str, Any], variable: str) -> xr.Dataset:
    """All reference files of ``variable``, standardised (CF name, units, lat ascending,
    lon -180..180, daily stamps at 12:00) and concatenated in time.

    Each file's frequency is read from its time steps: daily files are used as they are; sub-daily
    ones (ERA5 hourly as the CDS delivers it) are aggregated to days by :mod:`aid.era5_daily` when
    ``reference.aggregate_subdaily`` is true and refused otherwise; monthly ones are refused.
    """
    from aid.era5_daily import daily_from_datasets, open_raw
    from aid.frequency import detect_frequency, ensure_time_dim, require_daily, time_coordinate
    from aid.standardise import standardise

    aggregate = bool(config["reference"]["aggregate_subdaily"])
    parts = []
    subdaily: list[tuple[str, xr.Dataset]] = []
    for path in reference_files(config, variable):
        ds = ensure_time_dim(open_raw(path))
        t = time_coordinate(ds)
        if t is not None and detect_frequency(t).subdaily and aggregate:
            subdaily.append((str(path), ds))
            continue
        require_daily(
            ds, f"reference.files.{variable}: {path}",
            f"set reference.aggregate_subdaily: true to aggregate it to days in the reference rule, or run "
            f"`aid era5-daily {path} --out DAILY.nc` and point reference.files.{variable} at DAILY.nc.",
        )
        parts.append(standardise(ds.chunk({"time": 31}) if "time" in ds.dims else ds, variable, str(path)))
    if subdaily:
        where = f"reference.files.{variable} ({len(subdaily)} sub-daily file(s) aggregated to days: {subdaily[0][0]}{' ...' if len(subdaily) > 1 else ''})"
        log.info("%s", where)
        parts.append(standardise(daily_from_datasets(subdaily, variables=[variable]), variable, where))
    ds = parts[0] if len(parts) == 1 else xr.concat(parts, dim="time", data_vars="minimal", coords="minimal",
                                                     compat="override", combine_attrs="drop_conflicts")
    if "time" in ds.dims:
        ds = ds.sortby("time")
        idx = ds.indexes["time"]
        if idx.duplicated().any():
            ds = ds.isel(time=~idx.duplicated())
    return ds


def _select_on_lattice(ds: xr.Dataset, grid: xr.Dataset, where: str) -> xr.Dataset:
    """Cells of ``ds`` at exactly the centres of ``grid`` (1e-6 deg tolerance) or a DataError."""
    from aid.regrid import align_longitudes

    ds = align_longitudes(ds, grid["lon"].values)
    missing = {}
    for c in ("lat", "lon"):
        have = ds[c].values
        want = grid[c].values
        ok = np.array([np.any(np.abs(have - w) < 1e-6) for w in want])
        if not ok.all():
            missing[c] = want[~ok]
    if missing:
        c, vals = next(iter(missing.items()))
        res = float(np.median(np.diff(ds[c].values))) if ds.sizes[c] > 1 else float("nan")
        raise DataError(
            f"{where}: the reference is on a different grid than configured: {len(vals)} {c} centres of the "
            f"0.25 deg domain grid (e.g. {vals[0]}) are not in the reference ({c} {float(ds[c].min())}.."
            f"{float(ds[c].max())}, step {res:g}).",
            "give ERA5 files on the 0.25 deg lattice covering domain.lat/domain.lon, or change the domain.",
        )
    return ds.sel(lat=grid["lat"].values, lon=grid["lon"].values, method="nearest").assign_coords(
        lat=grid["lat"].values, lon=grid["lon"].values
    )


def prepare_reference(
    config: Mapping[str, Any], variable: str, fine_out: str | os.PathLike[str], coarse_out: str | os.PathLike[str]
) -> tuple[Path, Path]:
    """Rule ``reference``: write the fine (domain) and coarse (model grid) reference of ``variable``."""
    from aid.grids import coarse_grid, fine_grid
    from aid.io import write_netcdf
    from aid.provenance import provenance_attrs, relpath_or_name
    from aid.regrid import align_longitudes, coarsen

    ref = open_reference(config, variable)
    files = reference_files(config, variable)
    where = f"reference.files.{variable} ({relpath_or_name(files[0])}{' ...' if len(files) > 1 else ''})"
    fgrid = fine_grid(config)
    fine = _select_on_lattice(ref, fgrid, where).load()
    empty = fine[variable].isnull().all("time")
    if bool(empty.any()):
        bad = empty.where(empty, drop=True)
        raise DataError(
            f"{where}: {int(empty.sum())} reference cells in the domain are NaN at every time step "
            f"(e.g. lat {float(bad.lat[0])}, lon {float(bad.lon[0])}).",
            "use a reference without missing cells over the domain (or a land-only variable over land only).",
        )
    # the reference around the domain: whole coarse cells plus one fine cell of margin
    cgrid = coarse_grid(config)
    res = float(config["grid"]["fine_resolution"])
    lat0, lat1 = float(cgrid.lat_bnds.min()) - res, float(cgrid.lat_bnds.max()) + res
    lon0, lon1 = float(cgrid.lon_bnds.min()) - res, float(cgrid.lon_bnds.max()) + res
    around = align_longitudes(ref, cgrid["lon"].values)
    around = around.sel(lat=slice(lat0, lat1), lon=slice(lon0, lon1))
    coarse = coarsen(around, config).load()

    name = config["reference"]["name"]
    for ds, grid_name in ((fine, "fine"), (coarse, "coarse")):
        ds[variable] = ds[variable].astype("float32")
        ds.attrs.update(
            provenance_attrs(
                "reference",
                reference_name=name,
                reference_grid=grid_name,
                reference_files=", ".join(relpath_or_name(f) for f in files[:5]) + (" ..." if len(files) > 5 else ""),
            )
        )
        ds.attrs["variable_id"] = variable
    coarse.attrs["aid_coarsening"] = "aid.regrid.coarsen (conservative) of the reference around the domain"
    enc = {variable: {"zlib": True, "complevel": 4}}
    return write_netcdf(fine, fine_out, encoding=enc), write_netcdf(coarse, coarse_out, encoding=enc)
