"""Evaluation figures (PNG, matplotlib Agg), each written atomically.

Why atomic: the evaluation figures directory is a Snakemake ``directory()`` output that the
report globs with ``{variable}_{kind}.png``; a half-written PNG from a killed job must never be
picked up. File names therefore have exactly one ``_`` (variable or group, then kind), see
:func:`figure_name`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from aid.io import atomic_path  # noqa: E402

log = logging.getLogger(__name__)

#: Consistent colours per system across all figures.
COLORS = {"reference": "black", "aid": "tab:red", "aid-ensmean": "tab:orange", "bicubic": "tab:blue", "coarse": "tab:gray"}


def figure_name(group: str, kind: str, ext: str = "png") -> str:
    """``<group>_<kind>.<ext>`` with underscores inside the parts replaced by ``-``.

    Why: the report pattern ``{variable}_{kind}.png`` must split every name unambiguously
    (index names such as ``sfcWind_p99`` contain an underscore).
    """
    return f"{group.replace('_', '-')}_{kind.replace('_', '-')}.{ext}"


def save(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    """Save ``fig`` as PNG through a temporary file and close it."""
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    log.info("wrote %s", path)
    return path


def plot_maps(
    fields: Mapping[str, xr.DataArray], path: str | os.PathLike[str], title: str, units: str = "",
    diverging: bool = True,
) -> Path:
    """One map panel per entry (e.g. bias of aid, bicubic, coarse) with a shared colour scale."""
    n = len(fields)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n + 0.8, 3.4), squeeze=False, constrained_layout=True)
    vals = np.concatenate([np.asarray(f.values, float).ravel() for f in fields.values()])
    vals = vals[np.isfinite(vals)]
    vmax = float(np.nanpercentile(np.abs(vals), 99)) if vals.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    if diverging:
        kw = dict(cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    else:
        kw = dict(cmap="viridis", vmin=0.0, vmax=float(np.nanpercentile(vals, 99)) if vals.size else 1.0)
    im = None
    for ax, (label, da) in zip(axes[0], fields.items()):
        im = ax.pcolormesh(da["lon"].values, da["lat"].values, np.asarray(da.transpose("lat", "lon").values), shading="nearest", **kw)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("lon (°E)")
        ax.set_aspect(1.0 / np.cos(np.deg2rad(float(da["lat"].mean()))))
    axes[0][0].set_ylabel("lat (°N)")
    if im is not None:
        fig.colorbar(im, ax=axes[0].tolist(), label=units, shrink=0.9)
    fig.suptitle(title, fontsize=11)
    return save(fig, path)


def plot_panels(
    panels: Sequence[tuple[str, xr.DataArray, bool]], path: str | os.PathLike[str], title: str, units: str = ""
) -> Path:
    """Map panels with their own colour scales: ``(label, field, diverging)`` each.

    Why separate scales: a climatology and its bias differ by orders of magnitude.
    """
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.9 * n, 3.4), squeeze=False, constrained_layout=True)
    for ax, (label, da, diverging) in zip(axes[0], panels):
        v = np.asarray(da.transpose("lat", "lon").values, float)
        fin = v[np.isfinite(v)]
        if diverging:
            vmax = float(np.percentile(np.abs(fin), 99)) if fin.size else 1.0
            kw = dict(cmap="RdBu_r", vmin=-(vmax or 1.0), vmax=vmax or 1.0)
        else:
            kw = dict(cmap="viridis", vmin=float(fin.min()) if fin.size else 0, vmax=float(fin.max()) if fin.size else 1)
        im = ax.pcolormesh(da["lon"].values, da["lat"].values, v, shading="nearest", **kw)
        fig.colorbar(im, ax=ax, label=units, shrink=0.85)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("lon (°E)")
        ax.set_aspect(1.0 / np.cos(np.deg2rad(float(da["lat"].mean()))))
    axes[0][0].set_ylabel("lat (°N)")
    fig.suptitle(title, fontsize=11)
    return save(fig, path)


def plot_spectra(
    spectra: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike[str], title: str,
    wavelengths: np.ndarray | None = None, units: str = "",
) -> Path:
    """Log-log radially averaged power spectra, one line per system."""
    fig, ax = plt.subplots(figsize=(5.5, 4.0), constrained_layout=True)
    for label, (k, p) in spectra.items():
        x = wavelengths if wavelengths is not None else k
        ax.loglog(x, p, label=label, color=COLORS.get(label), lw=2 if label == "reference" else 1.5)
    if wavelengths is not None:
        from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

        ax.set_xlabel("wavelength (km)")
        ax.invert_xaxis()
        ax.xaxis.set_major_locator(FixedLocator([t for t in (25, 50, 100, 200, 500, 1000, 2000)
                                                 if wavelengths.min() <= t <= wavelengths.max()]))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_xlabel("wavenumber (cycles per domain)")
    ax.set_ylabel(f"power ({units}²)" if units else "power")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return save(fig, path)


def plot_rank_histogram(counts: Sequence[int], path: str | os.PathLike[str], title: str) -> Path:
    """Relative frequency of each rank with the flat (calibrated) line."""
    counts = np.asarray(counts, dtype=float)
    freq = counts / max(counts.sum(), 1.0)
    fig, ax = plt.subplots(figsize=(4.5, 3.5), constrained_layout=True)
    ax.bar(np.arange(1, counts.size + 1), freq, color=COLORS["aid"], alpha=0.8)
    ax.axhline(1.0 / counts.size, color="black", ls="--", label="calibrated")
    ax.set_xlabel("rank of the reference among the samples")
    ax.set_ylabel("relative frequency")
    ax.set_xticks(np.arange(1, counts.size + 1))
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return save(fig, path)


def plot_tail(
    samples: Mapping[str, np.ndarray], path: str | os.PathLike[str], title: str, units: str = "",
    qs: Sequence[float] = (0.9, 0.95, 0.98, 0.99, 0.995, 0.999),
) -> Path:
    """PDF (log density) of all values and a QQ plot of the upper tail against the reference."""
    from aid.evaluate.metrics import quantiles

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.8), constrained_layout=True)
    allv = np.concatenate([np.asarray(v, float).ravel() for v in samples.values()])
    allv = allv[np.isfinite(allv)]
    bins = np.linspace(allv.min(), allv.max(), 60) if allv.size else 10
    ref_q = quantiles(samples["reference"], qs) if "reference" in samples else None
    for label, v in samples.items():
        v = np.asarray(v, float).ravel()
        ax1.hist(v[np.isfinite(v)], bins=bins, density=True, histtype="step", label=label, color=COLORS.get(label))
        if ref_q is not None and label != "reference":
            ax2.plot(ref_q, quantiles(v, qs), "o-", label=label, color=COLORS.get(label), ms=4)
    ax1.set_yscale("log")
    ax1.set_xlabel(units)
    ax1.set_ylabel("density")
    ax1.legend(fontsize=8)
    ax1.set_title("PDF", fontsize=10)
    if ref_q is not None:
        lo, hi = float(np.nanmin(ref_q)), float(np.nanmax(ref_q))
        ax2.plot([lo, hi], [lo, hi], color="black", ls="--", label="1:1")
        for q, x in zip(qs, ref_q):
            ax2.annotate(f"{100 * q:g}", (x, x), fontsize=7, xytext=(2, -8), textcoords="offset points")
    ax2.set_xlabel(f"reference quantile ({units})")
    ax2.set_ylabel(f"quantile ({units})")
    ax2.legend(fontsize=8)
    ax2.set_title("upper-tail QQ (90th-99.9th percentiles)", fontsize=10)
    fig.suptitle(title, fontsize=11)
    return save(fig, path)


def plot_season_scores(table: "object", variable: str, path: str | os.PathLike[str], units: str = "") -> Path:
    """Bars of MAE and RMSE per season and system for one variable (``table``: a pandas frame)."""
    import pandas as pd

    df: pd.DataFrame = table  # type: ignore[assignment]
    sub = df[df["variable"] == variable]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.5), constrained_layout=True)
    for ax, score in zip(axes, ("bias", "mae", "rmse")):
        piv = sub.pivot_table(index="season", columns="system", values=score, sort=False)
        piv.plot.bar(ax=ax, color=[COLORS.get(c, None) for c in piv.columns], rot=0, legend=score == "mae")
        ax.set_title(score.upper() if score != "bias" else "bias", fontsize=10)
        ax.set_ylabel(units)
        ax.axhline(0, color="black", lw=0.5)
    fig.suptitle(f"{variable}: area-weighted scores against the reference", fontsize=11)
    return save(fig, path)


def plot_index_bias(table: "object", path: str | os.PathLike[str], title: str) -> Path:
    """Horizontal bars of the relative (%) climatological bias per index with the ensemble range."""
    import pandas as pd

    df: pd.DataFrame = table  # type: ignore[assignment]
    fig, ax = plt.subplots(figsize=(6.0, 0.32 * len(df) + 1.2), constrained_layout=True)
    y = np.arange(len(df))
    rel = df["bias_rel_percent"].to_numpy(float)
    ax.barh(y, rel, color=np.where(rel >= 0, "tab:red", "tab:blue"), alpha=0.8)
    if {"bias_rel_p10", "bias_rel_p90"} <= set(df.columns):
        lo = rel - df["bias_rel_p10"].to_numpy(float)
        hi = df["bias_rel_p90"].to_numpy(float) - rel
        ax.errorbar(rel, y, xerr=[np.clip(lo, 0, None), np.clip(hi, 0, None)], fmt="none", color="black", lw=1)
    ax.set_yticks(y)
    ax.set_yticklabels(df["index"])
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("bias of the climatological mean (% of reference)")
    ax.set_title(title, fontsize=10)
    return save(fig, path)


__all__ = [
    "figure_name",
    "plot_index_bias",
    "plot_maps",
    "plot_panels",
    "plot_rank_histogram",
    "plot_season_scores",
    "plot_spectra",
    "plot_tail",
    "save",
]
