"""The demo archive: CMIP6-like files, the reference, and the documented model error, checked on values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid import demo
from aid.config import load_config
from aid.model.data import validation_split

CFT = xr.coders.CFDatetimeCoder(use_cftime=True)
SRC = "AID-ERA5-DERIVED"


def _gcm(root: Path, exp: str, member: str, var: str, year: int) -> Path:
    act = "CMIP" if exp == "historical" else "ScenarioMIP"
    return (root / "CMIP6" / act / "AID" / SRC / exp / member / "day" / var / "gn" / "v20260101"
            / f"{var}_day_{SRC}_{exp}_{member}_gn_{year}0101-{year}1231.nc")


def _ref(root: Path, var: str) -> xr.DataArray:
    return xr.open_dataset(root / "reference" / f"{var}_day_ERA5-derived_20120101-20141231.nc")[var]


def test_manifest_lists_every_file(demo_archive: Path) -> None:
    man = json.loads((demo_archive / "manifest.json").read_text())
    gcm = [f for f in man["files"] if f["kind"] == "gcm"]
    ref = [f for f in man["files"] if f["kind"] == "reference"]
    assert len(gcm) == 2 * 6 * 6 and len(ref) == 6  # members x years x variables
    assert all((demo_archive / f["path"]).exists() for f in man["files"])
    assert man["note"] == "derived from ERA5 (Copernicus C3S, CC-BY 4.0); NOT GCM output"
    assert {i["file"] for i in man["era5_inputs"]} >= {"era5-2mt-2019-03-uk.grib", "ERA5_2021-07-15_tp.nc"}
    assert man["recipe"]["temperature_bias_K"] == {"tas": 1.5, "tasmax": 2.0, "tasmin": 1.0}


@pytest.mark.parametrize(("var", "units"), [("tas", "K"), ("tasmax", "K"), ("tasmin", "K"), ("pr", "kg m-2 s-1"), ("uas", "m s-1"), ("vas", "m s-1")])
def test_gcm_files_look_like_cmip6(demo_archive: Path, var: str, units: str) -> None:
    path = _gcm(demo_archive, "ssp245", "r2i1p1f1", var, 2016)
    ds = xr.open_dataset(path, decode_times=CFT)
    assert ds["time"].encoding["calendar"] == "noleap" and ds.sizes["time"] == 365
    assert ds["lon"].values.tolist() == [351.0, 353.0, 355.0, 357.0, 359.0]
    assert ds["lat"].values.tolist() == [57.0, 55.0, 53.0, 51.0]
    assert ds[var].attrs["units"] == units
    for key, val in {"activity_id": "ScenarioMIP", "experiment_id": "ssp245", "source_id": SRC, "institution_id": "AID",
                     "variant_label": "r2i1p1f1", "table_id": "day", "frequency": "day", "variable_id": var}.items():
        assert ds.attrs[key] == val
    assert ds.attrs["tracking_id"] == demo._tracking_id(SRC, "ssp245", "r2i1p1f1", var, "2016")
    assert "NOT GCM output" in ds.attrs["license"] and "CC-BY 4.0" in ds.attrs["license"]
    assert "further_info_url" in ds.attrs and "time_bnds" in ds


def test_reference_grid_and_units(demo_archive: Path) -> None:
    for var, units in demo.REF_UNITS.items():
        da = _ref(demo_archive, var)
        assert da.shape == (1096, 33, 41)  # 2012 is a leap year in the standard calendar
        assert da.attrs["units"] == units
        assert float(da.lat[0]) == 50.0 and float(da.lat[-1]) == 58.0
        assert float(da.lon[0]) == -10.0 and float(da.lon[-1]) == 0.0


def test_reference_is_real_era5_march_days_plus_seasonal_cycle(demo_archive: Path, shared_data: Path) -> None:
    """Every reference tas day minus the seasonal anomaly is one of the 31 real ERA5 March daily means."""
    t2m = xr.open_dataset(shared_data / "era5" / "era5-2mt-2019-03-uk.grib", engine="cfgrib",
                          backend_kwargs={"indexpath": ""})["t2m"].sel(longitude=slice(-10, 0)).sortby("latitude")
    daily = t2m.groupby(t2m.time.dt.floor("D")).mean().values  # (31, 33, 41)
    anom = demo.seasonal_anomaly(shared_data / "era5")
    assert anom.shape == (365,) and abs(anom[59:90].mean()) < 1e-9
    assert anom[196] > 10.0 and anom[15] < -1.0  # a real continental seasonal cycle (July warm, January cold)
    tas = _ref(demo_archive, "tas")
    for i in (0, 200, 800):
        t = tas.time.to_index()[i]
        j = demo.day_index(np.array([t.month]), np.array([t.day]))[0]
        diff = np.abs(daily - (tas.values[i] - anom[j])).max(axis=(1, 2))
        assert diff.min() < 1e-3


def test_gcm_minus_coarsened_reference_is_the_documented_error(demo_archive: Path) -> None:
    """Member r1 follows the reference weather: the difference is exactly bias + warming."""
    day = 196  # 16 July (noleap index) of 2013; the reference's index for that date is 366 + 196
    ref_i = 366 + 196
    warming = 0.03 * (2013 - 2012)
    for var, bias in demo.TEMP_BIAS.items():
        gcm = xr.open_dataset(_gcm(demo_archive, "historical", "r1i1p1f1", var, 2013), decode_times=CFT)[var]
        assert str(gcm.time.values[day])[:10] == "2013-07-16"
        coarse_ref = demo.coarsen_to_demo_grid(_ref(demo_archive, var).isel(time=ref_i))
        g = gcm.isel(time=day).sortby("lat").values
        np.testing.assert_allclose(g - coarse_ref.values, bias + warming, atol=2e-4)
    # precipitation: x 1.3 x (1 + 0.02 dT), and flux units
    pr = xr.open_dataset(_gcm(demo_archive, "historical", "r1i1p1f1", "pr", 2013), decode_times=CFT)["pr"]
    ref_pr = demo.coarsen_to_demo_grid(_ref(demo_archive, "pr").isel(time=ref_i)).values
    np.testing.assert_allclose(pr.isel(time=day).sortby("lat").values * 86400.0, ref_pr * 1.3 * (1 + 0.02 * warming), rtol=1e-4, atol=1e-4)
    uas = xr.open_dataset(_gcm(demo_archive, "historical", "r1i1p1f1", "uas", 2013), decode_times=CFT)["uas"]
    ref_u = demo.coarsen_to_demo_grid(_ref(demo_archive, "uas").isel(time=ref_i)).values
    np.testing.assert_allclose(uas.isel(time=day).sortby("lat").values, 0.8 * ref_u + 0.5, atol=1e-4)
    # scenario warming continues from the end of the historical period: 0.06 + 0.06 * (2016 - 2014)
    assert demo.warming(2016, [2012, 2014]) == pytest.approx(0.18)


def test_coarsening_is_an_exact_area_weighted_mean() -> None:
    """A field equal to sin-weighted latitude gives the analytic cell mean; constants stay constant."""
    const = np.full((1, 33, 41), 7.0)
    np.testing.assert_allclose(demo.coarsen_fields(const), 7.0)
    lat_field = np.broadcast_to(demo.FINE_LAT[None, :, None], (1, 33, 41)).astype(float)
    got = demo.coarsen_fields(lat_field)[0, :, 0]
    assert got[0] == pytest.approx(51.0, abs=0.01) and got[0] < 51.0  # area weights favour the cell's equatorward half


def test_members_differ_in_weather_not_climate(demo_archive: Path) -> None:
    a = xr.open_dataset(_gcm(demo_archive, "historical", "r1i1p1f1", "tas", 2012), decode_times=CFT)["tas"]
    b = xr.open_dataset(_gcm(demo_archive, "historical", "r2i1p1f1", "tas", 2012), decode_times=CFT)["tas"]
    assert float(np.abs(a - b).mean()) > 0.5  # different days
    assert abs(float(a.mean()) - float(b.mean())) < 0.3  # same climate
    sa, sb = a.groupby("time.season").mean(...), b.groupby("time.season").mean(...)
    assert float(np.abs(sa - sb).max()) < 1.0


def test_physical_invariants(demo_archive: Path) -> None:
    for root_of in (lambda v: _ref(demo_archive, v),
                    lambda v: xr.open_dataset(_gcm(demo_archive, "ssp245", "r2i1p1f1", v, 2017), decode_times=CFT)[v]):
        tas, tx, tn, pr = (root_of(v).values for v in ("tas", "tasmax", "tasmin", "pr"))
        assert (pr >= 0).all()
        assert (tn <= tas + 1e-4).all() and (tas <= tx + 1e-4).all()
    pr = _ref(demo_archive, "pr").values
    assert 1.0 < pr.mean() < 6.0  # mm/day, a plausible mid-latitude mean (measured 2.9)


def test_deterministic(demo_archive: Path, tmp_path: Path, shared_data: Path) -> None:
    cfg = load_config(overrides={"output_dir": str(tmp_path), "demo_archive": {
        "members": ["r1i1p1f1"], "historical_years": [2012, 2012], "scenario_years": [2015, 2015]}})
    demo.write_demo_archive(cfg, shared_data / "era5", tmp_path / "d")
    for var in ("tas", "pr", "vas"):
        a = xr.open_dataset(_gcm(demo_archive, "historical", "r1i1p1f1", var, 2012), decode_times=CFT)
        b = xr.open_dataset(_gcm(tmp_path / "d", "historical", "r1i1p1f1", var, 2012), decode_times=CFT)
        np.testing.assert_array_equal(a[var].values, b[var].values)
        assert a.attrs["tracking_id"] == b.attrs["tracking_id"]
    assert (tmp_path / "d" / "manifest.json").exists()


def _patterns(da: xr.DataArray, kind: str) -> np.ndarray:
    """Each day's spatial pattern with the demo's per-day seasonal term removed (temperatures:
    additive, so minus the field mean; pr and winds: multiplicative, so over the field's norm)."""
    v = da.values.reshape(da.sizes["time"], -1).astype(np.float64)
    if kind == "add":
        return v - v.mean(axis=1, keepdims=True)
    norm = np.sqrt((v**2).mean(axis=1, keepdims=True))
    return np.where(norm > 0, v / np.where(norm > 0, norm, 1), np.nan)


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """RMS distance of every pattern of ``a`` to its closest pattern of ``b``."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).mean(axis=2)).min(axis=1)


@pytest.mark.parametrize(("var", "kind"), [("tas", "add"), ("tasmax", "add"), ("pr", "mul"), ("uas", "mul")])
def test_evaluation_year_weather_is_not_training_weather(demo_archive: Path, var: str, kind: str) -> None:
    """The default run trains on 2012-2013 and scores 2014: no 2014 reference day may re-use the real
    ERA5 day (or hour) of a training-year day. Before the pools were split every 2014 day was a copy."""
    cfg = load_config()
    e0, e1 = cfg["evaluation"]["period"]
    t0, t1 = cfg["model"]["train"]["years"]
    ref = _ref(demo_archive, var)
    years = ref["time"].dt.year
    ev = _patterns(ref.sel(time=(years >= e0) & (years <= e1)), kind)
    tr = _patterns(ref.sel(time=(years >= t0) & (years <= t1)), kind)
    ev, tr = ev[~np.isnan(ev).any(axis=1)], tr[~np.isnan(tr).any(axis=1)]
    assert len(ev) > 300 and len(tr) > 600
    tr_unique = np.unique(np.round(tr, 4), axis=0)
    # distance of every evaluation day to its closest training day, relative to the patterns' size
    d = _nearest(ev, tr_unique)
    scale = np.sqrt((tr_unique**2).mean())
    assert d.min() > 0.05 * scale, (var, float(d.min()), float(scale))
    # and the training years do re-use their own pool (the check can see a copy when there is one)
    dup = _nearest(tr[:50], tr_unique)
    assert dup.max() < 1e-3 * scale


@pytest.mark.parametrize(("var", "kind"), [("tas", "add"), ("pr", "mul"), ("uas", "mul")])
def test_validation_days_are_not_training_weather(demo_archive: Path, var: str, kind: str) -> None:
    """The days the model holds out for validation (its split of model.train.years) re-use no real
    ERA5 day (or hour) of the days it trains on: early stopping and the sampler tuning are judged
    on new weather. Before, they were copies of training days and the tuned sampler was
    under-dispersed on the held-out year."""
    cfg = load_config()
    t0, t1 = cfg["model"]["train"]["years"]
    ref = _ref(demo_archive, var)
    years = ref["time"].dt.year.values
    ref = ref.isel(time=(years >= t0) & (years <= t1))
    _, va = validation_split(ref["time"].values, cfg["model"]["train"]["val_fraction"],
                             cfg["model"]["train"]["val_block_days"])
    t = ref["time"].dt
    dates = list(zip(t.year.values.tolist(), t.month.values.tolist(), t.day.values.tolist()))
    assert sorted(dates[i] for i in va) == sorted(demo.validation_days(cfg, cfg["evaluation"]["period"]))
    is_val = np.zeros(ref.sizes["time"], bool)
    is_val[va] = True
    pat = _patterns(ref, kind)
    ok = ~np.isnan(pat).any(axis=1)
    val, tr = pat[is_val & ok], pat[~is_val & ok]
    assert len(val) > 40 and len(tr) > 500
    tr_unique = np.unique(np.round(tr, 4), axis=0)
    scale = np.sqrt((tr_unique**2).mean())
    d = _nearest(val, tr_unique)
    assert d.min() > 0.05 * scale, (var, float(d.min()), float(scale))
    # validation days repeat their own small pool, so the check can see a copy when there is one
    dv = np.sqrt(((val[:20, None, :] - val[None, :, :]) ** 2).mean(axis=2))
    dv[np.arange(20), np.arange(20)] = np.inf
    assert dv.min(axis=1).max() < 1e-3 * scale
