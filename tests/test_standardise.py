"""standardise(): names, units, longitudes, latitude order, calendars and daily stamps on real CMIP6 files."""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from aid.errors import DataError
from aid.io import open_dataset
from aid.standardise import standardise

CMIP6 = "cmip6/CMIP6"
CESM = f"{CMIP6}/CMIP/NCAR/CESM2-WACCM/historical/r1i1p1f1/day/tas/gn/v20190227/tas_day_CESM2-WACCM_historical_r1i1p1f1_gn_20000101-20091231.nc"
HADGEM = f"{CMIP6}/DCPP/MOHC/HadGEM3-GC31-MM/dcppA-hindcast/s1960-r2i1p1f2/day/tasmin/gn/v20200417/tasmin_day_HadGEM3-GC31-MM_dcppA-hindcast_s1960-r2i1p1f2_gn_19601101-19601230.nc"
MPI_HR_PR = f"{CMIP6}/DCPP/MPI-M/MPI-ESM1-2-HR/dcppA-hindcast/s1960-r2i1p1f1/day/pr/gn/v20190929/pr_day_MPI-ESM1-2-HR_dcppA-hindcast_s1960-r2i1p1f1_gn_19601101-19701231.nc"
MPI_LR = f"{CMIP6}/DCPP/DWD/MPI-ESM1-2-LR/dcppA-hindcast/s1980-r1i1p1f1/day/tasmax/gn/v20220126/tasmax_day_MPI-ESM1-2-LR_dcppA-hindcast_s1980-r1i1p1f1_gn_19801101-19901231.nc"

CFT = xr.coders.CFDatetimeCoder(use_cftime=True)


def _open(path: Path) -> xr.Dataset:
    return open_dataset(path, chunks=None, decode_times=CFT)


def test_cesm_tas_value_after_longitude_standardisation(shared_data: Path) -> None:
    path = shared_data / CESM
    with netCDF4.Dataset(path) as nc:
        raw_lon = nc["lon"][:].data
        raw_lat = nc["lat"][:].data
        raw = float(nc["tas"][123, 1, 2])  # day 124 of 2000, lat 4.24, lon 250 E
        units = nc["tas"].units
    assert units == "K" and raw_lon[2] == 250.0
    out = standardise(_open(path), "tas", str(path))
    assert out["lon"].values.tolist() == [-110.0, 0.0, 125.0]  # 250 E -> -110, sorted
    assert float(out["lon"].min()) >= -180 and float(out["lon"].max()) <= 180
    assert np.all(np.diff(out["lat"].values) > 0)
    got = float(out["tas"].sel(lat=raw_lat[1], lon=-110.0).isel(time=123))
    assert got == pytest.approx(raw, abs=1e-4)
    assert 250.0 < got < 320.0  # a tropical near-surface temperature in K
    t = out["time"].values[123]
    assert (t.year, t.month, t.day, t.hour) == (2000, 5, 4, 12)  # 00:00 stamps moved to 12:00
    assert out.attrs["calendar"] == "noleap"
    assert out["tas"].dims == ("time", "lat", "lon")
    assert out["tas"].attrs["units"] == "K"
    assert set(out.data_vars) == {"tas"}  # bounds dropped


def test_hadgem_keeps_360_day_calendar(shared_data: Path) -> None:
    path = shared_data / HADGEM
    out = standardise(_open(path), "tasmin", str(path))
    assert out.attrs["calendar"] == "360_day"
    assert out["time"].encoding["calendar"] == "360_day"
    last = out["time"].values[-1]
    assert (last.month, last.day, last.hour) == (12, 30, 12)
    assert out.sizes["time"] == 60  # Nov (30) + Dec (30) in a 360-day year
    assert out["tasmin"].attrs["units"] == "K"


def test_pr_flux_to_mm_per_day_is_times_86400(shared_data: Path) -> None:
    path = shared_data / MPI_HR_PR
    with netCDF4.Dataset(path) as nc:
        assert nc["pr"].units == "kg m-2 s-1"
        raw = nc["pr"][:50].data.astype("float64")
        raw_lon = nc["lon"][:].data
    out = standardise(_open(path), "pr", str(path))
    assert out["pr"].attrs["units"] == "mm d-1"
    assert out["pr"].attrs["standard_name"] == "lwe_precipitation_rate"
    order = np.argsort(((raw_lon + 180) % 360) - 180)
    np.testing.assert_allclose(out["pr"].values[:50], raw[:, :, order] * 86400.0, rtol=1e-6)
    assert float(out["pr"].max()) > 1.0  # real rain somewhere: the conversion is not a no-op


def test_daily_stamps_at_0900_move_to_noon(shared_data: Path) -> None:
    path = shared_data / MPI_LR
    out = standardise(_open(path), "tasmax", str(path))
    hours = {t.hour for t in out["time"].values}
    assert hours == {12}
    assert out["time"].values[0].day == 1 and out["time"].values[0].month == 11


def test_celsius_is_converted_to_kelvin(shared_data: Path) -> None:
    path = shared_data / CESM
    ds = _open(path).isel(time=slice(0, 5)).load()
    kelvin = ds["tas"].values.copy()
    ds["tas"] = ds["tas"] - 273.15
    ds["tas"].attrs["units"] = "degC"
    out = standardise(ds, "tas", "celsius-copy")
    np.testing.assert_allclose(out["tas"].values, kelvin[:, :, [2, 0, 1]], atol=1e-3)


def test_missing_units_name_the_file(shared_data: Path) -> None:
    path = shared_data / CESM
    ds = _open(path).isel(time=slice(0, 3))
    del ds["tas"].attrs["units"]
    with pytest.raises(DataError) as exc:
        standardise(ds, "tas", str(path))
    assert str(exc.value).startswith(f"{path}: variable 'tas' has no 'units' attribute; cannot convert to K.")


def test_unknown_units_name_the_file(shared_data: Path) -> None:
    path = shared_data / MPI_HR_PR
    ds = _open(path).isel(time=slice(0, 3))
    ds["pr"].attrs["units"] = "bananas"
    with pytest.raises(DataError) as exc:
        standardise(ds, "pr", str(path))
    assert str(exc.value).startswith(f"{path}: variable 'pr' has units 'bananas' that cannot be converted to mm d-1")


def test_wrong_dimension_units_are_refused(shared_data: Path) -> None:
    path = shared_data / CESM
    ds = _open(path).isel(time=slice(0, 3))
    ds["tas"].attrs["units"] = "m s-1"
    with pytest.raises(DataError, match=r"has units 'm s-1' that cannot be converted to K"):
        standardise(ds, "tas", str(path))


def test_missing_variable_is_named(shared_data: Path) -> None:
    path = shared_data / CESM
    with pytest.raises(DataError) as exc:
        standardise(_open(path), "pr", str(path))
    assert str(exc.value).startswith(f"{path}: variable 'pr' not found (data variables: ['lat_bnds', 'lon_bnds', 'tas', 'time_bnds']).")


def test_descending_lat_duplicates_and_nan_days_are_handled(shared_data: Path) -> None:
    path = shared_data / CESM
    ds = _open(path).isel(time=slice(0, 10)).load()
    ds = ds.isel(lat=[1, 0])  # north-to-south
    ds["tas"][4] = np.nan  # one day missing everywhere
    dup = xr.concat([ds, ds.isel(time=[7])], dim="time")  # day 8 twice
    out = standardise(dup, "tas", "edited-copy")
    assert np.all(np.diff(out["lat"].values) > 0)
    assert out.sizes["time"] == 10
    assert out.attrs["aid_duplicate_time_steps"] == 1
    assert out.attrs["aid_nan_only_time_steps"] == 1
    assert float(out["tas"].isel(time=3, lat=0, lon=1)) == pytest.approx(float(ds["tas"].isel(time=3, lat=1, lon=0)))


def test_era5_names_are_mapped(shared_data: Path) -> None:
    """ERA5 short names and latitude/longitude are renamed; m s**-1 is understood."""
    path = shared_data / "era5" / "ERA5_2020-01-01_u10.nc"
    ds = open_dataset(path, chunks=None)
    out = standardise(ds, "uas", str(path))
    assert list(out.data_vars) == ["uas"]
    assert out["uas"].attrs["units"] == "m s-1"
    assert out["lat"].values[0] == 45.0 and out["lat"].values[-1] == 55.0
    raw = float(ds["u10"].isel(time=5).sel(latitude=50.0, longitude=5.0))
    assert float(out["uas"].isel(time=5).sel(lat=50.0, lon=5.0)) == pytest.approx(raw)


def test_rate_with_wrong_dimension_is_not_taken_for_an_amount(shared_data: Path) -> None:
    path = shared_data / MPI_HR_PR
    ds = _open(path).isel(time=slice(0, 3))
    ds["pr"].attrs["units"] = "furlong fortnight-2"
    with pytest.raises(DataError, match=r"has units 'furlong fortnight-2' that cannot be converted to mm d-1"):
        standardise(ds, "pr", str(path))


def test_daily_amount_in_metres_becomes_a_rate(shared_data: Path) -> None:
    """A daily total in m (ERA5-style accumulation, summed per day) is read as m/day."""
    path = shared_data / MPI_HR_PR
    ds = _open(path).isel(time=slice(0, 10)).load()
    rate = ds["pr"].values * 86400.0  # mm/day
    ds["pr"] = ds["pr"] * 86400.0 / 1000.0
    ds["pr"].attrs["units"] = "m"
    out = standardise(ds, "pr", "amount-copy")
    np.testing.assert_allclose(np.sort(out["pr"].values.ravel()), np.sort(rate.ravel()), rtol=1e-5)
