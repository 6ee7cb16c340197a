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


def scores(ens, truth) -> dict:  # noqa: ANN001
    """Figures of ``ens`` (sample, time, lat, lon) against ``truth`` (time, lat, lon), DataArrays,
    with the evaluation stage's own metrics (aid.evaluate.metrics: area-weighted)."""
    import scoringrules as sr

    from aid.evaluate import metrics as M

    m = ens.sizes["sample"]
    mae = float(M.mae(ens.mean("sample"), truth))
    crps_std = float(M.weighted_mean(xr.apply_ufunc(
        lambda o, f: np.asarray(sr.crps_ensemble(o, f, m_axis=-1, estimator="nrg")), truth, ens,
        input_core_dims=[[], ["sample"]])))
    hist = M.rank_histogram(ens, truth).astype(np.float64)
    rel = hist / hist.sum() * (m + 1)
    return {"crps_fair": float(M.weighted_mean(M.crps_fair(ens, truth))),
            "crps_standard": crps_std, "ensemble_mean_mae": mae, "crps_standard_over_mae": crps_std / mae,
            "spread_skill": float(M.spread_skill_ratio(ens, truth)),
            "rank_histogram_max_over_uniform": float(rel.max()), "rank_histogram_min_over_uniform": float(rel.min()),
            "rank_bins_within_20_percent": bool(np.all(np.abs(rel - 1) <= 0.2))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uk-checkpoint", default=str(OUT / "pgw.pt"), help="bench/pgw.py's UK checkpoint")
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--hour-stride", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sweep", type=float, nargs="*", default=[0.9, 1.1, 1.2],
                    help="noise factors also scored on the held-out days, for reference")
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
        "ipsl_aid_19_evaluations": {"steps": 10, "churn": 40.0, "rho": 7.0, "sigma_max": 80.0},
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
        res["scores"][name] = {**scores(ens, truth),
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
    text = json.dumps(res, indent=2)
    write_text(text + "\n", args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
