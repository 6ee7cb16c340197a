"""Benchmark: training memory must not grow with the number of years; streaming throughput.

    python bench/train_memory.py --years 1 20 [--size 128 160] [--steps 40] [--baseline-repo ../main]

Writes a DERIVED archive (real ERA5 UK t2m, March 2019, hourly: each of its 744 fields becomes
one "day", mirror-tiled to the requested domain, plus a seasonal cycle of +-8 K; lat 40 N.., lon
-20 E..; daily steps from 2000-01-01) of max(--years) years as one fine and one coarse (x8,
conservative) reference file, then trains the ``tiny`` model in a fresh process for each entry of
``--years`` (``model.train.years`` selects the period from the *same* files) and records peak RSS
(VmHWM), time to the first step (process start -> first optimiser step, including opening the
archive, statistics and the validation set) and training samples/s (time in training steps only,
after the first; ``loop_samples_per_s``: the whole loop, validation included).

Throughput on a small default-like archive (1 year, 32 x 40 cells, the default domain's size):
the streaming loader with a small cache (``cache_mb`` 1: 3 of 11 units resident, reads during
training) against the same code with a full cache (the in-memory case), and, with
``--baseline-repo``, the in-memory loader of another checkout (e.g. main before the streaming
loader) on the same files.

Writes ``bench/out/train_memory.json`` ({"years", "peak_rss_mb", "samples_per_s", ...}) and
prints it. Not a test: the numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ERA5 = ROOT.parent / "shared" / "data" / "era5"
if not ERA5.exists():
    ERA5 = Path("/work/shared/data/era5")
log = logging.getLogger("bench.train_memory")
Y0 = 2000


def _cfg(h: int, w: int, years: int, steps: int, batch: int, cache_mb: float) -> dict:
    from aid.config import fill_defaults

    lat0, lon0 = 40.0, -20.0
    return fill_defaults({
        "search": {"variables": ["tas"]},
        "domain": {"id": "DERIVED", "lat": [lat0, lat0 + 0.25 * (h - 1)], "lon": [lon0, lon0 + 0.25 * (w - 1)]},
        "grid": {"coarse_resolution": 2.0, "fine_resolution": 0.25},
        "regrid": {"method": "conservative", "backend": "xarray-regrid"},
        "reference": {"static": str(ERA5 / "era5-static-z-lsm-global.nc")},
        "model": {"size": "tiny", "upsample": "bicubic", "pr_transform": "log1p", "lat_weighting": True,
                  "prior": None, "tune_sampler": False,
                  "train": {"years": [Y0, Y0 + years - 1], "steps": steps, "batch_size": batch, "lr": 1e-3,
                            "warmup_steps": 5, "ema_decay": 0.99, "seed": 0, "crop": 64, "cache_mb": cache_mb,
                            "sigma_relative": False}},
    })


def write_archive(d: Path, h: int, w: int, years: int) -> tuple[Path, Path]:
    """The DERIVED fine/coarse reference files (see module docstring), written year by year."""
    import netCDF4
    import pandas as pd
    import xarray as xr

    from aid.regrid import coarsen, normalise_coords

    fine_p, coarse_p = d / f"fine_tas_{h}x{w}_{years}y.nc", d / f"coarse_tas_{h}x{w}_{years}y.nc"
    if fine_p.exists() and coarse_p.exists():
        return fine_p, coarse_p
    src = xr.open_dataset(ERA5 / "era5-2mt-2019-03-uk.grib", engine="cfgrib", backend_kwargs={"indexpath": ""})
    src = normalise_coords(src[["t2m"]].drop_vars(["valid_time", "number", "step", "surface"], errors="ignore"))
    uk = src.t2m.transpose("time", "lat", "lon").values.astype(np.float32)  # (744, 33, 49)
    ry = np.concatenate([np.arange(33), np.arange(33)[::-1]])  # mirror tiling: no jumps at the joins
    rx = np.concatenate([np.arange(49), np.arange(49)[::-1]])
    rows, cols = ry[np.arange(h) % len(ry)], rx[np.arange(w) % len(rx)]
    cfg = _cfg(h, w, years, 1, 1, 1)
    lat = np.round(cfg["domain"]["lat"][0] + 0.25 * np.arange(h), 6)
    lon = np.round(cfg["domain"]["lon"][0] + 0.25 * np.arange(w), 6)
    times = pd.date_range(f"{Y0}-01-01", periods=365 * years, freq="D")
    units = f"days since {Y0}-01-01"
    tmp_f, tmp_c = fine_p.with_suffix(".part"), coarse_p.with_suffix(".part")
    with netCDF4.Dataset(tmp_f, "w") as nf, netCDF4.Dataset(tmp_c, "w") as nc:
        for ds_, la, lo in ((nf, lat, lon), (nc, None, None)):
            ds_.createDimension("time", None)
            tv = ds_.createVariable("time", "f8", ("time",))
            tv.units, tv.calendar = units, "standard"
            ds_.title = "DERIVED from real ERA5 t2m (UK, March 2019), tiled and repeated; not observations"
        nf.createDimension("lat", h)
        nf.createDimension("lon", w)
        nf.createVariable("lat", "f8", ("lat",))[:] = lat
        nf.createVariable("lon", "f8", ("lon",))[:] = lon
        fv = nf.createVariable("tas", "f4", ("time", "lat", "lon"), chunksizes=(16, h, w))
        fv.units = "K"
        cv = None
        for y in range(years):
            idx = np.arange(365 * y, 365 * (y + 1))
            season = 8.0 * np.sin(2 * np.pi * (idx % 365) / 365.0 - np.pi / 2)
            block = uk[idx % 744][:, rows][:, :, cols] + season[:, None, None].astype(np.float32)
            fine = xr.Dataset({"tas": (("time", "lat", "lon"), block, {"units": "K"})},
                              coords={"time": times[idx], "lat": lat, "lon": lon})
            coarse = coarsen(fine, cfg).load()
            if cv is None:
                nc.createDimension("lat", coarse.sizes["lat"])
                nc.createDimension("lon", coarse.sizes["lon"])
                nc.createVariable("lat", "f8", ("lat",))[:] = coarse.lat.values
                nc.createVariable("lon", "f8", ("lon",))[:] = coarse.lon.values
                cv = nc.createVariable("tas", "f4", ("time", "lat", "lon"))
                cv.units = "K"
            t = netCDF4.date2num(times[idx].to_pydatetime(), units, "standard")
            nf["time"][idx] = t
            nc["time"][idx] = t
            fv[idx] = block
            cv[idx] = coarse.tas.transpose("time", "lat", "lon").values.astype(np.float32)
            log.info("derived archive %dx%d: year %d/%d written", h, w, y + 1, years)
    os.replace(tmp_f, fine_p)
    os.replace(tmp_c, coarse_p)
    return fine_p, coarse_p


def child(spec: dict) -> dict:
    """Train once in this (fresh) process; peak RSS, time to first step, samples/s."""
    t_start = float(spec["t_start"])
    sys.path.insert(0, spec["repo"])
    import torch

    torch.set_num_threads(1)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logging.getLogger("aid").addHandler(Keep())
    logging.getLogger("aid").setLevel(logging.INFO)
    from aid.model.train import train_from_config

    t0 = time.monotonic()
    train_from_config(spec["cfg"], [spec["fine"]], [spec["coarse"]], spec["cfg"]["reference"]["static"],
                      spec["out"], threads=1)
    wall = time.monotonic() - t0
    first = next((r for r in records if r.msg.startswith("first training step after")), None)
    done = next(r for r in records if r.msg.startswith("training done"))
    steps, loop_s = int(done.args[0]), float(done.args[1])
    batch = int(spec["cfg"]["model"]["train"]["batch_size"])
    loop_start = done.created - loop_s  # wall clock of the training loop's start
    timed = next((r for r in records if r.msg.startswith("training steps:")), None)
    if timed is not None:  # steps only (no validation, no checkpoint writes), after the first
        n_steps, step_s, first_s = int(timed.args[0]), float(timed.args[1]), float(timed.args[2])
        rate = (n_steps - 1) * batch / max(step_s - first_s, 1e-9)
    else:  # a checkout without that log line: the whole loop
        rate = steps * batch / loop_s
    hwm = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
               if line.startswith("VmHWM"))
    return {"peak_rss_mb": round(hwm / 1024, 1), "samples_per_s": round(rate, 2), "steps": steps,
            "loop_samples_per_s": round(steps * batch / loop_s, 2),
            "time_to_first_step_s": round(first.created - t_start, 2) if first is not None else None,
            "process_start_to_loop_s": round(loop_start - t_start, 2), "wall_s": round(wall, 2)}


def run_child(repo: Path, cfg: dict, fine: Path, coarse: Path, work: Path, name: str) -> dict:
    spec = {"repo": str(repo), "cfg": cfg, "fine": str(fine), "coarse": str(coarse), "out": str(work / f"{name}.pt"),
            "t_start": time.time()}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{name}: training failed:\n{res.stderr[-4000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    log.info("%s: %s", name, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--years", type=int, nargs="+", default=[1, 20])
    ap.add_argument("--size", type=int, nargs=2, default=[128, 160], metavar=("H", "W"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cache-mb", type=float, default=64.0, help="training cache of the memory runs")
    ap.add_argument("--baseline-repo", default=None, help="another checkout's in-memory loader, for throughput")
    ap.add_argument("--work", default=None, help="folder for the derived archive (default: a temporary one)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sys.path.insert(0, str(ROOT))
    work = Path(args.work or tempfile.mkdtemp(prefix="aid-train-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    h, w = args.size
    big = max(args.years)
    fine, coarse = write_archive(work, h, w, big)
    runs = {}
    for y in args.years:
        runs[f"{y}y"] = run_child(ROOT, _cfg(h, w, y, args.steps, args.batch, args.cache_mb), fine, coarse, work,
                                  f"mem_{y}y")
    # throughput on a small default-like archive: 1 year of 32 x 40 cells
    sf, sc = write_archive(work, 32, 40, 1)
    thr = {
        "streaming_cache_1mb": run_child(ROOT, _cfg(32, 40, 1, args.steps, args.batch, 1.0), sf, sc, work, "stream"),
        "full_cache": run_child(ROOT, _cfg(32, 40, 1, args.steps, args.batch, 4096.0), sf, sc, work, "full"),
    }
    if args.baseline_repo:
        thr["baseline_in_memory"] = run_child(Path(args.baseline_repo).resolve(), _cfg(32, 40, 1, args.steps,
                                              args.batch, 4096.0), sf, sc, work, "baseline")
    peaks = [runs[f"{y}y"]["peak_rss_mb"] for y in args.years]
    result = {
        "what": "peak RSS and throughput of `aid train` (tiny model, CPU, 1 thread) on a DERIVED archive written "
                "from real ERA5 UK t2m (tiled, repeated, seasonal cycle added); see bench/train_memory.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "domain_cells": [h, w],
        "years": args.years,
        "peak_rss_mb": peaks,
        "peak_rss_ratio_max_over_min": round(max(peaks) / min(peaks), 3),
        "time_to_first_step_s": [runs[f"{y}y"]["time_to_first_step_s"] for y in args.years],
        "samples_per_s": {**{f"{y}y_{h}x{w}": runs[f"{y}y"]["samples_per_s"] for y in args.years},
                          **{f"{k}_1y_32x40": v["samples_per_s"] for k, v in thr.items()}},
        "streaming_over_full_cache": round(thr["streaming_cache_1mb"]["samples_per_s"]
                                           / thr["full_cache"]["samples_per_s"], 3),
        "loop_samples_per_s": {f"{k}_1y_32x40": v["loop_samples_per_s"] for k, v in thr.items()},
        "runs": runs,
        "throughput_runs": thr,
        "steps": args.steps,
        "batch": args.batch,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_avg_1min_at_end": round(os.getloadavg()[0], 2)},
    }
    if "baseline_in_memory" in thr:
        # whole training loops (validation included in both): the baseline logs no per-step time
        result["streaming_over_baseline_in_memory_loop"] = round(
            thr["streaming_cache_1mb"]["loop_samples_per_s"] / thr["baseline_in_memory"]["loop_samples_per_s"], 3)
        result["full_cache_over_baseline_in_memory_loop"] = round(
            thr["full_cache"]["loop_samples_per_s"] / thr["baseline_in_memory"]["loop_samples_per_s"], 3)
    out = ROOT / "bench" / "out" / "train_memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
