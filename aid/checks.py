"""Physical checks of one downscale job's deliverables (rule ``check``; a violation fails the run).

Why a separate stage and not asserts in the writer: the checks read the files back as a user would
(CF decoding, fill values, calendar), so they also catch what the writing step cannot see (a file
replaced or truncated afterwards, encoding mistakes). They check, per file: the variable and its
dims, units, no missing/NaN value inside the domain, values inside the physically possible range of
:data:`aid.variables.VARIABLES` (the bounds fetch checks too; pr >= 0 among them), a complete, gap- and
duplicate-free daily time axis for the file's year in its calendar, time bounds; per (model, sample):
tasmin <= tas <= tasmax with zero tolerance, pairs as in :func:`aid.physics.order_pairs` (the downscale
job enforces that same policy exactly and records how many values it corrected; those counts are
reported); per job: every expected (variable, sample) file is there.

On success a JSON report is written (atomically); on any violation :class:`~aid.errors.DataError`
lists every violation, each naming its file, and no report is written, so Snakemake marks the job
failed and everything downstream waits.
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

from aid.deliverables import VARIABLES, normalise_calendar, to_file_units, year_days
from aid.errors import DataError
from aid.io import open_dataset, write_text
from aid.naming import BASELINE_ID, MODEL_ID, parse_name
from aid.physics import order_pairs, order_violations
from aid.variables import TEMPERATURES

log = logging.getLogger(__name__)

CHECKS = (
    "variable and dims (time, lat, lon)",
    "units",
    "no missing/NaN values inside the domain",
    "values inside the physically possible range (pr >= 0)",
    "complete daily time axis for the year and calendar (no gaps, no duplicates)",
    "time bounds",
    "tasmin <= tas <= tasmax (after the recorded fixes)",
    "every expected (variable, sample) file present",
)


def _date(t: Any) -> str:
    return t.strftime("%Y-%m-%d") if hasattr(t, "strftime") else str(t)[:10]


def _where(da: xr.DataArray, mask: np.ndarray) -> str:
    """'on DATE at lat X, lon Y' of the first True of ``mask`` (time, lat, lon)."""
    i, j, k = (int(x) for x in np.argwhere(mask)[0])
    return f"on {_date(da['time'].values[i])} at lat {float(da['lat'][j]):g}, lon {float(da['lon'][k]):g}"


def check_file(path: str | os.PathLike[str], facets: Mapping[str, str]) -> tuple[dict[str, Any], list[str], xr.DataArray | None]:
    """Checks of one file: (summary, violations, the loaded variable or None)."""
    path = Path(path)
    var = facets["variable"]
    year = int(facets["start"][:4])
    violations: list[str] = []
    ds = open_dataset(path, chunks=None, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    if var not in ds.data_vars:
        return {}, [f"{path}: variable '{var}' (from the file name) is not in the file."], None
    da = ds[var].load()
    if da.dims != ("time", "lat", "lon"):
        violations.append(f"{path}: '{var}' has dims {da.dims}, expected ('time', 'lat', 'lon').")
        return {}, violations, None
    meta = VARIABLES.get(var)
    units = da.attrs.get("units")
    if meta is not None and units != meta.units:
        violations.append(f"{path}: '{var}' is in '{units}', expected '{meta.units}'.")
    vals = da.values
    nan = np.isnan(vals)
    if nan.any():
        violations.append(f"{path}: {int(nan.sum())} missing/NaN value(s) of {var} inside the domain "
                          f"(first {_where(da, nan)}).")
    if meta is not None:
        # the registry's bounds are in aid's internal unit; values and messages stay in the file's
        lo, hi = (float(x) for x in to_file_units(var, np.asarray(meta.valid_range)))
        below = vals < lo
        above = vals > hi
        if below.any():
            what = "pr < 0" if var == "pr" and lo == 0 else f"{var} < {lo:g} {meta.units}"
            violations.append(f"{path}: {int(below.sum())} value(s) of {what} (min {float(np.nanmin(vals)):.6g} "
                              f"{_where(da, below)}).")
        if above.any():
            violations.append(f"{path}: {int(above.sum())} value(s) of {var} > {hi:g} {meta.units} (max "
                              f"{float(np.nanmax(vals)):.6g} {_where(da, above)}).")
    times = list(da.indexes["time"])
    calendar = normalise_calendar(getattr(times[0], "calendar", "standard")) if times else "standard"
    want = [(d.year, d.month, d.day) for d in year_days(year, calendar)]
    have = [(t.year, t.month, t.day) for t in times]
    dup = len(have) - len(set(have))
    if dup:
        violations.append(f"{path}: {dup} duplicated day(s) in the time axis.")
    if have != want:
        gone = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        detail = []
        if gone:
            detail.append(f"{len(gone)} missing (first %04d-%02d-%02d)" % gone[0])
        if extra:
            detail.append(f"{len(extra)} outside {year} (first %04d-%02d-%02d)" % extra[0])
        if not gone and not extra and not dup:
            detail.append("days out of order")
        violations.append(f"{path}: time axis has {len(have)} day(s), expected {len(want)} for {year} in the "
                          f"{calendar} calendar: {', '.join(detail)}.")
    bnds = da["time"].attrs.get("bounds") or ds["time"].attrs.get("bounds") or ds["time"].encoding.get("bounds")
    if not bnds or bnds not in ds.variables:
        violations.append(f"{path}: time has no bounds variable (time_bnds).")
    summary = {
        "file": path.name,
        "variable": var,
        "sample": int(facets["sample"]),
        "model": facets["model"],
        "days": len(have),
        "calendar": calendar,
        "units": units,
        "min": float(np.nanmin(vals)) if vals.size and not nan.all() else None,
        "max": float(np.nanmax(vals)) if vals.size and not nan.all() else None,
        "mean": float(np.nanmean(vals)) if vals.size and not nan.all() else None,
        "temperature_order_fixes": int(ds.attrs.get("aid_temperature_order_fixes", 0)),
        "pr_negative_fixes": int(ds.attrs.get("aid_pr_negative_fixes", 0)),
    }
    ds.close()
    return summary, violations, da


def _order(group: Mapping[str, tuple[Path, xr.DataArray]]) -> list[str]:
    """tasmin <= tas <= tasmax within one (model, sample), zero tolerance."""
    out: list[str] = []
    for lo, hi in order_pairs(set(group)):
        (plo, a), (phi, b) = group[lo], group[hi]
        if a.shape != b.shape:
            out.append(f"{phi}: shape {b.shape} differs from {plo} {a.shape}.")
            continue
        bad = order_violations({lo: a.values, hi: b.values})[(lo, hi)]
        if bad.any():
            i, j, k = (int(x) for x in np.argwhere(bad)[0])
            out.append(
                f"{plo}: {int(bad.sum())} value(s) with {lo} > {hi} remain after the fixes (first {_where(a, bad)}: "
                f"{lo} {float(a.values[i, j, k]):.3f} K > {hi} {float(b.values[i, j, k]):.3f} K in {phi.name})."
            )
    return out


def check_job(
    config: Mapping[str, Any],
    downscaled: Sequence[str | os.PathLike[str]],
    baseline: Sequence[str | os.PathLike[str]],
    out_path: str | os.PathLike[str],
) -> dict[str, Any]:
    """Check one job's deliverables; write the JSON report to ``out_path`` or raise DataError."""
    if not downscaled and not baseline:
        raise DataError(f"check {out_path}: no deliverable files given.", "pass the job's downscaled/baseline files.")
    violations: list[str] = []
    groups: dict[tuple[str, int], dict[str, tuple[Path, Any]]] = {}
    files: list[dict[str, Any]] = []
    jobs: set[tuple[str, str, str, str]] = set()
    seen: dict[str, set[tuple[str, int]]] = {MODEL_ID: set(), BASELINE_ID: set()}
    def order(p: str | os.PathLike[str]) -> tuple[int, str]:
        f = parse_name(p)  # sample-major, so each (model, sample) completes early and is released
        return (int(f["sample"]), f["variable"]) if f else (0, str(p))

    for kind, paths in ((MODEL_ID, downscaled), (BASELINE_ID, baseline)):
        for p in sorted(paths, key=order):
            p = Path(p)
            facets = parse_name(p)
            if facets is None:
                violations.append(f"{p}: not a deliverable file name.")
                continue
            if facets["model"] != kind:
                violations.append(f"{p}: model '{facets['model']}' where '{kind}' files were expected.")
            if not p.exists():
                violations.append(f"{p}: file does not exist.")
                continue
            jobs.add((facets["source"], facets["experiment"], facets["member"], facets["start"][:4]))
            seen.setdefault(facets["model"], set()).add((facets["variable"], int(facets["sample"])))
            summary, bad, da = check_file(p, facets)
            violations += bad
            if summary:
                files.append(summary)
            if da is not None and facets["variable"] in TEMPERATURES:
                groups.setdefault((facets["model"], int(facets["sample"])), {})[facets["variable"]] = (p, da)
            # keep memory bounded: check each (model, sample) as soon as it is complete
            g = groups.get((facets["model"], int(facets["sample"])), {})
            if set(TEMPERATURES) & set(config["search"]["variables"]) <= set(g):
                violations += _order(g)
                groups.pop((facets["model"], int(facets["sample"])), None)
    for g in groups.values():
        violations += _order(g)
    if len(jobs) > 1:
        violations.append(f"files of several jobs mixed in one check: {sorted(jobs)}.")
    variables = list(config["search"]["variables"])
    n = int(config["downscale"]["n_samples"])
    for kind, samples, given in ((MODEL_ID, range(1, n + 1), downscaled), (BASELINE_ID, [1], baseline)):
        if not given:
            continue
        want = {(v, s) for v in variables for s in samples}
        gone = sorted(want - seen.get(kind, set()))
        if gone:
            violations.append(f"{kind}: {len(gone)} expected file(s) missing, e.g. variable {gone[0][0]} sample "
                              f"r{gone[0][1]} (expected {len(variables)} variables x {len(list(samples))} samples).")
    if violations:
        raise DataError(
            "physical checks failed:\n  " + "\n  ".join(violations),
            "inspect the named files; re-run the downscale job (snakemake --forcerun downscale) once the cause "
            "(input data, checkpoint) is fixed.",
        )
    source, experiment, member, year = next(iter(jobs)) if jobs else ("", "", "", "")
    fixes: dict[str, dict[str, int]] = {}
    for f in files:
        key = f"{f['model']} r{f['sample']}"
        fixes[key] = {"temperature_order": f["temperature_order_fixes"], "pr_negative": f["pr_negative_fixes"]}
    report = {
        "status": "passed",
        "job": {"source": source, "experiment": experiment, "member": member, "year": int(year) if year else None},
        "checks": list(CHECKS),
        "n_files": len(files),
        "n_samples": n,
        "fixes": fixes,
        "files": sorted(files, key=lambda f: (f["model"], f["variable"], f["sample"])),
    }
    total = sum(v["temperature_order"] for v in fixes.values())
    log.info("checks passed for %s/%s/%s/%s: %d files, %d tasmin/tas/tasmax fixes recorded", source, experiment,
             member, year, len(files), total)
    write_text(json.dumps(report, indent=1, sort_keys=False) + "\n", out_path)
    return report
