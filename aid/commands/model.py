"""``aid train`` and ``aid sample``: the diffusion model outside Snakemake.

Why: training is the one GPU-hungry step; users on an HPC node run it by hand (or under
``torchrun`` for several GPUs) and point ``model.checkpoint`` at the result. ``aid sample``
downscales any coarse file with a checkpoint, for quick looks and for regenerating one member.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

log = logging.getLogger(__name__)


def _run_train(args: argparse.Namespace) -> int:
    from aid.config import load_config, output_path
    from aid.model.train import train_from_config

    cfg = load_config(args.config)
    variables = cfg["search"]["variables"]
    fine = args.fine or [str(output_path(cfg, "reference", "fine", f"{v}.nc")) for v in variables]
    coarse = args.coarse or [str(output_path(cfg, "reference", "coarse", f"{v}.nc")) for v in variables]
    static = args.static or cfg["reference"]["static"]
    out = args.out or str(output_path(cfg, "model", "checkpoint.pt"))
    limit = args.time_limit_minutes * 60 if args.time_limit_minutes else None
    if args.gpus > 1:
        from aid.model.launch import train

        path = train(cfg, fine, coarse, static, out, threads=args.threads, gpus=args.gpus)
    else:
        path = train_from_config(cfg, fine, coarse, static, out, threads=args.threads, time_limit_s=limit)
    log.info("checkpoint written: %s", path)
    return 0


def _noise_stream(args: argparse.Namespace, coarse: Any) -> str:
    """The driving run's noise stream: --source/--experiment/--member, else the input's CMIP6 attributes."""
    from aid.errors import ConfigError
    from aid.model.sampler import noise_stream

    keys = {"source": "source_id", "experiment": "experiment_id", "member": "variant_label"}
    parts = {k: getattr(args, k) or coarse.attrs.get(a) or coarse.attrs.get(f"driving_{a}") for k, a in keys.items()}
    missing = [k for k, v in parts.items() if not v]
    if missing:
        raise ConfigError(
            f"aid sample: cannot tell which driving run {', '.join(args.coarse)} is (no "
            f"{', '.join(keys[k] for k in missing)} attribute); every run needs its own diffusion noise.",
            "pass " + " ".join(f"--{k} NAME" for k in missing) + ".")
    return noise_stream(parts["source"], parts["experiment"], parts["member"])


def _run_sample(args: argparse.Namespace) -> int:
    import xarray as xr

    from aid.io import open_dataset, write_netcdf
    from aid.model.api import Downscaler
    from aid.provenance import provenance_attrs, relpath_or_name
    from aid.regrid import normalise_coords

    dl = Downscaler.load(args.checkpoint, device=args.device)
    if args.lat or args.lon or args.static:
        from aid.grids import fine_grid

        lat = args.lat or dl.training_domain["lat"]
        lon = args.lon or dl.training_domain["lon"]
        grid = fine_grid({"grid": {"fine_resolution": 0.25}, "domain": {"lat": lat, "lon": lon}})
        dl = dl.for_grid(grid.lat.values, grid.lon.values, args.static)
    coarse = xr.merge([normalise_coords(open_dataset(p, chunks=None)) for p in args.coarse], compat="override")
    if args.start or args.end:
        coarse = coarse.sel(time=slice(args.start, args.end))
    samples = args.sample or [1]
    out = dl.sample(coarse, samples=samples, seed=args.seed, steps=args.steps, churn=args.churn, rho=args.rho,
                    progress=True, stream=_noise_stream(args, coarse), tile=args.tile)
    out.attrs.update(provenance_attrs("sample", checkpoint=relpath_or_name(args.checkpoint),
                                      checkpoint_sha256=dl.checkpoint_sha256))
    write_netcdf(out, args.out)
    return 0


def register(sub: Any) -> None:
    t = sub.add_parser("train", help="train the residual EDM diffusion downscaler on the reference pairs",
                       description="Train the diffusion model on (0.25 deg reference, coarsened reference) pairs of "
                                   "model.train.years and write a hashed checkpoint. Resumes from <out>.last. "
                                   "Under torchrun with several GPUs it trains with DDP.")
    t.add_argument("--config", default=None, help="config YAML (default config/config.yaml)")
    t.add_argument("--fine", nargs="+", default=None, metavar="FILE", help="fine reference files (default: results/reference/fine/<var>.nc)")
    t.add_argument("--coarse", nargs="+", default=None, metavar="FILE", help="coarse reference files (default: results/reference/coarse/<var>.nc)")
    t.add_argument("--static", default=None, help="static z/lsm file (default: reference.static)")
    t.add_argument("--out", default=None, help="checkpoint path (default: <output_dir>/model/checkpoint.pt)")
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    t.add_argument("--gpus", type=int, default=1, help="GPUs of this node: > 1 re-launches under torchrun (DDP)")
    t.add_argument("--time-limit-minutes", type=float, default=None, help="stop training after this wall time")
    t.set_defaults(func=_run_train)

    s = sub.add_parser("sample", help="downscale coarse NetCDF file(s) with a checkpoint (N members)",
                       description="Draw diffusion samples for every time step of the coarse file(s) (model coarse "
                                   "grid, all trained variables) and write one NetCDF (sample, time, lat, lon).")
    s.add_argument("--checkpoint", required=True, help="model checkpoint (.pt)")
    s.add_argument("--coarse", nargs="+", required=True, metavar="FILE", help="coarse input file(s)")
    s.add_argument("--out", required=True, help="output NetCDF")
    s.add_argument("--sample", type=int, action="append", default=None, help="sample index (repeatable; default 1)")
    s.add_argument("--seed", type=int, default=2024)
    for k, a in (("source", "source_id"), ("experiment", "experiment_id"), ("member", "variant_label")):
        s.add_argument(f"--{k}", default=None,
                       help=f"driving {k} (default: the input's {a} attribute); seeds the run's own noise stream")
    s.add_argument("--steps", type=int, default=6, help="Heun steps (2*steps-1 network evaluations)")
    s.add_argument("--churn", type=float, default=0.0, help="S_churn (0 = deterministic ODE)")
    s.add_argument("--rho", type=float, default=7.0)
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    s.add_argument("--start", default=None, help="first time (e.g. 2013-01-01)")
    s.add_argument("--end", default=None, help="last time")
    s.add_argument("--lat", type=float, nargs=2, default=None, metavar=("LAT0", "LAT1"),
                   help="0.25 deg cell centres of the target grid (default: the training grid)")
    s.add_argument("--lon", type=float, nargs=2, default=None, metavar=("LON0", "LON1"),
                   help="0.25 deg cell centres of the target grid, -180..180 (default: the training grid)")
    s.add_argument("--static", default=None,
                   help="global static z/lsm file for the target grid (default: the one recorded at training)")
    s.add_argument("--tile", type=int, default=None, help="tile size on grids larger than it (default: training patch)")
    s.set_defaults(func=_run_sample)
