"""Benchmark: wall time and peak memory of the default run, end to end and per stage.

    python bench/pipeline.py [--out-dir bench/out/pipeline-run] [--cores 2] [--configfile extra.yaml]

Runs the real default workflow (`snakemake --cores N`) in a fresh output directory under
`/usr/bin/time -v`, then aggregates the per-job `benchmark:` files Snakemake writes
(`<output_dir>/benchmarks/**.tsv`: wall seconds and max RSS per job) by rule. Writes
`bench/out/pipeline.json` and prints it. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def machine_info() -> dict:
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }


def parse_time_v(text: str) -> dict:
    out = {}
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if m:
        out["peak_rss_mb_snakemake_tree_max"] = int(m.group(1)) / 1024
    m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    if m:
        parts = [float(p) for p in m.group(1).split(":")]
        secs = 0.0
        for p in parts:
            secs = secs * 60 + p
        out["wall_s_time_v"] = secs
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="bench/out/pipeline-run", help="fresh output_dir for the run")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--configfile", action="append", default=[], help="extra config overlays")
    ap.add_argument("--json", default="bench/out/pipeline.json")
    args = ap.parse_args()

    out_dir = ROOT / args.out_dir
    if out_dir.exists():
        shutil.rmtree(out_dir)
    time_bin = shutil.which("time") or "/usr/bin/time"
    cmd = [
        time_bin, "-v",
        sys.executable, "-m", "snakemake", "--cores", str(args.cores),
        "--configfile", "config/config.yaml", *args.configfile,
        "--config", f"output_dir={out_dir}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (ROOT / "bench/out").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench/out/pipeline.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        print(f"pipeline failed (rc={proc.returncode}); log in bench/out/pipeline.log", file=sys.stderr)
        return proc.returncode

    # The report is part of README command 1 (scripts/demo.sh): time it too.
    t1 = time.perf_counter()
    rep = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config/config.yaml",
                          *args.configfile, "--config", f"output_dir={out_dir}", "--report", str(out_dir / "report.html")],
                         cwd=ROOT, capture_output=True, text=True)
    report_wall = time.perf_counter() - t1
    if rep.returncode != 0:
        print(rep.stderr[-4000:], file=sys.stderr)
        return rep.returncode

    per_rule: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "wall_s_sum": 0.0, "max_rss_mb": 0.0})
    for tsv in sorted((out_dir / "benchmarks").rglob("*.tsv")):
        rel = tsv.relative_to(out_dir / "benchmarks")
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        df = pd.read_csv(tsv, sep="\t")
        r = per_rule[rule]
        r["jobs"] += 1
        r["wall_s_sum"] += float(df["s"].iloc[0])
        rss = pd.to_numeric(df["max_rss"], errors="coerce").iloc[0]
        if pd.notna(rss):
            r["max_rss_mb"] = max(r["max_rss_mb"], float(rss))
    result = {
        "benchmark": "pipeline",
        "command": " ".join(cmd[2:]),
        "machine": machine_info(),
        "end_to_end_wall_s": round(wall, 1),
        "report_wall_s": round(report_wall, 1),
        "pipeline_plus_report_wall_s": round(wall + report_wall, 1),
        **parse_time_v(proc.stderr),
        "per_rule": {k: {kk: round(vv, 2) if isinstance(vv, float) else vv for kk, vv in v.items()} for k, v in per_rule.items()},
        "goal_end_to_end_s": 600,
    }
    result["goal_met"] = result["pipeline_plus_report_wall_s"] <= 600
    Path(ROOT / args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
