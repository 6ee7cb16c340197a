"""``aid catalog build``: an intake-esm ESM collection (JSON + CSV) for a CMIP6 DRS tree."""

from __future__ import annotations

import argparse
from typing import Any


def _build(args: argparse.Namespace) -> int:
    from aid.catalog import build_catalog

    print(build_catalog(args.root, args.out))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("catalog", help="intake-esm catalogs of CMIP6 DRS trees (build)",
                       description="Work with intake-esm ESM collection catalogs.")
    csub = p.add_subparsers(dest="catalog_command", metavar="SUBCOMMAND")
    csub.required = True
    b = csub.add_parser(
        "build",
        help="scan a CMIP6 DRS tree and write CATALOG.json + CATALOG.csv",
        description=(
            "Scan ROOT (<activity>/<institution>/<source>/<experiment>/<member>/<table>/<variable>/<grid>/"
            "<version>/<file>.nc) and write an intake-esm ESM collection: JSON plus a CSV beside it with "
            "columns activity_id ... version, time_range (from each file's time axis), frequency (from the "
            "path's table), path."
        ),
    )
    b.add_argument("root", help="top of the CMIP6 DRS tree (the folder holding CMIP/, ScenarioMIP/, ...)")
    b.add_argument("--out", required=True, help="catalog JSON to write (the CSV goes beside it)")
    b.set_defaults(func=_build)
