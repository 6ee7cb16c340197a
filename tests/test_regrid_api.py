"""Regridding against xarray-regrid's API and real grids. aid.regrid builds its conservative weights from xarray-regrid's *private* functions
(``format_for_regrid``, ``get_weights``, ``create_dot_dataarray``, ``apply_spherical_correction``),
so the version is pinned in pyproject.toml; this fails when the installed version or those
functions' signatures differ from what the code was written against. And a source of one row or
one column (the real MPI-ESM1-2-LR DCPP file, 1 x 2 points) gets a clear error, and a Gaussian
grid's own latitude bounds are used (real MIROC6 against cdo remapcon)."""

from __future__ import annotations

import inspect
import re
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid.errors import DataError
from aid.grids import coarse_grid
from aid.regrid import regrid
from aid.standardise import standardise

ROOT = Path(__file__).resolve().parents[1]
MIROC = "cmip6/CMIP6/ScenarioMIP/MIROC/MIROC6/ssp119/r1i1p1f1/day/tas/gn/v20191016/tas_day_MIROC6_ssp119_r1i1p1f1_gn_20150101.nc"


def test_xarray_regrid_pinned_and_private_api_unchanged() -> None:
    pin = re.search(r'"xarray-regrid\[accel\]==([0-9.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin, "pyproject.toml must pin xarray-regrid exactly"
    assert version("xarray-regrid") == pin.group(1)
    from xarray_regrid.methods.conservative import apply_spherical_correction, get_weights
    from xarray_regrid.utils import create_dot_dataarray, format_for_regrid

    assert list(inspect.signature(get_weights).parameters) == ["source_coords", "target_coords"]
    assert list(inspect.signature(create_dot_dataarray).parameters) == ["weights", "coord", "target_coords", "source_coords"]
    assert list(inspect.signature(apply_spherical_correction).parameters) == ["dot_array", "latitude_coord"]
    assert list(inspect.signature(format_for_regrid).parameters) == ["obj", "target", "stats"]


def test_one_row_source_is_refused_clearly(shared_data: Path) -> None:
    from aid.config import deep_update, load_config

    src = next((shared_data / "cmip6/CMIP6/DCPP/DWD/MPI-ESM1-2-LR/dcppA-hindcast/s1980-r1i1p1f1").rglob("*.nc"))
    with xr.open_dataset(src, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as raw:
        ds = standardise(raw.isel(time=slice(0, 5)), "tasmax", str(src)).load()
    assert (ds.sizes["lat"], ds.sizes["lon"]) == (1, 2)
    cfg = deep_update(load_config(), {"domain": {"lat": [-89.75, -86.0], "lon": [-2.0, 1.75]}})
    with pytest.raises(DataError) as exc:
        regrid(ds, coarse_grid(cfg))
    assert "the source grid has 1 row(s) x 2 column(s); regridding needs at least 2 of each" in str(exc.value)
    assert "domain.halo_cells" in str(exc.value)


@pytest.mark.cdo
@pytest.mark.skipif(shutil.which("cdo") is None, reason="cdo binary not installed")
def test_gaussian_rows_use_the_file_bounds(shared_data: Path, tmp_path: Path) -> None:
    """MIROC6's Gaussian grid (real file, with lat_bnds) -> global 2 deg, against cdo remapcon,
    which uses the bounds: measured max 6e-5 K with the bounds, 0.15 K (polar rows) with mid-points."""
    from aid.grids import global_grid

    src = shared_data / MIROC
    griddes = tmp_path / "g.txt"
    griddes.write_text("gridtype = lonlat\nxsize = 180\nysize = 90\nxfirst = -179\nxinc = 2\nyfirst = -89\nyinc = 2\n")
    subprocess.run(["cdo", "-s", "-f", "nc4", f"remapcon,{griddes}", str(src), str(tmp_path / "c.nc")], check=True,
                   capture_output=True)
    with xr.open_dataset(tmp_path / "c.nc") as c:
        ref = c["tas"].squeeze().values
    with xr.open_dataset(src) as ds:
        ours = regrid(ds[["tas", "lat_bnds"]], global_grid(2.0))["tas"].squeeze().values
        mids = regrid(ds[["tas"]], global_grid(2.0))["tas"].squeeze().values
    assert np.abs(ours - ref).max() < 1e-3
    assert np.abs(mids - ref).max() > 0.1  # the bounds are what makes the difference
