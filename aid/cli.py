"""The ``aid`` command line.

Each stage registers its subcommands from ``aid/commands/<stage>.py`` (a ``register(subparsers)``
function). Heavy imports (torch, xsdba, xclim) happen inside the command functions, so
``aid --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from aid import __version__
from aid.errors import AidError

#: Stage command modules, in pipeline order.
COMMAND_MODULES = (
    "demo",
    "catalog",
    "era5",
    "fetch",
    "regrid",
    "adjust",
    "model",
    "downscale",
    "checks",
    "indices",
    "evaluate",
    "signal",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aid",
        description="CMIP6 -> 0.25 deg regional climate fields and extremes with a diffusion downscaler.",
    )
    parser.add_argument("--version", action="version", version=f"aid {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        modname = f"aid.commands.{name}"
        if importlib.util.find_spec(modname) is None:
            continue
        importlib.import_module(modname).register(sub)
    return parser


def setup_logging(verbosity: int = 0) -> None:
    level = logging.WARNING - 10 * (verbosity + 1)
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except AidError as exc:
        logging.getLogger("aid").error("%s", exc)
        print(f"aid: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
