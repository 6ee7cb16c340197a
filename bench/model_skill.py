"""Skill of the residual EDM downscaler on real ERA5: UK 2 m temperature, March 2019, x8.

One command (``python bench/model_skill.py``): writes ``bench/out/model_skill.json`` and prints it.

Set-up (real data, nothing synthetic):
- ERA5 hourly t2m, 2019-03 (``era5-2mt-2019-03-uk.grib``), cropped to 32 x 48 cells
  (50.0-57.75 N, 10.0 W-1.75 E); HOURLY fields are used (576 training fields, 168 test fields).
- coarse input: the pipeline's own conservative coarsening to the 2 deg model grid
  (:func:`aid.regrid.coarsen`, x8), so the coarse fields are what the downscale stage sees.
- train on March 1-24 with :func:`aid.model.train.train_from_config` (the Snakemake rule's
  entry point), within a wall-clock budget on this CPU; score on March 25-31 with 10 members.
- baselines on the same coarse fields and test hours: bicubic (:func:`aid.regrid.upsample`, the
  model's conditioning) and bilinear (separable linear with linear edge extrapolation).

Scores: ensemble-mean MAE, fair CRPS (scoringrules, estimator="fair"), spread-skill ratio with the
sqrt((M+1)/M) correction, rank histogram max/min bin ratio, and the radially averaged power
spectrum at the two highest wavenumber bins relative to the truth.
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
DATA = ROOT.parent / "shared" / "data" / "era5"
if not DATA.exists():
    DATA = Path("/work/shared/data/era5")
OUT = ROOT / "bench" / "out"
# Training settings of the reported result (measured on this bench; see the table in the report).
STEPS = 2000
CROP = 0
WEIGHT_DECAY = 0.05
COND_NOISE = 0.2
DROPOUT = 0.3
USE_DOY = 0
PRIOR_HALF_WIDTH = 2
PRIOR_MODE = "offset"
SIGMA_RELATIVE = 1
log = logging.getLogger("bench.model_skill")


def _linear_weights(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Linear interpolation matrix (len(dst) x len(src)) with linear extrapolation at the edges."""
    n = src.size
    x = (dst - src[0]) / (src[1] - src[0])
    i0 = np.clip(np.floor(x).astype(int), 0, n - 2)
    f = x - i0
    w = np.zeros((dst.size, n))
    w[np.arange(dst.size), i0] += 1 - f
    w[np.arange(dst.size), i0 + 1] += f
    return w


def bilinear(coarse: np.ndarray, clat: np.ndarray, clon: np.ndarray, flat: np.ndarray, flon: np.ndarray) -> np.ndarray:
    return np.einsum("ij,tjk,lk->til", _linear_weights(clat, flat), coarse, _linear_weights(clon, flon))


def reference_bicubic(coarse: np.ndarray, factor: int = 8, order: int = 3) -> np.ndarray:
    """The issue's baseline: ``scipy.ndimage.zoom`` (cubic B-spline, ``order`` 3; corner-aligned grid).

    Why a second bicubic: the issue quotes "bicubic over the whole month is 0.69 K" (the data
    README: block-mean x8 of the 32 x 48 crop, bicubic 0.69 K, RMSE 0.95 K, bilinear 0.75 K). aid's
    cell-centred Keys bicubic gives 0.58 K there, so it is not the baseline the issue measured; this
    one reproduces the README's three numbers (:func:`readme_baselines`). It maps the first and last
    coarse centres onto the first and last fine centres, i.e. it misplaces the coarse field by up to
    3.5 fine cells at the domain edges, which is why it is the weaker baseline.
    """
    from scipy import ndimage

    return np.stack([ndimage.zoom(c, factor, order=order, mode="nearest") for c in coarse])


def readme_baselines(t2m_desc: np.ndarray) -> dict[str, float]:
    """Whole-month MAE/RMSE of the reference interpolators as the data README measured them.

    ``t2m_desc`` is the GRIB's (time, 33, 49) array as stored (latitude 58 -> 50 N, longitude 10 W ->
    2 E); the README's 32 x 48 crop is its first 32 rows and 48 columns, block-mean coarsened x8.
    """
    fine = t2m_desc[:, :32, :48].astype(np.float64)
    bm = fine.reshape(len(fine), 4, 8, 6, 8).mean(axis=(2, 4))
    out = {}
    for name, order in (("bicubic", 3), ("bilinear", 1)):
        err = reference_bicubic(bm, 8, order) - fine
        out[f"{name}_mae_K"] = float(np.abs(err).mean())
        out[f"{name}_rmse_K"] = float(np.sqrt((err**2).mean()))
    return out


def config(size: str, steps: int, batch: int, lr: float, seed: int, extra: dict | None = None,
           prior: dict | None = None) -> dict:
    """The bench's training config; keys it does not set take the schema's defaults."""
    from aid.config import fill_defaults

    return fill_defaults({
        "search": {"variables": ["tas"]},
        "domain": {"id": "UK-bench", "lat": [50.0, 57.75], "lon": [-10.0, 1.75]},
        "grid": {"coarse_resolution": 2.0, "fine_resolution": 0.25},
        "regrid": {"method": "conservative", "backend": "xarray-regrid"},
        "model": {
            "size": size, "upsample": "bicubic", "pr_transform": "log1p", "lat_weighting": True, "prior": prior,
            "train": {"years": [2019, 2019], "steps": steps, "batch_size": batch, "lr": lr, "lr_schedule": "cosine",
                      "warmup_steps": 100, "ema_decay": 0.999, "grad_clip": 1.0, "seed": seed,
                      "sigma_relative": False, **(extra or {})},
        },
    })


def uk_month(cfg: dict) -> tuple:
    """(fine, coarse) of the real UK month on ``cfg``'s grids: ERA5 t2m as ``tas`` (K) on the fine
    grid, and its conservative coarsening (the pipeline's own), both loaded."""
    from aid.grids import fine_grid
    from aid.regrid import coarsen, normalise_coords

    ds = xr.open_dataset(DATA / "era5-2mt-2019-03-uk.grib", engine="cfgrib", backend_kwargs={"indexpath": ""})
    ds = normalise_coords(ds[["t2m"]].drop_vars(["valid_time", "number", "step", "surface"], errors="ignore"))
    ds = ds.rename(t2m="tas")
    ds["tas"].attrs["units"] = "K"
    fg = fine_grid(cfg)
    fine = ds.sel(lat=fg.lat.values, lon=fg.lon.values).load()
    return fine, coarsen(fine, cfg).load()


def rank_histogram(obs: np.ndarray, ens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Counts of the observation's rank among M members (ties broken at random), M + 1 bins."""
    m = ens.shape[0]
    below = (ens < obs[None]).sum(0)
    ties = (ens == obs[None]).sum(0)
    rank = below + np.floor(rng.random(obs.shape) * (ties + 1)).astype(int)
    return np.bincount(rank.ravel(), minlength=m + 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="default", choices=["tiny", "default", "paper"])
    ap.add_argument("--train-minutes", type=float, default=None,
                    help="optional wall-clock cap (default none: the fixed --steps make the result reproducible)")
    ap.add_argument("--steps", type=int, default=STEPS, help="optimiser steps (cosine schedule over these)")
    ap.add_argument("--crop", type=int, default=CROP, help="random training crop (translation augmentation), 0 = none")
    ap.add_argument("--weight-decay", type=float, default=WEIGHT_DECAY)
    ap.add_argument("--cond-noise", type=float, default=COND_NOISE,
                    help="std of Gaussian noise added to the normalised coarse conditioning in training")
    ap.add_argument("--dropout", type=float, default=DROPOUT, help="override the size preset's dropout")
    ap.add_argument("--use-doy", type=int, choices=[0, 1], default=USE_DOY,
                    help="1: day-of-year sin/cos in the embedding; 0: hour only (one month of training data)")
    ap.add_argument("--prior-half-width", type=int, default=PRIOR_HALF_WIDTH,
                    help="linear residual prior stencil half-width in coarse cells (-1 = no prior)")
    ap.add_argument("--prior-mode", default=PRIOR_MODE, choices=["condition", "offset"])
    ap.add_argument("--p-mean", type=float, default=None, help="override the training ln(sigma) mean (EDM -1.2)")
    ap.add_argument("--sigma-relative", type=int, choices=[0, 1], default=SIGMA_RELATIVE,
                    help="1: residual channels scaled to sigma_data 0.5, EDM's scale (model.train.sigma_relative)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="last part of the training hours held out for early stopping (best-validation EMA weights)")
    # Default: EDM's sigma_max 80 in normalised units, i.e. 80 / res_scale in the model units of a
    # sigma_relative checkpoint: the same start relative to the data as the schedule these sampler
    # settings were chosen with (a start in model units under-disperses; bench/README.md).
    ap.add_argument("--sigma-max", type=float, default=None, help="override the sampling sigma_max (model units)")
    # S_churn 30 (gamma capped at sqrt(2)-1 per step): fresh noise during sampling widens the
    # ensemble and restores small-scale power (figures in bench/README.md).
    ap.add_argument("--churn", type=float, default=30.0, help="S_churn of the Heun sampler (0 = ODE)")
    # rho 4 (EDM default 7): more of the few steps at small noise levels, where the fine detail is
    # formed: better spread and rank histogram at unchanged MAE (figures in bench/README.md).
    ap.add_argument("--rho", type=float, default=4.0, help="rho of the sampler's noise schedule")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--sampler-steps", type=int, default=12)
    # 1 thread: OpenMP threads spin-wait against other jobs on shared cores, which makes step times
    # erratic; a single thread runs at the same speed loaded or idle (bench/README.md).
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint", default=None, help="score an existing checkpoint instead of training")
    ap.add_argument("--out", default=str(OUT / "model_skill.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import scoringrules as sr
    import torch

    from aid.evaluate.spectra import radial_power_spectrum
    from aid.grids import fine_grid
    from aid.io import write_netcdf
    from aid.model.api import Downscaler
    from aid.model.train import train_from_config
    from aid.regrid import coarsen, normalise_coords, upsample

    torch.set_num_threads(args.threads)
    extra = {"crop": args.crop, "weight_decay": args.weight_decay, "cond_noise": args.cond_noise,
             "use_doy": bool(args.use_doy), "sigma_relative": bool(args.sigma_relative)}
    if args.dropout is not None:
        extra["dropout"] = args.dropout
    if args.p_mean is not None:
        extra["p_mean"] = args.p_mean
    prior = None if args.prior_half_width < 0 else {"half_width": args.prior_half_width, "mode": args.prior_mode}
    cfg = config(args.size, args.steps, args.batch, args.lr, args.seed, extra, prior)
    ds = xr.open_dataset(DATA / "era5-2mt-2019-03-uk.grib", engine="cfgrib", backend_kwargs={"indexpath": ""})
    readme = readme_baselines(ds.t2m.values)
    ds = normalise_coords(ds[["t2m"]].drop_vars(["valid_time", "number", "step", "surface"], errors="ignore"))
    ds = ds.rename(t2m="tas")
    ds["tas"].attrs["units"] = "K"
    fg = fine_grid(cfg)
    fine = ds.sel(lat=fg.lat.values, lon=fg.lon.values).load()
    coarse = coarsen(fine, cfg).load()
    day = fine.time.dt.day.values
    train_t, test_t = day <= 24, day >= 25
    OUT.mkdir(parents=True, exist_ok=True)

    t_train = 0.0
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="model_skill_", dir=OUT))
        write_netcdf(fine.isel(time=train_t), tmp / "fine_tas.nc")
        write_netcdf(coarse.isel(time=train_t), tmp / "coarse_tas.nc")
        ckpt = Path(args.out).with_suffix(".pt")
        t0 = time.monotonic()
        train_from_config(cfg, [tmp / "fine_tas.nc"], [tmp / "coarse_tas.nc"], DATA / "era5-static-z-lsm-global.nc",
                          ckpt, threads=args.threads, val_fraction=args.val_fraction,
                          time_limit_s=args.train_minutes * 60 if args.train_minutes else None)
        t_train = time.monotonic() - t0
        shutil.rmtree(tmp, ignore_errors=True)

    dl = Downscaler.load(ckpt, device="cpu")
    if args.sigma_max is None:  # the checkpoint's sigma_max (EDM's 80) in normalised units
        args.sigma_max = float(dl.sigma_max / dl.res_scale[0])
    c_test = coarse.isel(time=test_t)
    truth = fine.tas.isel(time=test_t).values.astype(np.float64)
    t0 = time.monotonic()
    ens = dl.sample(c_test, samples=list(range(1, args.members + 1)), seed=2024, steps=args.sampler_steps, progress=True,
                    sigma_max=args.sigma_max, churn=args.churn, rho=args.rho, stream="bench")
    t_sample = time.monotonic() - t0
    ens_v = ens.tas.transpose("sample", "time", "lat", "lon").values.astype(np.float64)
    # bicubic of the whole month once: the test hours' baseline and the daily errors of the regime diagnostic
    bic_month = upsample(coarse, fg, "bicubic").tas.transpose("time", "lat", "lon").values.astype(np.float64)
    bic = bic_month[test_t]
    bil = bilinear(c_test.tas.values.astype(np.float64), c_test.lat.values, c_test.lon.values, fg.lat.values, fg.lon.values)
    ref = reference_bicubic(c_test.tas.transpose("time", "lat", "lon").values.astype(np.float64))

    m = ens_v.shape[0]
    emean = ens_v.mean(0)
    mae = lambda a: float(np.abs(a - truth).mean())  # noqa: E731
    rmse = lambda a: float(np.sqrt(((a - truth) ** 2).mean()))  # noqa: E731
    crps = float(np.mean(sr.crps_ensemble(truth, ens_v, m_axis=0, estimator="fair")))
    spread = float(np.sqrt(ens_v.var(axis=0, ddof=1).mean()))
    ssr = spread * np.sqrt((m + 1) / m) / rmse(emean)
    hist = rank_histogram(truth, ens_v, np.random.default_rng(0))
    k, p_truth = radial_power_spectrum(truth)
    _, p_ens = radial_power_spectrum(ens_v.reshape(-1, *truth.shape[1:]))
    _, p_bic = radial_power_spectrum(bic)
    _, p_bil = radial_power_spectrum(bil)
    hi = slice(-2, None)
    bic_mae, bil_mae = mae(bic), mae(bil)
    # Diagnostics of the MAE target: the deterministic linear prior alone (what the network's
    # ensemble mean is added to), and the ensemble mean's own sampling noise. The mean of M members
    # has E|err|^2 = err_inf^2 + spread^2 / M, so a calibrated 10-member ensemble cannot have an
    # ensemble-mean RMSE below ~1.05x that of the best deterministic predictor it is centred on.
    prior_only = None
    up_t, _, _, pp = dl.conditioning(normalise_coords(c_test[dl.variables]))
    if pp is not None:
        prior_only = (up_t + pp * dl.std[None, :, None, None])[:, 0].astype(np.float64)
    rmse_inf = float(np.sqrt(max(rmse(emean) ** 2 - spread**2 / m, 0.0)))
    # Upper bound of what a network adding no mean error could reach: the same members recentred on
    # the prior (x_k - mean + prior, spread kept). Not a product option: it makes each member depend
    # on the others, and the pipeline samples members in separate jobs, each reproducible alone.
    recentred = None
    if prior_only is not None:
        rc = ens_v - emean[None] + prior_only[None]
        recentred = {"mae_K": mae(rc.mean(0)), "mae_ratio_to_bicubic": mae(rc.mean(0)) / bic_mae,
                     "crps_ratio_to_bicubic_mae": float(np.mean(sr.crps_ensemble(truth, rc, m_axis=0, estimator="fair")))
                     / bic_mae,
                     "spread_skill_ratio": float(spread * np.sqrt((m + 1) / m) / rmse(rc.mean(0)))}
    # Why the test week is hard: its days have larger diurnal ranges (calm, clear, anticyclonic)
    # than almost all training days, and bicubic's daily error follows the diurnal range.
    cday = coarse.tas.values.reshape(-1, 24, *coarse.tas.shape[1:])
    dtr = (cday.max(1) - cday.min(1)).mean(axis=(1, 2))
    dtr_tr, dtr_te = dtr[: int(train_t.sum()) // 24], dtr[int(train_t.sum()) // 24:]
    bic_day = np.abs(bic_month - fine.tas.transpose("time", "lat", "lon").values).reshape(len(dtr), -1).mean(1)
    res = {
        "setup": {
            "data": "ERA5 t2m 2019-03 UK hourly (era5-2mt-2019-03-uk.grib), crop 32x48, 50.0-57.75N 10.0W-1.75E",
            "fields": "hourly", "coarsening": "aid.regrid.coarsen (conservative, 2 deg, x8)",
            "train": "2019-03-01..24 (576 hourly fields)", "test": "2019-03-25..31 (168 hourly fields)",
            "members": m, "sampler_steps": args.sampler_steps, "churn": args.churn, "rho": args.rho, "network_evaluations_per_sample": 2 * args.sampler_steps - 1,
            "model_size": dl.config["model"]["size"], "checkpoint_sha256": dl.checkpoint_sha256,
            "train_seconds": round(t_train, 1), "sample_seconds": round(t_sample, 1),
            "threads": args.threads, "train_steps_done": None, "best_validation_step": None,
            "sigma_max": args.sigma_max, "res_scale": dl.res_scale.tolist(),
            "train_settings": dl.config["model"]["train"],
        },
        "mae_ensemble_mean_K": mae(emean), "mae_bicubic_K": bic_mae, "mae_bilinear_K": bil_mae,
        "mae_ratio_to_bicubic": mae(emean) / bic_mae, "target_mae_ratio": 0.5,
        "rmse_ensemble_mean_K": rmse(emean), "rmse_bicubic_K": rmse(bic), "rmse_bilinear_K": rmse(bil),
        "diagnostics": {
            "mae_prior_only_K": mae(prior_only) if prior_only is not None else None,
            "mae_prior_only_ratio_to_bicubic": mae(prior_only) / bic_mae if prior_only is not None else None,
            "rmse_prior_only_K": rmse(prior_only) if prior_only is not None else None,
            "rmse_ensemble_mean_infinite_members_K (sqrt(rmse^2 - spread^2/M))": rmse_inf,
            "network_mean_contribution_rms_K": float(np.sqrt(((emean - prior_only) ** 2).mean()))
            if prior_only is not None else None,
            "members_recentred_on_prior (upper bound, not a product option)": recentred,
            "coarse_diurnal_range_K": {"train_mean": float(dtr_tr.mean()), "train_max": float(dtr_tr.max()),
                                       "test_mean": float(dtr_te.mean()), "test_days": dtr_te.round(2).tolist(),
                                       "test_days_above_train_90th_percentile": int((dtr_te > np.quantile(dtr_tr, 0.9)).sum()),
                                       "corr_with_daily_bicubic_mae (31 days)": float(np.corrcoef(dtr, bic_day)[0, 1])},
            "mae_bicubic_whole_month_K": float(bic_day.mean()),
        },
        "issue_reference_bicubic": {
            "what": "scipy.ndimage.zoom order 3 (corner-aligned cubic spline), the baseline behind the issue's 0.69 K",
            "readme_reproduction (whole month, README crop, block-mean x8)": readme,
            "readme_quotes": {"bicubic_mae_K": 0.69, "bicubic_rmse_K": 0.95, "bilinear_mae_K": 0.75},
            "mae_test_K": mae(ref),
            "mae_ratio_ensemble_mean": mae(emean) / mae(ref),
            "crps_ratio": crps / mae(ref),
        },
        "crps_fair_K": crps, "crps_ratio_to_bicubic_mae": crps / bic_mae, "target_crps_ratio": 0.40,
        "crps_bicubic_K (deterministic = MAE)": bic_mae, "crps_bilinear_K (deterministic = MAE)": bil_mae,
        "spread_K": spread, "spread_skill_ratio": float(ssr), "target_spread_skill": [0.8, 1.2],
        "rank_histogram": hist.tolist(), "rank_hist_max_min_ratio": float(hist.max() / max(hist.min(), 1)),
        "target_rank_hist_ratio": 2.0,
        "psd_k": k[hi].tolist(),
        "psd_ratio_model_to_truth_top2": (p_ens[hi] / p_truth[hi]).tolist(),
        "psd_ratio_bicubic_to_truth_top2": (p_bic[hi] / p_truth[hi]).tolist(),
        "psd_ratio_bilinear_to_truth_top2": (p_bil[hi] / p_truth[hi]).tolist(),
        "target_psd_ratio": [1 / 1.5, 1.5],
    }
    from aid.model.checkpoint import load_checkpoint

    content = load_checkpoint(ckpt)[0]
    res["setup"]["train_steps_done"] = int(content["step"])
    res["setup"]["best_validation_step"] = int(content.get("best_step", -1))
    res["passes"] = {
        "mae": res["mae_ratio_to_bicubic"] <= 0.5,
        "mae_vs_issue_reference_bicubic": res["issue_reference_bicubic"]["mae_ratio_ensemble_mean"] <= 0.5,
        "crps": res["crps_ratio_to_bicubic_mae"] <= 0.40,
        "spread_skill": 0.8 <= res["spread_skill_ratio"] <= 1.2,
        "rank_hist": res["rank_hist_max_min_ratio"] <= 2.0,
        "psd": all(1 / 1.5 <= r <= 1.5 for r in res["psd_ratio_model_to_truth_top2"]),
    }
    text = json.dumps(res, indent=2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
