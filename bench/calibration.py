"""Calibration of the checkpoint's own sampler on real held-out ERA5 (issue 19).

One command (``python bench/calibration.py [--uk-checkpoint bench/out/pgw.pt]``): writes
``bench/out/calibration.json`` and prints it.

The UK t2m checkpoint that bench/pgw.py trains (bench/model_skill.py's protocol: days 1-24) is
re-tuned on its own validation fields with :func:`aid.model.tune.tune_sampler` (the tuner training
runs; its table records each setting's validation spread-skill), and the setting it keeps is
scored on the held-out days 25-31 (every ``--hour-stride``-th hour, ``--members`` members, same
seeds), with and without the per-variable noise factor it chose, beside the validation setting with the spread-skill closest to 1 and IPSL-AID's 10-step
stochastic sampler (maximal churn, 19 evaluations). Per setting, with the evaluation stage's
area-weighted metrics (aid.evaluate.metrics): fair and
standard CRPS, ensemble-mean MAE, standard CRPS / MAE (0.742 for a calibrated Gaussian ensemble of
10), spread-skill ratio, rank histogram (max and min bin over 1 / (M + 1)).

``--pipeline`` (the default run's output directory, default ``results``) adds the default run's
own checkpoint: per variable, the spread-skill and fair CRPS of its ensemble (``--pipeline-members``)
on the validation days of the training years and on the held-out evaluation year (every
``--pipeline-day-stride``-th day), as the downscale jobs sample them (coarse-cell conservation of
pr), with factor 1, with the per-variable noise factors the tuner chooses on the checkpoint's
validation fields, and with IPSL-AID's 19-evaluation sampler; and for the temperatures, the spread-skill of every demo weather pattern apart
(aid.demo's pools), which shows whether validation and held-out weather differ systematically.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import model_skill as ms  # noqa: E402

OUT = ROOT / "bench" / "out"
log = logging.getLogger("bench.calibration")


def _crps_standard(ens, truth) -> float:  # noqa: ANN001
    """Area-weighted standard ("nrg") CRPS estimator of ``ens`` against ``truth``."""
    import scoringrules as sr

    from aid.evaluate import metrics as M

    return float(M.weighted_mean(xr.apply_ufunc(
        lambda o, f: np.asarray(sr.crps_ensemble(o, f, m_axis=-1, estimator="nrg")), truth, ens,
        input_core_dims=[[], ["sample"]])))


def perfect_model_ratio(ens, truth) -> dict:  # noqa: ANN001
    """Standard CRPS / ensemble-mean MAE of ``M - 1`` members against the truth, and against each
    left-out member in turn (a perfect-model test: that ensemble is calibrated by construction, so its
    ratio is what calibration gives for this ensemble's own distribution shape; 0.742 for M = 10
    holds for Gaussian errors only, heavier tails give more)."""
    from aid.evaluate import metrics as M

    m = ens.sizes["sample"]
    num = {"truth": 0.0, "left_out_member": 0.0}
    den = {"truth": 0.0, "left_out_member": 0.0}
    for k in range(m):
        rest = ens.isel(sample=[i for i in range(m) if i != k])
        for name, obs in (("truth", truth), ("left_out_member", ens.isel(sample=k, drop=True))):
            num[name] += _crps_standard(rest, obs)
            den[name] += float(M.mae(rest.mean("sample"), obs))
    return {"members": m - 1, "crps_standard_over_mae": num["truth"] / den["truth"],
            "perfect_model_crps_standard_over_mae": num["left_out_member"] / den["left_out_member"]}


def scores(ens, truth) -> dict:  # noqa: ANN001
    """Figures of ``ens`` (sample, time, lat, lon) against ``truth`` (time, lat, lon), DataArrays,
    with the evaluation stage's own metrics (aid.evaluate.metrics: area-weighted)."""
    from aid.evaluate import metrics as M

    m = ens.sizes["sample"]
    mae = float(M.mae(ens.mean("sample"), truth))
    crps_std = _crps_standard(ens, truth)
    hist = M.rank_histogram(ens, truth).astype(np.float64)
    rel = hist / hist.sum() * (m + 1)
    return {"crps_fair": float(M.weighted_mean(M.crps_fair(ens, truth))),
            "crps_standard": crps_std, "ensemble_mean_mae": mae, "crps_standard_over_mae": crps_std / mae,
            "spread_skill": float(M.spread_skill_ratio(ens, truth)),
            "rank_histogram_max_over_uniform": float(rel.max()), "rank_histogram_min_over_uniform": float(rel.min()),
            "rank_bins_within_20_percent": bool(np.all(np.abs(rel - 1) <= 0.2))}


#: IPSL-AID's sampler: 10 stochastic Heun steps, maximal churn, 19 network evaluations.
IPSL_AID = {"steps": 10, "churn": 40.0, "rho": 7.0, "sigma_max": 80.0}


def _temperature_pattern(t, part: str) -> int:  # noqa: ANN001
    """Index, within the demo temperature pool's ``part``, of the pattern drawn for date ``t``."""
    from aid.demo import POOL_SPLIT, pattern_sequence

    return int(pattern_sequence(0, "temp", t.year, len(POOL_SPLIT["temp"][part]))[min(t.dayofyear - 1, 364)])


def pipeline_calibration(results: Path, config_path: Path, members: int, day_stride: int) -> dict:
    """The default run's checkpoint on its validation days and its held-out year (see the module doc)."""
    import pandas as pd

    from aid.config import load_config
    from aid.demo import validation_days
    from aid.evaluate import metrics as M
    from aid.model.api import Downscaler
    from aid.model.checkpoint import load_checkpoint
    from aid.model.prepare import prepare_training
    from aid.model.train import _validation_set, tuning_fields
    from aid.model.tune import tune_noise_scale

    cfg = load_config(config_path)
    ck = results / "model" / "checkpoint.pt"
    content, digest = load_checkpoint(ck)
    dl = Downscaler(content, digest, ck)
    ref = {kind: xr.open_mfdataset([results / "reference" / kind / f"{v}.nc" for v in dl.variables])
           for kind in ("fine", "coarse")}
    setting = {k: dl.sampler_defaults[k] for k in ("steps", "churn", "rho", "sigma_max")}
    t0 = time.monotonic()
    prep = prepare_training(json.loads(content["config_json"]), [results / "reference/fine" / f"{v}.nc" for v in dl.variables],
                            [results / "reference/coarse" / f"{v}.nc" for v in dl.variables], content["static_path"])
    fields = tuning_fields(_validation_set(prep, int(content["patch"])), dl.res_scale)
    tuned = tune_noise_scale(dl, setting=setting, **fields)
    out: dict = {"checkpoint_sha256": digest, "sampler": setting, "members": members,
                 "validation_chosen_noise_scale": tuned["noise_scale"], "tuning_seconds": round(time.monotonic() - t0, 1)}
    times = pd.to_datetime(ref["coarse"].time.values)
    vdays = set(validation_days(cfg, range(cfg["evaluation"]["period"][0], cfg["evaluation"]["period"][1] + 1)))
    held = range(cfg["evaluation"]["period"][0], cfg["evaluation"]["period"][1] + 1)
    sets = {"validation_days": ([i for i, t in enumerate(times) if (t.year, t.month, t.day) in vdays], "validation"),
            "held_out_year": ([i for i, t in enumerate(times) if t.year in held][::day_stride], "held_out")}
    for name, (sel, part) in sets.items():
        c, f = ref["coarse"].isel(time=sel).load(), ref["fine"].isel(time=sel).load()
        patterns = np.array([_temperature_pattern(t, part) for t in pd.to_datetime(c.time.values)])
        out[name] = {"fields": len(sel)}
        runs = {"factor_1": (setting, None), "validation_chosen_factors": (setting, tuned["noise_scale"]),
                "ipsl_aid_19_evaluations": (IPSL_AID, None)}
        for label, (sampler, scale) in runs.items():
            ens = dl.sample(c, samples=list(range(1, members + 1)), seed=2024, stream="calibration", conserve=["pr"],
                            noise_scale=scale, **sampler)
            rows = {}
            for v in dl.variables:
                e, o = ens[v].astype(np.float64), f[v].astype(np.float64)
                rows[v] = {"spread_skill": float(M.spread_skill_ratio(e, o)),
                           "crps_fair": float(M.weighted_mean(M.crps_fair(e, o)))}
                if v in ("tas", "tasmax", "tasmin") and label == "factor_1":
                    rows[v]["spread_skill_per_temperature_pattern"] = {
                        str(p): float(M.spread_skill_ratio(e.isel(time=patterns == p), o.isel(time=patterns == p)))
                        for p in np.unique(patterns)}
            out[name][label] = rows
            log.info("pipeline %s, %s: %s", name, label,
                     {v: (round(r["spread_skill"], 2), round(r["crps_fair"], 4)) for v, r in rows.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uk-checkpoint", default=str(OUT / "pgw.pt"), help="bench/pgw.py's UK checkpoint")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--hour-stride", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sweep", type=float, nargs="*", default=[0.9, 1.1, 1.2],
                    help="noise factors also scored on the held-out days, for reference")
    ap.add_argument("--pipeline", default=str(ROOT / "results"),
                    help="the default run's output directory ('' to skip the pipeline part)")
    ap.add_argument("--pipeline-config", default=str(ROOT / "config" / "config.yaml"))
    ap.add_argument("--pipeline-members", type=int, default=6)
    ap.add_argument("--pipeline-day-stride", type=int, default=3)
    ap.add_argument("--out", default=str(OUT / "calibration.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import tempfile

    import torch

    from aid.io import write_netcdf, write_text
    from aid.model.api import Downscaler
    from aid.model.checkpoint import load_checkpoint
    from aid.model.prepare import prepare_training
    from aid.model.train import _tune, _validation_set

    torch.set_num_threads(args.threads)
    ckpt = Path(args.uk_checkpoint)
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt}: run `python bench/pgw.py` first (it trains the UK checkpoint)")
    content, digest = load_checkpoint(ckpt)
    cfg = json.loads(content["config_json"])
    dl0 = Downscaler(content, digest, ckpt)
    fine, coarse = ms.uk_month(cfg)
    day = fine.time.dt.day.values
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        write_netcdf(fine.isel(time=day <= 24), Path(tmp) / "fine_tas.nc")
        write_netcdf(coarse.isel(time=day <= 24), Path(tmp) / "coarse_tas.nc")
        prep = prepare_training(cfg, [Path(tmp) / "fine_tas.nc"], [Path(tmp) / "coarse_tas.nc"],
                                ms.DATA / "era5-static-z-lsm-global.nc", 0.1)
        t0 = time.monotonic()
        tuned = _tune(content, _validation_set(prep, int(content["patch"])), ckpt, noise_scale=True)
        tune_s = time.monotonic() - t0
    rows = tuned["table"]
    closest = min(rows, key=lambda r: (abs(np.log(r["spread_skill"])), r["crps_fair_normalised"]))
    plain = {k: tuned[k] for k in ("steps", "churn", "rho", "sigma_max")}
    settings = {
        "tuner_choice": {**plain, "noise_scale": tuned.get("noise_scale")},
        "tuner_choice_noise_factor_1": plain,
        "validation_spread_skill_closest_to_1": {k: closest[k] for k in ("steps", "churn", "rho", "sigma_max")},
        "ipsl_aid_19_evaluations": IPSL_AID,
    }
    test = np.flatnonzero(day >= 25)[:: args.hour_stride]
    truth = fine.tas.isel(time=test).astype(np.float64)
    res: dict = {"tuning_table": rows, "noise_scale_table": tuned.get("noise_scale_table"),
                 "tuning_seconds": round(tune_s, 1), "settings": settings, "scores": {}}
    for name, s in settings.items():
        t0 = time.monotonic()
        out = dl0.sample(coarse.isel(time=test), samples=list(range(1, args.members + 1)), seed=2024,
                         stream="calibration", **s)
        ens = out.tas.transpose("sample", "time", "lat", "lon").astype(np.float64)
        res["scores"][name] = {**scores(ens, truth), "leave_one_out": perfect_model_ratio(ens, truth),
                               "network_evaluations": 2 * int(s["steps"]) - 1,
                               "seconds": round(time.monotonic() - t0, 1)}
        log.info("%s %s: %s", name, s, res["scores"][name])
    # For reference only (the product chooses on validation fields, never on these days): how the
    # held-out scores move with the noise factor around the tuner's setting.
    res["held_out_noise_factor_sweep"] = {}
    for f in args.sweep:
        out = dl0.sample(coarse.isel(time=test), samples=list(range(1, args.members + 1)), seed=2024,
                         stream="calibration", **{**plain, "noise_scale": {"tas": f}})
        ens = out.tas.transpose("sample", "time", "lat", "lon").astype(np.float64)
        res["held_out_noise_factor_sweep"][f"{f:g}"] = scores(ens, truth)
        log.info("held-out, noise factor %g: %s", f, res["held_out_noise_factor_sweep"][f"{f:g}"])
    res["setup"] = {"checkpoint": str(ckpt), "checkpoint_sha256": digest, "members": args.members,
                    "test": f"2019-03-25..31, every {args.hour_stride}-th hour ({len(test)} fields)",
                    "gaussian_calibrated_crps_over_mae_10_members": 0.742}
    if args.pipeline:
        if not (Path(args.pipeline) / "model" / "checkpoint.pt").exists():
            raise FileNotFoundError(f"{args.pipeline}/model/checkpoint.pt: run `bash scripts/demo.sh` first "
                                    "(or pass --pipeline '' to skip the default run's checkpoint)")
        res["pipeline"] = pipeline_calibration(Path(args.pipeline), Path(args.pipeline_config), args.pipeline_members,
                                               args.pipeline_day_stride)
    text = json.dumps(res, indent=2)
    write_text(text + "\n", args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
