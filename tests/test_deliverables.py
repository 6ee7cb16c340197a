"""Deliverable files (CF/CORDEX layout) through the bicubic baseline job, on inputs derived from real ERA5.

The derived case (built once per session, also used by tests/test_downscale.py and
tests/test_checks.py): daily mean/max/min of the real ERA5 2 m temperature over the UK (March 2019)
as tas/tasmax/tasmin, the real ERA5 daily precipitation fields of three days and the real hourly
10 m wind fields of 2020-01-01 as pr/uas/vas, repeated over whole years (with a seasonal
temperature offset) on a 0.25 deg domain (the south-west quarter of the default UK box,
``make_config``; bench/downscale_memory.py uses the full default box), then coarsened to the model grid with
``aid.regrid.coarsen`` and written like the adjust stage's output (noleap, ``bias_adjustment`` attrs).
DERIVED test data, not model output.
"""

from __future__ import annotations

import copy
import re
import uuid
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

from aid import naming
from aid.config import REPO_ROOT, deep_update, resolve_placeholders, validate
from aid.deliverables import FILL_VALUE, VARIABLES, to_file_units, year_days
from aid.errors import ConfigError, DataError

DATA = Path("/work/shared/data/era5")
SOURCE = "AID-ERA5-DERIVED"
EXP = "historical"
MEMBER = "r1i1p1f1"
YEAR = 2013
CORDEX = re.compile(
    r"^(?P<var>[a-zA-Z]+)_(?P<domain>[A-Za-z0-9-]+)_(?P<source>[A-Za-z0-9-]+)_(?P<exp>[A-Za-z0-9-]+)_"
    r"(?P<member>r\d+i\d+p\d+f\d+)_(?P<inst>[A-Za-z0-9-]+)_(?P<model>aid|aid-bicubic)_(?P<ver>v\d+)-r(?P<sample>\d+)_day_"
    r"(?P<start>\d{8})-(?P<end>\d{8})\.nc$"
)
CORDEX_VARS = {
    "tas": ("K", "air_temperature", "area: time: mean"),
    "tasmax": ("K", "air_temperature", "area: mean time: maximum"),
    "tasmin": ("K", "air_temperature", "area: mean time: minimum"),
    "pr": ("kg m-2 s-1", "precipitation_flux", "area: time: mean"),
    "uas": ("m s-1", "eastward_wind", "area: time: mean"),
    "vas": ("m s-1", "northward_wind", "area: time: mean"),
    "sfcWind": ("m s-1", "wind_speed", "area: time: mean"),
}
BIAS_ATTRS = {
    "bias_adjustment": "xsdba QDM (tas, tasmax, tasmin: additive; pr: multiplicative), DQM (uas, vas), group time.month",
    "bias_adjustment_reference_period": "2012-2014",
    "tracking_id": "hdl:21.14100/0e1f2a3b-derived-test",
}


def make_config(out: Path, **downscale) -> dict:
    base = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    # a quarter of the default UK box (16 x 20 fine cells, 2 x 2 coarse cells) keeps the tests fast
    over = {"output_dir": str(out), "model": {"size": "tiny"}, "domain": {"lat": [50.0, 53.75], "lon": [-10.0, -5.25]},
            # steps 1 (one network evaluation per member): the few-step test checkpoint is barely
            # trained, and the 2nd-order Heun correction of an untrained model amplifies noise
            "downscale": {"n_samples": 2, "steps": 1, "batch_days": 100, "device": "cpu", **downscale}}
    return resolve_placeholders(validate(deep_update(base, over)))


def _era5_daily(lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
    """Real daily fields on the fine grid ``lat`` x ``lon`` inside the UK box (index-mapped where the box differs)."""
    t2m = xr.open_dataset(DATA / "era5-2mt-2019-03-uk.grib", engine="cfgrib", backend_kwargs={"indexpath": ""})["t2m"]
    t2m = t2m.rename(latitude="lat", longitude="lon").sortby("lat").sel(lat=lat, lon=lon, method="nearest", tolerance=1e-3)
    t2m = t2m.load().resample(time="1D")
    ny, nx = lat.size, lon.size
    out = {"tas": t2m.mean().values, "tasmax": t2m.max().values, "tasmin": t2m.min().values}
    prs = []
    for day in ("2020-01-01", "2021-07-15", "2022-08-31"):
        tp = xr.open_dataset(DATA / f"ERA5_{day}_tp.nc")["tp"].sortby("latitude").values  # m per hour
        prs.append(tp.sum(axis=0)[:ny, :nx] * 1000.0)  # mm d-1
    out["pr"] = np.clip(np.stack(prs), 0, None)
    for v, f in (("uas", "u10"), ("vas", "v10")):
        out[v] = xr.open_dataset(DATA / f"ERA5_2020-01-01_{f}.nc")[f].sortby("latitude").values[:, :ny, :nx]
    return {k: np.asarray(v, dtype="f4") for k, v in out.items()}


def derived_fine(cfg: dict, years: list[int], calendar: str = "noleap") -> xr.Dataset:
    """Whole years of 0.25 deg daily fields derived from real ERA5 (see module docstring)."""
    from aid.grids import fine_grid

    grid = fine_grid(cfg)
    era = _era5_daily(grid.lat.values, grid.lon.values)
    days = [d for y in years for d in year_days(y, calendar)]
    n = len(days)
    doy = np.array([d.dayofyr for d in days])
    season = (8.0 * np.sin(2 * np.pi * (doy - 105) / 365.0)).astype("f4")[:, None, None]
    i = np.arange(n)
    data = {
        "tas": era["tas"][i % 31] + season,
        "tasmax": era["tasmax"][i % 31] + season,
        "tasmin": era["tasmin"][i % 31] + season,
        "pr": np.where((i % 4 < 3)[:, None, None], era["pr"][i % 3], 0.0).astype("f4"),
        "uas": era["uas"][i % 24],
        "vas": era["vas"][i % 24],
    }
    ds = xr.Dataset({k: (("time", "lat", "lon"), v) for k, v in data.items()},
                    coords={"time": days, "lat": grid.lat.values, "lon": grid.lon.values})
    for v in data:  # aid's internal units, as the adjust stage writes them
        ds[v].attrs = {"units": VARIABLES[v].internal_units or VARIABLES[v].units,
                       "standard_name": VARIABLES[v].standard_name}
    return ds


def write_coarse(cfg: dict, fine: xr.Dataset, path: Path, per_variable: bool = False) -> list[str]:
    """Coarsen with the pipeline's own path (aid.regrid.coarsen) and write like the adjust stage."""
    from aid.regrid import coarsen

    coarse = coarsen(fine, cfg).transpose("time", "lat", "lon")
    coarse = coarse.drop_vars([v for v in coarse.data_vars if v not in fine.data_vars])
    for v in fine.data_vars:
        coarse[v] = coarse[v].astype("f4")
        coarse[v].attrs = dict(fine[v].attrs)
    enc = {"time": {"units": "days since 1950-01-01", "calendar": fine.time.values[0].calendar}}
    if per_variable:
        path.mkdir(parents=True, exist_ok=True)
        out = []
        for v in fine.data_vars:
            p = path / f"{v}.nc"
            coarse[[v]].to_netcdf(p, encoding=enc)
            out.append(str(p))
        return out
    coarse.attrs.update(BIAS_ATTRS)
    path.parent.mkdir(parents=True, exist_ok=True)
    coarse.to_netcdf(path, encoding=enc)
    return [str(path)]


@pytest.fixture(scope="session")
def case(tmp_path_factory) -> dict:
    """Derived fine/coarse data for YEAR (noleap) under a session tmp dir, and its config."""
    root = tmp_path_factory.mktemp("aid_case")
    cfg = make_config(root / "results")
    fine = derived_fine(cfg, [YEAR])
    adjusted = write_coarse(cfg, fine, Path(cfg["output_dir"]) / "adjusted" / SOURCE / EXP / f"{MEMBER}.nc")
    return {"root": root, "cfg": cfg, "fine": fine, "adjusted": adjusted}


@pytest.fixture(scope="session")
def baseline_files(case) -> dict:
    from aid.downscale import baseline_year

    cfg = case["cfg"]
    paths = naming.deliverable_paths(cfg, SOURCE, EXP, MEMBER, YEAR, baseline=True)
    baseline_year(cfg, case["adjusted"], SOURCE, EXP, MEMBER, YEAR, [str(p) for p in paths.values()])
    return paths


# ----------------------------------------------------------------------------------------------
def test_baseline_names_attrs_dims_calendar(case, baseline_files) -> None:
    cfg = case["cfg"]
    assert len(baseline_files) == len(cfg["search"]["variables"])
    for (var, s), p in baseline_files.items():
        m = CORDEX.match(p.name)
        assert m and m["var"] == var and m["model"] == "aid-bicubic" and m["sample"] == "1", p.name
        assert (m["start"], m["end"]) == (f"{YEAR}0101", f"{YEAR}1231")
        ds = xr.open_dataset(p, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
        assert ds[var].dims == ("time", "lat", "lon")
        assert ds[var].dtype == np.float32
        assert ds.sizes == {"time": 365, "lat": 16, "lon": 20, "bnds": 2}
        assert ds.time.dt.calendar == "noleap"  # model calendar kept
        assert ds[var].attrs["units"] == VARIABLES[var].units
        assert ds[var].attrs["standard_name"] == VARIABLES[var].standard_name
        assert "time: " in ds[var].attrs["cell_methods"]
        # the CORDEX-CMIP6 data request (CMIP6 day table): unit, standard name, cell_methods per variable
        assert (ds[var].attrs["units"], ds[var].attrs["standard_name"], ds[var].attrs["cell_methods"]) == CORDEX_VARS[var]
        assert ds[var].encoding["_FillValue"] == FILL_VALUE and ds[var].encoding["missing_value"] == FILL_VALUE
        a = ds.attrs
        assert a["Conventions"] == "CF-1.11" and a["project_id"] == "CORDEX-CMIP6" and a["activity_id"] == "DD"
        assert (a["driving_source_id"], a["driving_experiment_id"], a["driving_variant_label"]) == (SOURCE, EXP, MEMBER)
        assert a["domain_id"] == cfg["domain"]["id"] and a["variable_id"] == var and a["frequency"] == "day"
        assert a["source_id"] == "aid-bicubic" and a["version_realization"] == "v1-r1" and a["mip_era"] == "CMIP6"
        # a plain uuid: never minted under CORDEX's registered handle prefix hdl:21.14103/
        assert "21.14103" not in a["tracking_id"] and str(uuid.UUID(a["tracking_id"])) == a["tracking_id"]
        assert a["driving_tracking_id"] == BIAS_ATTRS["tracking_id"]
        assert a["bias_adjustment"] == BIAS_ATTRS["bias_adjustment"]
        assert a["bias_adjustment_reference_period"] == "2012-2014"
        assert a["aid_calendar"] == "noleap"
        for key in ("institution_id", "license", "contact", "creation_date", "further_info_url", "domain"):
            assert a[key], key
        if var in ("tas", "tasmin", "tasmax"):
            assert int(a["aid_temperature_order_fixes"]) >= 0
        if var == "pr":
            assert int(a["aid_pr_negative_fixes"]) >= 0
        for c, std, units, axis in (("lat", "latitude", "degrees_north", "Y"), ("lon", "longitude", "degrees_east", "X")):
            assert (ds[c].attrs["standard_name"], ds[c].attrs["units"], ds[c].attrs["axis"]) == (std, units, axis)
            b = ds[f"{c}_bnds"].values
            np.testing.assert_allclose(b[:, 1] - b[:, 0], 0.25)
            np.testing.assert_allclose(b.mean(axis=1), ds[c].values)
        days = ds.time.values
        assert days[0] == type(days[0])(YEAR, 1, 1, 12) and days[-1] == type(days[0])(YEAR, 12, 31, 12)
        tb = ds["time_bnds"].values
        assert tb[0, 0] == type(days[0])(YEAR, 1, 1) and tb[0, 1] == type(days[0])(YEAR, 1, 2)
    raw = netCDF4.Dataset(baseline_files[("tas", 1)])
    assert raw["time"].units == "days since 1950-01-01 00:00:00" and raw["time"].calendar == "noleap"
    assert raw["time"].bounds == "time_bnds"
    # 2013-01-01T12 in noleap days since 1950: 63 years of 365 days + 0.5
    assert raw["time"][0] == 63 * 365 + 0.5
    raw.close()


def test_baseline_values_are_bicubic_of_input_at_the_right_day(case, baseline_files) -> None:
    """Day alignment and science: the file's day d is the bicubic upsampling of input day d."""
    from aid.grids import fine_grid
    from aid.regrid import upsample

    coarse = xr.open_dataset(case["adjusted"][0], decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    for var, d in (("uas", 0), ("uas", 200), ("pr", 150), ("tas", 364)):
        got = xr.open_dataset(baseline_files[(var, 1)])[var].values[d]
        want = upsample(coarse[[var]].isel(time=[d]).load(), fine_grid(case["cfg"]), "bicubic")[var].values[0]
        if var == "pr":  # delivered in kg m-2 s-1: the internal mm d-1 / 86400
            want = to_file_units("pr", np.maximum(want, 0))
        np.testing.assert_array_equal(got, want.astype("f4"))
    # bicubic keeps the large-scale field: domain mean within 0.3 K of the fine truth it was coarsened from
    tas = xr.open_dataset(baseline_files[("tas", 1)])["tas"].values
    assert abs(float(tas.mean()) - float(case["fine"]["tas"].mean())) < 0.3
    tx = xr.open_dataset(baseline_files[("tasmax", 1)])["tasmax"].values
    tn = xr.open_dataset(baseline_files[("tasmin", 1)])["tasmin"].values
    pr = xr.open_dataset(baseline_files[("pr", 1)])["pr"].values * 86400.0  # mm d-1
    assert np.all(tn <= tas) and np.all(tas <= tx) and pr.min() >= 0 and pr.max() > 5  # real rain survives


def test_rerun_is_bit_identical_with_same_tracking_id(case, baseline_files, tmp_path) -> None:
    from aid.downscale import baseline_year

    cfg = copy.deepcopy(case["cfg"])
    cfg["output_dir"] = str(tmp_path / "results")
    p1 = baseline_files[("tasmax", 1)]
    p2 = naming.deliverable_paths(cfg, SOURCE, EXP, MEMBER, YEAR, baseline=True)[("tasmax", 1)]
    baseline_year(cfg, case["adjusted"], SOURCE, EXP, MEMBER, YEAR, [str(p2)])
    a, b = xr.open_dataset(p1), xr.open_dataset(p2)
    np.testing.assert_array_equal(a["tasmax"].values, b["tasmax"].values)
    assert a.attrs["tracking_id"] == b.attrs["tracking_id"]
    assert a.attrs["aid_temperature_order_fixes"] == b.attrs["aid_temperature_order_fixes"]


def test_per_variable_standard_calendar_inputs(case, tmp_path) -> None:
    """The evaluation run's inputs: one file per variable, standard calendar, a leap year."""
    from aid.downscale import baseline_year

    cfg = copy.deepcopy(case["cfg"])
    cfg["output_dir"] = str(tmp_path / "results")
    fine = derived_fine(cfg, [2012], calendar="standard")
    files = write_coarse(cfg, fine, tmp_path / "reference" / "coarse", per_variable=True)
    paths = naming.deliverable_paths(cfg, "ERA5", "evaluation", "r1i1p1f1", 2012, baseline=True)
    baseline_year(cfg, files, "ERA5", "evaluation", "r1i1p1f1", 2012, [str(p) for p in paths.values()])
    ds = xr.open_dataset(paths[("pr", 1)], decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    assert ds.sizes["time"] == 366 and ds.time.dt.calendar == "standard"
    assert str(ds.time.values[59])[:10] == "2012-02-29"
    assert ds.attrs["driving_institution_id"] == "ECMWF"


def test_failure_mid_job_leaves_no_output(case, tmp_path) -> None:
    """A NaN in the input's day 250 fails the job after two batches were written: nothing is left."""
    from aid.downscale import baseline_year

    cfg = copy.deepcopy(case["cfg"])
    cfg["output_dir"] = str(tmp_path / "results")
    bad = xr.open_dataset(case["adjusted"][0], decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)).load()
    bad["vas"][250, 1, 1] = np.nan
    src = tmp_path / "bad.nc"
    bad.to_netcdf(src, encoding={"time": {"units": "days since 1950-01-01", "calendar": "noleap"}})
    paths = naming.deliverable_paths(cfg, SOURCE, EXP, MEMBER, YEAR, baseline=True)
    with pytest.raises(DataError, match=r"bad\.nc: variable 'vas' has 1 NaN/inf value\(s\) in days "
                                         r"2013-07-20\.\.2013-10-27 \(first on 2013-09-08\)"):
        baseline_year(cfg, [str(src)], SOURCE, EXP, MEMBER, YEAR, [str(p) for p in paths.values()])
    outdir = next(iter(paths.values())).parent
    assert outdir.exists() and list(outdir.iterdir()) == []  # not even hidden .part files


def test_year_absent_names_the_file(case, tmp_path) -> None:
    from aid.downscale import baseline_year

    cfg = copy.deepcopy(case["cfg"])
    cfg["output_dir"] = str(tmp_path / "results")
    paths = naming.deliverable_paths(cfg, SOURCE, EXP, MEMBER, 2030, baseline=True)
    with pytest.raises(DataError, match=rf"{re.escape(case['adjusted'][0])}: year 2030 is not in the coarse input "
                                        rf"\(it covers 2013-2013\)"):
        baseline_year(cfg, case["adjusted"], SOURCE, EXP, MEMBER, 2030, [str(p) for p in paths.values()])
    assert not any(p.exists() for p in paths.values())


@pytest.mark.parametrize("keep_open", [True, False])
def test_writer_roundtrip_and_abort(tmp_path, monkeypatch, keep_open) -> None:
    """Values read back equal the float32 written (pr: mm d-1 in, kg m-2 s-1 in the file, the value / 86400);
    an exception removes every file.

    ``keep_open=False`` is the path taken for jobs with more than MAX_OPEN_FILES outputs.
    """
    from aid import deliverables
    from aid.deliverables import DeliverableSet

    monkeypatch.setattr(deliverables, "MAX_OPEN_FILES", 128 if keep_open else 0)
    days = year_days(2001, "360_day")
    lat, lon = np.arange(50.0, 51.0, 0.25), np.arange(-2.0, -1.0, 0.25)
    rng = np.random.default_rng(0)
    pr = (rng.gamma(0.5, 4.0, (360, 4, 4)) * (rng.random((360, 4, 4)) > 0.4)).astype("f4")
    targets = {("pr", 1): tmp_path / "pr.nc", ("tas", 1): tmp_path / "tas.nc"}
    with DeliverableSet(targets, days, "360_day") as out:
        out.create(lat, lon, {k: {"variable_id": k[0]} for k in targets})
        for b in range(0, 360, 100):
            out.write(("pr", 1), b, pr[b:b + 100])
            out.write(("tas", 1), b, 280 + pr[b:b + 100])
        out.update_attrs(("pr", 1), {"aid_pr_negative_fixes": 0})
    ds = xr.open_dataset(targets[("pr", 1)], decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    np.testing.assert_array_equal(ds["pr"].values, (pr.astype("f8") / 86400.0).astype("f4"))
    np.testing.assert_allclose(ds["pr"].values.astype("f8") * 86400.0, pr, rtol=1e-6)
    assert ds["pr"].attrs["units"] == "kg m-2 s-1" and ds["pr"].attrs["standard_name"] == "precipitation_flux"
    assert ds.attrs["aid_pr_negative_fixes"] == "0"
    np.testing.assert_array_equal(xr.open_dataset(targets[("tas", 1)])["tas"].values, 280 + pr)  # K unchanged
    assert ds.time.dt.calendar == "360_day" and str(ds.time.values[-1])[:10] == "2001-12-30"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pr.nc", "tas.nc"]

    other = {("pr", 2): tmp_path / "x" / "pr2.nc"}
    with pytest.raises(RuntimeError, match="boom"), DeliverableSet(other, days, "360_day") as out:
        out.create(lat, lon, {k: {} for k in other})
        out.write(("pr", 2), 0, pr[:100])
        raise RuntimeError("boom")
    assert list((tmp_path / "x").iterdir()) == []


def test_360_day_names_end_on_the_30th(case, tmp_path) -> None:
    """A 360_day driving model: the file is named ...1230 and holds 360 days ending on 30 December;
    a source whose calendar the config does not declare is refused before anything is written."""
    from aid.downscale import baseline_year

    cfg = copy.deepcopy(case["cfg"])
    cfg["output_dir"] = str(tmp_path / "results")
    fine = derived_fine(cfg, [YEAR], calendar="360_day")
    src = write_coarse(cfg, fine, tmp_path / "adjusted360.nc")
    undeclared = naming.deliverable_paths(cfg, "HadGEM3-GC31-MM", "ssp245", MEMBER, YEAR, baseline=True)
    with pytest.raises(ConfigError, match=r"deliverables\.calendars: \{HadGEM3-GC31-MM: 360_day\}"):
        baseline_year(cfg, src, "HadGEM3-GC31-MM", "ssp245", MEMBER, YEAR, [str(p) for p in undeclared.values()])
    assert not any(p.exists() for p in undeclared.values())
    cfg["deliverables"]["calendars"] = {"HadGEM3-GC31-MM": "360_day"}
    paths = naming.deliverable_paths(cfg, "HadGEM3-GC31-MM", "ssp245", MEMBER, YEAR, baseline=True)
    baseline_year(cfg, src, "HadGEM3-GC31-MM", "ssp245", MEMBER, YEAR, [str(p) for p in paths.values()])
    p = paths[("tas", 1)]
    assert p.name.endswith(f"_day_{YEAR}0101-{YEAR}1230.nc")
    ds = xr.open_dataset(p, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    assert ds.time.dt.calendar == "360_day" and ds.sizes["time"] == 360
    assert str(ds.time.values[-1])[:10] == f"{YEAR}-12-30"


def test_tracking_prefix_is_the_users(case, tmp_path) -> None:
    from aid.downscale import baseline_year

    cfg = copy.deepcopy(case["cfg"])
    cfg["output_dir"] = str(tmp_path / "results")
    cfg["deliverables"]["tracking_prefix"] = "hdl:21.T99999/"
    paths = naming.deliverable_paths(cfg, SOURCE, EXP, MEMBER, YEAR, baseline=True)
    baseline_year(cfg, case["adjusted"], SOURCE, EXP, MEMBER, YEAR, [str(paths[("pr", 1)])])
    tid = xr.open_dataset(paths[("pr", 1)]).attrs["tracking_id"]
    assert tid.startswith("hdl:21.T99999/") and uuid.UUID(tid.removeprefix("hdl:21.T99999/"))


def test_join_years_into_a_cordex_block(case, baseline_files, tmp_path) -> None:
    """deliverables.years_per_file 5: two yearly files (2013 noleap, 2014) joined into one 2013-2014
    file of the 2011-2015 block: every value, the time axis and the summed fix counts carried over."""
    from aid.downscale import baseline_year
    from aid.join_years import join_years

    cfg = copy.deepcopy(case["cfg"])
    cfg["output_dir"] = str(tmp_path / "results")
    fine = derived_fine(cfg, [2014])
    src = write_coarse(cfg, fine, tmp_path / "adjusted2014.nc")
    y14 = naming.deliverable_paths(cfg, SOURCE, EXP, MEMBER, 2014, baseline=True)[("tasmax", 1)]
    baseline_year(cfg, src, SOURCE, EXP, MEMBER, 2014, [str(y14)])
    y13 = baseline_files[("tasmax", 1)]
    cfg["deliverables"]["years_per_file"] = 5
    out = naming.block_paths(cfg, SOURCE, EXP, MEMBER, 2013, 2014, baseline=True)[("tasmax", 1)]
    assert out.parent.name == "2013-2014" and out.name.endswith("_day_20130101-20141231.nc")
    join_years(cfg, [str(y14), str(y13)], out)
    cft = xr.coders.CFDatetimeCoder(use_cftime=True)
    a, b, j = (xr.open_dataset(p, decode_times=cft) for p in (y13, y14, out))
    assert j.sizes["time"] == 730 and j.time.dt.calendar == "noleap"
    np.testing.assert_array_equal(j["tasmax"].values, np.concatenate([a["tasmax"].values, b["tasmax"].values]))
    np.testing.assert_array_equal(j["time_bnds"].values[365], b["time_bnds"].values[0])
    assert j["tasmax"].attrs == a["tasmax"].attrs and j["tasmax"].encoding["_FillValue"] == FILL_VALUE
    assert int(j.attrs["aid_temperature_order_fixes"]) == (int(a.attrs["aid_temperature_order_fixes"])
                                                          + int(b.attrs["aid_temperature_order_fixes"]))
    assert j.attrs["tracking_id"] not in (a.attrs["tracking_id"], b.attrs["tracking_id"])
    assert j.attrs["aid_joined_from"] == f"{y13.name} {y14.name}"
    with pytest.raises(DataError, match="time range is not"):
        join_years(cfg, [str(y13)], out)
