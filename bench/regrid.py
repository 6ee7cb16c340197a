"""Benchmark: aid.regrid (xarray-regrid) beside ``cdo remapcon`` on the same global data, same run.

aid's conservative path is xarray-regrid's formatting and 1-D weights applied as banded BLAS
products on the data as stored (aid/regrid.py, issue 8); ``threads`` (``OMP_NUM_THREADS``, else
all CPUs) is given to CDO as ``-P`` and caps aid's worker threads alike.

Data (DERIVED, not new observations): the real global ERA5 2 m temperature of 2022-10-01T00
(``era5/era5-2t-global-2022-10-01T00.grib``, 721 x 1440) repeated as 100 time steps, step k rolled
eastwards by k grid columns and offset by 0.01*k K, so every step differs but stays a real field.

Cases: 0.25 deg -> 2 deg (global, cell-centred 90 x 180) and 2 deg -> 0.25 deg (ERA5 lattice),
both conservative. Both tools run file -> file (read NetCDF, regrid, write NetCDF), timed with
wall clock; aid's compute-only time is reported too. Output: bench/out/regrid.json (also printed).

Run: ``python bench/regrid.py [--steps 100] [--repeat 2]``
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "era5" / "era5-2t-global-2022-10-01T00.grib"
OUT = ROOT / "bench" / "out" / "regrid.json"

log = logging.getLogger("bench.regrid")


def derived_series(steps: int) -> xr.Dataset:
    """100 (or ``steps``) global fields derived from the one real ERA5 field (see module doc)."""
    from aid.io import open_dataset
    from aid.regrid import normalise_coords

    ds = open_dataset(DATA, chunks=None)
    field = normalise_coords(ds[["t2m"]].drop_vars(["number", "step", "surface", "valid_time", "time"], errors="ignore"))
    base = field.t2m.values.astype("float32")
    data = np.stack([np.roll(base, k, axis=1) + np.float32(0.01 * k) for k in range(steps)])
    time_ = np.datetime64("2022-10-01T00") + np.arange(steps) * np.timedelta64(1, "h")
    out = xr.Dataset(
        {"t2m": (("time", "lat", "lon"), data, {"units": "K", "long_name": "2 m temperature (derived)"})},
        coords={"time": time_, "lat": field.lat.values, "lon": field.lon.values},
        attrs={"comment": "DERIVED from one real ERA5 field: step k rolled by k columns, +0.01*k K"},
    )
    out["lat"].attrs.update(units="degrees_north", standard_name="latitude")
    out["lon"].attrs.update(units="degrees_east", standard_name="longitude")
    return out


def griddes(path: Path, res: float) -> Path:
    """CDO text grid description of a global cell-centred lon/lat grid (ERA5 lattice for 0.25)."""
    if res == 0.25:
        text = "gridtype = lonlat\nxsize = 1440\nysize = 721\nxfirst = -180\nxinc = 0.25\nyfirst = -90\nyinc = 0.25\n"
    else:
        n_lon, n_lat = int(360 / res), int(180 / res)
        text = (f"gridtype = lonlat\nxsize = {n_lon}\nysize = {n_lat}\nxfirst = {-180 + res / 2}\nxinc = {res}\n"
                f"yfirst = {-90 + res / 2}\nyinc = {res}\n")
    path.write_text(text)
    return path


def time_cdo(src: Path, grid: Path, dst: Path, threads: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["cdo", "-s", "-P", str(threads), "-f", "nc4", f"remapcon,{grid}", str(src), str(dst)],
                   check=True, capture_output=True)
    return time.perf_counter() - t0


def time_aid(src: Path, target: xr.Dataset, dst: Path) -> tuple[float, float]:
    from aid.regrid import regrid

    t0 = time.perf_counter()
    ds = xr.open_dataset(src).load()
    t1 = time.perf_counter()
    out = regrid(ds, target)
    out = out.compute()
    t2 = time.perf_counter()
    out.to_netcdf(dst)
    t3 = time.perf_counter()
    return t3 - t0, t2 - t1


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs per tool")
    args = ap.parse_args()
    from aid.grids import era5_global_grid, global_grid
    from aid.regrid import regrid

    if shutil.which("cdo") is None:
        raise SystemExit("cdo is not installed; this benchmark compares against it (apt-get install cdo).")
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))
    _v = subprocess.run(["cdo", "--version"], capture_output=True, text=True)
    cdo_version = ((_v.stdout or "") + (_v.stderr or "")).strip().splitlines()[0]
    import xarray_regrid

    results = {
        "data": f"DERIVED: {args.steps} steps from {DATA.name} (roll k columns, +0.01 k K)",
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {threads} threads used",
        # the machine is shared: a load above the CPU count slows CDO's OpenMP threads most,
        # so read the ratios together with it
        "load_average_1min_start": round(os.getloadavg()[0], 2),
        "versions": {"xarray-regrid": getattr(xarray_regrid, "__version__", "?"), "xarray": xr.__version__, "cdo": cdo_version},
        "cases": {},
    }
    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "out") as tmp:
        tmp = Path(tmp)
        fine = derived_series(args.steps)
        fine_nc = tmp / "fine.nc"
        fine.to_netcdf(fine_nc)
        coarse = regrid(fine, global_grid(2.0))
        coarse_nc = tmp / "coarse.nc"
        coarse.to_netcdf(coarse_nc)
        for name, src, res, target in (("0.25->2", fine_nc, 2.0, global_grid(2.0)),
                                       ("2->0.25", coarse_nc, 0.25, era5_global_grid())):
            grid = griddes(tmp / f"grid_{res}.txt", res)
            cdo_t = min(time_cdo(src, grid, tmp / "cdo_out.nc", threads) for _ in range(args.repeat))
            aid_runs = [time_aid(src, target, tmp / "aid_out.nc") for _ in range(args.repeat)]
            aid_t = min(r[0] for r in aid_runs)
            aid_c = min(r[1] for r in aid_runs)
            with xr.open_dataset(tmp / "cdo_out.nc") as c, xr.open_dataset(tmp / "aid_out.nc") as a:
                cv = c[list(c.data_vars)[0]].values
                av = a.t2m.values
                band = np.abs(a.lat.values) < 85
                diff = float(np.nanmax(np.abs(av - cv)[:, band]))
            results["cases"][name] = {
                "cdo_remapcon_s": round(cdo_t, 3),
                "aid_file_to_file_s": round(aid_t, 3),
                "aid_compute_only_s": round(aid_c, 3),
                "ratio_aid_over_cdo": round(aid_t / cdo_t, 3),
                "ratio_compute_only_over_cdo": round(aid_c / cdo_t, 3),
                "max_abs_diff_vs_cdo_K_lat_lt_85": round(diff, 5),
            }
            log.info("%s: %s", name, results["cases"][name])
    results["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
