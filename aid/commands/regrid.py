"""``aid regrid``: one fetched GCM variable to the model coarse grid, and ``aid reference``: the
ERA5 reference of one variable on the 0.25 deg domain grid and coarsened to the model grid."""

from __future__ import annotations

import argparse
from typing import Any


def _regrid(args: argparse.Namespace) -> int:
    from aid.config import load_config
    from aid.regrid import regrid_file

    cfg = load_config(args.config)
    print(regrid_file(args.input, cfg, args.out))
    return 0


def _reference(args: argparse.Namespace) -> int:
    from aid.config import load_config, output_path
    from aid.reference import prepare_reference

    cfg = load_config(args.config)
    fine = args.fine or output_path(cfg, "reference", "fine", f"{args.variable}.nc")
    coarse = args.coarse or output_path(cfg, "reference", "coarse", f"{args.variable}.nc")
    for p in prepare_reference(cfg, args.variable, fine, coarse):
        print(p)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "regrid",
        help="regrid one fetched variable to the model's coarse grid (conservative by default)",
        description=(
            "Regrid a fetched (time, lat, lon) NetCDF to coarse_grid(config) with regrid.method/regrid.backend; "
            "keeps the model calendar and the attributes and adds provenance."
        ),
    )
    p.add_argument("input", help="fetched NetCDF (results/fetch/<source>/<experiment>/<member>/<var>.nc)")
    p.add_argument("--config", default=None, help="config YAML (default config/config.yaml)")
    p.add_argument("--out", required=True, help="output NetCDF")
    p.set_defaults(func=_regrid)

    r = sub.add_parser(
        "reference",
        help="ERA5 reference of one variable on the 0.25 deg domain grid and on the model coarse grid",
        description=(
            "Read reference.files[VARIABLE], standardise it, crop it to the 0.25 deg domain grid (fine) and "
            "coarsen the reference around the domain conservatively to the model grid (coarse)."
        ),
    )
    r.add_argument("variable", help="CF variable name (tas tasmax tasmin pr uas vas)")
    r.add_argument("--config", default=None, help="config YAML (default config/config.yaml)")
    r.add_argument("--fine", default=None, help="fine output (default <output_dir>/reference/fine/<var>.nc)")
    r.add_argument("--coarse", default=None, help="coarse output (default <output_dir>/reference/coarse/<var>.nc)")
    r.set_defaults(func=_reference)
