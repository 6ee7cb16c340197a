"""Pseudo-global-warming (PGW) test of the diffusion downscaler on real data.

One command (``python bench/pgw.py``): writes ``bench/out/pgw.json`` and prints it.
Layout: ``{"uk_t2m": {"<dT>": figures}, "pipeline": {"<variable>": {"<dT>": figures}}, "setup":
{part: how it was measured}}``; a part not run this time (``--skip-uk``, no checkpoint) keeps the
figures of the file's earlier run.

Why: scenarios put the coarse input outside the training climate. A downscaler whose residual
(fine minus upsampled coarse) depends on the absolute level of its input adds a bias that comes
from the warming alone, and that bias is invisible in any score on the training climate. The test
adds a known, uniform change to the coarse input and checks that the output changes by exactly
that: for a temperature, a shift by dT with an unchanged residual and spread, and nothing at the
domain edges.

UK part (``uk_t2m``): bench/model_skill.py's protocol (real ERA5 hourly t2m, March 2019, 32 x 48,
conservative x8 coarsening, train on days 1-24 with its training settings and optimiser steps;
``--steps`` sets fewer for a quick look). The coarse fields of
days 25-31 are downscaled as they are and with +2 K and +4 K added (the truth shifted alike for
scoring), 10 members, the checkpoint's own sampler settings, the same seeds for every shift: the
differences between shifts are then the model's response alone, free of sampling noise.

Pipeline part (``pipeline``, with ``--checkpoint``; default: the default run's
``results/model/checkpoint.pt`` when it exists): the checkpoint's evaluation-run input (the
coarsened reference of the evaluation year, ``results/reference/coarse/<variable>.nc``, as
``aid.downscale`` opens it) with temperatures + dT, pr x (1 + 0.07 dT) (Clausius-Clapeyron), winds
unchanged, on every ``--day-stride``-th day of the year.

Per shift and variable: ``mean_shift`` (domain, time and ensemble mean of the change of the
downscaled field) against ``expected_shift``; ``spread_ratio`` (ensemble spread, RMS over pixels and
times, shifted / unshifted); ``residual_mean_change`` (change of the mean of the downscaled field
minus its upsampled coarse input, against ``expected_residual_mean_change``: 0 for a uniform
shift, the residual's own CC scaling for pr); ``spread_ratio`` against ``expected_spread_ratio``;
``edge_shift`` / ``interior_shift`` (mean change on the fine cells within one coarse cell of the
domain edge / the others); ``max_abs_pixel_shift_error`` (ensemble-mean change per pixel and time,
worst deviation from the expected change); per channel, the prior's share of values at its clip
bounds and the change of its mean (model-space units) when the checkpoint has a residual prior.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import model_skill as ms  # noqa: E402  (the UK protocol: data, config, training settings)

OUT = ROOT / "bench" / "out"
#: Optimiser steps of the UK training: model_skill's protocol (fewer leave the network under-trained:
#: its validation loss still falls at the end, and the ensemble is less well calibrated, README).
STEPS = ms.STEPS
SHIFTS = (2.0, 4.0)
#: Clausius-Clapeyron scaling of precipitation per kelvin of warming.
CC_RATE = 0.07
TEMPERATURES = ("tas", "tasmax", "tasmin")
#: Targets of issue 19 (temperature): shift within this of dT, spread change, residual mean change.
TOL_SHIFT_K, TOL_SPREAD, TOL_RESIDUAL_K = 0.05, 0.05, 0.05
log = logging.getLogger("bench.pgw")


def perturb(ds: xr.Dataset, dt: float) -> xr.Dataset:
    """The PGW change of a coarse dataset: temperatures + dt, pr x (1 + 0.07 dt), others unchanged."""
    out = ds.copy()
    for v in ds.data_vars:
        if v in TEMPERATURES:
            out[v] = ds[v] + np.float32(dt)
        elif v == "pr":
            out[v] = ds[v] * np.float32(1.0 + CC_RATE * dt)
        out[v].attrs = dict(ds[v].attrs)
    return out


def expected_change(var: str, dt: float, base: np.ndarray) -> np.ndarray:
    """The change of a field ``base`` the PGW perturbation asks for (same shape)."""
    if var in TEMPERATURES:
        return np.full_like(base, dt)
    if var == "pr":
        return base * CC_RATE * dt
    return np.zeros_like(base)


def expected_residual_change(var: str, dt: float, residual: np.ndarray) -> np.ndarray:
    """The change of a fine-minus-coarse ``residual`` the PGW perturbation asks for: none for a
    uniform shift (temperatures) or an unchanged field (winds), the same scaling as the field for pr."""
    if var == "pr":
        return residual * CC_RATE * dt
    return np.zeros_like(residual)


def expected_spread_ratio(var: str, dt: float) -> float:
    """Ensemble spread shifted / unshifted the perturbation asks for (pr scales, the others keep it)."""
    return 1.0 + CC_RATE * dt if var == "pr" else 1.0


def edge_mask(shape: tuple[int, int], width: int) -> np.ndarray:
    """True on the fine cells within ``width`` cells of the domain edge."""
    m = np.zeros(shape, dtype=bool)
    m[:width], m[-width:], m[:, :width], m[:, -width:] = True, True, True, True
    return m


def response(ens0: np.ndarray, ens1: np.ndarray, up0: np.ndarray, up1: np.ndarray, var: str, dt: float,
             ratio: int) -> dict[str, float]:
    """PGW figures of one variable: ``ens*`` (member, time, lat, lon) downscaled from the unshifted /
    shifted input, ``up*`` (time, lat, lon) the upsampled coarse inputs (physical units)."""
    m0, m1 = ens0.mean(0), ens1.mean(0)
    want = expected_change(var, dt, m0)
    d = m1 - m0
    edge = edge_mask(m0.shape[1:], ratio)
    s0 = float(np.sqrt(ens0.var(0, ddof=1).mean()))
    s1 = float(np.sqrt(ens1.var(0, ddof=1).mean()))
    r0, r1 = float((m0 - up0).mean()), float((m1 - up1).mean())
    # sampling noise of the unshifted ensemble's domain mean (what a shift could be confused with)
    dom = ens0.mean(axis=(2, 3))  # (member, time)
    noise = float(dom.std(0, ddof=1).mean() / np.sqrt(ens0.shape[0]))
    return {
        "mean_shift": float(d.mean()), "expected_shift": float(want.mean()),
        "shift_error": float(d.mean() - want.mean()),
        "spread_ratio": s1 / s0 if s0 > 0 else float("nan"), "expected_spread_ratio": expected_spread_ratio(var, dt),
        "spread_unshifted": s0,
        "residual_mean_change": r1 - r0,
        "expected_residual_mean_change": float(expected_residual_change(var, dt, m0 - up0).mean()),
        "edge_shift": float(d[:, edge].mean()), "interior_shift": float(d[:, ~edge].mean()),
        "edge_minus_interior": float(d[:, edge].mean() - d[:, ~edge].mean()),
        "max_abs_pixel_shift_error": float(np.abs(d - want).max()),
        "ensemble_mean_sampling_noise_unshifted": noise,
    }


def prior_clip_share(dl, coarse: xr.Dataset) -> tuple[np.ndarray, np.ndarray] | None:  # noqa: ANN001
    """Per channel: (share of prior values at its clip bounds, mean prior in model-space units) of
    ``coarse``; None without a prior."""
    if dl.prior is None or dl.prior.lo is None:
        return None
    from aid.regrid import normalise_coords

    _, _, _, pp = dl.conditioning(normalise_coords(coarse[dl.variables]))
    lo, hi = dl.prior.lo[None, :, None, None], dl.prior.hi[None, :, None, None]
    at = (pp <= lo + 1e-6) | (pp >= hi - 1e-6)
    return at.mean(axis=(0, 2, 3)), (pp * dl.std[None, :, None, None]).mean(axis=(0, 2, 3))


def sample(dl, coarse: xr.Dataset, members: int, sampler: dict) -> dict[str, np.ndarray]:  # noqa: ANN001
    """{variable: (member, time, lat, lon) float64} downscaled with fixed seeds."""
    out = dl.sample(coarse, samples=list(range(1, members + 1)), seed=2024, stream="pgw", **sampler)
    return {v: out[v].transpose("sample", "time", "lat", "lon").values.astype(np.float64) for v in dl.variables}


def upsampled_phys(dl, coarse: xr.Dataset) -> dict[str, np.ndarray]:  # noqa: ANN001
    """{variable: (time, lat, lon)} the model's own upsampled coarse input, physical units."""
    from aid.model.data import upsampled
    from aid.regrid import normalise_coords

    up = upsampled(normalise_coords(coarse[dl.variables]).load(), dl.lat, dl.lon, dl.variables, dl.upsample_method)
    return {v: up[:, i].astype(np.float64) for i, v in enumerate(dl.variables)}


def run_pgw(dl, coarse: xr.Dataset, members: int, sampler: dict, ratio: int,  # noqa: ANN001
            truth: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """{shift: {variable: figures}} for ``coarse`` and its PGW perturbations (``truth``: score too)."""
    import scoringrules as sr

    base = sample(dl, coarse, members, sampler)
    up0 = upsampled_phys(dl, coarse)
    clip0 = prior_clip_share(dl, coarse)
    res: dict[str, dict[str, dict[str, float]]] = {}
    for dt in SHIFTS:
        c1 = perturb(coarse, dt)
        t0 = time.monotonic()
        ens = sample(dl, c1, members, sampler)
        up1 = upsampled_phys(dl, c1)
        clip1 = prior_clip_share(dl, c1)
        key = f"{dt:g}"
        res[key] = {}
        for i, v in enumerate(dl.variables):
            r = response(base[v], ens[v], up0[v], up1[v], v, dt, ratio)
            if clip0 is not None and clip1 is not None:
                r["prior_clipped_share_unshifted"] = float(clip0[0][i])
                r["prior_clipped_share_shifted"] = float(clip1[0][i])
                r["prior_mean_change"] = float(clip1[1][i] - clip0[1][i])
            if truth is not None and v in truth:
                t1 = truth[v] + expected_change(v, dt, truth[v])
                for name, e, t in (("unshifted", base[v], truth[v]), ("shifted", ens[v], t1)):
                    r[f"mae_ensemble_mean_{name}"] = float(np.abs(e.mean(0) - t).mean())
                    r[f"crps_fair_{name}"] = float(np.mean(sr.crps_ensemble(t, e, m_axis=0, estimator="fair")))
            res[key][v] = r
        log.info("shift %+g: sampled in %.0f s; %s", dt, time.monotonic() - t0,
                 ", ".join(f"{v} {res[key][v]['mean_shift']:+.4f}" for v in dl.variables))
    return res


def uk_part(args: argparse.Namespace) -> tuple[dict, dict]:
    """Train (or load ``--uk-checkpoint``) on UK days 1-24, PGW-test on days 25-31: ({shift: figures}, setup)."""
    from aid.io import write_netcdf
    from aid.model.api import Downscaler
    from aid.model.train import train_from_config

    extra = {"crop": ms.CROP, "weight_decay": ms.WEIGHT_DECAY, "cond_noise": ms.COND_NOISE, "dropout": ms.DROPOUT,
             "use_doy": bool(ms.USE_DOY), "sigma_relative": bool(ms.SIGMA_RELATIVE)}
    prior = {"half_width": ms.PRIOR_HALF_WIDTH, "mode": ms.PRIOR_MODE}
    cfg = ms.config(args.size, args.steps, 16, 1e-3, 0, extra, prior)
    fine, coarse = ms.uk_month(cfg)
    day = fine.time.dt.day.values
    train_t, test_t = day <= 24, day >= 25
    t_train = 0.0
    if args.uk_checkpoint:
        ckpt = Path(args.uk_checkpoint)
    else:
        OUT.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="pgw_", dir=OUT))
        try:
            write_netcdf(fine.isel(time=train_t), tmp / "fine_tas.nc")
            write_netcdf(coarse.isel(time=train_t), tmp / "coarse_tas.nc")
            ckpt = Path(args.out).with_suffix(".pt")
            t0 = time.monotonic()
            train_from_config(cfg, [tmp / "fine_tas.nc"], [tmp / "coarse_tas.nc"], ms.DATA / "era5-static-z-lsm-global.nc",
                              ckpt, threads=args.threads, val_fraction=0.1)
            t_train = time.monotonic() - t0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    dl = Downscaler.load(ckpt, device="cpu")
    sampler = dict(dl.sampler_defaults)
    c_test = coarse.isel(time=np.flatnonzero(test_t)[:: args.hour_stride])
    truth = {"tas": fine.tas.isel(time=np.flatnonzero(test_t)[:: args.hour_stride]).transpose("time", "lat", "lon")
             .values.astype(np.float64)}
    t0 = time.monotonic()
    res = run_pgw(dl, c_test, args.members, sampler, 8, truth)
    out = {}
    for key, per_var in res.items():
        r = per_var["tas"]
        out[key] = {"mean_shift_K": r["mean_shift"], "shift_error_K": r["shift_error"], "spread_ratio": r["spread_ratio"],
                    "residual_mean_change_K": r["residual_mean_change"], "edge_shift_K": r["edge_shift"],
                    "interior_shift_K": r["interior_shift"], "edge_minus_interior_K": r["edge_minus_interior"],
                    "max_abs_pixel_shift_error_K": r["max_abs_pixel_shift_error"],
                    **{k: v for k, v in r.items() if k.startswith(("prior_", "mae_", "crps_", "spread_unshifted",
                                                                     "ensemble_mean_sampling"))}}
        out[key]["passes"] = {
            "shift": abs(r["shift_error"]) <= TOL_SHIFT_K,
            "spread": abs(r["spread_ratio"] - 1.0) <= TOL_SPREAD,
            "residual": abs(r["residual_mean_change"]) <= TOL_RESIDUAL_K,
            "edges": abs(r["edge_minus_interior"]) <= TOL_SHIFT_K,
        }
    setup = {"data": "ERA5 t2m 2019-03 UK hourly, 32x48, conservative x8 (bench/model_skill.py protocol)",
                    "train": "2019-03-01..24", "test": f"2019-03-25..31, every {args.hour_stride}-th hour "
                    f"({c_test.sizes['time']} fields)", "members": args.members, "train_steps": args.steps,
                    "model_size": args.size, "sampler": sampler, "same_seeds_for_every_shift": True,
                    "checkpoint_sha256": dl.checkpoint_sha256,
                    "level_free": [v for v, f in zip(dl.variables, getattr(dl, "level_free", [])) if f],
                    "train_seconds": round(t_train, 1), "sample_seconds": round(time.monotonic() - t0, 1),
                    "edge_ring_fine_cells": 8,
                    "targets": {"shift_K": TOL_SHIFT_K, "spread_change": TOL_SPREAD, "residual_mean_change_K": TOL_RESIDUAL_K,
                                "edge_minus_interior_K": TOL_SHIFT_K}}
    return out, setup


def default_year() -> int:
    """The default run's evaluation year (first of config/config.yaml's evaluation.period)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    return int(cfg["evaluation"]["period"][0])


def default_conserve() -> list[str]:
    """The product's ``downscale.conserve`` (config/config.yaml with the schema's defaults)."""
    from aid.config import load_config

    return list(load_config(None)["downscale"]["conserve"])


def pipeline_part(args: argparse.Namespace) -> tuple[dict, dict]:
    """PGW test of a pipeline checkpoint on its evaluation-run input (``--coarse`` or results/reference/coarse):
    ({variable: {shift: figures}}, setup)."""
    from aid.downscale import open_coarse
    from aid.grids import fine_grid
    from aid.model.api import Downscaler

    ckpt = Path(args.checkpoint)
    dl = Downscaler.load(ckpt, device="cpu")
    paths = args.coarse or [str(Path(args.results) / "reference" / "coarse" / f"{v}.nc") for v in dl.variables]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"pipeline PGW: coarse input {missing} not found; pass --coarse FILES (the run's "
                                "results/reference/coarse/<variable>.nc) or --results DIR")
    year = int(args.year or default_year())
    cy = open_coarse(paths, list(dl.variables), year)
    days = np.arange(0, len(cy.days), args.day_stride)
    coarse = cy.batch(0, len(cy.days)).isel(time=days)
    grid = fine_grid(dl.config)
    dl = dl.for_grid(grid.lat.values, grid.lon.values)
    ratio = int(round(float(dl.config["grid"]["coarse_resolution"]) / float(dl.config["grid"]["fine_resolution"])))
    sampler = dict(dl.sampler_defaults)
    sampler["conserve"] = [] if args.no_conserve else [v for v in default_conserve() if v in dl.variables]
    t0 = time.monotonic()
    res = run_pgw(dl, coarse, args.members, sampler, ratio)
    out: dict = {v: {key: res[key][v] for key in res} for v in dl.variables}
    setup = {"checkpoint": str(ckpt), "checkpoint_sha256": dl.checkpoint_sha256, "coarse": paths, "year": year,
                    "days": f"every {args.day_stride}-th day ({len(days)} days)", "members": args.members,
                    "sampler": sampler, "level_free": [v for v, f in zip(dl.variables, getattr(dl, "level_free", [])) if f],
                    "perturbation": "tas/tasmax/tasmin + dT; pr x (1 + 0.07 dT); uas/vas unchanged",
                    "units": "K for temperatures, mm d-1 for pr, m s-1 for winds",
                    "sample_seconds": round(time.monotonic() - t0, 1)}
    return out, setup


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=STEPS, help="optimiser steps of the UK training")
    ap.add_argument("--size", default="default", choices=["tiny", "default", "paper"])
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--hour-stride", type=int, default=1, help="UK test hours: every n-th of the 168")
    ap.add_argument("--uk-checkpoint", default=None, help="PGW-test this UK checkpoint instead of training one")
    ap.add_argument("--skip-uk", action="store_true")
    ap.add_argument("--checkpoint", default=None,
                    help="pipeline checkpoint (default: <results>/model/checkpoint.pt when it exists)")
    ap.add_argument("--results", default=str(ROOT / "results"), help="the default run's output directory")
    ap.add_argument("--coarse", nargs="*", default=None, help="the evaluation run's coarse input files")
    ap.add_argument("--year", type=int, default=None, help="evaluation year (default: config/config.yaml's)")
    ap.add_argument("--day-stride", type=int, default=7, help="pipeline: every n-th day of the year")
    ap.add_argument("--no-conserve", action="store_true",
                    help="pipeline: sample without the product's coarse-cell conservation (downscale.conserve)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT / "pgw.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    res: dict = {}
    setup: dict = {}
    if not args.skip_uk:
        res["uk_t2m"], setup["uk_t2m"] = uk_part(args)
    ckpt = args.checkpoint or str(Path(args.results) / "model" / "checkpoint.pt")
    if Path(ckpt).exists():
        args.checkpoint = ckpt
        res["pipeline"], setup["pipeline"] = pipeline_part(args)
    else:
        log.warning("no pipeline checkpoint at %s: pipeline part skipped (pass --checkpoint)", ckpt)
        res["pipeline"] = None
    out = Path(args.out)
    if out.exists():  # a part skipped this time keeps its earlier figures
        old = json.loads(out.read_text())
        res = {**{k: v for k, v in old.items() if k != "setup"}, **{k: v for k, v in res.items() if v is not None
                                                                    or k not in old}}
        setup = {**old.get("setup", {}), **setup}
    res["setup"] = setup
    from aid.io import write_text

    text = json.dumps(res, indent=2)
    write_text(text + "\n", out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
