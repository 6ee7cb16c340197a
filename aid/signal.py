"""Climate-change signal of the raw GCM, the bias-adjusted GCM and the downscaled ensemble.

Why: quantile delta mapping promises to keep the model's change, and downscaling should not invent
or erase one. A user trusts that only when the three changes are shown side by side: per variable,
season and scenario, the change of the mean and of the 50/90/99 % quantiles (QDM's own promise) from
the reference experiment (historical) to the scenario. Temperatures and winds change additively
(scenario minus reference, in the variable's units); precipitation relatively (percent).

Each statistic is computed per grid cell over the days of a season, averaged over the domain with
cos(latitude) weights, and averaged over members (and diffusion samples) before the change is taken,
so a relative change is that of the domain-mean statistic (a per-cell ratio would blow up where a
quantile is 0 mm, e.g. the median of pr on a dry coast).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from aid.errors import DataError

log = logging.getLogger(__name__)

SEASONS = ("ANN", "DJF", "MAM", "JJA", "SON")
#: Variables whose change is relative (percent); all others change additively.
RELATIVE = ("pr",)
SYSTEMS = ("raw", "adjusted", "downscaled")


def _series(paths: Sequence[str | os.PathLike[str]]) -> dict[str, list[xr.DataArray]]:
    """Every (time, lat, lon) variable of ``paths`` per variable name, one entry per file."""
    from aid.deliverables import to_internal_units
    from aid.io import open_dataset
    from aid.regrid import normalise_coords

    out: dict[str, list[xr.DataArray]] = {}
    for p in paths:
        ds = normalise_coords(open_dataset(p, chunks=None))
        for v in ds.data_vars:
            if "time" in ds[v].dims and {"lat", "lon"} <= set(ds[v].dims):
                # deliverables carry pr in kg m-2 s-1: every system is compared in aid's internal unit
                out.setdefault(str(v), []).append(to_internal_units(ds[v].load(), str(v)))
    return out


def _stats(da: xr.DataArray, quantiles: Sequence[float]) -> dict[tuple[str, str], float]:
    """{(season, statistic): area-weighted domain mean of the per-cell statistic}."""
    w = np.cos(np.deg2rad(da["lat"])).broadcast_like(da.isel(time=0))
    out = {}
    seasons = da["time"].dt.season
    for season in SEASONS:
        sub = da if season == "ANN" else da.isel(time=(seasons == season).values)
        if sub.sizes["time"] == 0:
            continue
        fields = {"mean": sub.mean("time")}
        qs = sub.quantile(list(quantiles), "time")
        for q in quantiles:
            fields[f"q{round(q * 100):g}"] = qs.sel(quantile=q)
        for name, f in fields.items():
            out[(season, name)] = float((f * w).sum() / w.where(f.notnull()).sum())
    return out


def _grouped(paths: Sequence[str | os.PathLike[str]]) -> dict[str, dict[str, xr.DataArray]]:
    """{variable: {realization: series}}: files of one realization (same folder above the year
    folders for deliverables, same file otherwise) joined in time."""
    groups: dict[tuple[str, str], list[xr.DataArray]] = {}
    for p in paths:
        for v, das in _series([p]).items():
            key = _realization(Path(p))
            groups.setdefault((v, key), []).extend(das)
    out: dict[str, dict[str, xr.DataArray]] = {}
    for (v, key), das in groups.items():
        das = sorted(das, key=lambda d: d["time"].values[0])
        out.setdefault(v, {})[key] = das[0] if len(das) == 1 else xr.concat(das, "time")
    return out


def _realization(path: Path) -> str:
    """``<member>/r<sample>`` of a deliverable (``.../<member>/<year>/<name>-r<sample>_day_<dates>.nc``),
    ``<member>`` of a coarse file (``.../<member>.nc`` or ``.../<member>/<var>.nc``)."""
    from aid.naming import MEMBER_RE

    sample = re.search(r"-r(\d+)_day_", path.name)
    member = next((p for p in reversed(path.with_suffix("").parts) if re.fullmatch(MEMBER_RE, p)), path.stem)
    return f"{member}/r{sample.group(1)}" if sample else member


def change_table(
    inputs: Mapping[str, tuple[Sequence[str | os.PathLike[str]], Sequence[str | os.PathLike[str]]]],
    experiment: str,
    quantiles: Sequence[float],
    variables: Sequence[str],
) -> pd.DataFrame:
    """One row per (variable, season, statistic): the change of each system in ``inputs``
    (``{system: (reference-experiment paths, scenario paths)}``), averaged over realizations."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for system, (ref_paths, scen_paths) in inputs.items():
        ref, scen = _grouped(ref_paths), _grouped(scen_paths)
        for v in variables:
            if v not in ref or v not in scen:
                raise DataError(
                    f"signal: no '{v}' among the {system} files of the reference experiment or of {experiment} "
                    f"({len(ref_paths)} and {len(scen_paths)} files).",
                    "check search.variables and re-run the stages writing them (regrid, adjust, downscale).",
                )
            s_ref = [_stats(d, quantiles) for d in ref[v].values()]
            s_scen = [_stats(d, quantiles) for d in scen[v].values()]
            for key in s_ref[0]:
                a = float(np.mean([s[key] for s in s_ref]))
                b = float(np.mean([s[key] for s in s_scen if key in s]))
                if v in RELATIVE:
                    change = 100.0 * (b / a - 1.0) if a > 0 else float("nan")
                else:
                    change = b - a
                row = rows.setdefault((v, *key), {"variable": v, "season": key[0], "statistic": key[1],
                                                 "change": "relative (%)" if v in RELATIVE else
                                                 f"additive ({ref[v][next(iter(ref[v]))].attrs.get('units', '')})"})
                row[system] = change
                row[f"{system}_realizations"] = f"{len(s_ref)}/{len(s_scen)}"
    df = pd.DataFrame(list(rows.values()))
    df.insert(0, "experiment", experiment)
    return df


def plot_changes(df: pd.DataFrame, title: str, out_png: str | os.PathLike[str]) -> Path:
    """Bars of the three systems' changes per season and statistic, one row of panels per variable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aid.io import atomic_path

    variables = list(dict.fromkeys(df["variable"]))
    stats = list(dict.fromkeys(df["statistic"]))
    fig, axes = plt.subplots(len(variables), len(stats), figsize=(3.2 * len(stats), 2.4 * len(variables)),
                             squeeze=False, sharex=True)
    systems = [s for s in SYSTEMS if s in df]
    width = 0.8 / len(systems)
    for i, v in enumerate(variables):
        for j, st in enumerate(stats):
            ax = axes[i, j]
            sub = df[(df.variable == v) & (df.statistic == st)].set_index("season").reindex(list(SEASONS))
            x = np.arange(len(SEASONS))
            for k, s in enumerate(systems):
                ax.bar(x + (k - (len(systems) - 1) / 2) * width, sub[s].to_numpy(dtype=float), width, label=s)
            ax.axhline(0, color="k", lw=0.5)
            ax.set_xticks(x, SEASONS, fontsize=7)
            unit = "%" if v in RELATIVE else sub["change"].dropna().iloc[0].split("(")[-1].rstrip(")") if sub["change"].notna().any() else ""
            ax.set_title(f"{v} {st} ({unit})", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(out_png)


def signal_files(
    raw_reference: Sequence[str | os.PathLike[str]],
    raw_scenario: Sequence[str | os.PathLike[str]],
    adjusted_reference: Sequence[str | os.PathLike[str]],
    adjusted_scenario: Sequence[str | os.PathLike[str]],
    downscaled_reference: Sequence[str | os.PathLike[str]],
    downscaled_scenario: Sequence[str | os.PathLike[str]],
    config: Mapping[str, Any],
    source: str,
    experiment: str,
    reference_experiment: str,
    out_csv: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
) -> tuple[Path, Path]:
    """Rule ``signal``: the change table (CSV) and figure (PNG) of one (source, scenario)."""
    from aid.io import atomic_path

    scfg = config["signal"]
    variables = list(config["search"]["variables"])
    inputs = {"raw": (raw_reference, raw_scenario), "adjusted": (adjusted_reference, adjusted_scenario)}
    if downscaled_reference and downscaled_scenario:
        inputs["downscaled"] = (downscaled_reference, downscaled_scenario)
    df = change_table(inputs, experiment, [float(q) for q in scfg["quantiles"]], variables)
    df.insert(0, "source", source)
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4g")
    plot_changes(df, f"{source} {experiment}: change vs {reference_experiment}", out_png)
    log.info("signal %s %s: %d rows", source, experiment, len(df))
    return Path(out_csv), Path(out_png)
