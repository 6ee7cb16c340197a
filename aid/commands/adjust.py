"""``aid adjust train`` / ``aid adjust apply``: xsdba bias adjustment against the coarse reference."""

from __future__ import annotations

import argparse
from typing import Any


def _train(args: argparse.Namespace) -> int:
    from aid.adjust import train_adjustment_files
    from aid.config import load_config

    cfg = load_config(args.config)
    print(train_adjustment_files(args.hist, args.ref, cfg, args.out))
    return 0


def _apply(args: argparse.Namespace) -> int:
    from aid.adjust import adjust_files
    from aid.config import load_config

    cfg = load_config(args.config)
    print(adjust_files(args.sim, args.trained, cfg, args.out))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "adjust",
        help="bias adjustment (xsdba): train factors on the reference period, apply them to a run",
        description="Train per-variable xsdba adjustments (adjust.methods) and apply them to every variable of a run.",
    )
    s = p.add_subparsers(dest="adjust_command", metavar="{train,apply}")
    s.required = True
    t = s.add_parser(
        "train",
        help="train adjustment factors of one (source, member) on adjust.reference_period",
        description=(
            "Train the configured method per variable (QDM/DQM/EQM, kind +/*, group, nquantiles) with the coarse "
            "reference as target and the regridded historical run as model; both converted to adjust.calendar."
        ),
    )
    t.add_argument("--config", default=None, help="config YAML (default config/config.yaml)")
    t.add_argument("--hist", nargs="+", required=True, help="regridded historical files, one per variable")
    t.add_argument("--ref", nargs="+", required=True, help="coarse reference files, one per variable")
    t.add_argument("--out", required=True, help="adjustment-factors NetCDF")
    t.set_defaults(func=_train)
    a = s.add_parser(
        "apply",
        help="apply trained factors to all variables of one (source, experiment, member)",
        description="Adjust every variable, enforce tasmin <= tas <= tasmax and pr >= 0, write one dataset in the model calendar.",
    )
    a.add_argument("--config", default=None, help="config YAML (default config/config.yaml)")
    a.add_argument("--trained", required=True, help="adjustment-factors NetCDF from `aid adjust train`")
    a.add_argument("--sim", nargs="+", required=True, help="regridded files of the run, one per variable")
    a.add_argument("--out", required=True, help="adjusted NetCDF")
    a.set_defaults(func=_apply)
