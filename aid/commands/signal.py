"""``aid signal``: the change signal of raw, adjusted and downscaled runs, inputs derived from the config."""

from __future__ import annotations

import argparse
from typing import Any

#: The experiment every scenario's change is taken against (the workflow's HIST).
REFERENCE_EXPERIMENT = "historical"


def _run(args: argparse.Namespace) -> int:
    from aid import naming
    from aid.config import load_config, output_path
    from aid.signal import signal_files

    cfg = load_config(args.config)
    variables = cfg["search"]["variables"]
    members = cfg["search"]["members"]
    n = int(cfg["downscale"]["n_samples"])

    def files(exp: str) -> dict[str, list[str]]:
        down = [str(p) for m in members for y in naming.experiment_years(cfg, exp)
                for (v, s), p in naming.deliverable_paths(cfg, args.source, exp, m, y).items() if s <= n]
        return {"raw": [str(output_path(cfg, "regrid", args.source, exp, m, f"{v}.nc")) for m in members for v in variables],
                "adjusted": [str(output_path(cfg, "adjusted", args.source, exp, f"{m}.nc")) for m in members],
                "downscaled": down}

    ref, scen = files(REFERENCE_EXPERIMENT), files(args.experiment)
    out = output_path(cfg, "signal")
    for p in signal_files(ref["raw"], scen["raw"], ref["adjusted"], scen["adjusted"], ref["downscaled"],
                          scen["downscaled"], cfg, args.source, args.experiment, REFERENCE_EXPERIMENT,
                          out / f"{args.source}_{args.experiment}.csv", out / f"{args.source}_{args.experiment}.png"):
        print(p)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "signal",
        help="change signal (scenario minus historical) of the raw, adjusted and downscaled runs",
        description=("Per variable, season and statistic (mean, signal.quantiles): the change of the raw GCM, "
                     "the bias-adjusted GCM and the downscaled ensemble; writes <output_dir>/signal/<source>_<experiment>.{csv,png}."),
    )
    p.add_argument("--config", default=None, help="config YAML (default config/config.yaml)")
    p.add_argument("--source", required=True, help="driving source_id")
    p.add_argument("--experiment", required=True, help="scenario experiment (e.g. ssp245)")
    p.set_defaults(func=_run)
