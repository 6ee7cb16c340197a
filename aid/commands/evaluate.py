"""``aid evaluate``: the evaluation stage outside Snakemake, inputs derived from the config."""

from __future__ import annotations

import argparse
import glob
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from aid import naming
    from aid.config import load_config, output_path
    from aid.evaluate.run import evaluate

    cfg = load_config(args.config)
    variables = cfg["search"]["variables"]
    ref = cfg["reference"]["name"]
    years = naming.experiment_years(cfg, naming.EVALUATION_EXPERIMENT)
    down, base = [], []
    if cfg["downscale"]["evaluation_run"]:
        for y in years:
            down += map(str, naming.deliverable_paths(cfg, ref, naming.EVALUATION_EXPERIMENT, naming.EVALUATION_MEMBER, y).values())
            base += map(str, naming.deliverable_paths(cfg, ref, naming.EVALUATION_EXPERIMENT, naming.EVALUATION_MEMBER, y,
                                                      baseline=True).values())
    gcm = sorted(p for s in cfg["search"]["sources"] for p in glob.glob(str(output_path(cfg, "indices", s, "historical", "*", "r*.nc"))))
    out = output_path(cfg, "evaluation")
    evaluate(
        cfg,
        reference=[str(output_path(cfg, "reference", "fine", f"{v}.nc")) for v in variables],
        coarse=[str(output_path(cfg, "reference", "coarse", f"{v}.nc")) for v in variables],
        downscaled=down, baseline=base,
        reference_indices=str(output_path(cfg, "indices", "reference.nc")), gcm_indices=gcm,
        metrics_out=out / "metrics.json", tables_dir=out / "tables", figures_dir=out / "figures",
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="score the evaluation run and GCM indices against the reference")
    p.add_argument("--config", default=None, help="config YAML (default config/config.yaml)")
    p.set_defaults(func=_run)
