"""Reference preparation on real ERA5 (UK, March 2019, daily means of the hourly 0.25 deg t2m)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid.config import load_config
from aid.errors import DataError


@pytest.fixture(scope="module")
def daily_t2m(shared_data: Path, tmp_path_factory) -> Path:
    ds = xr.open_dataset(shared_data / "era5" / "era5-2mt-2019-03-uk.grib", engine="cfgrib",
                         backend_kwargs={"indexpath": ""})
    daily = ds[["t2m"]].drop_vars(["number", "step", "surface", "valid_time"], errors="ignore").resample(time="1D").mean()
    daily["t2m"].attrs["units"] = "K"
    path = tmp_path_factory.mktemp("ref") / "t2m_day_2019-03.nc"
    daily.to_netcdf(path)  # stamps at 00:00, lat descending, ERA5 short name: all fixed by the stage
    return path


def _cfg(tmp_path: Path, files: str) -> dict:
    cfg = load_config(overrides={"output_dir": str(tmp_path)})
    cfg["reference"]["files"]["tas"] = files
    return cfg


def test_prepare_reference_fine_and_coarse(daily_t2m, tmp_path):
    from aid.reference import prepare_reference
    from aid.regrid import coarsen

    cfg = _cfg(tmp_path, str(daily_t2m.parent / "t2m_day_*.nc"))
    fine_p, coarse_p = prepare_reference(cfg, "tas", tmp_path / "fine.nc", tmp_path / "coarse.nc")
    src = xr.open_dataset(daily_t2m).sortby("latitude")
    with xr.open_dataset(fine_p) as f, xr.open_dataset(coarse_p) as c:
        assert f.tas.shape == (31, 32, 40) and c.tas.shape == (31, 4, 5)
        assert f.lat.values[[0, -1]].tolist() == [50.0, 57.75] and f.lon.values[[0, -1]].tolist() == [-10.0, -0.25]
        assert (f.time.dt.hour == 12).all() and f.tas.attrs["units"] == "K"
        np.testing.assert_allclose(f.tas.isel(time=3).sel(lat=52.5, lon=-4.0),
                                   src.t2m.isel(time=3).sel(latitude=52.5, longitude=-4.0), rtol=1e-6)
        # the coarse file is the coarsened reference *around* the domain: the 56..58 N cells use
        # ERA5 rows up to 58 N, which the 0.25 deg domain (to 57.75 N) does not contain
        expected = coarsen(src.rename(latitude="lat", longitude="lon")[["t2m"]], cfg).t2m
        np.testing.assert_allclose(c.tas.values, expected.values, atol=1e-4)
        cropped = coarsen(f[["tas"]], cfg).tas
        assert float(np.abs(cropped.sel(lat=57.0) - c.tas.sel(lat=57.0)).max()) > 0.01
        assert c.attrs["aid_stage"] == "reference"


def test_reference_on_another_grid_or_with_nan_cells_is_refused(daily_t2m, tmp_path):
    from aid.reference import prepare_reference

    ds = xr.open_dataset(daily_t2m).load()
    shifted = ds.assign_coords(longitude=ds.longitude + 0.1)
    shifted.to_netcdf(tmp_path / "shifted.nc")
    with pytest.raises(DataError, match=r"the reference is on a different grid than configured"):
        prepare_reference(_cfg(tmp_path, str(tmp_path / "shifted.nc")), "tas", tmp_path / "f.nc", tmp_path / "c.nc")
    holes = ds.copy(deep=True)
    holes["t2m"].loc[dict(latitude=53.0, longitude=-5.0)] = np.nan
    holes.to_netcdf(tmp_path / "holes.nc")
    with pytest.raises(DataError, match=r"1 reference cells in the domain are NaN at every time step"):
        prepare_reference(_cfg(tmp_path, str(tmp_path / "holes.nc")), "tas", tmp_path / "f.nc", tmp_path / "c.nc")
    with pytest.raises(DataError, match=r"reference.files.tas: pattern .*nothing-\*.nc' matches no file"):
        prepare_reference(_cfg(tmp_path, str(tmp_path / "nothing-*.nc")), "tas", tmp_path / "f.nc", tmp_path / "c.nc")
    assert not (tmp_path / "f.nc").exists() and not (tmp_path / "c.nc").exists()
