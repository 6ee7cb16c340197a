"""``aid indices``: extremes indices of one member+sample, of the reference, and ensemble stats.

Why derive paths from the config: a user re-running one member outside Snakemake must read exactly
the files the workflow wrote (names from :mod:`aid.naming`).
"""

from __future__ import annotations

import argparse
import glob
from typing import Any


def _sample_paths(cfg: dict[str, Any], source: str, experiment: str, member: str, sample: int) -> list[str]:
    from aid.naming import deliverable_paths, experiment_years

    return [str(p) for y in experiment_years(cfg, experiment)
            for (v, s), p in deliverable_paths(cfg, source, experiment, member, y).items() if s == sample]


def _run(args: argparse.Namespace) -> int:
    from aid.config import load_config, output_path
    from aid.indices import compute_reference_indices, compute_sample_indices, ensemble_stats

    cfg = load_config(args.config)
    args.source = args.source or cfg["search"]["sources"][0]
    if args.what == "reference":
        paths = [str(output_path(cfg, "reference", "fine", f"{v}.nc")) for v in cfg["search"]["variables"]]
        compute_reference_indices(cfg, paths, args.out or output_path(cfg, "indices", "reference.nc"))
        return 0
    if args.what == "sample":
        run = _sample_paths(cfg, args.source, args.experiment, args.member, args.sample)
        base = [] if args.experiment in ("historical", "evaluation") else _sample_paths(
            cfg, args.source, "historical", args.member, args.sample)
        out = args.out or output_path(cfg, "indices", args.source, args.experiment, args.member, f"r{args.sample}.nc")
        compute_sample_indices(cfg, run, base, args.experiment, out)
        return 0
    root = output_path(cfg, "indices", args.source)
    run = sorted(glob.glob(str(root / args.experiment / "*" / "r*.nc")))
    base = sorted(glob.glob(str(root / "historical" / "*" / "r*.nc")))
    out = args.out or output_path(cfg, "indices", "ensemble", f"{args.source}_{args.experiment}.nc")
    ensemble_stats(cfg, run, base, args.experiment, out)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("indices", help="xclim extremes indices (sample | reference | ensemble)")
    p.add_argument("what", choices=["sample", "reference", "ensemble"])
    p.add_argument("--config", default=None, help="config YAML (default config/config.yaml)")
    p.add_argument("--source", default=None)
    p.add_argument("--experiment", default="historical")
    p.add_argument("--member", default="r1i1p1f1")
    p.add_argument("--sample", type=int, default=1)
    p.add_argument("--out", default=None, help="output NetCDF (default: the workflow's path)")
    p.set_defaults(func=_run)
