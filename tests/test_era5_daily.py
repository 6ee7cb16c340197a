"""ERA5 as users download it -> daily reference (aid.era5_daily), and frequency refusal (aid.frequency).

Real files only: the UK t2m GRIB (744 hourly steps), the WAM2layers hourly u10/v10/tp NetCDF of
2020-01-01, the Ontario hourly tp of October 2002, and files *written from them* in the other
layouts users get (new CDS NetCDF with ``valid_time``/``expver``, old layout with an ``expver``
dimension, ARCO-style Zarr, the CDS daily statistics).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from aid.cli import main
from aid.config import load_config
from aid.errors import DataError
from aid.era5_daily import era5_daily
from aid.frequency import detect_frequency

UK = "era5/era5-2mt-2019-03-uk.grib"
GRIB_KW = {"engine": "cfgrib", "backend_kwargs": {"indexpath": ""}}
CELLS = [(52.5, -4.0), (57.75, 1.5), (50.0, -10.0), (55.25, -6.75)]


@pytest.fixture(scope="module")
def uk_hourly(shared_data: Path) -> xr.DataArray:
    """The hourly t2m read directly with cfgrib (the independent truth), (744, lat, lon) float32."""
    with xr.open_dataset(shared_data / UK, **GRIB_KW) as ds:
        return ds["t2m"].load()


@pytest.fixture(scope="module")
def uk_daily(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    """``aid era5-daily`` of the UK GRIB, through the command line."""
    out = tmp_path_factory.mktemp("era5") / "uk-daily.nc"
    assert main(["era5-daily", str(shared_data / UK), "--out", str(out)]) == 0
    with xr.open_dataset(out) as ds:
        return ds.load()


def test_uk_grib_gives_31_days_of_exact_mean_max_min(uk_daily: xr.Dataset, uk_hourly: xr.DataArray) -> None:
    assert uk_daily.sizes["time"] == 31
    assert str(uk_daily.time.values[0])[:16] == "2019-03-01T12:00" and str(uk_daily.time.values[-1])[:10] == "2019-03-31"
    assert str(uk_daily.time_bnds.values[0, 0])[:16] == "2019-03-01T00:00"
    hourly = uk_hourly.values.reshape(31, 24, *uk_hourly.shape[1:])  # 00:00..23:00 of each day
    for lat, lon in CELLS:
        i = int(np.flatnonzero(uk_hourly.latitude.values == lat)[0])
        j = int(np.flatnonzero(uk_hourly.longitude.values == lon)[0])
        cell = hourly[:, :, i, j].astype("float64")
        got = uk_daily.sel(lat=lat, lon=lon)
        np.testing.assert_allclose(got.tas.values, cell.mean(axis=1), rtol=0, atol=2e-5)  # float32 rounding of ~280 K
        np.testing.assert_array_equal(got.tasmax.values, hourly[:, :, i, j].max(axis=1))
        np.testing.assert_array_equal(got.tasmin.values, hourly[:, :, i, j].min(axis=1))
    assert float((uk_daily.tasmax - uk_daily.tasmin).min()) > 0.0
    assert (uk_daily.tasmax >= uk_daily.tas).all() and (uk_daily.tas >= uk_daily.tasmin).all()
    for v, cm in (("tas", "time: mean"), ("tasmax", "time: maximum"), ("tasmin", "time: minimum")):
        assert uk_daily[v].attrs["units"] == "K" and uk_daily[v].attrs["cell_methods"].startswith(cm)
        assert uk_daily[v].attrs["aid_daily_source"] == "t2m"
    assert "mx2t not in the input" in uk_daily.tasmax.attrs["aid_daily_method"]
    assert uk_daily.attrs["aid_stage"] == "era5-daily" and uk_daily.attrs["frequency"] == "day"


def test_arco_zarr_gives_the_same_days(uk_hourly: xr.DataArray, uk_daily: xr.Dataset, tmp_path: Path) -> None:
    """An ARCO-style store written from the real GRIB: long variable names, time/latitude/longitude,
    longitudes 0..360 (the UK box crosses 0 deg), read only for the days and box asked for."""
    arco = uk_hourly.drop_vars(["number", "step", "surface", "valid_time"]).to_dataset(name="2m_temperature")
    arco = arco.assign_coords(longitude=arco.longitude % 360.0).sortby("longitude")
    arco.chunk({"time": 24}).to_zarr(tmp_path / "era5-arco.zarr", consolidated=True)
    lazy = era5_daily([tmp_path / "era5-arco.zarr"], start="2019-03-02", end="2019-03-30", lat=(51.0, 57.0), lon=(-8.0, 1.0))
    assert all(lazy[v].chunks is not None for v in ("tas", "tasmax", "tasmin"))  # nothing read yet: dask graphs
    got = lazy.compute()
    assert got.sizes["time"] == 29 and got.lon.values[[0, -1]].tolist() == [-8.0, 1.0]
    want = uk_daily.sel(time=slice("2019-03-02", "2019-03-30"), lat=slice(57.0, 51.0), lon=slice(-8.0, 1.0))
    for v in ("tas", "tasmax", "tasmin"):
        np.testing.assert_array_equal(got[v].transpose("time", "lat", "lon").values, want[v].values)


def _wam(shared_data: Path, var: str) -> Path:
    return shared_data / "era5" / f"ERA5_2020-01-01_{var}.nc"


def test_wam2layers_winds_daily_means_old_and_new_cds_layout(shared_data: Path, tmp_path: Path) -> None:
    raw = {v: xr.open_dataset(_wam(shared_data, v))[v].load() for v in ("u10", "v10")}
    old = era5_daily([_wam(shared_data, "u10"), _wam(shared_data, "v10")]).compute()
    assert old.sizes["time"] == 1 and str(old.time.values[0])[:16] == "2020-01-01T12:00"
    for out, src in (("uas", "u10"), ("vas", "v10")):
        expected = raw[src].astype("float64").mean("time").values  # the 24 stamps 00:00..23:00
        np.testing.assert_allclose(old[out].values[0], expected, rtol=0, atol=1e-6)
        assert old[out].attrs["units"] == "m s-1" and old[out].attrs["cell_methods"] == "time: mean (interval: 1 hour)"
    assert float(np.abs(old.uas).max()) > 1.0  # real winds, not zeros

    # the new CDS NetCDF layout: valid_time axis, expver per step, number scalar
    for v in ("u10", "v10"):
        ds = xr.open_dataset(_wam(shared_data, v)).load().rename(time="valid_time")
        ds = ds.assign_coords(expver=("valid_time", np.array(["0001"] * 24)), number=0)
        ds.to_netcdf(tmp_path / f"new_{v}.nc")
    new = era5_daily([tmp_path / "new_u10.nc", tmp_path / "new_v10.nc"]).compute()
    np.testing.assert_array_equal(new.uas.values, old.uas.values)
    np.testing.assert_array_equal(new.vas.values, old.vas.values)

    # the old layout of an ERA5/ERA5T mix: an expver dimension, each hour in one layer, NaN in the other
    u = xr.open_dataset(_wam(shared_data, "u10")).load()
    first = u.time.dt.hour < 12
    mixed = xr.concat([u.where(first), u.where(~first)], dim=xr.DataArray([1, 5], dims="expver", name="expver"))
    mixed.to_netcdf(tmp_path / "expver_u10.nc")
    got = era5_daily([tmp_path / "expver_u10.nc"]).compute()
    np.testing.assert_array_equal(got.uas.values, old.uas.values)


def test_wam2layers_tp_has_no_complete_day(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    """tp stamped 00:00..23:00 of 2020-01-01: by ERA5's rule 00:00 closes 2019-12-31 and 2020-01-01
    lacks 00:00 of 01-02, so neither day is complete and nothing is averaged."""
    with caplog.at_level(logging.WARNING, logger="aid.era5_daily"), pytest.raises(DataError) as exc:
        era5_daily([_wam(shared_data, "u10"), _wam(shared_data, "v10"), _wam(shared_data, "tp")])
    assert "dropped 2 incomplete day(s) of 24 steps each" in caplog.text
    assert "2019-12-31 (1 steps), 2020-01-01 (23 steps)" in caplog.text
    assert str(exc.value).startswith("no day is complete in every input variable (tp: 0 complete; u10: 1 complete; v10: 1 complete;")


def test_ontario_tp_daily_total_follows_the_accumulation_rule(shared_data: Path) -> None:
    """Hourly tp of October 2002: day D = the 24 values stamped 01:00 of D .. 00:00 of D+1 (m -> mm)."""
    path = shared_data / "era5" / "era5-hourly-tp-2002-10-ontario-5x7.nc"
    tp = xr.open_dataset(path)["tp"].values.astype("float64")  # (744, 5, 7), 00:00 Oct 1 .. 23:00 Oct 31
    got = era5_daily([path]).compute()
    # 2002-09-30 (only 00:00 Oct 1) and 2002-10-31 (no 00:00 Nov 1) are incomplete
    assert got.sizes["time"] == 30
    assert str(got.time.values[0])[:10] == "2002-10-01" and str(got.time.values[-1])[:10] == "2002-10-30"
    expected = np.stack([tp[d * 24 + 1:d * 24 + 25].sum(axis=0) for d in range(30)]) * 1000.0
    calendar_day = np.stack([tp[d * 24:d * 24 + 24].sum(axis=0) for d in range(30)]) * 1000.0
    ok = np.isfinite(expected)
    assert ok.sum() == 30 * 32  # 3 of the 35 cells are outside the source domain (NaN throughout)
    np.testing.assert_allclose(got.pr.values[ok], np.clip(expected[ok], 0, None), rtol=1e-6, atol=1e-5)
    assert np.nanmax(np.abs(calendar_day - expected)) > 1.0  # the convention matters (mm/day)
    assert float(got.pr.max()) > 10.0  # real rain days
    assert got.pr.attrs["units"] == "mm d-1" and got.pr.attrs["standard_name"] == "lwe_precipitation_rate"
    assert "01:00 of the day to 00:00 of the next day" in got.pr.attrs["aid_daily_method"]


def test_grib_accumulation_layout_forecast_start_and_step(shared_data: Path) -> None:
    """cfgrib reads ERA5 GRIB accumulations as (time = forecast start 06/18 UTC, step 1..12 h) with a
    2-D valid_time; the same real Ontario hours put in that layout give the same daily totals."""
    from aid.era5_daily import daily_from_datasets

    path = shared_data / "era5" / "era5-hourly-tp-2002-10-ontario-5x7.nc"
    raw = xr.open_dataset(path)["tp"].load()
    starts = pd.date_range("2002-09-30T18:00", "2002-10-31T18:00", freq="12h")
    steps = pd.to_timedelta(np.arange(1, 13), "h")
    valid = starts.values[:, None] + steps.values[None, :]
    pos = pd.DatetimeIndex(raw.time.values).get_indexer(valid.ravel()).reshape(valid.shape)
    arr = np.where((pos >= 0)[..., None, None], raw.values[np.clip(pos, 0, None)], np.nan)
    grib_like = xr.Dataset(
        {"tp": (("time", "step", "latitude", "longitude"), arr, {"units": "m"})},
        coords={"time": starts, "step": steps, "valid_time": (("time", "step"), valid),
                "latitude": raw.rlat.values, "longitude": raw.rlon.values, "number": 0, "surface": 0.0},
    )
    got = daily_from_datasets([("grib-like", grib_like)]).compute()
    ref = era5_daily([path]).compute()
    assert got.sizes["time"] == 30
    np.testing.assert_array_equal(got.pr.values, ref.pr.values)


def test_cds_daily_statistics_need_and_use_the_statistic(uk_hourly: xr.DataArray, tmp_path: Path) -> None:
    """The CDS daily-statistics layout (valid_time at 00:00 of each day, t2m) written from the real hours."""
    hourly = uk_hourly.values.reshape(31, 24, *uk_hourly.shape[1:])
    days = uk_hourly.time.values[::24]
    daily_max = xr.Dataset(
        {"t2m": (("valid_time", "latitude", "longitude"), hourly.max(axis=1), {"units": "K"})},
        coords={"valid_time": days, "latitude": uk_hourly.latitude.values, "longitude": uk_hourly.longitude.values, "number": 0},
    )
    daily_max.to_netcdf(tmp_path / "t2m_daily_maximum.nc")
    with pytest.raises(DataError, match=r"the data are already daily .*\nFix: say which with --statistic"):
        era5_daily([tmp_path / "t2m_daily_maximum.nc"])
    got = era5_daily([tmp_path / "t2m_daily_maximum.nc"], statistic="max").compute()
    assert list(got.data_vars) == ["tasmax", "time_bnds"] and got.sizes["time"] == 31
    assert (got.time.dt.hour == 12).all()
    np.testing.assert_array_equal(got.tasmax.values, hourly.max(axis=1))
    assert got.tasmax.attrs["cell_methods"] == "time: maximum"


def test_frequency_is_read_from_the_time_steps(shared_data: Path, uk_hourly: xr.DataArray) -> None:
    assert detect_frequency(uk_hourly.time).name == "1h"
    assert detect_frequency(uk_hourly.time).steps_per_day == 24
    with xr.open_dataset(shared_data / "era5" / "daily_surface_cancities_1990-1993.nc") as ds:
        assert detect_frequency(ds.time).name == "day"
    cmip = shared_data / "cmip6" / "CMIP6"
    acc = next(cmip.glob("ScenarioMIP/CSIRO/ACCESS-ESM1-5/ssp126/r1i1p1f1/Amon/tas/gn/*/*.nc"))
    mpi = next(cmip.glob("DCPP/DWD/MPI-ESM1-2-LR/dcppA-hindcast/s1980-r1i1p1f1/day/tasmax/gn/*/*.nc"))
    with xr.open_dataset(acc) as a, xr.open_dataset(mpi, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as m:
        assert detect_frequency(a.time).name == "mon"
        assert m.attrs["frequency"] == "mon" and detect_frequency(m.time).name == "day"  # the header lies


def _ref_cfg(tmp_path: Path, files: str, aggregate: bool) -> dict:
    cfg = load_config(overrides={"output_dir": str(tmp_path), "reference": {"aggregate_subdaily": aggregate}})
    cfg["reference"]["files"]["tas"] = files
    return cfg


def test_subdaily_reference_refused_unless_aggregation_enabled(shared_data: Path, uk_daily: xr.Dataset, tmp_path: Path) -> None:
    from aid.reference import prepare_reference

    grib = str(shared_data / UK)
    with pytest.raises(DataError) as exc:
        prepare_reference(_ref_cfg(tmp_path, grib, False), "tas", tmp_path / "f.nc", tmp_path / "c.nc")
    assert str(exc.value) == (
        f"reference.files.tas: {grib}: the data are sub-daily (1h, 24 steps a day), 744 time steps from "
        "2019-03-01T00:00 to 2019-03-31T23:00; daily data are required.\n"
        "Fix: set reference.aggregate_subdaily: true to aggregate it to days in the reference rule, or run "
        f"`aid era5-daily {grib} --out DAILY.nc` and point reference.files.tas at DAILY.nc."
    )
    assert not (tmp_path / "f.nc").exists() and not (tmp_path / "c.nc").exists()

    fine, _ = prepare_reference(_ref_cfg(tmp_path, grib, True), "tas", tmp_path / "f.nc", tmp_path / "c.nc")
    with xr.open_dataset(fine) as f:
        assert f.sizes["time"] == 31 and (f.time.dt.hour == 12).all()
        np.testing.assert_allclose(f.tas.sel(lat=52.5, lon=-4.0).values, uk_daily.tas.sel(lat=52.5, lon=-4.0).values, rtol=0, atol=1e-6)
        assert "t2m" in f.attrs["aid_daily_tas"]


def test_single_time_grib_reference_gets_a_time_dimension(shared_data: Path, tmp_path: Path) -> None:
    from aid.reference import prepare_reference

    grib = shared_data / "era5" / "era5-2t-global-2022-10-01T00.grib"
    fine, coarse = prepare_reference(_ref_cfg(tmp_path, str(grib), False), "tas", tmp_path / "f.nc", tmp_path / "c.nc")
    with xr.open_dataset(grib, **GRIB_KW) as src, xr.open_dataset(fine) as f, xr.open_dataset(coarse) as c:
        assert f.tas.dims == ("time", "lat", "lon") and f.sizes["time"] == 1 and c.sizes["time"] == 1
        assert str(f.time.values[0])[:10] == "2022-10-01"
        # lon -4.0 is 356.0 in the 0..360 GRIB
        assert float(f.tas.sel(lat=52.5, lon=-4.0)[0]) == pytest.approx(float(src.t2m.sel(latitude=52.5, longitude=356.0)), abs=1e-4)
