"""Day-to-day coherence of a run's downscaled evaluation ensemble against the reference.

One command (``python bench/coherence.py [--results DIR] [--config FILE]``): writes
``bench/out/coherence.json`` and prints it. Reads the evaluation run's deliverables of the
config's ``evaluation.period`` and the run's 0.25 deg reference (``<results>/reference/fine``) and
reports, per variable, :func:`aid.evaluate.coherence.coherence` (lag-1 autocorrelation of the fine-
scale residual; warm / dry / wet mean spell lengths; ensemble vs reference, relative difference).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "results"), help="the run's output_dir")
    ap.add_argument("--config", default=None, help="the run's config (default: config/config.yaml)")
    ap.add_argument("--out", default=str(OUT / "coherence.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from aid.config import load_config
    from aid.evaluate.coherence import coherence_of_run
    from aid.naming import EVALUATION_EXPERIMENT, EVALUATION_MEMBER, deliverable_paths

    cfg = load_config(args.config, overrides={"output_dir": args.results})
    y0, y1 = (int(y) for y in cfg["evaluation"]["period"])
    ref_name = cfg["reference"]["name"]
    files = [str(p) for y in range(y0, y1 + 1)
             for p in deliverable_paths(cfg, ref_name, EVALUATION_EXPERIMENT, EVALUATION_MEMBER, y).values()]
    missing = [p for p in files if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} evaluation-run deliverables missing, e.g. {missing[0]}; run the "
                                "default pipeline first or pass --results")
    reference = [str(Path(args.results) / "reference" / "fine" / f"{v}.nc") for v in cfg["search"]["variables"]]
    res = {"period": [y0, y1], "results": str(args.results),
           "variables": coherence_of_run(files, reference, [y0, y1], float(cfg["grid"]["coarse_resolution"]))}
    text = json.dumps(res, indent=2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
