"""The evaluation stage: score the downscaled evaluation run against the 0.25 deg reference.

What is compared, over config ``evaluation.period``:

- ``aid``: the diffusion ensemble of the evaluation run (coarsened reference -> 0.25 deg, all
  samples); deterministic scores are averaged over samples, ``aid-ensmean`` is the ensemble mean;
- ``bicubic``: the bicubic baseline (same coarse input, ``aid-bicubic`` files);
- ``coarse``: the coarse input itself brought to 0.25 deg (conservative = cell-constant), i.e. what
  a user has without downscaling.

Why the evaluation run and not the GCM runs for the daily scores: only the coarsened reference has
day-by-day truth. GCM runs are judged on climatology: their historical index climatologies
(``gcm_indices``) against the reference's (``reference_indices``).

For the variables in ``evaluation.properties`` the xsdba statistical properties of every system
are compared with the reference's (:mod:`aid.evaluate.properties`): ``all_properties.csv`` and, per
variable in the JSON, the fraction of cells where aid improves on the bicubic baseline.

Outputs: ``tables_dir/<group>_<kind>.csv``, ``figures_dir/<group>_<kind>.png`` (group = a variable,
an index, ``all`` or ``indices``; see :func:`aid.evaluate.plots.figure_name`) and one JSON of
headline numbers.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from aid.errors import DataError
from aid.evaluate import metrics as M
from aid.evaluate import plots as P
from aid.evaluate.properties import property_table
from aid.evaluate.spectra import radial_power_spectrum, wavelength_km
from aid.indices import load_variables
from aid.naming import parse_name
from aid.io import open_dataset, write_text
from aid.provenance import provenance_attrs
from aid.variables import MODEL_VARIABLES, VARIABLES

log = logging.getLogger(__name__)

SEASON_MONTHS: dict[str, tuple[int, ...]] = {"DJF": (12, 1, 2), "MAM": (3, 4, 5), "JJA": (6, 7, 8), "SON": (9, 10, 11)}
#: Units of the scored variables (from the registry), in evaluation order.
UNITS: dict[str, str] = {v: VARIABLES[v].units for v in MODEL_VARIABLES}
TAIL_QS: tuple[float, ...] = (0.99, 0.999)


# ----------------------------------------------------------------------------------------------
# Loading and aligning
# ----------------------------------------------------------------------------------------------
def _date_coord(da: xr.DataArray) -> xr.DataArray:
    """Replace ``time`` by ISO date strings so noleap/standard/360_day files align by date."""
    keys = np.asarray(da["time"].dt.strftime("%Y-%m-%d").values).astype(str)
    return da.assign_coords(time=keys)


def _in_period(da: xr.DataArray, period: Sequence[int]) -> xr.DataArray:
    years = np.array([int(t[:4]) for t in da["time"].values])
    return da.isel(time=np.flatnonzero((years >= period[0]) & (years <= period[1])))


def load_ensemble(paths: Sequence[str | os.PathLike[str]], what: str) -> dict[str, xr.DataArray]:
    """Deliverable files -> per variable a (sample, time, lat, lon) array with date-string time."""
    groups: dict[tuple[str, int], list[str]] = {}
    for p in paths:
        facets = parse_name(p)
        if facets is None:
            raise DataError(f"{p}: not a deliverable file name ({what}).", "pass files named by aid.naming.deliverable_name.")
        groups.setdefault((facets["variable"], int(facets["sample"])), []).append(str(p))
    out: dict[str, xr.DataArray] = {}
    for var in sorted({v for v, _ in groups}):
        samples = sorted(s for v, s in groups if v == var)
        das = []
        for s in samples:
            ds = load_variables(groups[(var, s)], what)
            if var not in ds:
                raise DataError(f"{groups[(var, s)][0]}: variable '{var}' (from the file name) is not in the file.",
                                "regenerate the file.")
            das.append(_date_coord(ds[var].astype("float32")))
        da = xr.concat(das, dim="sample", join="inner").assign_coords(sample=samples)
        out[var] = da.transpose("sample", "time", "lat", "lon")
    return out


def _fine_template(ref: xr.DataArray) -> xr.Dataset:
    lat, lon = ref["lat"].values, ref["lon"].values
    dlat = float(np.diff(lat).mean()) if lat.size > 1 else 0.25
    dlon = float(np.diff(lon).mean()) if lon.size > 1 else 0.25
    return xr.Dataset(
        coords={
            "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north", "bounds": "lat_bnds"}),
            "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east", "bounds": "lon_bnds"}),
        },
        data_vars={
            "lat_bnds": (("lat", "bnds"), np.stack([lat - dlat / 2, lat + dlat / 2], axis=1)),
            "lon_bnds": (("lon", "bnds"), np.stack([lon - dlon / 2, lon + dlon / 2], axis=1)),
        },
    )


def upsample_coarse(coarse: xr.Dataset, ref: xr.DataArray) -> xr.Dataset:
    """The coarse input on the reference's 0.25 deg grid, cell-constant (conservative upsampling).

    Uses ``aid.regrid.upsample(..., method="conservative")`` when that stage is available (the same
    code path as the model); otherwise nearest-neighbour, which is identical for fine cells inside
    one coarse cell and extrapolates edge cells.
    """
    try:
        from aid.regrid import upsample  # type: ignore[attr-defined]

        try:
            from aid.grids import fine_grid  # noqa: F401  (only checks the grid module exists)
        except ImportError:
            pass
        out = upsample(coarse, _fine_template(ref), method="conservative")
        return out.reindex(lat=ref["lat"], lon=ref["lon"], method="nearest", tolerance=1e-3)
    except ImportError:
        log.info("aid.regrid.upsample not available; coarse input upsampled by nearest neighbour")
    except Exception as exc:  # a different regrid contract must not stop the evaluation
        log.warning("aid.regrid.upsample failed (%s: %s); using nearest neighbour", type(exc).__name__, exc)
    return coarse.sel(lat=ref["lat"].values, lon=ref["lon"].values, method="nearest").assign_coords(
        lat=ref["lat"].values, lon=ref["lon"].values
    )


def _on_grid(da: xr.DataArray, ref: xr.DataArray, what: str) -> xr.DataArray:
    try:
        return da.reindex(lat=ref["lat"].values, lon=ref["lon"].values, method="nearest", tolerance=1e-3)
    except KeyError as exc:
        raise DataError(f"{what} grid does not match the reference 0.25 deg grid ({exc}).",
                        "downscale onto the reference grid (same domain in config).") from exc


def _season_mask(times: np.ndarray, season: str) -> np.ndarray:
    months = np.array([int(t[5:7]) for t in times])
    if season == "ANN":
        return np.ones(months.size, bool)
    return np.isin(months, SEASON_MONTHS[season])


# ----------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------
def _f(x: Any) -> float:
    return float(np.asarray(x))


def score_table(
    ref: xr.DataArray, systems: Mapping[str, xr.DataArray], ens: xr.DataArray | None, variable: str,
    seasons: Sequence[str],
) -> list[dict[str, Any]]:
    """Rows (variable, season, system, bias, mae, rmse, crps, spread_skill, n_days)."""
    rows = []
    for season in ["ANN", *seasons]:
        m = _season_mask(ref["time"].values, season)
        if not m.any():
            continue
        r = ref.isel(time=m)
        if ens is not None:
            e = ens.isel(time=m)
            n = e.sizes["sample"]
            emean = e.mean("sample")
            crps = _f(M.weighted_mean(M.crps_fair(e, r))) if n >= 2 else math.nan
            ssr = _f(M.spread_skill_ratio(e, r)) if n >= 2 else math.nan
            dims = ["time", "lat", "lon"]
            rows.append(dict(variable=variable, season=season, system="aid", bias=_f(M.bias(emean, r)),
                             mae=_f(M.mae(e, r, dims).mean()), rmse=_f(M.rmse(e, r, dims).mean()),
                             crps=crps, spread_skill=ssr, n_days=int(m.sum())))
            rows.append(dict(variable=variable, season=season, system="aid-ensmean", bias=_f(M.bias(emean, r)),
                             mae=_f(M.mae(emean, r)), rmse=_f(M.rmse(emean, r)), crps=math.nan,
                             spread_skill=math.nan, n_days=int(m.sum())))
        for name, da in systems.items():
            d = da.isel(time=m)
            mae_ = _f(M.mae(d, r))
            rows.append(dict(variable=variable, season=season, system=name, bias=_f(M.bias(d, r)), mae=mae_,
                             rmse=_f(M.rmse(d, r)), crps=mae_, spread_skill=math.nan, n_days=int(m.sum())))
    return rows


def _spectrum(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    return radial_power_spectrum(np.asarray(da.transpose(..., "lat", "lon").values))


def index_bias(
    reference_indices: str | os.PathLike[str], gcm_indices: Sequence[str | os.PathLike[str]], base_period: Sequence[int]
) -> tuple[pd.DataFrame, dict[str, dict[str, xr.DataArray]]]:
    """Climatological index bias of the downscaled GCM historical ensemble vs the reference.

    Climatologies are time means over the years both cover within ``base_period`` (falling back to
    all common years, then to each file's own years, with a log line). Returns a table (one row per
    index: area-weighted reference mean, ensemble-median bias, its 10-90 % range across
    realizations, relative bias, spatial MAE of the median climatology) and maps per index.
    """
    ref = open_dataset(reference_indices, chunks=None).load()
    members = [open_dataset(p, chunks=None).load() for p in gcm_indices]
    rows, maps = [], {}
    if not members:
        return pd.DataFrame(rows), maps
    ref_years = set(ref["time"].dt.year.values.tolist())
    gcm_years = set.intersection(*(set(m["time"].dt.year.values.tolist()) for m in members))
    common = ref_years & gcm_years
    in_base = {y for y in common if base_period[0] <= y <= base_period[1]}
    years = in_base or common
    if not years:
        log.warning("reference indices (%s) and GCM indices (%s) share no year; comparing each's own period",
                    sorted(ref_years), sorted(gcm_years))
    elif not in_base:
        log.warning("no common index year inside base period %s; using common years %s", list(base_period), sorted(years))

    def clim(ds: xr.DataArray) -> xr.DataArray:
        if years:
            ds = ds.isel(time=np.flatnonzero(np.isin(ds["time"].dt.year.values, sorted(years))))
        return ds.mean("time")

    names = [v for v in ref.data_vars if all(v in m for m in members)]
    for name in names:
        rclim = clim(ref[name])
        gclims = xr.concat([_on_grid(clim(m[name]), rclim, "GCM index") for m in members], dim="realization")
        gmed = gclims.median("realization")
        rmean = _f(M.weighted_mean(rclim))
        real_bias = np.array([_f(M.weighted_mean(g - rclim)) for g in gclims])
        b = _f(M.weighted_mean(gmed - rclim))
        scale = abs(rmean) if abs(rmean) > 1e-9 else math.nan
        rows.append(dict(
            index=name, units=ref[name].attrs.get("units", ""), reference_mean=rmean, bias=b,
            bias_p10=float(np.percentile(real_bias, 10)), bias_p90=float(np.percentile(real_bias, 90)),
            bias_rel_percent=100 * b / scale, bias_rel_p10=100 * float(np.percentile(real_bias, 10)) / scale,
            bias_rel_p90=100 * float(np.percentile(real_bias, 90)) / scale,
            mae=_f(M.mae(gmed, rclim)), n_realizations=len(members), years=" ".join(map(str, sorted(years))),
        ))
        maps[name] = {"reference": rclim, "downscaled GCM (median)": gmed, "bias": gmed - rclim}
    return pd.DataFrame(rows), maps


def index_source(path: str | os.PathLike[str]) -> str:
    """The GCM of an index file ``indices/<source>/<experiment>/<member>/r<sample>.nc``."""
    return Path(path).parents[2].name


def index_bias_by_source(
    reference_indices: str | os.PathLike[str], gcm_indices: Sequence[str | os.PathLike[str]], base_period: Sequence[int]
) -> dict[str, pd.DataFrame]:
    """:func:`index_bias` of each GCM's realizations on their own (one table per model)."""
    groups: dict[str, list[str | os.PathLike[str]]] = {}
    for p in gcm_indices:
        groups.setdefault(index_source(p), []).append(p)
    out = {}
    for source, paths in groups.items():
        df, _ = index_bias(reference_indices, paths, base_period)
        out[source] = df.assign(source=source) if len(df) else df
    return out


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------
def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return None if not np.isfinite(obj) else round(float(obj), 6)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    write_text(df.to_csv(index=False, float_format="%.6g"), path)
    log.info("wrote %s", path)


def evaluate(
    config: Mapping[str, Any],
    reference: Sequence[str | os.PathLike[str]],
    coarse: Sequence[str | os.PathLike[str]],
    downscaled: Sequence[str | os.PathLike[str]],
    baseline: Sequence[str | os.PathLike[str]],
    reference_indices: str | os.PathLike[str] | None,
    gcm_indices: Sequence[str | os.PathLike[str]],
    metrics_out: str | os.PathLike[str],
    tables_dir: str | os.PathLike[str],
    figures_dir: str | os.PathLike[str],
) -> dict[str, Any]:
    """Compute all scores, write tables/figures/metrics JSON; return the headline dict."""
    ev = config["evaluation"]
    period = [int(y) for y in ev["period"]]
    seasons = list(ev["seasons"])
    base_period = [int(y) for y in config["indices"]["base_period"]]
    tables, figures = Path(tables_dir), Path(figures_dir)
    tables.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)

    ref_ds = load_variables(reference, "reference")
    coarse_ds = load_variables(coarse, "coarse") if coarse else xr.Dataset()
    ens_all = load_ensemble(downscaled, "downscaled") if downscaled else {}
    base_all = load_ensemble(baseline, "baseline") if baseline else {}

    score_rows: list[dict[str, Any]] = []
    tail_rows: list[dict[str, Any]] = []
    rank_rows: list[dict[str, Any]] = []
    prop_rows: list[dict[str, Any]] = []
    prop_vars = set(ev["properties"])
    headline: dict[str, Any] = {"period": period, "variables": {}}
    for var in [v for v in UNITS if v in ref_ds]:
        units = UNITS[var]
        ref = _in_period(_date_coord(ref_ds[var].astype("float32")), period)
        systems: dict[str, xr.DataArray] = {}
        if var in base_all:
            systems["bicubic"] = _on_grid(base_all[var].isel(sample=0, drop=True), ref, "baseline")
        if var in coarse_ds:
            up = upsample_coarse(coarse_ds[[var]], ref)[var]
            systems["coarse"] = _date_coord(up.astype("float32"))
        ens = _on_grid(ens_all[var], ref, "downscaled") if var in ens_all else None
        # align every system on the days they all have
        days = set(ref["time"].values.tolist())
        for d in [*systems.values(), *([ens] if ens is not None else [])]:
            days &= set(d["time"].values.tolist())
        days_sorted = sorted(days)
        if not days_sorted:
            raise DataError(f"evaluation: no common day for '{var}' between the reference and the downscaled/"
                            f"baseline/coarse files inside evaluation.period {period}.",
                            "check evaluation.period against the evaluation run's years.")
        ref = ref.sel(time=days_sorted)
        systems = {k: v.sel(time=days_sorted).transpose("time", "lat", "lon") for k, v in systems.items()}
        if ens is not None:
            ens = ens.sel(time=days_sorted)
        log.info("evaluating %s on %d days, systems %s%s", var, len(days_sorted), list(systems),
                 f" + aid x{ens.sizes['sample']}" if ens is not None else "")

        rows = score_table(ref, systems, ens, var, seasons)
        score_rows += rows
        head: dict[str, Any] = {r["system"]: {k: r[k] for k in ("bias", "mae", "rmse", "crps")}
                                for r in rows if r["season"] == "ANN"}
        if ens is not None and ens.sizes["sample"] >= 2:
            head["aid"]["spread_skill"] = next(r["spread_skill"] for r in rows if r["season"] == "ANN" and r["system"] == "aid")
            counts = M.rank_histogram(ens, ref)
            chi2, p = M.rank_histogram_chi2(counts)
            head["aid"]["rank_histogram_chi2"] = chi2
            rank_rows += [dict(variable=var, rank=i + 1, count=int(c), frequency=c / counts.sum()) for i, c in enumerate(counts)]
            P.plot_rank_histogram(counts, figures / P.figure_name(var, "rank-histogram"),
                                  f"{var}: rank histogram ({ens.sizes['sample']} samples, {len(days_sorted)} days)")
        P.plot_season_scores(pd.DataFrame(rows), var, figures / P.figure_name(var, "scores"), units)

        # spectra
        spectra = {"reference": _spectrum(ref)}
        if ens is not None:
            k, p_ = _spectrum(ens)
            spectra["aid"] = (k, p_)
        for name, da in systems.items():
            spectra[name] = _spectrum(da)
        k = spectra["reference"][0]
        n = min(ref.sizes["lat"], ref.sizes["lon"])
        wl = wavelength_km(k, n, 0.25, float(ref["lat"].mean()))
        spec_df = pd.DataFrame({"k": k, "wavelength_km": wl, **{name: s[1] for name, s in spectra.items()}})
        _write_csv(spec_df, tables / P.figure_name(var, "spectrum", "csv"))
        P.plot_spectra(spectra, figures / P.figure_name(var, "spectrum"), f"{var}: radially averaged power spectrum",
                       wavelengths=wl, units=units)
        small = k > k.max() / 2  # the finest half of the resolved wavenumbers (< ~4 cells)
        for name, (_, p_) in spectra.items():
            if name != "reference":
                head.setdefault(name, {})["small_scale_power_ratio"] = float(
                    np.mean(p_[small]) / np.mean(spectra["reference"][1][small]))

        # tails
        pools = {"reference": ref.values}
        if ens is not None:
            pools["aid"] = ens.values
        pools.update({name: da.values for name, da in systems.items()})
        refq = M.quantiles(pools["reference"], TAIL_QS)
        for name, v in pools.items():
            q = M.quantiles(v, TAIL_QS)
            tail_rows.append(dict(variable=var, system=name, **{f"q{1000 * qq:g}": x for qq, x in zip(TAIL_QS, q)},
                                  **{f"q{1000 * qq:g}_ratio": x / r if r else math.nan for qq, x, r in zip(TAIL_QS, q, refq)}))
            if name != "reference":
                head.setdefault(name, {})["q99_error"] = float(q[0] - refq[0])
                head[name]["q99.9_error"] = float(q[1] - refq[1])
        P.plot_tail(pools, figures / P.figure_name(var, "tail"), f"{var}: distribution and upper tail", units)

        # maps
        bias_maps, mae_maps = {}, {}
        if ens is not None:
            bias_maps["aid (ensemble mean)"] = (ens.mean("sample") - ref).mean("time")
            mae_maps["aid (mean over samples)"] = abs(ens - ref).mean(("sample", "time"))
        for name, da in systems.items():
            bias_maps[name] = (da - ref).mean("time")
            mae_maps[name] = abs(da - ref).mean("time")
        if bias_maps:
            P.plot_maps(bias_maps, figures / P.figure_name(var, "bias-map"), f"{var}: mean bias {period[0]}-{period[1]}", units)
            P.plot_maps(mae_maps, figures / P.figure_name(var, "mae-map"), f"{var}: mean absolute error {period[0]}-{period[1]}",
                        units, diverging=False)
        if var in prop_vars:
            rows_p = property_table(var, ref, ens, systems, units, set(ref_ds.data_vars))
            prop_rows += rows_p
            head["properties_improved_vs_bicubic"] = {r["property"]: r.get("improved_vs_bicubic") for r in rows_p}
        headline["variables"][var] = head

    _write_csv(pd.DataFrame(score_rows), tables / P.figure_name("all", "scores", "csv"))
    if tail_rows:
        _write_csv(pd.DataFrame(tail_rows), tables / P.figure_name("all", "tails", "csv"))
    if rank_rows:
        _write_csv(pd.DataFrame(rank_rows), tables / P.figure_name("all", "rank-histogram", "csv"))
    if prop_rows:
        _write_csv(pd.DataFrame(prop_rows), tables / P.figure_name("all", "properties", "csv"))

    if reference_indices and gcm_indices:
        idx_df, idx_maps = index_bias(reference_indices, gcm_indices, base_period)
        per_source = index_bias_by_source(reference_indices, gcm_indices, base_period)
        if len(per_source) > 1:  # several GCMs: one table per model besides the pooled one
            for source, df_s in per_source.items():
                if len(df_s):
                    _write_csv(df_s, tables / P.figure_name(f"indices-{source}", "bias", "csv"))
            headline["indices_by_source"] = {
                src: {r["index"]: {"bias": r["bias"], "mae": r["mae"]} for r in df_s.to_dict("records")}
                for src, df_s in per_source.items() if len(df_s)
            }
        if len(idx_df):
            _write_csv(idx_df, tables / P.figure_name("indices", "bias", "csv"))
            P.plot_index_bias(idx_df, figures / P.figure_name("indices", "bias"),
                              "Downscaled GCM historical vs reference: index climatology bias")
            for name, maps in idx_maps.items():
                units = str(idx_df.loc[idx_df["index"] == name, "units"].iloc[0])
                P.plot_panels([(k, v, k == "bias") for k, v in maps.items()], figures / P.figure_name(name, "bias-map"),
                              f"{name}: climatology and bias of the downscaled GCM ensemble", units)
            headline["indices"] = {
                r["index"]: {"bias": r["bias"], "bias_rel_percent": r["bias_rel_percent"], "mae": r["mae"]}
                for r in idx_df.to_dict("records")
            }
            rel = idx_df["bias_rel_percent"].abs().to_numpy(float)
            headline["indices_median_abs_rel_bias_percent"] = float(np.nanmedian(rel)) if np.isfinite(rel).any() else math.nan

    n_samples = max((e.sizes["sample"] for e in ens_all.values()), default=0)
    headline.update(n_samples=n_samples, seasons=seasons,
                    provenance=provenance_attrs("evaluate", reference=config["reference"]["name"]))
    write_text(json.dumps(_clean(headline), indent=2, allow_nan=False) + "\n", metrics_out)
    log.info("wrote %s", metrics_out)
    return headline


__all__ = ["evaluate", "index_bias", "load_ensemble", "score_table", "upsample_coarse"]
