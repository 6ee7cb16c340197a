"""``aid fetch``: one variable of one (source, experiment, member) from an intake-esm catalog, and
``aid check-fetch``: the completeness gate over the fetched files."""

from __future__ import annotations

import argparse
from typing import Any


def _catalog(cfg: dict[str, Any], given: str | None) -> str:
    from aid.config import output_path

    return given or cfg["catalog"]["path"] or str(output_path(cfg, "catalog", "catalog.json"))


def _fetch(args: argparse.Namespace) -> int:
    from aid.config import load_config, output_path
    from aid.fetch import fetch_dataset

    cfg = load_config(args.config)
    source = args.source or cfg["search"]["sources"][0]
    out = args.out or output_path(cfg, "fetch", source, args.experiment, args.member, f"{args.variable}.nc")
    print(fetch_dataset(_catalog(cfg, args.catalog), cfg, source, args.experiment, args.member, args.variable, out))
    return 0


def _check(args: argparse.Namespace) -> int:
    from aid.config import load_config, output_path
    from aid.fetch import check_completeness

    cfg = load_config(args.config)
    source = args.source or cfg["search"]["sources"][0]
    base = output_path(cfg, "fetch", source, args.experiment, args.member)
    paths = args.files or [str(base / f"{v}.nc") for v in cfg["search"]["variables"]]
    print(check_completeness(paths, cfg, source, args.experiment, args.member, args.out or base / "completeness.json"))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fetch",
        help="search an intake-esm catalog, standardise and crop one variable to a CF NetCDF",
        description=(
            "Search any intake-esm catalog by source/experiment/member/variable (plus search.table_id and "
            "search.frequency from the config), keep the configured years and the domain plus halo, "
            "standardise names/units/longitudes/time stamps and write one CF NetCDF with provenance."
        ),
    )
    p.add_argument("--catalog", default=None, help="ESM collection JSON (default: config catalog.path or <output_dir>/catalog/catalog.json)")
    p.add_argument("--config", default=None, help="config YAML (default config/config.yaml)")
    p.add_argument("--source", default=None, help="source_id (default: first of search.sources)")
    p.add_argument("--experiment", default="historical", help="experiment_id (its years come from search.experiments)")
    p.add_argument("--member", default="r1i1p1f1", help="member_id")
    p.add_argument("--variable", default="tas", help="variable_id (tas tasmax tasmin pr uas vas)")
    p.add_argument("--out", default=None, help="output NetCDF (default: the workflow's path)")
    p.set_defaults(func=_fetch)

    c = sub.add_parser(
        "check-fetch",
        help="completeness check of fetched files (coverage, all-NaN days, physical bounds) -> JSON",
        description="Check the fetched files of one (source, experiment, member) and write a JSON summary; fails with the problems found.",
    )
    c.add_argument("--config", default=None, help="config YAML (default config/config.yaml)")
    c.add_argument("--source", default=None, help="source_id (default: first of search.sources)")
    c.add_argument("--experiment", default="historical")
    c.add_argument("--member", default="r1i1p1f1")
    c.add_argument("--out", default=None, help="summary JSON (default: the workflow's completeness.json)")
    c.add_argument("files", nargs="*", help="fetched files (default: the workflow's files for search.variables)")
    c.set_defaults(func=_check)
