"""Regridding on real ERA5 fields: against CDO, conservation, coordinate conventions, edges."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid.config import load_config
from aid.errors import ConfigError, DataError
from aid.grids import coarse_grid, era5_global_grid, fine_grid, global_grid
from aid.regrid import coarsen, regrid, regrid_file, upsample


@pytest.fixture(scope="module")
def t2m(shared_data: Path) -> xr.Dataset:
    """Real global ERA5 2 m temperature, 721 x 1440, as in the file (lat 90 -> -90, lon 0..359.75)."""
    from aid.io import open_dataset

    ds = open_dataset(shared_data / "era5" / "era5-2t-global-2022-10-01T00.grib", chunks=None)
    return ds[["t2m"]].drop_vars(["number", "step", "surface", "valid_time", "time"], errors="ignore").load()


@pytest.fixture(scope="module")
def t2m_2deg(t2m: xr.Dataset) -> xr.Dataset:
    return regrid(t2m, global_grid(2.0))


def _cell_area(lat_bnds: np.ndarray, lon_width: np.ndarray | float) -> np.ndarray:
    """Spherical cell areas (unit sphere) from latitude bounds, clipped at the poles."""
    b = np.deg2rad(np.clip(lat_bnds, -90, 90))
    return (np.sin(b[:, 1]) - np.sin(b[:, 0]))[:, None] * np.deg2rad(lon_width)


@pytest.mark.cdo
@pytest.mark.skipif(shutil.which("cdo") is None, reason="cdo binary not installed")
def test_conservative_matches_cdo_remapcon(t2m, t2m_2deg, shared_data, tmp_path):
    griddes = tmp_path / "grid_2deg.txt"
    griddes.write_text(
        "gridtype = lonlat\nxsize = 180\nysize = 90\nxfirst = -179\nxinc = 2\nyfirst = -89\nyinc = 2\n"
    )
    out = tmp_path / "cdo.nc"
    src = shared_data / "era5" / "era5-2t-global-2022-10-01T00.grib"
    subprocess.run(["cdo", "-s", "-f", "nc4", f"remapcon,{griddes}", str(src), str(out)], check=True, capture_output=True)
    with xr.open_dataset(out) as c:
        ref = c[list(c.data_vars)[0]].squeeze(drop=True).load()
    assert ref.lat.values[0] == -89.0 and ref.lon.values[0] == -179.0
    ours = t2m_2deg.t2m
    assert ours.shape == (90, 180)
    diff = np.abs(ours.values - ref.values)[np.abs(ours.lat.values) < 85]
    assert diff.max() < 0.01, diff.max()  # measured 0.0061 K
    assert diff.mean() < 1e-3, diff.mean()  # measured 0.00027 K
    # and it is not trivially equal to a bilinear interpolation (which differs by much more)
    bil = regrid(t2m, global_grid(2.0), "bilinear").t2m.values
    assert np.abs(bil - ref.values)[np.abs(ours.lat.values) < 85].max() > 0.5


def test_conservative_conserves_area_mean(t2m, t2m_2deg):
    src = t2m.sortby("latitude")
    g = era5_global_grid()
    a_src = _cell_area(g.lat_bnds.values, 0.25)
    mean_src = float((src.t2m.values * a_src).sum() / (a_src.sum() * src.sizes["longitude"]))
    t = global_grid(2.0)
    a_t = _cell_area(t.lat_bnds.values, 2.0)
    mean_t = float((t2m_2deg.t2m.values * a_t).sum() / (a_t.sum() * 180))
    assert abs(mean_t - mean_src) / mean_src < 1e-6, (mean_t, mean_src)
    assert 270 < mean_src < 295  # a real Earth


def test_longitude_and_latitude_conventions_do_not_matter(t2m, t2m_2deg):
    # the file is 0..360 with lat descending; the same field in -180..180, lat ascending:
    alt = t2m.assign_coords(longitude=((t2m.longitude + 180) % 360) - 180).sortby("longitude").sortby("latitude")
    out = regrid(alt, global_grid(2.0))
    np.testing.assert_allclose(out.t2m.values, t2m_2deg.t2m.values, atol=1e-4)
    assert out.t2m.dtype == np.float32


def test_refining_fills_polar_rows_and_edges(t2m_2deg):
    fine = regrid(t2m_2deg, era5_global_grid())
    assert fine.t2m.shape == (721, 1440)
    assert int(fine.t2m.isnull().sum()) == 0
    # the pole rows lie inside the 88..90 cells: piecewise-constant refinement gives those values
    np.testing.assert_allclose(fine.t2m.sel(lat=90.0, lon=-179.0).item(), t2m_2deg.t2m.sel(lat=89.0, lon=-179.0).item(), rtol=1e-6)
    np.testing.assert_allclose(fine.t2m.sel(lat=-89.75, lon=10.5).item(), t2m_2deg.t2m.sel(lat=-89.0, lon=11.0).item(), rtol=1e-6)
    # a fine cell on a coarse edge (lon -178.0 straddles two 2 deg cells) is their mean
    a, b = t2m_2deg.t2m.sel(lat=45.0, lon=[-179.0, -177.0]).values
    np.testing.assert_allclose(fine.t2m.sel(lat=45.25, lon=-178.0).item(), (a + b) / 2, rtol=1e-6)


def test_box_across_antimeridian(t2m, t2m_2deg):
    from aid.grids import make_grid

    box = make_grid(np.arange(-19.0, -10.0, 2.0), np.arange(171.0, 190.0, 2.0), 2.0)
    out = regrid(t2m, box)
    assert out.lon.values.tolist() == list(np.arange(171.0, 190.0, 2.0))
    ref = t2m_2deg.t2m.sel(lat=box.lat.values, lon=((box.lon.values + 180) % 360) - 180)
    np.testing.assert_allclose(out.t2m.values, ref.values, atol=1e-4)


def test_nan_cells_are_renormalised(shared_data, t2m):
    lsm = xr.open_dataset(shared_data / "era5" / "era5-static-z-lsm-global.nc")
    lsm = lsm[[v for v in lsm.data_vars if "lsm" in v]].squeeze(drop=True)
    lsm = lsm.rename({k: {"latitude": "lat", "longitude": "lon"}[k] for k in lsm.dims if k in ("latitude", "longitude")})
    field = t2m.rename(latitude="lat", longitude="lon")
    land_only = field.where(lsm[list(lsm.data_vars)[0]].values > 0.5)
    box = fine_grid(load_config())
    src = land_only.sel(lat=slice(60, 45), lon=slice(340, 360))
    from aid.grids import make_grid

    out = regrid(src, make_grid(np.arange(51.0, 58.0, 2.0), np.arange(-17.0, 0.0, 2.0), 2.0))
    # each coarse value is the area-weighted mean over its *land* cells only; check one by hand
    cell = src.t2m.sortby("lat").sel(lat=slice(52.125, 53.875), lon=slice(356.125, 357.875))
    w = np.cos(np.deg2rad(cell.lat)) * cell.notnull()
    expected = float((cell.fillna(0) * w).sum() / w.sum())
    got = float(out.t2m.sel(lat=53.0, lon=-3.0))
    assert abs(got - expected) < 0.02, (got, expected)
    # a coarse cell with no land stays NaN, ocean was not averaged in as zero
    assert np.isnan(float(out.t2m.sel(lat=53.0, lon=-15.0)))
    assert int(out.t2m.notnull().sum()) >= 6
    assert box.sizes["lat"] == 32


def test_upsample_bicubic_and_conservative_have_no_nan_and_are_exact_where_they_must_be():
    cfg = load_config()
    c, f = coarse_grid(cfg), fine_grid(cfg)
    # a linear field is reproduced exactly by the cubic kernel, edges extrapolated linearly
    lin = xr.Dataset({"tas": (("lat", "lon"), 280 + 0.5 * c.lat.values[:, None] - 0.3 * c.lon.values[None, :])},
                     coords={"lat": c.lat.values, "lon": c.lon.values})
    up = upsample(lin, f, "bicubic")
    expected = 280 + 0.5 * f.lat.values[:, None] - 0.3 * f.lon.values[None, :]
    np.testing.assert_allclose(up.tas.values, expected, atol=1e-9)
    cons = upsample(lin, f, "conservative")
    assert int(cons.tas.isnull().sum()) == 0
    # inside a coarse cell, piecewise constant: fine (51.0, -9.0) lies in coarse (51, -9)
    assert cons.tas.sel(lat=51.0, lon=-9.0).item() == pytest.approx(lin.tas.sel(lat=51.0, lon=-9.0).item())
    assert cons.tas.sel(lat=50.0, lon=-10.0).item() == pytest.approx(lin.tas.sel(lat=51.0, lon=-9.0).item())


def test_coarsen_real_uk_month_is_area_mean(shared_data):
    cfg = load_config()
    ds = xr.open_dataset(shared_data / "era5" / "era5-2mt-2019-03-uk.grib", engine="cfgrib",
                         backend_kwargs={"indexpath": ""}).isel(time=slice(0, 24))
    ds = ds[["t2m"]].drop_vars(["number", "step", "surface", "valid_time"], errors="ignore").load()
    out = coarsen(ds, cfg)
    assert out.t2m.shape == (24, 4, 5)
    # ERA5 centres sit on multiples of 0.25, so the fine cells centred on the coarse edges (52, 54 N;
    # 8, 6 W) are cut in half by them
    src = ds.t2m.sortby("latitude").sel(latitude=slice(52.0, 54.0), longitude=slice(-8.0, -6.0))
    wy = np.cos(np.deg2rad(src.latitude)) * xr.where(src.latitude.isin([52.0, 54.0]), 0.5, 1.0)
    wx = xr.where(src.longitude.isin([-8.0, -6.0]), 0.5, 1.0)
    expected = (src * wy * wx).sum(("latitude", "longitude")) / (wy.sum() * wx.sum())
    np.testing.assert_allclose(out.t2m.sel(lat=53.0, lon=-7.0).values, expected.values, atol=2e-4)


def test_regrid_file_keeps_calendar_and_refuses_uncovered_domain(tmp_path):
    import cftime

    cfg = load_config(overrides={"output_dir": str(tmp_path)})
    g = fine_grid(cfg)
    time = xr.date_range("2015-01-01T12:00", periods=4, freq="D", calendar="noleap", use_cftime=True)
    rng = np.random.default_rng(0)
    src = xr.Dataset(
        {"tas": (("time", "lat", "lon"), (280 + rng.normal(size=(4, 11, 12))).astype("float32"), {"units": "K"})},
        coords={"time": time, "lat": np.arange(48.5, 59.0), "lon": np.arange(348.5, 360.0)},  # 0..360, 1 deg
        attrs={"source_id": "X"},
    )
    src.time.encoding.update({"units": "days since 1850-01-01", "calendar": "noleap"})
    inp = tmp_path / "in.nc"
    src.to_netcdf(inp)
    out = regrid_file(inp, cfg, tmp_path / "out.nc")
    with xr.open_dataset(out, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as r:
        assert isinstance(r.time.values[0], cftime.DatetimeNoLeap)
        assert r.tas.shape == (4, 4, 5) and r.attrs["source_id"] == "X" and r.attrs["aid_stage"] == "regrid"
        # 2 deg cell (50..52, -10..-8) = mean of four 1 deg cells, area weighted
        cell = src.tas.isel(time=0).sel(lat=[50.5, 51.5], lon=[350.5, 351.5]).values
        w = np.array([np.sin(np.deg2rad(51)) - np.sin(np.deg2rad(50)), np.sin(np.deg2rad(52)) - np.sin(np.deg2rad(51))])[:, None]
        np.testing.assert_allclose(r.tas.values[0, 0, 0], (cell * w).sum() / (2 * w.sum()), rtol=1e-6)
    assert g.sizes["lat"] == 32
    small = src.sel(lat=slice(48, 54))
    small.to_netcdf(tmp_path / "small.nc")
    with pytest.raises(DataError, match=r"small.nc: variable 'tas' does not cover the model coarse grid"):
        regrid_file(tmp_path / "small.nc", cfg, tmp_path / "bad.nc")
    assert not (tmp_path / "bad.nc").exists()


def test_xesmf_backend_without_esmf_is_a_clear_config_error(t2m):
    try:
        import xesmf  # noqa: F401
    except Exception:
        with pytest.raises(ConfigError, match=r"(?s)xesmf backend needs ESMF/esmpy.*set regrid.backend: xarray-regrid"):
            regrid(t2m, global_grid(2.0), backend="xesmf")
    else:  # pragma: no cover - only where ESMF exists
        out = regrid(t2m, global_grid(2.0), backend="xesmf")
        assert out.t2m.shape == (90, 180)


def _accessor_reference(src: xr.Dataset, target: xr.Dataset) -> xr.Dataset:
    """What aid.regrid used to compute: xarray-regrid's own accessor on the aligned source."""
    import xarray_regrid  # noqa: F401

    from aid.regrid import _target_coords, align_longitudes, normalise_coords

    t = _target_coords(target)
    aligned = align_longitudes(normalise_coords(src), t["lon"].values)
    has_nan = bool(aligned.t2m.isnull().any())
    return aligned.regrid.conservative(t, latitude_coord="lat", skipna=has_nan)


@pytest.mark.parametrize("case", ["coarsen", "coarsen_land_only", "refine_with_polar_rows", "box_across_antimeridian"])
def test_banded_conservative_equals_xarray_regrid_accessor(shared_data, t2m, t2m_2deg, case):
    """The fast path (xarray-regrid's weights folded onto the stored grid) == the accessor.

    Sources as stored (lat 90 -> -90, lon 0..360), so sorting, the periodic seam, xarray-regrid's
    added polar rows (2 deg source) and its NaN renormalisation all go through the weights.
    """
    from aid.grids import make_grid
    from aid.regrid import _conservative, _target_coords

    src = t2m.rename(latitude="lat", longitude="lon")
    target = global_grid(2.0)
    if case == "coarsen_land_only":
        lsm = xr.open_dataset(shared_data / "era5" / "era5-static-z-lsm-global.nc")
        mask = lsm[[v for v in lsm.data_vars if "lsm" in v][0]].squeeze(drop=True).values > 0.5
        src = src.where(mask)
    elif case == "refine_with_polar_rows":
        src, target = t2m_2deg, era5_global_grid()
    elif case == "box_across_antimeridian":
        target = make_grid(np.arange(-19.0, -10.0, 2.0), np.arange(171.0, 190.0, 2.0), 2.0)
    ref = _accessor_reference(src, target).t2m
    fast = _conservative(src[["t2m"]], _target_coords(target), align=True)
    assert fast is not None
    got = fast.t2m.transpose(*ref.dims).values
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref.values))
    # float32 arithmetic (the accessor with `sparse` installed works in float64): < 1e-4 K
    np.testing.assert_allclose(got, ref.values, atol=2e-4, rtol=0)
    if case == "coarsen_land_only":
        assert 0 < int(np.isnan(got).sum()) < got.size


def test_banded_conservative_time_split_and_dask_agree(t2m):
    """Many steps are split over threads (and dask chunks stay lazy); each step as if alone."""
    from aid.regrid import _conservative, _target_coords

    base = t2m.rename(latitude="lat", longitude="lon").t2m
    steps = xr.concat([base.roll(lon=7 * k, roll_coords=False) + 0.01 * k for k in range(6)], dim="time")
    src = steps.to_dataset(name="t2m")
    target = _target_coords(global_grid(2.0))
    together = _conservative(src, target, align=True).t2m.values
    alone = np.stack([_conservative(src.isel(time=[k]), target, align=True).t2m.values[0] for k in range(6)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-4)
    lazy = _conservative(src.chunk({"time": 2}), target, align=True).t2m
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.values, together, rtol=0, atol=1e-4)


def test_banded_products_in_dask_threads_leave_blas_threads_alone(t2m):
    """BLAS's thread count is process-wide and OpenBLAS may crash when it changes while another
    thread is inside a BLAS call, so only the main thread may change it: the dask tasks of a lazy
    regrid (four threads at once here) compute with whatever the main thread set, and agree with
    the eager result."""
    import threading

    import dask
    from threadpoolctl import threadpool_info

    from aid.regrid import _conservative, _target_coords
    from aid.regrid.banded import single_threaded_blas

    refused = []

    def enter() -> None:
        try:
            with single_threaded_blas():
                pass
        except RuntimeError as exc:
            refused.append(str(exc))

    worker = threading.Thread(target=enter)
    worker.start()
    worker.join()
    assert refused and "main thread" in refused[0]

    base = t2m.rename(latitude="lat", longitude="lon").t2m
    src = xr.concat([base + 0.5 * k for k in range(8)], dim="time").to_dataset(name="t2m")
    target = _target_coords(global_grid(2.0))
    eager = _conservative(src, target, align=True).t2m.values
    before = [(m["filepath"], m["num_threads"]) for m in threadpool_info() if m["user_api"] == "blas"]
    with dask.config.set(scheduler="threads", num_workers=4):
        lazy = _conservative(src.chunk({"time": 1}), target, align=True).t2m.values
    assert [(m["filepath"], m["num_threads"]) for m in threadpool_info() if m["user_api"] == "blas"] == before
    np.testing.assert_allclose(lazy, eager, rtol=0, atol=1e-4)
    with single_threaded_blas():
        assert {m["num_threads"] for m in threadpool_info() if m["user_api"] == "blas"} == {1}


def test_refined_polar_rows_at_the_seam_take_their_own_column(t2m_2deg):
    """Regression: the rim pass's ghost longitude column aliased 177E onto 179E's value."""
    fine = regrid(t2m_2deg, era5_global_grid())
    for lat, clat in ((90.0, 89.0), (-89.5, -89.0)):
        for lon, clon in ((176.25, 177.0), (177.0, 177.0), (179.0, 179.0), (-179.0, -179.0)):
            np.testing.assert_allclose(fine.t2m.sel(lat=lat, lon=lon).item(), t2m_2deg.t2m.sel(lat=clat, lon=clon).item(), rtol=1e-6)
