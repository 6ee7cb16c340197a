"""Multi-model ensemble of the extremes indices: every GCM counts once, whatever its member count.

Why weights: a run with 10 MPI-ESM1-2-LR members and 1 MIROC6 member would otherwise be a
MPI-ESM1-2-LR ensemble with a MIROC6 footnote. As xclim.ensembles does with its ``weights``
argument, each realization (member x diffusion sample) of source ``s`` gets weight
``1 / (n_sources * n_realizations(s))``, so the sources weigh equally and the realizations of one
source share its weight. Statistics come from :func:`xclim.ensembles.ensemble_percentiles` and
:func:`xclim.ensembles.ensemble_mean_std_max_min` with those weights.

Per-source statistics are :func:`aid.indices.ensemble_stats` (rule ``ensemble_stats``); this is
rule ``multi_model_stats``, run when ``search.sources`` names more than one GCM.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cftime
import numpy as np
import xarray as xr

from aid.errors import DataError
from aid.indices import _config_indices, _open_ensemble
from aid.io import write_netcdf
from aid.provenance import provenance_attrs, relpath_or_name

log = logging.getLogger(__name__)

#: Percentiles across the weighted realizations.
PERCENTILES: dict[str, int] = {"p10": 10, "median": 50, "p90": 90}


def _by_period(ds: xr.Dataset) -> xr.Dataset:
    """Time stamps as (year, month) of a proleptic Gregorian calendar: GCMs with noleap, 360_day
    and standard calendars give the same yearly/seasonal index periods different stamps."""
    t = ds.indexes["time"]
    stamps = [cftime.DatetimeProlepticGregorian(x.year, x.month, 1) for x in t]
    return ds.assign_coords(time=stamps)


def source_weights(realizations_by_source: Mapping[str, Sequence[str]]) -> xr.DataArray:
    """Weight of each ``<source>:<realization>``: 1 / (n_sources x n_realizations of its source)."""
    keys, w = [], []
    n_src = len(realizations_by_source)
    for source, reals in realizations_by_source.items():
        for r in reals:
            keys.append(f"{source}:{r}")
            w.append(1.0 / (n_src * len(reals)))
    return xr.DataArray(np.array(w), dims="realization", coords={"realization": keys}, name="weights")


def _stack(paths_by_source: Mapping[str, Sequence[str | os.PathLike[str]]], what: str) -> tuple[xr.Dataset, xr.DataArray]:
    parts, reals = [], {}
    for source, paths in paths_by_source.items():
        if not paths:
            raise DataError(f"multi-model {what}: no index files for source {source}.", "check the indices jobs.")
        ens = _by_period(_open_ensemble(paths, f"{source} {what}"))
        reals[source] = [str(r) for r in ens.realization.values]
        parts.append(ens.assign_coords(realization=[f"{source}:{r}" for r in reals[source]]))
    common = set.intersection(*(set(p.data_vars) for p in parts))
    stacked = xr.concat([p[sorted(common)] for p in parts], dim="realization", join="inner", combine_attrs="drop_conflicts")
    return stacked, source_weights(reals)


def _weighted_stats(da: xr.DataArray, weights: xr.DataArray) -> xr.DataArray:
    from xclim.ensembles import ensemble_mean_std_max_min, ensemble_percentiles

    name = str(da.name)
    pct = ensemble_percentiles(da, values=list(PERCENTILES.values()), weights=weights, split=False)
    pct = pct.rename(percentiles="statistic").assign_coords(statistic=list(PERCENTILES))
    mean = ensemble_mean_std_max_min(da.to_dataset(name=name), weights=weights)[f"{name}_mean"]
    mean = mean.expand_dims(statistic=["mean"])
    out = xr.concat([mean, pct.transpose(*mean.dims)], dim="statistic")
    return out.assign_attrs({k: v for k, v in da.attrs.items() if k != "history"})


def multi_model_stats(
    config: Mapping[str, Any],
    run_paths: Mapping[str, Sequence[str | os.PathLike[str]]],
    base_paths: Mapping[str, Sequence[str | os.PathLike[str]]],
    experiment: str,
    out_path: str | os.PathLike[str],
) -> Path:
    """Weighted mean, p10, median, p90 across sources x members x samples of each index ``X``
    (yearly ``X``) and of its change vs each realization's own base climatology (``X_change``)."""
    _, _, base_period = _config_indices(config)
    if len(run_paths) < 2:
        raise DataError(f"multi-model statistics of {experiment} need at least two sources (got {sorted(run_paths)}).",
                        "list several GCMs in search.sources, or use the per-source ensemble_stats output.")
    run, weights = _stack(run_paths, experiment)
    base, _ = _stack(base_paths, "historical") if base_paths else (run, weights)
    missing = sorted(set(run.realization.values) - set(base.realization.values))
    if missing:
        raise DataError(f"historical index files lack realization(s) {missing} present in {experiment}.",
                        "compute historical indices for every source, member and sample of the scenario.")
    base = base.sel(realization=run.realization.values)
    years = base["time"].dt.year
    in_base = ((years >= base_period[0]) & (years <= base_period[1])).values
    if not in_base.any():
        raise DataError(f"historical indices cover {int(years.min())}-{int(years.max())}, none inside "
                        f"'indices.base_period' {base_period}.", "set indices.base_period inside the historical years.")
    base_clim = base.isel(time=np.flatnonzero(in_base)).mean("time", keep_attrs=True)
    run_clim = run.mean("time", keep_attrs=True)
    out: dict[str, xr.DataArray] = {}
    for name in run.data_vars:
        out[name] = _weighted_stats(run[name], weights)
        change = (run_clim[name] - base_clim[name]).rename(name)
        change.attrs = {"units": run[name].attrs.get("units", ""), "aid_index": name,
                        "long_name": f"change of {name} vs base period {base_period[0]}-{base_period[1]}"}
        out[f"{name}_change"] = _weighted_stats(change, weights)
    ds = xr.Dataset(out)
    ds["weights"] = weights
    ds["weights"].attrs["long_name"] = "weight of each realization: 1 / (number of sources x realizations of its source)"
    ds["statistic"].attrs["long_name"] = "weighted ensemble statistic, every source weighted equally"
    ds.attrs.update(provenance_attrs(
        "multi_model_stats", experiment=experiment, sources=" ".join(run_paths),
        n_realizations=run.sizes["realization"], base_period=f"{base_period[0]}-{base_period[1]}",
        inputs=" ".join(relpath_or_name(p) for ps in run_paths.values() for p in ps),
    ))
    ds.attrs["Conventions"] = "CF-1.9"
    ds.attrs["title"] = f"Multi-model ensemble statistics of xclim extremes indices, {experiment}"
    log.info("multi-model %s: %d sources, %d realizations", experiment, len(run_paths), run.sizes["realization"])
    return write_netcdf(ds, out_path)
