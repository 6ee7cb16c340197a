"""Day-to-day coherence of a run's downscaled evaluation ensemble against the reference.

One command (``python bench/coherence.py [--results DIR] [--config FILE]``): writes
``bench/out/coherence.json`` and prints it. Reads the evaluation run's deliverables of the
config's ``evaluation.period`` and the run's 0.25 deg reference (``<results>/reference/fine``) and
reports, per variable, :func:`aid.evaluate.coherence.coherence` (lag-1 autocorrelation of the fine-
scale residual; warm / dry / wet mean spell lengths; ensemble vs reference, relative difference).

With ``--checkpoint``: the run's deliverables are not needed; the checkpoint downscales the
evaluation year's coarsened reference (``<results>/reference/coarse``, as the evaluation run's input)
itself, ``--members`` members with its own sampler settings, and that ensemble is scored against the
fine reference the same way (no bias adjustment is involved in the evaluation run either).

With ``--uk-checkpoint bench/out/pgw.pt`` (the UK checkpoint bench/pgw.py trains): real consecutive
days instead, since the demo archive's days are real fields in shuffled order (its truth has no
day-to-day persistence to match). Writes ``bench/out/coherence_uk.json``: the lag-1-day
autocorrelation of the fine residual on March 25-31, 2019, truth vs the ensemble with independent
days and with the checkpoint's estimated day correlation (``downscale.day_correlation: null``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "results"), help="the run's output_dir")
    ap.add_argument("--config", default=None, help="the run's config (default: config/config.yaml)")
    ap.add_argument("--checkpoint", default=None, help="downscale the evaluation year with this checkpoint")
    ap.add_argument("--members", type=int, default=5, help="with --checkpoint: ensemble members")
    ap.add_argument("--no-conserve", action="store_true",
                    help="with --checkpoint: sample without the product's coarse-cell conservation")
    ap.add_argument("--day-correlation", type=float, default=None,
                    help="with --checkpoint: override the checkpoint's day correlation")
    ap.add_argument("--uk-checkpoint", default=None,
                    help="real consecutive days instead: bench/pgw.py's UK checkpoint (bench/out/pgw.pt)")
    ap.add_argument("--hour-stride", type=int, default=6, help="with --uk-checkpoint: every n-th hour of day")
    ap.add_argument("--uk-rhos", type=float, nargs="*", default=[0.3, 0.6],
                    help="with --uk-checkpoint: further day correlations to compare")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT / "coherence.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from aid.config import load_config
    from aid.evaluate.coherence import coherence_of_run
    from aid.naming import EVALUATION_EXPERIMENT, EVALUATION_MEMBER, deliverable_paths

    if args.uk_checkpoint:
        return write(of_uk(args), Path(args.out).with_name("coherence_uk.json"))
    cfg = load_config(args.config, overrides={"output_dir": args.results})
    y0, y1 = (int(y) for y in cfg["evaluation"]["period"])
    if args.checkpoint:
        res = of_checkpoint(args, cfg, y0, y1)
        return write(res, Path(args.out))
    ref_name = cfg["reference"]["name"]
    files = [str(p) for y in range(y0, y1 + 1)
             for p in deliverable_paths(cfg, ref_name, EVALUATION_EXPERIMENT, EVALUATION_MEMBER, y).values()]
    missing = [p for p in files if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} evaluation-run deliverables missing, e.g. {missing[0]}; run the "
                                "default pipeline first or pass --results")
    reference = [str(Path(args.results) / "reference" / "fine" / f"{v}.nc") for v in cfg["search"]["variables"]]
    res = {"period": [y0, y1], "results": str(args.results),
           "variables": coherence_of_run(files, reference, [y0, y1], float(cfg["grid"]["coarse_resolution"]))}
    return write(res, Path(args.out))


def of_checkpoint(args: argparse.Namespace, cfg: dict, y0: int, y1: int) -> dict:
    """Coherence of ``args.checkpoint``'s own ensemble of the evaluation years against the fine reference."""
    import numpy as np
    import torch
    import xarray as xr

    from aid.downscale import open_coarse
    from aid.evaluate.coherence import coherence
    from aid.grids import fine_grid
    from aid.model.api import Downscaler

    torch.set_num_threads(args.threads)
    dl = Downscaler.load(Path(args.checkpoint), device="cpu")
    grid = fine_grid(dl.config)
    dl = dl.for_grid(grid.lat.values, grid.lon.values)
    sampler = dict(dl.sampler_defaults)
    sampler["conserve"] = [] if args.no_conserve else [v for v in cfg["downscale"]["conserve"] if v in dl.variables]
    if args.day_correlation is not None:
        sampler["day_correlation"] = args.day_correlation
    ref_dir = Path(args.results) / "reference"
    ens: dict[str, list] = {v: [] for v in dl.variables}
    ref: dict[str, list] = {v: [] for v in dl.variables}
    for year in range(y0, y1 + 1):
        cy = open_coarse([str(ref_dir / "coarse" / f"{v}.nc") for v in dl.variables], list(dl.variables), year)
        out = dl.sample(cy.batch(0, len(cy.days)), samples=list(range(1, args.members + 1)), seed=2024,
                        stream="coherence", **sampler)
        for v in dl.variables:
            ens[v].append(out[v].transpose("sample", "time", "lat", "lon").values)
            f = xr.open_dataset(ref_dir / "fine" / f"{v}.nc")[v]
            f = f.sel(time=f["time"].dt.year == year, lat=grid.lat.values, lon=grid.lon.values, method="nearest")
            if f.sizes["time"] != out.sizes["time"]:
                raise ValueError(f"coherence: {v} reference has {f.sizes['time']} days in {year}, the ensemble "
                                 f"{out.sizes['time']}")
            ref[v].append(f.transpose("time", "lat", "lon").values)
    figures = coherence({v: np.concatenate(e, axis=1) for v, e in ens.items()},
                        {v: np.concatenate(r, axis=0) for v, r in ref.items()}, grid.lat.values, grid.lon.values,
                        float(cfg["grid"]["coarse_resolution"]))
    return {"period": [y0, y1], "results": str(args.results), "checkpoint": str(args.checkpoint),
            "checkpoint_sha256": dl.checkpoint_sha256, "members": args.members, "sampler": sampler,
            "level_free": [v for v, f in zip(dl.variables, dl.level_free) if f], "variables": figures}


def of_uk(args: argparse.Namespace) -> dict:
    """Real consecutive days: the UK ERA5 t2m checkpoint of bench/pgw.py (trained on March 1-24,
    2019, its day correlation estimated from those days) downscales every ``--hour-stride``-th hour
    of March 25-31; per hour of day, the lag-1-day autocorrelation of the fine residual over the
    7 days, averaged over the hours, ensemble (independent days and the checkpoint's correlation)
    vs the truth."""
    import numpy as np
    import torch

    from aid.evaluate.coherence import cell_labels, fine_residual, lag1_autocorrelation
    from aid.model.api import Downscaler

    sys.path.insert(0, str(ROOT / "bench"))
    import model_skill as ms

    torch.set_num_threads(args.threads)
    dl = Downscaler.load(Path(args.uk_checkpoint), device="cpu")
    fine, coarse = ms.uk_month(dl.config)
    hours = np.arange(0, 24, args.hour_stride)
    test = np.flatnonzero((fine.time.dt.day.values >= 25) & np.isin(fine.time.dt.hour.values, hours))
    labels = cell_labels(dl.lat, dl.lon, float(dl.config["grid"]["coarse_resolution"]))

    def per_hour(x: np.ndarray) -> float:  # x: (time, H, W) in time order, len(hours) per day
        return float(np.mean([lag1_autocorrelation(fine_residual(x[k :: len(hours)], labels)) for k in range(len(hours))]))

    truth = fine.tas.isel(time=test).transpose("time", "lat", "lon").values
    res = {"truth": per_hour(truth)}
    rhos = {"independent_days": 0.0, "checkpoint_estimate": dl.sampler_defaults["day_correlation"],
            **{f"day_correlation_{r:g}": r for r in args.uk_rhos}}
    sampler = {k: v for k, v in dl.sampler_defaults.items() if k != "day_correlation"}
    for name, rho in rhos.items():
        out = dl.sample(coarse.isel(time=test), samples=list(range(1, args.members + 1)), seed=2024,
                        stream="coherence-uk", day_correlation=rho, **sampler)
        ens = out.tas.transpose("sample", "time", "lat", "lon").values
        vals = [per_hour(e) for e in ens]
        res[name] = {"day_correlation": rho, "ensemble": float(np.mean(vals)), "members": vals,
                     "relative_difference": (float(np.mean(vals)) - res["truth"]) / abs(res["truth"])}
    return {"lag1_day_autocorrelation_fine_residual": res, "checkpoint": str(args.uk_checkpoint),
            "checkpoint_sha256": dl.checkpoint_sha256, "members": args.members, "sampler": sampler,
            "hours_of_day": hours.tolist(), "days": "2019-03-25..31 (held out; training days 1-24)"}


def write(res: dict, out: Path) -> int:
    """Write ``res`` as JSON to ``out`` (atomically) and print it."""
    from aid.io import write_text

    text = json.dumps(res, indent=2)
    write_text(text + "\n", out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
