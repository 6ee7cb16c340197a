"""The report's landing page: the answers a user looks for first, as one self-contained HTML fragment.

Why a fragment: ``snakemake --report`` renders the workflow description (workflow/report/workflow.rst)
on its first page; that file includes this fragment (``.. raw:: html``) so the first screen shows
how good the product is and what changes, before the configuration dump. Figures are embedded as
PNG data URIs so the fragment travels inside the single report file.

Sections, in reading order:

1. headline scores on the held-out evaluation period (aid ensemble fair CRPS, ensemble-mean MAE,
   spread-skill) against the bicubic baseline and the coarse input, ▼ green where aid is better
   than the bicubic baseline, ▲ red where worse;
2. the fraction of grid cells where aid improves on the baseline per xsdba property;
3. one map row per variable for the same day: coarse input, one downscaled sample, the reference
   and the ensemble spread (standard deviation across samples). The day is the evaluation day with
   the largest domain-mean precipitation of the reference (structure is visible on a wet day), or
   the middle day without ``pr``;
4. the ensemble's scenario change (median and 10-90 % range across members and samples) of the
   headline indices, maps of the median and a table of area means;
5. the run's cost per stage from Snakemake's ``benchmark:`` files and what went in (catalog
   query, reference, checkpoint sha256).
"""

from __future__ import annotations

import base64
import html
import io
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

from aid.evaluate import metrics as M
from aid.evaluate.run import UNITS, _date_coord, _in_period, load_ensemble, upsample_coarse
from aid.indices import RELATIVE_CHANGE, load_variables, open_index_file
from aid.io import open_dataset, write_text
from aid.provenance import sha256_file

log = logging.getLogger(__name__)

#: Scenario-change indices shown on the landing page (xclim names; sfcWind_p99 = wind 99th percentile).
CHANGE_INDICES: tuple[str, ...] = ("TXx", "TNn", "RX1day", "R95pTOT", "CDD", "sfcWind_p99")
#: Headline scores: (metrics.json key, column label, lower is better).
SCORES: tuple[tuple[str, str], ...] = (("crps", "CRPS"), ("mae", "ens.-mean MAE"))
ANCHOR = "aid-landing"

_CSS = f"""
<style>
.prose:has(#{ANCHOR}) {{ max-width: none !important; }}
/* the report centres its start page vertically: a page taller than the window would open in its middle */
.items-center:has(#{ANCHOR}) {{ align-items: flex-start !important; }}
.justify-center:has(#{ANCHOR}) {{ justify-content: flex-start !important; }}
#{ANCHOR} {{ font-family: system-ui, sans-serif; font-size: 13px; color: #111; max-width: 1250px; }}
#{ANCHOR} h2 {{ font-size: 17px; margin: 14px 0 4px; }}
#{ANCHOR} h3 {{ font-size: 14px; margin: 10px 0 3px; }}
#{ANCHOR} table {{ border-collapse: collapse; margin: 2px 0 8px; }}
#{ANCHOR} th, #{ANCHOR} td {{ border: 1px solid #ccc; padding: 2px 7px; text-align: right; }}
#{ANCHOR} th {{ background: #f2f2f2; }}
#{ANCHOR} td.l, #{ANCHOR} th.l {{ text-align: left; }}
#{ANCHOR} .better {{ color: #106b21; font-weight: 600; }}
#{ANCHOR} .worse {{ color: #b3121b; font-weight: 600; }}
#{ANCHOR} .cols {{ display: flex; gap: 22px; flex-wrap: wrap; align-items: flex-start; }}
#{ANCHOR} img {{ max-width: 100%; }}
#{ANCHOR} .note {{ color: #555; font-size: 12px; }}
</style>
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"/>'


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}g}" if abs(x) < 1000 else f"{x:.0f}"


# ----------------------------------------------------------------------------------------------
# 1. headline scores
# ----------------------------------------------------------------------------------------------
def _cmp(aid: float | None, base: float | None, lower_better: bool = True) -> str:
    """▼/▲ with colour for aid against the baseline (lower is better for errors)."""
    if aid is None or base is None or not (math.isfinite(aid) and math.isfinite(base)):
        return ""
    better = aid < base if lower_better else aid > base
    return f' <span class="{"better" if better else "worse"}">{"▼" if aid < base else "▲"}</span>'


def headline_table(metrics: Mapping[str, Any]) -> str:
    """Per variable: aid / bicubic / coarse CRPS and MAE of the ensemble mean, spread-skill ratio."""
    period = metrics.get("period", ["?", "?"])
    span = f"{period[0]}" if period[0] == period[-1] else f"{period[0]}–{period[-1]}"
    head = ('<tr><th class="l" rowspan="2">variable</th>'
            + "".join(f'<th colspan="3">{lab}</th>' for _, lab in SCORES)
            + '<th rowspan="2">spread-skill<br/>(1 = calibrated)</th></tr><tr>'
            + "<th>aid</th><th>bicubic</th><th>coarse</th>" * len(SCORES) + "</tr>")
    rows = []
    for var, s in metrics.get("variables", {}).items():
        aid, ens, bic, co = (s.get(k, {}) for k in ("aid", "aid-ensmean", "bicubic", "coarse"))
        cells = [f'<td class="l"><b>{var}</b> <span class="note">{UNITS.get(var, "")}</span></td>']
        for key, _ in SCORES:
            a = (aid if key == "crps" else ens).get(key)
            cells.append(f"<td>{_fmt(a)}{_cmp(a, bic.get(key))}</td><td>{_fmt(bic.get(key))}</td><td>{_fmt(co.get(key))}</td>")
        ssr = aid.get("spread_skill")
        cls = "" if ssr is None else ("better" if abs(ssr - 1) <= 0.2 else "worse")
        cells.append(f'<td><span class="{cls}">{_fmt(ssr, 2)}</span></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<h2>How good is it? Held-out evaluation {span} against the 0.25° reference</h2>"
            f"<table>{head}{''.join(rows)}</table>"
            '<div class="note">CRPS: fair CRPS of the aid ensemble; for the single-valued bicubic baseline and the '
            "coarse input (cell-constant) the CRPS equals their MAE. MAE of the aid ensemble mean. Area-weighted "
            'means over all days. <span class="better">▼</span> aid better than the bicubic baseline, '
            '<span class="worse">▲</span> worse.</div>')


# ----------------------------------------------------------------------------------------------
# 2. xsdba properties
# ----------------------------------------------------------------------------------------------
def properties_table(table: pd.DataFrame) -> str:
    """Fraction of points where aid improves on the baseline, per variable (columns) and property (rows)."""
    if table is None or table.empty or "improved_vs_bicubic" not in table:
        return ""
    piv = table.pivot_table(index="property", columns="variable", values="improved_vs_bicubic", aggfunc="first")
    order = list(dict.fromkeys(table["property"]))
    piv = piv.reindex([p for p in order if p in piv.index])
    labels = dict(zip(table["property"], table["label"]))
    head = '<tr><th class="l">property (xsdba)</th>' + "".join(f"<th>{v}</th>" for v in piv.columns) + "</tr>"
    rows = []
    for prop, r in piv.iterrows():
        cells = []
        for v in piv.columns:
            x = r[v]
            if not np.isfinite(x):
                cells.append("<td></td>")
                continue
            cls = "better" if x > 0.5 else "worse"
            cells.append(f'<td><span class="{cls}">{100 * x:.0f} %</span></td>')
        rows.append(f'<tr><td class="l">{html.escape(labels.get(prop, prop))}</td>{"".join(cells)}</tr>')
    return ("<h3>Statistics a climate scientist checks: where does aid improve on the bicubic baseline?</h3>"
            f"<table>{head}{''.join(rows)}</table>"
            '<div class="note">Fraction of grid cells (or seasons × cells, distance bins, wavenumber bands; over all '
            "samples) where the xsdba measure of aid (bias; ratio for the spectral variance) against the reference is "
            "no larger than the bicubic baseline's (xscen's improved-grid-points rule). Table "
            "evaluation/tables/all_properties.csv has the errors of every system and ties.</div>")


# ----------------------------------------------------------------------------------------------
# 3. maps of one day
# ----------------------------------------------------------------------------------------------
def pick_day(ref: Mapping[str, xr.DataArray]) -> str:
    """The evaluation day shown: largest area-weighted reference pr, else the middle day."""
    if "pr" in ref:
        wet = M.weighted_mean(ref["pr"], dims=("lat", "lon"))
        return str(wet.idxmax("time").values)
    times = next(iter(ref.values()))["time"].values
    return str(times[len(times) // 2])


def day_maps(
    reference: Sequence[str], coarse: Sequence[str], downscaled: Sequence[str], period: Sequence[int]
) -> tuple[str, list[tuple[str, str]]]:
    """(day, [(variable, base64 PNG)]): coarse input | aid sample 1 | reference | ensemble spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref_ds = load_variables(reference, "reference")
    coarse_ds = load_variables(coarse, "coarse")
    ens_all = load_ensemble(downscaled, "downscaled")
    refs = {v: _in_period(_date_coord(ref_ds[v]), period) for v in UNITS if v in ref_ds and v in ens_all}
    if not refs:
        return "", []
    day = pick_day(refs)
    out = []
    for var, ref in refs.items():
        r = ref.sel(time=day)
        ens = ens_all[var].sel(time=day).reindex(lat=r["lat"], lon=r["lon"], method="nearest", tolerance=1e-3)
        co = _date_coord(upsample_coarse(coarse_ds[[var]], ref)[var]).sel(time=day)
        spread = ens.std("sample", ddof=1) if ens.sizes["sample"] > 1 else None
        panels = [("coarse input", co), (f"aid sample r{int(ens['sample'][0])}", ens.isel(sample=0)), ("reference", r)]
        vals = np.concatenate([np.asarray(p.values, float).ravel() for _, p in panels])
        vals = vals[np.isfinite(vals)]
        lo, hi = (np.percentile(vals, [1, 99]) if vals.size else (0.0, 1.0))
        cmap = "YlGnBu" if var == "pr" else "RdBu_r" if var in ("uas", "vas") else "inferno"
        if var in ("uas", "vas"):
            hi = max(abs(lo), abs(hi))
            lo = -hi
        n = len(panels) + (spread is not None)
        fig, axes = plt.subplots(1, n, figsize=(2.75 * n + 0.6, 2.35), squeeze=False, constrained_layout=True)
        aspect = 1.0 / np.cos(np.deg2rad(float(r["lat"].mean())))
        for ax, (label, da) in zip(axes[0], panels):
            im = ax.pcolormesh(da["lon"].values, da["lat"].values, np.asarray(da.transpose("lat", "lon").values, float),
                               shading="nearest", cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(label, fontsize=9)
            ax.set_aspect(aspect)
            ax.tick_params(labelsize=8)
        fig.colorbar(im, ax=list(axes[0][: len(panels)]), shrink=0.9, label=UNITS.get(var, ""))
        if spread is not None:
            ax = axes[0][-1]
            im = ax.pcolormesh(spread["lon"].values, spread["lat"].values, np.asarray(spread.transpose("lat", "lon").values, float),
                               shading="nearest", cmap="viridis")
            ax.set_title(f"ensemble spread (sd, {ens.sizes['sample']} samples)", fontsize=9)
            ax.set_aspect(aspect)
            ax.tick_params(labelsize=8)
            fig.colorbar(im, ax=ax, shrink=0.9, label=UNITS.get(var, ""))
        fig.suptitle(f"{var}, {day}", fontsize=10, x=0.02, ha="left")
        out.append((var, _png(fig)))
    return day, out


# ----------------------------------------------------------------------------------------------
# 4. scenario change
# ----------------------------------------------------------------------------------------------
def change_section(ensemble: Mapping[str, str], indices: Sequence[str] = CHANGE_INDICES) -> tuple[str, str | None]:
    """(HTML table, base64 PNG of median-change maps) per scenario file ``{label: path}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, maps = [], []
    for label, path in ensemble.items():
        ds = open_index_file(path)
        for name in indices:
            rel = name in RELATIVE_CHANGE and f"{name}_change_rel" in ds
            key = f"{name}_change_rel" if rel else f"{name}_change"
            if key not in ds:
                continue
            da = ds[key].load()
            units = "%" if rel else str(da.attrs.get("units", ds[name].attrs.get("units", "") if name in ds else ""))
            stats = {s: float(M.weighted_mean(da.sel(statistic=s))) for s in ("p10", "median", "p90")}
            base = ds.get(f"{name}_base")
            bmean = float(M.weighted_mean(base.sel(statistic="median"))) if base is not None else math.nan
            rows.append((label, name, units, bmean, stats))
            maps.append((label, name, units, da.sel(statistic="median")))
    if not rows:
        return "", None
    head = ('<tr><th class="l">scenario</th><th class="l">index</th><th>base (median)</th>'
            "<th>change: median</th><th>10 %</th><th>90 %</th><th class=\"l\">units of change</th></tr>")
    body = "".join(
        f'<tr><td class="l">{html.escape(lab)}</td><td class="l">{n}</td><td>{_fmt(b)}</td>'
        f"<td><b>{_fmt(s['median'])}</b></td><td>{_fmt(s['p10'])}</td><td>{_fmt(s['p90'])}</td><td class=\"l\">{html.escape(u)}</td></tr>"
        for lab, n, u, b, s in rows)
    n = len(maps)
    ncol = min(n, 3)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.1 * ncol, 2.9 * nrow), squeeze=False, constrained_layout=True)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for ax, (lab, name, units, da) in zip(axes.ravel(), maps):
        v = np.asarray(da.transpose("lat", "lon").values, float)
        fin = v[np.isfinite(v)]
        vmax = float(np.percentile(np.abs(fin), 99)) if fin.size else 1.0
        cmap = "BrBG" if name in ("RX1day", "R95pTOT", "CDD") else "RdBu_r"
        if name == "CDD":
            cmap = "BrBG_r"  # more dry days: brown
        im = ax.pcolormesh(da["lon"].values, da["lat"].values, v, shading="nearest", cmap=cmap,
                           vmin=-(vmax or 1.0), vmax=vmax or 1.0)
        ax.set_title(f"{name} ({lab}), median change", fontsize=9)
        ax.set_aspect(1.0 / np.cos(np.deg2rad(float(da["lat"].mean()))))
        ax.tick_params(labelsize=7)
        fig.colorbar(im, ax=ax, shrink=0.8, label=units).ax.tick_params(labelsize=7)
    return f"<table>{head}{body}</table>", _png(fig)


# ----------------------------------------------------------------------------------------------
# 5. cost and inputs
# ----------------------------------------------------------------------------------------------
def run_cost(benchmark_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Per stage (rule): jobs, summed wall seconds, summed CPU seconds, peak RSS (MB)."""
    root = Path(benchmark_dir)
    rows = []
    for f in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        rel = f.relative_to(root)
        stage = rel.parts[0] if len(rel.parts) > 1 else f.stem
        try:
            t = pd.read_csv(f, sep="\t")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as exc:
            log.warning("%s: unreadable benchmark file (%s); skipped", f, exc)
            continue
        if t.empty or "s" not in t:
            continue
        rows.append(dict(stage=stage, s=float(t["s"].iloc[-1]),
                         cpu_time=float(t["cpu_time"].iloc[-1]) if "cpu_time" in t else math.nan,
                         max_rss=float(pd.to_numeric(t.get("max_rss", pd.Series([math.nan])), errors="coerce").iloc[-1])))
    if not rows:
        return pd.DataFrame(columns=["stage", "jobs", "wall_s", "cpu_s", "max_rss_mb"])
    df = pd.DataFrame(rows)
    out = df.groupby("stage", sort=False).agg(jobs=("s", "size"), wall_s=("s", "sum"), cpu_s=("cpu_time", "sum"),
                                              max_rss_mb=("max_rss", "max")).reset_index()
    return out.sort_values("wall_s", ascending=False).reset_index(drop=True)


def cost_table(cost: pd.DataFrame) -> str:
    if cost.empty:
        return '<div class="note">No benchmark files yet.</div>'
    body = "".join(f'<tr><td class="l">{r.stage}</td><td>{r.jobs}</td><td>{r.wall_s:.1f}</td><td>{r.cpu_s:.1f}</td>'
                   f"<td>{_fmt(r.max_rss_mb, 4)}</td></tr>" for r in cost.itertuples())
    tot = f'<tr><th class="l">total</th><th>{int(cost.jobs.sum())}</th><th>{cost.wall_s.sum():.1f}</th><th>{cost.cpu_s.sum():.1f}</th><th></th></tr>'
    return ('<table><tr><th class="l">stage</th><th>jobs</th><th>wall s (sum)</th><th>CPU s</th><th>peak RSS MB</th></tr>'
            f"{body}{tot}</table><div class=\"note\">From the rules' benchmark: files (last run of each job); "
            "jobs run in parallel, so the wall-clock sum exceeds the run's duration.</div>")


def inputs_table(config: Mapping[str, Any], checkpoint: str | None, catalog_out: str | None) -> str:
    s = config["search"]
    cat = config["catalog"].get("path") or f"built from {config['catalog'].get('build_root')}"
    query = ", ".join(f"{k}={v if not isinstance(v, dict) else {e: list(y) for e, y in v.items()}}"
                      for k, v in s.items())
    ref = config["reference"]
    rows = [("catalog", cat), ("catalog query", query),
            ("domain", f"{config['domain']['id']}: lat {config['domain']['lat']}, lon {config['domain']['lon']}"),
            ("reference", f"{ref.get('name')}: " + "; ".join(f"{k}: {v}" for k, v in ref.get("files", {}).items())),
            ("reference static", str(ref.get("static")))]
    if checkpoint:
        rows.append(("checkpoint", f"{Path(checkpoint).name}, sha256 {sha256_file(checkpoint)}"))
    rows.append(("ensemble", f"{config['downscale']['n_samples']} diffusion samples per member, seed {config['downscale']['seed']}"))
    if catalog_out:
        rows.append(("output catalog", f"{Path(catalog_out).name} (intake-esm, xscen columns) and SHA256SUMS"))
    body = "".join(f'<tr><td class="l"><b>{html.escape(k)}</b></td><td class="l" style="word-break: break-all">'
                   f"{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


# ----------------------------------------------------------------------------------------------
def landing_html(
    config: Mapping[str, Any],
    metrics: str | os.PathLike[str],
    properties: str | os.PathLike[str] | None,
    reference: Sequence[str],
    coarse: Sequence[str],
    downscaled: Sequence[str],
    ensemble: Mapping[str, str],
    checkpoint: str | None,
    catalog: str | None,
    benchmarks: str | os.PathLike[str],
) -> str:
    m = json.loads(Path(metrics).read_text())
    props = pd.read_csv(properties) if properties and Path(properties).exists() else None
    parts = [_CSS, f'<div id="{ANCHOR}">', headline_table(m)]
    if props is not None:
        parts.append(properties_table(props))
    if downscaled:
        day, maps = day_maps(reference, coarse, downscaled, m.get("period") or config["evaluation"]["period"])
        if maps:
            parts.append(f"<h2>What does it look like? {day}: coarse input, one aid sample, reference, ensemble spread</h2>")
            parts += [f'<div>{_img(b64, f"{var} maps {day}")}</div>' for var, b64 in maps]
    table, png = change_section(ensemble)
    if table:
        base = config["indices"]["base_period"]
        parts.append(f"<h2>What changes? Ensemble change of the main indices against {base[0]}–{base[1]}</h2>")
        parts.append(f'<div class="cols"><div>{table}<div class="note">Area-weighted means of the ensemble median '
                     "and 10th/90th percentiles (across GCM members and diffusion samples) of each realization's change "
                     "of its climatology; precipitation amounts in percent. Maps: median change.</div></div>"
                     f"<div>{_img(png, 'median change maps')}</div></div>")
    parts.append('<div class="cols"><div><h2>Run cost per stage</h2>' + cost_table(run_cost(benchmarks)) + "</div>"
                 "<div><h2>What went in</h2>" + inputs_table(config, checkpoint, catalog) + "</div></div>")
    parts.append("</div>")
    return "\n".join(parts) + "\n"


def write_landing(out: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write the landing fragment atomically (see :func:`landing_html` for the inputs)."""
    text = landing_html(**kwargs)
    write_text(text, out)
    log.info("wrote %s (%.0f kB)", out, len(text) / 1e3)
    return Path(out)


__all__ = ["CHANGE_INDICES", "change_section", "day_maps", "headline_table", "landing_html", "pick_day",
           "properties_table", "run_cost", "write_landing"]
