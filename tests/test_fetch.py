"""fetch_dataset / check_completeness on the real CMIP6 files, intake-esm's sample catalog and the demo archive."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import xarray as xr

from aid.catalog import build_catalog
from aid.cli import main
from aid.config import load_config
from aid.errors import DataError
from aid.fetch import check_completeness, fetch_dataset

CFT = xr.coders.CFDatetimeCoder(use_cftime=True)
SAMPLE = "cmip6/intake-esm-sample/tests/sample-catalogs/cmip6-netcdf.json"


def _cfg(**over: Any) -> dict[str, Any]:
    from aid.config import deep_update

    cfg = load_config()
    return deep_update(cfg, over)


def _no_output(out_dir: Path) -> None:
    assert not out_dir.exists() or list(out_dir.iterdir()) == [], list(out_dir.iterdir())


@pytest.fixture(scope="module")
def real_catalog(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_catalog(shared_data / "cmip6" / "CMIP6", tmp_path_factory.mktemp("realcat") / "cmip6.json")


@pytest.fixture(scope="module")
def demo_catalog(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_catalog(demo_archive / "CMIP6", tmp_path_factory.mktemp("democat") / "catalog.json")


# ---------------------------------------------------------------------------------------------
# demo archive: the default data path


def test_fetch_demo_tas_standardised_and_cropped(demo_archive: Path, demo_catalog: Path, tmp_path: Path) -> None:
    cfg = _cfg()
    out = fetch_dataset(demo_catalog, cfg, "AID-ERA5-DERIVED", "historical", "r1i1p1f1", "tas", tmp_path / "tas.nc")
    ds = xr.open_dataset(out, decode_times=CFT)
    assert ds["tas"].dims == ("time", "lat", "lon")
    assert ds["lat"].values.tolist() == [51.0, 53.0, 55.0, 57.0]
    assert ds["lon"].values.tolist() == [-9.0, -7.0, -5.0, -3.0, -1.0]  # 351..359 -> -9..-1
    assert ds.sizes["time"] == 3 * 365 and ds.attrs["calendar"] == "noleap"
    assert ds["time"].values[0].hour == 12
    raw_file = next((demo_archive / "CMIP6/CMIP/AID/AID-ERA5-DERIVED/historical/r1i1p1f1/day/tas").rglob("*_20130101-20131231.nc"))
    with netCDF4.Dataset(raw_file) as nc:
        raw = float(nc["tas"][196, 0, 4])  # 2013-07-16, lat 57 (first row: descending), lon 359
        tid = nc.tracking_id
        assert nc["lat"][0] == 57.0 and nc["lon"][4] == 359.0
    got = float(ds["tas"].sel(lat=57.0, lon=-1.0).isel(time=365 + 196))
    assert got == pytest.approx(raw, abs=1e-4)
    # provenance
    assert ds.attrs["aid_dataset_key"] == "CMIP.AID.AID-ERA5-DERIVED.historical.r1i1p1f1.day.tas.gn"
    assert tid in ds.attrs["aid_source_tracking_id"].split()
    assert ds.attrs["aid_catalog"] == "catalog.json"
    assert "CC-BY 4.0" in ds.attrs["license"] and "NOT GCM output" in ds.attrs["license"]
    assert ds.attrs["aid_stage"] == "fetch" and ds.attrs["aid_version"]


def test_fetch_demo_pr_in_mm_per_day(demo_archive: Path, demo_catalog: Path, tmp_path: Path) -> None:
    cfg = _cfg()
    out = fetch_dataset(demo_catalog, cfg, "AID-ERA5-DERIVED", "ssp245", "r2i1p1f1", "pr", tmp_path / "pr.nc")
    ds = xr.open_dataset(out, decode_times=CFT)
    raw_file = next((demo_archive / "CMIP6/ScenarioMIP/AID/AID-ERA5-DERIVED/ssp245/r2i1p1f1/day/pr").rglob("*_20150101-20151231.nc"))
    with netCDF4.Dataset(raw_file) as nc:
        assert nc["pr"].units == "kg m-2 s-1"
        raw = nc["pr"][:, ::-1, :].data.astype("float64")
    assert ds["pr"].attrs["units"] == "mm d-1"
    np.testing.assert_allclose(ds["pr"].values[:365], raw * 86400.0, rtol=1e-5)
    assert float(ds["pr"].min()) >= 0.0


def test_completeness_ok_and_failures(demo_catalog: Path, tmp_path: Path) -> None:
    cfg = _cfg(search={"variables": ["tas", "pr"]})
    paths = [fetch_dataset(demo_catalog, cfg, "AID-ERA5-DERIVED", "historical", "r1i1p1f1", v, tmp_path / f"{v}.nc") for v in ("tas", "pr")]
    summary = check_completeness(paths, cfg, "AID-ERA5-DERIVED", "historical", "r1i1p1f1", tmp_path / "ok" / "completeness.json")
    doc = json.loads(summary.read_text())
    assert doc["ok"] is True
    assert doc["variables"]["tas"]["expected_days"] == 1095 and doc["variables"]["tas"]["missing_days"] == 0
    assert 250.0 < doc["variables"]["tas"]["min"] < doc["variables"]["tas"]["max"] < 310.0

    # the data end in 2014: asking for 2012-2015 leaves 365 noleap days missing
    longer = _cfg(search={"variables": ["tas", "pr"], "experiments": {"historical": [2012, 2015]}})
    with pytest.raises(DataError) as exc:
        check_completeness(paths, longer, "AID-ERA5-DERIVED", "historical", "r1i1p1f1", tmp_path / "bad" / "c.json")
    msg = str(exc.value)
    assert msg.startswith("fetched data of AID-ERA5-DERIVED/historical/r1i1p1f1 failed the completeness check:")
    assert "CMIP.AID.AID-ERA5-DERIVED.historical.r1i1p1f1.day.tas.gn: 365 of 1460 days of 2012-2015 (noleap calendar) are missing (first: 2015-01-01" in msg
    _no_output(tmp_path / "bad")

    # an all-NaN day and an impossible temperature
    ds = xr.open_dataset(paths[0], decode_times=CFT).load()
    ds["tas"][10] = np.nan
    ds["tas"][20, 0, 0] = 400.0
    bad = tmp_path / "edited" / "tas.nc"
    bad.parent.mkdir()
    ds.to_netcdf(bad)
    with pytest.raises(DataError) as exc:
        check_completeness([bad, paths[1]], cfg, "AID-ERA5-DERIVED", "historical", "r1i1p1f1", tmp_path / "bad2" / "c.json")
    msg = str(exc.value)
    assert "1 time steps are NaN everywhere (first: 2012-01-11)" in msg
    assert "1 values outside the physical bounds 170..345 K (min" in msg and "max 400)" in msg
    _no_output(tmp_path / "bad2")

    # a variable of the config with no fetched file
    with pytest.raises(DataError, match=r"no fetched file for variable\(s\) \['pr'\]"):
        check_completeness(paths[:1], cfg, "AID-ERA5-DERIVED", "historical", "r1i1p1f1", tmp_path / "bad3" / "c.json")
    _no_output(tmp_path / "bad3")


def test_cli_fetch_and_check(demo_catalog: Path, tmp_path: Path) -> None:
    cfgfile = tmp_path / "cfg.yaml"
    import yaml

    raw = yaml.safe_load(open(Path(__file__).parents[1] / "config" / "config.yaml"))
    raw["output_dir"] = str(tmp_path / "res")
    raw["search"]["variables"] = ["uas"]
    cfgfile.write_text(yaml.safe_dump(raw))
    rc = main(["fetch", "--catalog", str(demo_catalog), "--config", str(cfgfile), "--source", "AID-ERA5-DERIVED",
               "--experiment", "historical", "--member", "r2i1p1f1", "--variable", "uas", "--out", str(tmp_path / "uas.nc")])
    assert rc == 0
    ds = xr.open_dataset(tmp_path / "uas.nc", decode_times=CFT)
    assert ds["uas"].attrs["units"] == "m s-1" and ds.attrs["variant_label"] == "r2i1p1f1"
    rc = main(["check-fetch", "--config", str(cfgfile), "--experiment", "historical", "--member", "r2i1p1f1",
               "--out", str(tmp_path / "c.json"), str(tmp_path / "uas.nc")])
    assert rc == 0 and json.loads((tmp_path / "c.json").read_text())["ok"] is True
    # a bad search through the CLI: exit code 2, nothing written
    rc = main(["fetch", "--catalog", str(demo_catalog), "--config", str(cfgfile), "--source", "NOPE",
               "--variable", "uas", "--out", str(tmp_path / "none" / "x.nc")])
    assert rc == 2
    _no_output(tmp_path / "none")


# ---------------------------------------------------------------------------------------------
# real CMIP6 files and intake-esm's own sample catalog


def test_intake_esm_sample_catalog_monthly_data_refused(shared_data: Path, tmp_path: Path) -> None:
    """intake-esm's own catalog: relative asset paths, no frequency/version columns, so
    ``search.frequency: day`` cannot be applied; its data are monthly, and the time steps say so."""
    cfg = _cfg(search={"table_id": "Amon", "experiments": {"historical": [1850, 1850]}},
               domain={"lat": [-89.0, -86.0], "lon": [0.0, 2.0], "halo_cells": 0})
    assert cfg["search"]["frequency"] == "day"  # asked for, but the catalog has no column to apply it to
    raw_file = next((shared_data / "cmip6/intake-esm-sample/tests/sample_data/cmip/CMIP6/CMIP/MRI/MRI-ESM2-0/historical/r1i1p1f1").rglob("*.nc"))
    with pytest.raises(DataError) as exc:
        fetch_dataset(shared_data / SAMPLE, cfg, "MRI-ESM2-0", "historical", "r1i1p1f1", "tasmax", tmp_path / "o" / "tasmax.nc")
    assert str(exc.value) == (
        f"CMIP.MRI.MRI-ESM2-0.historical.r1i1p1f1.Amon.tasmax.gn: {raw_file.resolve()}: the data are monthly "
        "(2 time steps from 1850-01-16 to 1850-02-15); daily data are required.\n"
        "Fix: use the daily (table 'day') files of this dataset; aid cannot make daily fields from monthly means."
    )
    _no_output(tmp_path / "o")


def test_empty_search_lists_available_values(shared_data: Path, tmp_path: Path) -> None:
    cat = shared_data / SAMPLE
    cfg = _cfg(search={"table_id": "Amon"})
    del cfg["search"]["frequency"]
    with pytest.raises(DataError) as exc:
        fetch_dataset(cat, cfg, "NOPE-1", "historical", "r1i1p1f1", "tasmax", tmp_path / "o" / "x.nc")
    assert str(exc.value).startswith(
        f"catalog {cat}: no dataset for source_id=NOPE-1, experiment_id=historical, member_id=r1i1p1f1, "
        "table_id=Amon, variable_id=tasmax; available source_id: ['BCC-CSM2-MR', 'BCC-ESM1', 'CNRM-CM6-1', "
        "'CNRM-ESM2-1', 'IPSL-CM6A-LR', 'MIROC6', 'MRI-ESM2-0']"
    )
    _no_output(tmp_path / "o")


def test_variable_missing_for_one_member(real_catalog: Path, tmp_path: Path) -> None:
    cfg = _cfg(search={"table_id": "Amon", "experiments": {"historical": [2000, 2014]}})
    del cfg["search"]["frequency"]
    with pytest.raises(DataError) as exc:
        fetch_dataset(real_catalog, cfg, "ACCESS-ESM1-5", "historical", "r2i1p1f1", "tas", tmp_path / "o" / "tas.nc")
    assert str(exc.value).startswith(
        f"catalog {real_catalog}: no dataset for source_id=ACCESS-ESM1-5, experiment_id=historical, member_id=r2i1p1f1, "
        "table_id=Amon, variable_id=tas; available variable_id for source_id=ACCESS-ESM1-5, experiment_id=historical, "
        "member_id=r2i1p1f1, table_id=Amon: ['ts']"
    )
    _no_output(tmp_path / "o")


def test_years_outside_the_data(real_catalog: Path, tmp_path: Path) -> None:
    cfg = _cfg(domain={"lat": [0.0, 8.0], "lon": [-112.0, -108.0]})
    with pytest.raises(DataError) as exc:
        fetch_dataset(real_catalog, cfg, "CESM2-WACCM", "historical", "r1i1p1f1", "tas", tmp_path / "o" / "tas.nc")
    assert str(exc.value).startswith(
        "CMIP.NCAR.CESM2-WACCM.historical.r1i1p1f1.day.tas.gn: requested years 2012-2014 are outside the data, "
        "which cover 2000-01-01 to 2009-12-31."
    )
    _no_output(tmp_path / "o")


def test_region_not_intersecting(real_catalog: Path, tmp_path: Path) -> None:
    cfg = _cfg(search={"experiments": {"historical": [2005, 2006]}})  # UK domain; CESM points are at 0, 125, 250 E
    with pytest.raises(DataError) as exc:
        fetch_dataset(real_catalog, cfg, "CESM2-WACCM", "historical", "r1i1p1f1", "tas", tmp_path / "o" / "tas.nc")
    assert str(exc.value).startswith(
        "CMIP.NCAR.CESM2-WACCM.historical.r1i1p1f1.day.tas.gn: region lat 48..59.75, lon -12..1.75 "
        "(domain + 1 halo cells of 2.0 deg) does not intersect the data (lat -90..4.24084, lon -110..125)."
    )
    _no_output(tmp_path / "o")


def test_real_cesm_point_and_hadgem_360_day(real_catalog: Path, shared_data: Path, tmp_path: Path) -> None:
    cfg = _cfg(search={"experiments": {"historical": [2005, 2006]}, "variables": ["tas"]},
               domain={"lat": [0.0, 8.0], "lon": [-112.0, -108.0], "halo_cells": 0})
    out = fetch_dataset(real_catalog, cfg, "CESM2-WACCM", "historical", "r1i1p1f1", "tas", tmp_path / "tas.nc")
    ds = xr.open_dataset(out, decode_times=CFT)
    assert ds["lon"].values.tolist() == [-110.0] and ds.sizes["time"] == 730
    src = next((shared_data / "cmip6/CMIP6/CMIP/NCAR").rglob("*.nc"))
    with netCDF4.Dataset(src) as nc:
        raw = float(nc["tas"][5 * 365 + 40, 1, 2])  # 2005-02-10 at 4.24N, 250E
    assert float(ds["tas"][40, 0, 0]) == pytest.approx(raw, abs=1e-4)
    check_completeness([out], cfg, "CESM2-WACCM", "historical", "r1i1p1f1", tmp_path / "c.json")

    had = _cfg(search={"experiments": {"dcppA-hindcast": [1961, 1961]}, "variables": ["tasmin"]},
               domain={"lat": [20.0, 22.0], "lon": [-28.0, -25.0], "halo_cells": 0})
    out = fetch_dataset(real_catalog, had, "HadGEM3-GC31-MM", "dcppA-hindcast", "s1960-r2i1p1f2", "tasmin", tmp_path / "tn.nc")
    ds = xr.open_dataset(out, decode_times=CFT)
    assert ds.attrs["calendar"] == "360_day" and ds.sizes["time"] == 360
    summary = check_completeness([out], had, "HadGEM3-GC31-MM", "dcppA-hindcast", "s1960-r2i1p1f2", tmp_path / "h.json")
    info = json.loads(summary.read_text())["variables"]["tasmin"]
    assert (info["calendar"], info["expected_days"], info["missing_days"]) == ("360_day", 360, 0)


def test_missing_catalog(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        fetch_dataset(tmp_path / "nope.json", _cfg(), "X", "historical", "r1i1p1f1", "tas", tmp_path / "o" / "x.nc")
    assert str(exc.value).startswith(f"catalog {tmp_path / 'nope.json'} does not exist.")
    _no_output(tmp_path / "o")


def test_corrupt_file_is_named(shared_data: Path, tmp_path: Path) -> None:
    src = next((shared_data / "cmip6/CMIP6/CMIP/NCAR").rglob("*.nc"))
    rel = src.relative_to(shared_data / "cmip6/CMIP6")
    dst = tmp_path / "tree" / rel
    dst.parent.mkdir(parents=True)
    shutil.copy(src, dst)
    cat = build_catalog(tmp_path / "tree", tmp_path / "cat.json")
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 3])  # truncated after cataloguing
    cfg = copy.deepcopy(_cfg(search={"experiments": {"historical": [2005, 2005]}}))
    with pytest.raises(DataError) as exc:
        fetch_dataset(cat, cfg, "CESM2-WACCM", "historical", "r1i1p1f1", "tas", tmp_path / "o" / "tas.nc")
    assert str(exc.value).startswith(f"{dst}: cannot be read as NetCDF/GRIB (")
    assert "the file is corrupt or truncated." in str(exc.value)
    _no_output(tmp_path / "o")
