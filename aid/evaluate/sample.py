"""A small evaluation case derived from real ERA5 data (for tests and the report smoke test).

Why here and not in the tests: both the unit tests and the browser test's tiny Snakemake workflow
need the same case, and it documents what each evaluation input looks like.

The case (clearly *derived*, not model output): ERA5 2 m temperature, UK, March 2019, daily means
on the default 32 x 40 0.25 deg domain, as the reference; its 8 x 8 block mean (2 deg) as the
coarse input; bicubic interpolation of that as the baseline; and an "ensemble" whose member s on
day d is the bicubic field plus the real fine-scale residual (reference - bicubic) of day
d + 7 s. Members and truth are then draws of the same residual climate, so a correct CRPS,
spread-skill and rank histogram must call this ensemble roughly calibrated.
Index files come from the real daily series of 5 Canadian cities: the reference indices of the
series and "GCM" indices of the series warmed by +1 K and with 10 % more precipitation, so the
index bias is known (+1 K for TXx, +10 % for PRCPTOT).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from aid.errors import DataError
from aid.io import open_dataset, write_netcdf
from aid.naming import BASELINE_ID, EVALUATION_EXPERIMENT, EVALUATION_MEMBER, days_range, deliverable_name
from aid.variables import VARIABLES

UK_T2M = "era5/era5-2mt-2019-03-uk.grib"
CITIES = "era5/daily_surface_cancities_1990-1993.nc"


def _bicubic(coarse: xr.DataArray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    from scipy.interpolate import RegularGridInterpolator

    out = np.empty((coarse.sizes["time"], lat.size, lon.size), dtype=np.float32)
    # clamp to the coarse cell centres: edge cells take the edge value (cubic extrapolation overshoots)
    la = np.clip(lat, coarse.lat.values.min(), coarse.lat.values.max())
    lo = np.clip(lon, coarse.lon.values.min(), coarse.lon.values.max())
    pts = np.stack(np.meshgrid(la, lo, indexing="ij"), axis=-1)
    for i in range(coarse.sizes["time"]):
        f = RegularGridInterpolator((coarse.lat.values, coarse.lon.values), coarse.values[i], method="cubic")
        out[i] = f(pts)
    return out


def build_sample_evaluation(
    data_dir: str | os.PathLike[str], out: str | os.PathLike[str], n_samples: int = 3, with_indices: bool = True
) -> dict:
    """Write the derived case under ``out``; return the ``evaluate()`` keyword arguments.

    ``with_indices=False`` skips the index files (xclim on the city series, the slow part) for
    callers that only need the daily fields.
    """
    data_dir, out = Path(data_dir), Path(out)
    src = data_dir / UK_T2M
    if not src.exists():
        raise DataError(f"{src}: ERA5 UK t2m sample missing.", "point data_dir at the shared data directory.")
    t2m = open_dataset(src, chunks=None)["t2m"].rename(latitude="lat", longitude="lon").sortby("lat")
    t2m = t2m.sel(lat=slice(50.0, 57.75), lon=slice(-10.0, -0.25)).load()
    daily = t2m.resample(time="1D").mean()
    daily = daily.assign_coords(time=daily["time"] + np.timedelta64(12, "h"))
    tas = daily.astype("float32").rename("tas").assign_attrs(standard_name=VARIABLES["tas"].standard_name,
                                                              units=VARIABLES["tas"].units)
    tas = tas.drop_vars([c for c in tas.coords if c not in ("time", "lat", "lon")])
    ref_path = out / "reference" / "fine" / "tas.nc"
    write_netcdf(tas.to_dataset(), ref_path)
    coarse = tas.coarsen(lat=8, lon=8).mean()
    coarse_path = out / "reference" / "coarse" / "tas.nc"
    write_netcdf(coarse.to_dataset(), coarse_path)

    bic = _bicubic(coarse, tas.lat.values, tas.lon.values)
    resid = tas.values - bic
    nt = tas.sizes["time"]
    days = tas.indexes["time"]
    held = days_range(days[0], days[-1])  # the real first and last day (a March month)
    downscaled, baseline = [], []
    for s in range(1, n_samples + 1):
        member = bic + resid[(np.arange(nt) + 7 * s) % nt]
        p = out / "downscale" / deliverable_name("tas", "UK-025", "ERA5", EVALUATION_EXPERIMENT, EVALUATION_MEMBER,
                                                 "AID", "v1", s, held)
        write_netcdf(tas.copy(data=member).to_dataset(), p)
        downscaled.append(str(p))
    p = out / "baseline" / deliverable_name("tas", "UK-025", "ERA5", EVALUATION_EXPERIMENT, EVALUATION_MEMBER,
                                            "AID", "v1", 1, held, model=BASELINE_ID)
    write_netcdf(tas.copy(data=bic).to_dataset(), p)
    baseline.append(str(p))

    fields = dict(reference=[str(ref_path)], coarse=[str(coarse_path)], downscaled=downscaled, baseline=baseline)
    if not with_indices:
        return fields
    ref_idx, gcm_idx = _sample_indices(data_dir, out)
    return dict(**fields, reference_indices=str(ref_idx), gcm_indices=[str(p) for p in gcm_idx])


def _sample_indices(data_dir: Path, out: Path) -> tuple[Path, list[Path]]:
    from aid.indices import compute_indices, compute_thresholds

    names = ["TXx", "TNn", "FD", "SU", "RX1day", "PRCPTOT", "CDD", "TX90p", "sfcWind_mean"]
    ds = open_dataset(data_dir / CITIES, chunks=None)[["tasmax", "tasmin", "pr", "uas", "vas"]]
    ds = ds.drop_vars(["lat", "lon", "location"]).rename_dims(location="lat").load()
    ds = ds.assign_coords(lat=np.arange(45.0, 50.0), time=ds["time"] + np.timedelta64(12, "h"))
    ds = ds.expand_dims(lon=[-75.0], axis=-1).transpose("time", "lat", "lon")
    keys = ["tasmax_per90"]
    ref = compute_indices(ds, names, "YS", compute_thresholds(ds, keys, [1990, 1992]))
    ref_path = write_netcdf(ref, out / "indices" / "reference.nc")
    gcm_paths = []
    for i, (dt, fp) in enumerate(((1.0, 1.1), (0.8, 1.05), (1.2, 1.15)), start=1):
        g = ds.copy()
        for v in ("tasmax", "tasmin"):
            g[v] = (ds[v] + dt).assign_attrs(ds[v].attrs)
        g["pr"] = (ds["pr"] * fp).assign_attrs(ds["pr"].attrs)
        idx = compute_indices(g, names, "YS", compute_thresholds(g, keys, [1990, 1992]))
        idx.attrs.update(aid_member=f"r{i}i1p1f1", aid_sample="1")
        gcm_paths.append(write_netcdf(idx, out / "indices" / "SAMPLE" / "historical" / f"r{i}i1p1f1" / "r1.nc"))
    return ref_path, gcm_paths


__all__ = ["build_sample_evaluation"]
