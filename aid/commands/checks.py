"""``aid check``: physical checks of one job's deliverables, paths derived from the config."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from aid import naming
    from aid.checks import check_job
    from aid.config import load_config, output_path

    cfg = load_config(args.config)
    source = args.source or cfg["search"]["sources"][0]
    down = [str(p) for p in naming.deliverable_paths(cfg, source, args.experiment, args.member, args.year).values()]
    base = [] if args.no_baseline else [
        str(p) for p in naming.deliverable_paths(cfg, source, args.experiment, args.member, args.year, baseline=True).values()
    ]
    out = args.out or output_path(cfg, "checks", source, args.experiment, args.member, f"{args.year}.json")
    report = check_job(cfg, down, base, out)
    print(f"checks passed: {report['n_files']} files -> {out}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="physical checks of one job's deliverables (fails on a violation)",
                       description="NaN, pr >= 0, tasmin <= tas <= tasmax, physical bounds, time continuity and "
                                   "day count of one (source, experiment, member, year); writes a JSON report.")
    p.add_argument("--config", default=None, help="config YAML (default config/config.yaml)")
    p.add_argument("--source", default=None, help="driving source id (default: first of search.sources)")
    p.add_argument("--experiment", default="historical")
    p.add_argument("--member", default="r1i1p1f1")
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--no-baseline", action="store_true", help="check the diffusion deliverables only")
    p.add_argument("--out", default=None, help="JSON report (default: the workflow's path)")
    p.set_defaults(func=_run)
