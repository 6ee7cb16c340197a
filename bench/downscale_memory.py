"""Benchmark: peak memory of downscaling 1 year vs 3 years (must not grow: day batches stream).

    python bench/downscale_memory.py [--samples 3] [--steps 1] [--batch-days 32] [--train-steps 2]

Builds the derived-from-real-ERA5 case of tests/test_deliverables.py on the default 32 x 40
domain (DERIVED data: real ERA5 UK temperature, precipitation and wind fields repeated over whole
years), trains a checkpoint of the **default** model size for a few steps (the weights' quality does
not matter for memory, their size does), then runs, each in a fresh process under
``/usr/bin/time -v``:

* ``one_year``: one downscale job (``aid.downscale.downscale_year``) of 2012 from a 1-year input;
* ``three_years``: the jobs of 2012, 2013 and 2014 back to back in one process, from a 3-year input
  (three times the input, three times the output volume).

If the sampler's batches are streamed to disk, both peaks are the same (imports + model + one batch).
Writes ``bench/out/downscale_memory.json`` and prints it. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
YEARS = [2012, 2013, 2014]
log = logging.getLogger("bench.downscale_memory")


def _time_binary() -> str:
    """``/usr/bin/time`` (GNU time, for ``-v``); installed with apt-get when missing."""
    if not Path("/usr/bin/time").exists():
        log.info("/usr/bin/time missing: apt-get install -y time")
        subprocess.run(["apt-get", "install", "-y", "time"], check=True, stdout=subprocess.DEVNULL)
    return "/usr/bin/time"


def parse_time_v(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        out["peak_rss_mb"] = round(int(m.group(1)) / 1024, 1)
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if m:
        secs = 0.0
        for p in m.group(1).split(":"):
            secs = secs * 60 + float(p)
        out["wall_s"] = round(secs, 1)
    return out


def prepare(work: Path, args: argparse.Namespace) -> dict:
    """Config, derived inputs (1-year and 3-year adjusted files) and a default-size checkpoint."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_deliverables import derived_fine, write_coarse  # the tests' derived-from-ERA5 case

    from aid.config import deep_update, resolve_placeholders, validate

    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    over = {
        "output_dir": str(work / "results"),
        "model": {"size": args.size, "train": {"steps": args.train_steps, "batch_size": 4, "warmup_steps": 0,
                                               "years": [YEARS[0], YEARS[0]]}},
        "downscale": {"n_samples": args.samples, "steps": args.steps, "batch_days": args.batch_days, "device": "cpu"},
    }
    cfg = resolve_placeholders(validate(deep_update(base, over)))
    cfg_path = work / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    fine3 = derived_fine(cfg, YEARS, calendar="noleap")
    one = write_coarse(cfg, fine3.sel(time=fine3.time.dt.year == YEARS[0]), work / "adjusted_1y.nc")
    three = write_coarse(cfg, fine3, work / "adjusted_3y.nc")
    # training pairs: fine reference and its coarsening, one file per variable (first year)
    fine1 = fine3.sel(time=fine3.time.dt.year == YEARS[0])
    ref_fine, ref_coarse = work / "reference" / "fine", work / "reference" / "coarse"
    ref_fine.mkdir(parents=True, exist_ok=True)
    enc = {"time": {"units": "days since 1950-01-01", "calendar": "noleap"}}
    for v in fine1.data_vars:
        fine1[[v]].to_netcdf(ref_fine / f"{v}.nc", encoding=enc)
    coarse_files = write_coarse(cfg, fine1, ref_coarse, per_variable=True)
    ckpt = work / "checkpoint.pt"
    from aid.model.train import train_from_config

    t0 = time.time()
    train_from_config(config=cfg, fine_paths=[str(ref_fine / f"{v}.nc") for v in fine1.data_vars],
                      coarse_paths=coarse_files, static_path=str(Path(cfg["reference"]["static"])),
                      checkpoint_out=str(ckpt), threads=2)
    log.info("trained %s checkpoint (%d steps) in %.0f s", args.size, args.train_steps, time.time() - t0)
    return {"config": str(cfg_path), "checkpoint": str(ckpt), "one": one, "three": three}


def job(args: argparse.Namespace) -> int:
    """Child process: downscale ``--years`` from ``--coarse`` (each year one job, as the workflow does)."""
    from aid import naming
    from aid.config import load_config
    from aid.downscale import downscale_year

    cfg = load_config(args.config)
    for y in args.years:
        out = naming.deliverable_paths(cfg, "BENCH", "historical", "r1i1p1f1", y)
        downscale_year(cfg, args.coarse, args.checkpoint, "BENCH", "historical", "r1i1p1f1", y,
                       [str(p) for p in out.values()], threads=args.threads)
    return 0


def measure(prep: dict, coarse: list[str], years: list[int], threads: int) -> dict:
    cmd = [_time_binary(), "-v", sys.executable, __file__, "_job", "--config", prep["config"], "--checkpoint",
           prep["checkpoint"], "--threads", str(threads), "--coarse", *coarse, "--years", *map(str, years)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"downscale job failed:\n{res.stderr[-4000:]}")
    return {"years": years, **parse_time_v(res.stderr)}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_job":
        ap = argparse.ArgumentParser()
        ap.add_argument("_job")
        ap.add_argument("--config", required=True)
        ap.add_argument("--checkpoint", required=True)
        ap.add_argument("--coarse", nargs="+", required=True)
        ap.add_argument("--years", nargs="+", type=int, required=True)
        ap.add_argument("--threads", type=int, default=2)
        logging.basicConfig(level=logging.WARNING)
        return job(ap.parse_args())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=3, help="downscale.n_samples (default 3, as configured)")
    ap.add_argument("--steps", type=int, default=1, help="sampler Heun steps (default 1: memory does not depend on it)")
    ap.add_argument("--batch-days", type=int, default=32, help="downscale.batch_days (default 32, as configured)")
    ap.add_argument("--train-steps", type=int, default=2, help="training steps of the throwaway checkpoint")
    ap.add_argument("--size", default="default", choices=["tiny", "default", "paper"], help="model size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "downscale_memory.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = Path(tempfile.mkdtemp(prefix="aid-bench-downscale-"))
    try:
        prep = prepare(work, args)
        one = measure(prep, prep["one"], YEARS[:1], args.threads)
        log.info("1 year: %s", one)
        three = measure(prep, prep["three"], YEARS, args.threads)
        log.info("3 years: %s", three)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    import torch

    result = {
        "what": "peak RSS of downscale jobs, 1 year vs 3 years in one process (streamed day batches)",
        "data": "DERIVED from real ERA5 (UK t2m 2019-03, tp, u10/v10) on the default 32 x 40 domain, noleap",
        "settings": {"model_size": args.size, "n_samples": args.samples, "sampler_steps": args.steps,
                     "batch_days": args.batch_days, "variables": 6, "threads": args.threads},
        "one_year": one,
        "three_years": three,
        "peak_rss_ratio_3y_over_1y": round(three["peak_rss_mb"] / one["peak_rss_mb"], 3),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
