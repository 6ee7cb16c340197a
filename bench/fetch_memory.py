"""Benchmark: peak memory of fetching the UK box from a large global file (NetCDF and Zarr).

    python bench/fetch_memory.py [--days 120] [--code-root DIR] [--out bench/out/fetch_memory.json]

Writes a global daily ``tas`` file DERIVED FROM REAL ERA5 (the 0.25 deg global 2 m temperature of
2022-10-01 00 UTC in ``shared/data/era5``, repeated over ``--days`` days, each day offset by a
0.01 K step so no two days are equal), 721 x 1440 float32 uncompressed, one chunk per day: 120 days = 498 MB, the size
of the file the issue measured. It is put in a CMIP6 DRS tree with a catalog built by
``aid catalog``, and also written as a Zarr store with a Pangeo-style catalog. Then each route runs
``aid.fetch.fetch_dataset`` for the default config's UK box in a fresh process that reports its own
peak RSS (``ru_maxrss``) and the RSS after imports, so the difference is what fetching cost.

``--code-root`` runs the fetch with another checkout of aid first on the path (e.g. the commit
before lazy cropping, exported with ``git archive``); that code reads NetCDF catalogs only.
Not a test: numbers depend on the machine.
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
DATA = ROOT.parent / "shared" / "data"
ERA5 = DATA / "era5" / "era5-2t-global-2022-10-01T00.grib"
SOURCE = "ERA5-GLOBAL-DERIVED"
log = logging.getLogger("bench.fetch_memory")

_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import xarray, netCDF4, intake_esm  # noqa: F401  (imports are not what fetch costs)
from aid.config import deep_update, load_config
from aid.fetch import fetch_dataset
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
cfg = deep_update(load_config(), {"search": {"experiments": {"historical": [2000, 2000]}, "variables": ["tas"]}})
t0 = time.perf_counter()
fetch_dataset(sys.argv[2], cfg, sys.argv[3], "historical", "r1i1p1f1", "tas", sys.argv[4])
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rss_after_imports_mb": round(base / 1024, 1), "peak_rss_mb": round(peak / 1024, 1),
                  "fetch_cost_mb": round((peak - base) / 1024, 1), "wall_s": round(wall, 2)}))
"""


def write_global_file(days: int, path: Path) -> dict[str, object]:
    """The derived global file, written one day at a time (the writer never holds it whole)."""
    import netCDF4
    import xarray as xr

    with xr.open_dataset(ERA5, engine="cfgrib", backend_kwargs={"indexpath": ""}) as src:
        field = np.asarray(src["t2m"].values, dtype="float32")
        lat = src["latitude"].values.astype("float64")
        lon = src["longitude"].values.astype("float64")
    path.parent.mkdir(parents=True, exist_ok=True)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.createDimension("time", days)
        nc.createDimension("lat", lat.size)
        nc.createDimension("lon", lon.size)
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.calendar, t.standard_name = "days since 2000-01-01", "standard", "time"
        la = nc.createVariable("lat", "f8", ("lat",))
        la.units, la.standard_name = "degrees_north", "latitude"
        la[:] = lat
        lo = nc.createVariable("lon", "f8", ("lon",))
        lo.units, lo.standard_name = "degrees_east", "longitude"
        lo[:] = lon
        v = nc.createVariable("tas", "f4", ("time", "lat", "lon"), chunksizes=(1, lat.size, lon.size))  # a day a chunk, as CMOR writes
        v.units, v.standard_name = "K", "air_temperature"
        for d in range(days):
            t[d] = d + 0.5
            v[d] = field + np.float32(0.01 * d)
        nc.source_id, nc.experiment_id, nc.variant_label = SOURCE, "historical", "r1i1p1f1"
        nc.license = "DERIVED FROM REAL ERA5 (Copernicus Climate Change Service, CC-BY 4.0); not GCM output"
    return {"shape": [days, int(lat.size), int(lon.size)], "mb": round(path.stat().st_size / 2**20, 1)}


def _pangeo_zarr(nc_path: Path, folder: Path) -> Path:
    import pandas as pd
    import xarray as xr

    store = folder / "tas.zarr"
    with xr.open_dataset(nc_path, chunks={"time": 10}) as ds:
        ds.to_zarr(store, zarr_format=2, consolidated=True, mode="w")
    facets = dict(activity_id="CMIP", institution_id="AID", source_id=SOURCE, experiment_id="historical",
                  member_id="r1i1p1f1", table_id="day", variable_id="tas", grid_label="gr", version="v1")
    pd.DataFrame([{**facets, "zstore": str(store)}]).to_csv(folder / "pangeo.csv", index=False)
    doc = {"esmcat_version": "0.1.0", "id": "bench", "description": "derived", "catalog_file": "pangeo.csv",
           "attributes": [{"column_name": c} for c in facets], "assets": {"column_name": "zstore", "format": "zarr"}}
    (folder / "pangeo.json").write_text(json.dumps(doc))
    return folder / "pangeo.json"


def run_child(code_root: Path, catalog: Path, out: Path) -> dict[str, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(code_root)}
    res = subprocess.run([sys.executable, "-c", _CHILD, str(code_root), str(catalog), SOURCE, str(out)],
                         capture_output=True, text=True, env=env, cwd=code_root)
    if res.returncode:
        raise SystemExit(f"fetch failed ({code_root}):\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--code-root", type=Path, default=None, help="also run this checkout of aid (NetCDF route)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "fetch_memory.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.path.insert(0, str(ROOT))
    from aid.catalog import build_catalog

    with tempfile.TemporaryDirectory(prefix="aid-fetch-mem-") as tmp:
        tmp = Path(tmp)
        nc_path = tmp / f"CMIP6/CMIP/AID/{SOURCE}/historical/r1i1p1f1/day/tas/gr/v1/tas_day_{SOURCE}_historical_r1i1p1f1_gr_20000101.nc"
        t0 = time.perf_counter()
        info = write_global_file(args.days, nc_path)
        log.info("derived global file %s: %s MB (%.0f s)", info["shape"], info["mb"], time.perf_counter() - t0)
        cat = build_catalog(tmp / "CMIP6", tmp / "catalog.json")
        zcat = _pangeo_zarr(nc_path, tmp / "zarr")
        result: dict[str, object] = {
            "what": "peak RSS of aid.fetch.fetch_dataset, UK box (default config) from a global daily file",
            "data": "DERIVED FROM REAL ERA5: global 0.25 deg t2m of 2022-10-01 repeated over days (+0.01 K/day)",
            "file": info,
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
            "runs": {},
        }
        runs = result["runs"]
        runs["netcdf"] = run_child(ROOT, cat, tmp / "o" / "nc.nc")
        runs["zarr"] = run_child(ROOT, zcat, tmp / "o" / "zarr.nc")
        if args.code_root:
            runs[f"netcdf_code_root:{args.code_root.name}"] = run_child(args.code_root.resolve(), cat, tmp / "o" / "old.nc")
        import xarray as xr

        a = xr.open_dataset(tmp / "o" / "nc.nc")["tas"].values
        b = xr.open_dataset(tmp / "o" / "zarr.nc")["tas"].values
        result["zarr_equals_netcdf"] = bool(np.array_equal(a, b))
        result["crop_shape"] = list(a.shape)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
