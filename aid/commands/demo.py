"""``aid demo-archive``: write the ERA5-derived demo CMIP6 archive and reference (not GCM output)."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from aid.config import load_config
    from aid.demo import write_demo_archive

    cfg = load_config(args.config)
    era5 = args.era5_dir or cfg["demo_archive"]["era5_dir"]
    out_root = Path(args.out_root or Path(cfg["output_dir"]) / "demo-archive")
    manifest = args.manifest or out_root / "manifest.json"
    path = write_demo_archive(cfg, era5, out_root, manifest)
    print(path)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo-archive",
        help="write the demo CMIP6-style archive + 0.25 deg reference DERIVED FROM REAL ERA5 (not GCM output)",
        description=(
            "Write a small CMIP6 DRS tree of GCM-like daily tas/tasmax/tasmin/pr/uas/vas (2 deg, noleap, "
            "0..360 lon, CMIP6 units) and a 0.25 deg reference set, all derived from the real ERA5 sample "
            "files, plus manifest.json. Recipe: aid/demo.py."
        ),
    )
    p.add_argument("--config", default=None, help="config YAML (default config/config.yaml; uses its demo_archive section)")
    p.add_argument("--out-root", default=None, help="output folder (default <output_dir>/demo-archive)")
    p.add_argument("--era5-dir", default=None, help="folder with the ERA5 sample files (default demo_archive.era5_dir)")
    p.add_argument("--manifest", default=None, help="manifest path (default <out-root>/manifest.json)")
    p.set_defaults(func=_run)
