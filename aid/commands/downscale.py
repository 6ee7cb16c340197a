"""``aid downscale`` and ``aid baseline``: one (source, experiment, member, year) job outside Snakemake.

Why derive outputs (and default inputs) from the config: a user re-running one job by hand must
write exactly the files the workflow writes (names from :mod:`aid.naming`), so the checks,
indices and evaluation stages find them. ``--sample`` restricts the job to some samples (e.g. to
re-create one lost file; values are bit-identical to the full run on CPU).
"""

from __future__ import annotations

import argparse
from typing import Any


def _coarse_default(cfg: dict[str, Any], args: argparse.Namespace) -> list[str]:
    from aid import naming
    from aid.config import output_path

    if args.experiment == naming.EVALUATION_EXPERIMENT:
        return [str(output_path(cfg, "reference", "coarse", f"{v}.nc")) for v in cfg["search"]["variables"]]
    return [str(output_path(cfg, "adjusted", args.source, args.experiment, f"{args.member}.nc"))]


def _outputs(cfg: dict[str, Any], args: argparse.Namespace, baseline: bool) -> list[str]:
    from aid import naming
    from aid.errors import ConfigError

    paths = naming.deliverable_paths(cfg, args.source, args.experiment, args.member, args.year, baseline=baseline)
    if not baseline and args.sample:
        unknown = sorted(set(args.sample) - {s for _, s in paths})
        if unknown:
            raise ConfigError(f"--sample {unknown}: outside 1..{cfg['downscale']['n_samples']} (downscale.n_samples).",
                              "pick samples within the configured ensemble.")
        paths = {k: p for k, p in paths.items() if k[1] in set(args.sample)}
    if args.variable:
        paths = {k: p for k, p in paths.items() if k[0] in set(args.variable)}
    return [str(p) for p in paths.values()]


def _run_downscale(args: argparse.Namespace) -> int:
    from aid.config import load_config
    from aid.downscale import downscale_year

    cfg = load_config(args.config)
    args.source = args.source or cfg["search"]["sources"][0]
    checkpoint = args.checkpoint or cfg["model"]["checkpoint"] or f"{cfg['output_dir']}/model/checkpoint.pt"
    downscale_year(cfg, args.coarse or _coarse_default(cfg, args), checkpoint, args.source, args.experiment,
                   args.member, args.year, _outputs(cfg, args, baseline=False), threads=args.threads)
    return 0


def _run_baseline(args: argparse.Namespace) -> int:
    from aid.config import load_config
    from aid.downscale import baseline_year

    cfg = load_config(args.config)
    args.source = args.source or cfg["search"]["sources"][0]
    baseline_year(cfg, args.coarse or _coarse_default(cfg, args), args.source, args.experiment, args.member,
                  args.year, _outputs(cfg, args, baseline=True))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="config YAML (default config/config.yaml)")
    p.add_argument("--coarse", nargs="+", default=None, metavar="FILE",
                   help="bias-adjusted coarse input(s) (default: the workflow's adjusted file, or the coarse "
                        "reference files for --experiment evaluation)")
    p.add_argument("--source", default=None, help="driving source id (default: first of search.sources)")
    p.add_argument("--experiment", default="historical")
    p.add_argument("--member", default="r1i1p1f1")
    p.add_argument("--year", type=int, required=True)
    p.add_argument("--variable", action="append", default=None, help="only this variable (repeatable)")


def register(sub: Any) -> None:
    p = sub.add_parser("downscale", help="diffusion-downscale one year of one member (N samples, CF deliverables)",
                       description="Downscale one (source, experiment, member, year) with the trained diffusion "
                                   "model; write one CORDEX-named NetCDF per (variable, sample).")
    _common(p)
    p.add_argument("--checkpoint", default=None, help="model checkpoint (default: model.checkpoint or the trained one)")
    p.add_argument("--sample", type=int, action="append", default=None,
                   help="only this sample index (repeatable; default all 1..downscale.n_samples)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.set_defaults(func=_run_downscale)

    b = sub.add_parser("baseline", help="bicubic baseline deliverable of one year of one member",
                       description="Upsample the bias-adjusted coarse fields bicubically to 0.25 deg and write them "
                                   "as deliverables with model id aid-bicubic (sample r1).")
    _common(b)
    b.set_defaults(func=_run_baseline)
