"""Sampler settings for the pipeline's own checkpoint, scored on its held-out evaluation year.

    python bench/sampler_settings.py [--run bench/out/pipeline-run] [--year 2014] [--every 12]

Why this exists beside ``bench/sampler.py``: that bench tunes the sampler for a model trained on
hourly UK t2m; the default pipeline trains a six-variable model on daily fields for 1500 steps,
and a few-step sampler that suits one network need not suit the other (bench/README.md). This scores the checkpoint's own default (tuned
at the end of training, aid/model/tune.py) and other (steps, sigma_max, rho) settings
(fair CRPS, MAE, spread; IPSL-AID's sampler included) on every ``--every``-th day of the held-out year of a finished default run (``bench/pipeline.py``
writes one), 3 samples each, against the run's own 0.25 deg ERA5-derived reference. Output:
``bench/out/sampler_settings.json`` (also printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
#: (steps, sigma_max, rho, S_churn); the first is IPSL-AID's sampler (10 steps, maximal churn, 19 evaluations).
SETTINGS = [(10, 80.0, 7.0, 100.0), (5, 20.0, 4.0, 0.0), (6, 80.0, 7.0, 0.0), (12, 80.0, 7.0, 0.0), (20, 80.0, 7.0, 0.0),
            (8, 5.0, 7.0, 0.0), (6, 2.0, 7.0, 0.0), (8, 2.0, 7.0, 0.0), (6, 2.0, 4.0, 0.0), (8, 2.0, 4.0, 0.0)]
log = logging.getLogger("bench.sampler_settings")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="bench/out/pipeline-run", help="output_dir of a finished default run")
    ap.add_argument("--year", type=int, default=2014, help="held-out year (config evaluation.period)")
    ap.add_argument("--every", type=int, default=12, help="score every N-th day")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/out/sampler_settings.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    from aid.model.api import Downscaler

    run = ROOT / args.run
    dl = Downscaler.load(run / "model" / "checkpoint.pt", device="cpu")
    coarse = xr.merge([xr.open_dataset(run / "reference" / "coarse" / f"{v}.nc")[v] for v in dl.variables])
    fine = xr.merge([xr.open_dataset(run / "reference" / "fine" / f"{v}.nc")[v] for v in dl.variables])
    c = coarse.sel(time=coarse.time.dt.year == args.year).isel(time=slice(None, None, args.every))
    f = fine.sel(time=c.time)
    res: dict = {"checkpoint_sha256": dl.checkpoint_sha256, "year": args.year, "days": int(c.sizes["time"]),
                 "samples": 3, "trials": []}
    import scoringrules as sr

    tuned = dl.sampler_defaults  # chosen at the end of training (aid.model.tune); the downscale default
    res["checkpoint_default"] = tuned
    settings = [(tuned["steps"], tuned["sigma_max"], tuned["rho"], tuned["churn"])] + [
        s for s in SETTINGS if s != (tuned["steps"], tuned["sigma_max"], tuned["rho"], tuned["churn"])]
    for steps, sigma_max, rho, churn in settings:
        t0 = time.perf_counter()
        out = dl.sample(c, samples=[1, 2, 3], seed=1, steps=steps, rho=rho, sigma_max=sigma_max, churn=churn, stream="bench")
        trial = {"checkpoint_default": (steps, sigma_max, rho, churn) == settings[0], "steps": steps, "network_evaluations": 2 * steps - 1, "sigma_max": sigma_max, "rho": rho,
                 "churn": churn, "seconds": round(time.perf_counter() - t0, 2)}
        for v in dl.variables:
            truth, ens = f[v].values, out[v].values
            crps = sr.crps_ensemble(truth, np.moveaxis(ens, 0, -1), estimator="fair")
            trial[v] = {"crps_fair": float(np.mean(crps)),
                        "ensemble_mean_mae": float(np.abs(ens.mean(0) - truth).mean()),
                        "member_mae": float(np.abs(ens - truth[None]).mean()),
                        "spread": float(ens.std(0, ddof=1).mean())}
        log.info("steps %d sigma_max %g rho %g churn %g: tas CRPS %.3f, ensemble-mean MAE %.3f, member MAE %.3f; "
                 "pr CRPS %.3f", steps, sigma_max, rho, churn, trial["tas"]["crps_fair"],
                 trial["tas"]["ensemble_mean_mae"], trial["tas"]["member_mae"], trial["pr"]["crps_fair"] if "pr" in trial
                 else float("nan"))
        res["trials"].append(trial)
    text = json.dumps(res, indent=2)
    Path(ROOT / args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
