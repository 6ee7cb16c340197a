"""Bad input, one suite (issue 6): every case fails with the exact helpful message (what, which
file/dataset/key, and the fix) and leaves no partial output behind -- neither the target nor an
``aid.io`` temporary file (``.<name>.<random>.part``). Cases the pipeline must *handle* (descending
latitudes, 0..360 longitudes, duplicate time steps) are checked for correct values instead.

Data: edited copies of real files from ``/work/shared/data`` (CESM2-WACCM daily tas, MIROC6 global
tas, HadGEM3 360_day tasmin, MPI-ESM1-2-LR members, ERA5 10 m wind), each published into a small CMIP6
DRS tree and catalogued with :func:`aid.catalog.build_catalog`, so the errors come out of the real
search -> open -> standardise -> write path.
"""

from __future__ import annotations

import copy
import logging
import pathlib
import re
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from aid.catalog import build_catalog
from aid.cli import main
from aid.config import DEFAULT_CONFIG, REPO_ROOT, deep_update, load_config, output_path
from aid.errors import CheckpointError, ConfigError, DataError
from aid.fetch import check_completeness, fetch_dataset
from test_fetch import real_catalog  # noqa: F401  (module fixture: catalog of the real CMIP6 tree)

CFT = xr.coders.CFDatetimeCoder(use_cftime=True)
CESM_REL = ("CMIP/NCAR/CESM2-WACCM/historical/r1i1p1f1/day/tas/gn/v20190227/"
            "tas_day_CESM2-WACCM_historical_r1i1p1f1_gn_20000101-20091231.nc")
MIROC_REL = ("ScenarioMIP/MIROC/MIROC6/ssp119/r1i1p1f1/day/tas/gn/v20191016/"
             "tas_day_MIROC6_ssp119_r1i1p1f1_gn_20150101.nc")
HADGEM_DIR = "DCPP/MOHC/HadGEM3-GC31-MM/dcppA-hindcast/s1960-r2i1p1f2/day/tasmin/gn/v20200417"
CESM_KEY = "CMIP.NCAR.CESM2-WACCM.historical.r1i1p1f1.day.tas.gn"
SCHEMA_FIX = "Fix: see config/schema.yaml for the allowed values."


# ---------------------------------------------------------------------------------------------
# helpers


def assert_nothing_written(target: Path) -> None:
    """Neither ``target`` nor a temporary sibling of it (aid.io.atomic_path) exists."""
    assert not target.exists(), f"{target} was written"
    if target.parent.exists():
        temps = sorted(p.name for p in target.parent.glob(f".{target.name}.*"))
        assert temps == [], f"temporary files left behind: {temps}"


def cfg_for(**over: Any) -> dict[str, Any]:
    return deep_update(load_config(), over)


CESM_CFG = {"search": {"experiments": {"historical": [2005, 2005]}, "variables": ["tas"]},
            "domain": {"lat": [0.0, 8.0], "lon": [-112.0, -108.0], "halo_cells": 0}}


def publish(root: Path, rel: str, ds: xr.Dataset) -> Path:
    """Write ``ds`` at DRS path ``rel`` under ``root/CMIP6`` (a test input, not a pipeline output)."""
    path = root / "CMIP6" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path)
    return path


def catalog(root: Path) -> Path:
    return build_catalog(root / "CMIP6", root / "catalog.json")


def write_yaml(path: Path, **over: Any) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw = deep_update(raw, over)
    path.write_text(yaml.safe_dump(raw))
    return path


def cli_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``aid ARGV``; it must fail with exit status 2; return the error it printed."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "aid: error: " in err and "Traceback" not in err
    return err.split("aid: error: ", 1)[1]


@pytest.fixture(scope="module")
def cesm(shared_data: Path) -> xr.Dataset:
    """Real CESM2-WACCM daily tas (noleap, lon 0..360), year 2005 only."""
    with xr.open_dataset(shared_data / "cmip6/CMIP6" / CESM_REL, decode_times=CFT) as ds:
        return ds.isel(time=slice(5 * 365, 6 * 365)).load()


@pytest.fixture(scope="module")
def wind_model(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny checkpoint trained (3 steps) on real ERA5 10 m wind (uas), 32 x 32 cells, 24 hours."""
    from aid.grids import fine_grid
    from aid.io import write_netcdf
    from aid.model.train import train_from_config
    from aid.regrid import coarsen, normalise_coords

    d = tmp_path_factory.mktemp("wind")
    era5 = shared_data / "era5"
    cfg = cfg_for(output_dir=str(d / "results"), search={"variables": ["uas"]},
                  domain={"lat": [46.0, 53.75], "lon": [1.0, 8.75]},
                  model={"size": "tiny", "train": {"years": [2020, 2020], "steps": 3, "batch_size": 4}})
    ds = normalise_coords(xr.open_dataset(era5 / "ERA5_2020-01-01_u10.nc"))
    uas = ds["u10"].rename("uas").assign_attrs(units="m s-1").to_dataset()
    fg = fine_grid(cfg)
    fine = uas.sel(lat=fg.lat.values, lon=fg.lon.values).load()
    write_netcdf(fine, d / "fine_uas.nc")
    write_netcdf(coarsen(fine, cfg).load(), d / "coarse_uas.nc")
    ck = train_from_config(cfg, [d / "fine_uas.nc"], [d / "coarse_uas.nc"], era5 / "era5-static-z-lsm-global.nc",
                           d / "model" / "checkpoint.pt", threads=1)
    return {"dir": d, "cfg": cfg, "ckpt": ck, "coarse": d / "coarse_uas.nc", "static": era5 / "era5-static-z-lsm-global.nc"}


# ---------------------------------------------------------------------------------------------
# configuration (through the `aid` command line: exit status 2, one message, nothing written)


def test_config_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    cfg = write_yaml(tmp_path / "c.yaml", output_dir=str(out), model={"train": {"step": 10}})
    err = cli_error(capsys, "train", "--config", str(cfg))
    assert err.startswith(f"{cfg}: unknown key 'model.train.step'.\n"
                          "Fix: remove it or fix its spelling; allowed keys here: batch_size, ")
    assert ", steps, " in err  # the intended key is among those listed
    assert not out.exists()


def test_config_wrong_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    cfg = write_yaml(tmp_path / "c.yaml", output_dir=str(out), downscale={"n_samples": "three"})
    err = cli_error(capsys, "train", "--config", str(cfg))
    assert err == (f"{cfg}: invalid value for 'downscale.n_samples': 'three' is not of type 'integer'.\n"
                   f"{SCHEMA_FIX}\n")
    assert not out.exists()


def test_config_years_reversed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    cfg = write_yaml(tmp_path / "c.yaml", output_dir=str(out), model={"train": {"years": [2014, 2012]}})
    err = cli_error(capsys, "train", "--config", str(cfg))
    assert err == f"{cfg}: 'model.train.years' is reversed (2014 > 2012).\nFix: write it as [2012, 2014].\n"
    assert not out.exists()


def test_config_not_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("output_dir: results\nsearch:\n  variables: [tas, pr\n")
    err = cli_error(capsys, "train", "--config", str(cfg))
    assert err.startswith(f"{cfg}: not valid YAML (")
    assert err.endswith("Fix: fix the YAML syntax.\n")


def test_config_region_outside_data(real_catalog: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    # outside the globe: refused by the schema, by key
    cfg = write_yaml(tmp_path / "bad.yaml", output_dir=str(tmp_path / "r"), domain={"lat": [50.0, 95.0]})
    err = cli_error(capsys, "train", "--config", str(cfg))
    assert err == f"{cfg}: invalid value for 'domain.lat.1': 95.0 is greater than the maximum of 90.\n{SCHEMA_FIX}\n"
    # a valid UK box, but the MPI-ESM1-2-LR files hold one point pair over the tropical Atlantic
    cfg = write_yaml(tmp_path / "uk.yaml", output_dir=str(tmp_path / "r"),
                     search={"experiments": {"dcppA-hindcast": [1985, 1985]}})
    target = tmp_path / "out" / "tasmax.nc"
    err = cli_error(capsys, "fetch", "--catalog", str(real_catalog), "--config", str(cfg), "--source", "MPI-ESM1-2-LR",
                    "--experiment", "dcppA-hindcast", "--member", "s1980-r3i1p1f1", "--variable", "tasmax",
                    "--out", str(target))
    assert err == (
        "DCPP.DWD.MPI-ESM1-2-LR.dcppA-hindcast.s1980-r3i1p1f1.day.tasmax.gn: region lat 48..59.75, lon -12..1.75 "
        "(domain + 1 halo cells of 2.0 deg) does not intersect the data (lat -88.5722..-88.5722, lon -172.5..0).\n"
        "Fix: check domain.lat/domain.lon in the config or choose a dataset that covers the region.\n")
    assert_nothing_written(target)


def test_config_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    cfg = write_yaml(tmp_path / "c.yaml", output_dir=str(out), model={"checkpoint": "{output_dir}/model/mine.pt"})
    err = cli_error(capsys, "downscale", "--config", str(cfg), "--year", "2013")
    assert err == (f"{cfg}: 'model.checkpoint' points at {out}/model/mine.pt, which does not exist.\n"
                   "Fix: set model.checkpoint: null to train the model (workflow rule `train` or `aid train`), "
                   "or point it at an existing checkpoint file.\n")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# data (fetch from a catalog of edited real files; completeness gate)


def test_wrong_units_name_the_file(cesm: xr.Dataset, tmp_path: Path) -> None:
    ds = cesm.copy()
    ds["tas"] = ds["tas"].assign_attrs(units="m s-1")
    src = publish(tmp_path, CESM_REL, ds)
    target = tmp_path / "out" / "tas.nc"
    with pytest.raises(DataError) as exc:
        fetch_dataset(catalog(tmp_path), cfg_for(**CESM_CFG), "CESM2-WACCM", "historical", "r1i1p1f1", "tas", target)
    assert str(exc.value) == (
        f"{src}: variable 'tas' has units 'm s-1' that cannot be converted to K "
        "(have dimensions [length] [time]^-1).\n"
        "Fix: fix the units attribute of 'tas' in this file (expected something convertible to K).")
    assert_nothing_written(target)


def test_missing_variable_names_the_file(cesm: xr.Dataset, tmp_path: Path) -> None:
    src = publish(tmp_path, CESM_REL, cesm.rename(tas="ts"))  # catalogued as tas, holds ts
    target = tmp_path / "out" / "tas.nc"
    with pytest.raises(DataError) as exc:
        fetch_dataset(catalog(tmp_path), cfg_for(**CESM_CFG), "CESM2-WACCM", "historical", "r1i1p1f1", "tas", target)
    assert str(exc.value) == (
        f"{src}: variable 'tas' not found (data variables: ['lat_bnds', 'lon_bnds', 'time_bnds', 'ts']).\n"
        "Fix: check the catalog's variable_id for this file, or rename the variable to 'tas'.")
    assert_nothing_written(target)


def test_nan_block_fails_completeness(cesm: xr.Dataset, tmp_path: Path) -> None:
    ds = cesm.copy(deep=True)
    ds["tas"][59:69] = np.nan  # 1-10 March 2005 missing everywhere
    publish(tmp_path, CESM_REL, ds)
    cfg = cfg_for(**CESM_CFG)
    fetched = fetch_dataset(catalog(tmp_path), cfg, "CESM2-WACCM", "historical", "r1i1p1f1", "tas", tmp_path / "f" / "tas.nc")
    with xr.open_dataset(fetched) as f:
        assert f.attrs["aid_nan_only_time_steps"] == 10  # recorded, and refused by the gate below
    target = tmp_path / "check" / "completeness.json"
    with pytest.raises(DataError) as exc:
        check_completeness([fetched], cfg, "CESM2-WACCM", "historical", "r1i1p1f1", target)
    assert str(exc.value) == (
        "fetched data of CESM2-WACCM/historical/r1i1p1f1 failed the completeness check:\n"
        f"  - {CESM_KEY}: 10 time steps are NaN everywhere (first: 2005-03-01, 2005-03-02, 2005-03-03)\n"
        "Fix: fix the source data or the catalog, or narrow search.experiments to the years the data cover.")
    assert_nothing_written(target)


def test_gap_in_time_fails_completeness(cesm: xr.Dataset, tmp_path: Path) -> None:
    gap = cesm.isel(time=np.r_[0:90, 120:365])  # April 2005 (30 days) absent
    publish(tmp_path, CESM_REL, gap)
    cfg = cfg_for(**CESM_CFG)
    fetched = fetch_dataset(catalog(tmp_path), cfg, "CESM2-WACCM", "historical", "r1i1p1f1", "tas", tmp_path / "f" / "tas.nc")
    target = tmp_path / "check" / "completeness.json"
    with pytest.raises(DataError) as exc:
        check_completeness([fetched], cfg, "CESM2-WACCM", "historical", "r1i1p1f1", target)
    assert str(exc.value) == (
        "fetched data of CESM2-WACCM/historical/r1i1p1f1 failed the completeness check:\n"
        f"  - {CESM_KEY}: 30 of 365 days of 2005-2005 (noleap calendar) are missing "
        "(first: 2005-04-01, 2005-04-02, 2005-04-03)\n"
        "Fix: fix the source data or the catalog, or narrow search.experiments to the years the data cover.")
    assert_nothing_written(target)


def test_duplicate_time_steps_are_dropped_and_counted(cesm: xr.Dataset, tmp_path: Path, caplog) -> None:
    # Two files of one dataset overlapping by June (30 days), as after a partial re-publication.
    d = CESM_REL.rsplit("/", 1)[0]
    publish(tmp_path, f"{d}/tas_day_CESM2-WACCM_historical_r1i1p1f1_gn_20050101-20050630.nc", cesm.isel(time=slice(0, 181)))
    publish(tmp_path, f"{d}/tas_day_CESM2-WACCM_historical_r1i1p1f1_gn_20050601-20051231.nc", cesm.isel(time=slice(151, 365)))
    cfg = cfg_for(**CESM_CFG)
    target = tmp_path / "f" / "tas.nc"
    with caplog.at_level(logging.WARNING, logger="aid.fetch"):
        fetch_dataset(catalog(tmp_path), cfg, "CESM2-WACCM", "historical", "r1i1p1f1", "tas", target)
    assert f"{CESM_KEY}: 30 time steps appear in more than one file (first kept)" in caplog.text
    with xr.open_dataset(target, decode_times=CFT) as f:
        assert f.sizes["time"] == 365 and f.indexes["time"].is_unique and f.indexes["time"].is_monotonic_increasing
        assert f.attrs["aid_duplicate_time_steps"] == 30
        np.testing.assert_allclose(f["tas"].values[:, 0, 0], cesm["tas"].sel(lon=250.0).isel(lat=1).values, rtol=1e-6)
    check_completeness([target], cfg, "CESM2-WACCM", "historical", "r1i1p1f1", tmp_path / "c.json")


def test_360_day_and_standard_files_in_one_dataset(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "cmip6/CMIP6" / HADGEM_DIR
    first, second = sorted(src.glob("*.nc"))
    ok = publish(tmp_path, f"{HADGEM_DIR}/{first.name}", xr.open_dataset(first, decode_times=CFT).load())
    std = xr.open_dataset(second, decode_times=CFT).load()[["tasmin"]]
    std = std.convert_calendar("standard", align_on="date", use_cftime=True)  # re-encoded by someone: 1961-02-29 gone
    odd = publish(tmp_path, f"{HADGEM_DIR}/{second.name}", std)
    cfg = cfg_for(search={"experiments": {"dcppA-hindcast": [1960, 1961]}, "variables": ["tasmin"]},
                  domain={"lat": [20.0, 22.0], "lon": [-28.0, -25.0], "halo_cells": 0})
    target = tmp_path / "out" / "tasmin.nc"
    with pytest.raises(DataError) as exc:
        fetch_dataset(catalog(tmp_path), cfg, "HadGEM3-GC31-MM", "dcppA-hindcast", "s1960-r2i1p1f2", "tasmin", target)
    assert str(exc.value) == (
        "DCPP.MOHC.HadGEM3-GC31-MM.dcppA-hindcast.s1960-r2i1p1f2.day.tasmin.gn: files use different calendars "
        f"['360_day', 'standard'] ({ok}: 360_day; {odd}: standard).\n"
        "Fix: the files of one dataset must share a calendar: re-encode the odd file(s) in the dataset's calendar "
        "or remove them from the catalog.")
    assert_nothing_written(target)


def test_descending_latitude_is_standardised(shared_data: Path, tmp_path: Path) -> None:
    raw = xr.open_dataset(shared_data / "cmip6/CMIP6" / MIROC_REL, decode_times=CFT).load()
    flipped = raw.isel(lat=slice(None, None, -1))  # north to south, bounds flipped with it
    assert flipped["lat"].values[0] > 88
    publish(tmp_path, MIROC_REL, flipped)
    cfg = cfg_for(search={"experiments": {"ssp119": [2015, 2015]}},
                  domain={"lat": [50.0, 56.0], "lon": [10.0, 14.0], "halo_cells": 0})
    out = fetch_dataset(catalog(tmp_path), cfg, "MIROC6", "ssp119", "r1i1p1f1", "tas", tmp_path / "f" / "tas.nc")
    with xr.open_dataset(out, decode_times=CFT) as f:
        lat = f["lat"].values
        with netCDF4.Dataset(shared_data / "cmip6/CMIP6" / MIROC_REL) as nc:
            rlat, rlon = nc["lat"][:].data, nc["lon"][:].data
            # south to north: the five MIROC6 rows whose cells overlap 50..56 N (49.73 .. 55.33)
            assert lat.tolist() == rlat[(rlat > 49.0) & (rlat < 56.0)].tolist()
            assert np.all(np.diff(lat) > 0) and len(lat) == 5
            for i in (0, len(lat) - 1):
                for j in range(f.sizes["lon"]):
                    ri = int(np.argmin(np.abs(rlat - lat[i])))
                    rj = int(np.argmin(np.abs(rlon - f["lon"].values[j])))
                    assert float(f["tas"][0, i, j]) == pytest.approx(float(nc["tas"][0, ri, rj]), abs=1e-4)


def test_0_360_longitudes_across_greenwich(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "cmip6/CMIP6" / MIROC_REL
    publish(tmp_path, MIROC_REL, xr.open_dataset(src, decode_times=CFT).load())
    cfg = cfg_for(search={"experiments": {"ssp119": [2015, 2015]}},
                  domain={"lat": [50.0, 52.0], "lon": [-4.0, 4.0], "halo_cells": 0})
    out = fetch_dataset(catalog(tmp_path), cfg, "MIROC6", "ssp119", "r1i1p1f1", "tas", tmp_path / "f" / "tas.nc")
    with xr.open_dataset(out, decode_times=CFT) as f, netCDF4.Dataset(src) as nc:
        step = 360.0 / 256
        assert f["lon"].values.tolist() == pytest.approx([k * step for k in range(-3, 4)])  # 355.78 E -> -4.22
        rlat = nc["lat"][:].data
        i = int(np.argmin(np.abs(rlat - float(f["lat"][0]))))
        for j, lon in enumerate(f["lon"].values):
            raw = float(nc["tas"][0, i, int(round((lon % 360.0) / step))])
            assert float(f["tas"][0, 0, j]) == pytest.approx(raw, abs=1e-4)
        assert 260.0 < float(f["tas"].mean()) < 290.0  # a January day over England/Channel/France, K


def test_truncated_netcdf_named_and_no_checkpoint(wind_model: dict[str, Any], tmp_path: Path) -> None:
    from aid.model.train import train_from_config

    fine = tmp_path / "fine_uas.nc"
    good = (wind_model["dir"] / "fine_uas.nc").read_bytes()
    fine.write_bytes(good[: len(good) // 2])
    target = tmp_path / "model" / "checkpoint.pt"
    with pytest.raises(DataError) as exc:
        train_from_config(wind_model["cfg"], [fine], [wind_model["coarse"]], wind_model["static"], target, threads=1)
    msg = str(exc.value)
    assert msg.startswith(f"{fine}: cannot be read as NetCDF/GRIB (")
    assert msg.endswith("); the file is corrupt or truncated.\nFix: re-download or regenerate this file, then re-run.")
    assert_nothing_written(target)
    assert_nothing_written(target.with_name("checkpoint.pt.last"))


def test_empty_catalog_search_lists_existing_members(real_catalog: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    cfg = write_yaml(tmp_path / "c.yaml", output_dir=str(tmp_path / "r"),
                     search={"experiments": {"dcppA-hindcast": [1985, 1985]}})
    target = tmp_path / "out" / "tasmax.nc"
    err = cli_error(capsys, "fetch", "--catalog", str(real_catalog), "--config", str(cfg), "--source", "MPI-ESM1-2-LR",
                    "--experiment", "dcppA-hindcast", "--member", "s1980-r11i1p1f1", "--variable", "tasmax",
                    "--out", str(target))
    members = ", ".join(repr(m) for m in sorted(f"s1980-r{k}i1p1f1" for k in range(1, 11)))
    assert err == (
        f"catalog {real_catalog}: no dataset for source_id=MPI-ESM1-2-LR, experiment_id=dcppA-hindcast, "
        "member_id=s1980-r11i1p1f1, table_id=day, frequency=day, variable_id=tasmax; available member_id for "
        f"source_id=MPI-ESM1-2-LR, experiment_id=dcppA-hindcast: [{members}]\n"
        "Fix: pick one of the available member_id values in the config (search.*) or add the data to the catalog.\n")
    assert_nothing_written(target)


# ---------------------------------------------------------------------------------------------
# model checkpoints


def test_checkpoint_of_other_variables(wind_model: dict[str, Any], tmp_path: Path) -> None:
    from aid import naming
    from aid.downscale import downscale_year

    cfg = copy.deepcopy(wind_model["cfg"])
    cfg["search"]["variables"] = ["tas", "uas"]
    cfg["output_dir"] = str(tmp_path / "results")
    outputs = list(naming.deliverable_paths(cfg, "AID-ERA5-DERIVED", "historical", "r1i1p1f1", 2013).values())
    with pytest.raises(CheckpointError) as exc:
        downscale_year(cfg, [wind_model["coarse"]], wind_model["ckpt"], "AID-ERA5-DERIVED", "historical", "r1i1p1f1",
                       2013, outputs, threads=1)
    assert str(exc.value) == (
        f"{wind_model['ckpt']}: checkpoint was trained on uas; config search.variables also asks for tas.\n"
        "Fix: retrain the model with these variables or drop them from search.variables.")
    for p in outputs:
        assert_nothing_written(p)


def test_tampered_checkpoint(wind_model: dict[str, Any], tmp_path: Path, capsys) -> None:
    payload = torch.load(wind_model["ckpt"], weights_only=True)
    cfg = payload["content"]["config_json"]
    payload["content"]["config_json"] = cfg.replace('"lat": [46.0, 53.75]', '"lat": [46.0, 60.0]')
    assert payload["content"]["config_json"] != cfg
    bad = tmp_path / "tampered.pt"
    torch.save(payload, bad)
    target = tmp_path / "out" / "sample.nc"
    err = cli_error(capsys, "sample", "--checkpoint", str(bad), "--coarse", str(wind_model["coarse"]), "--out", str(target))
    assert re.fullmatch(
        re.escape(f"{bad}: checkpoint hash mismatch (stored {payload['sha256'][:16]}..., content ") + r"[0-9a-f]{16}"
        + re.escape("...): the file was modified after training.\n"
                    "Fix: do not edit checkpoints; restore the original file or retrain.\n"), err), err
    assert_nothing_written(target)


class _Evil:
    """Unpickling this runs ``Path(marker).touch()``: a real code-execution payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (pathlib.Path.touch, (self.marker,))


def test_pickle_payload_in_checkpoint_never_runs(wind_model: dict[str, Any], tmp_path: Path, capsys) -> None:
    def evil_checkpoint(path: Path, marker: Path) -> Path:
        payload = torch.load(wind_model["ckpt"], weights_only=True)
        payload["content"]["norm_mean"] = _Evil(marker)
        torch.save(payload, path)
        return path

    # The payload is live: an unsafe load (weights_only=False) does create its marker.
    probe = tmp_path / "probe-marker"
    torch.load(evil_checkpoint(tmp_path / "probe.pt", probe), weights_only=False)
    assert probe.exists()

    marker = tmp_path / "pwned"
    bad = evil_checkpoint(tmp_path / "evil.pt", marker)
    target = tmp_path / "out" / "sample.nc"
    err = cli_error(capsys, "sample", "--checkpoint", str(bad), "--coarse", str(wind_model["coarse"]), "--out", str(target))
    assert err.startswith(f"{bad}: refused to load: the file contains pickled Python objects that are not plain "
                          "tensors/containers (weights_only=True: ")
    assert err.endswith(").\nFix: only load aid checkpoints written by `aid train`; retrain or obtain the original file.\n")
    assert not marker.exists()
    assert_nothing_written(target)
    with pytest.raises(CheckpointError, match="refused to load"):  # the library entry point refuses it too
        from aid.model.api import Downscaler

        Downscaler.load(bad, device="cpu")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# security: paths and shells


def test_paths_escaping_output_dir_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_yaml(tmp_path / "c.yaml", output_dir="../x")
    err = cli_error(capsys, "train", "--config", str(cfg))
    assert err == (f"{cfg}: 'output_dir' (../x) climbs out of the working directory.\n"
                   "Fix: use a path below the repository (e.g. results) or an absolute path.\n")
    assert not (REPO_ROOT.parent / "x").exists()
    # an experiment name is a path component of every artefact: no separators or '..'
    cfg = write_yaml(tmp_path / "c2.yaml", search={"experiments": {"../../etc": [2015, 2017]}})
    err = cli_error(capsys, "train", "--config", str(cfg))
    assert err == f"{cfg}: invalid value for 'search.experiments': '../../etc' does not match '^[A-Za-z0-9-]+$'.\n{SCHEMA_FIX}\n"
    # facets given on the command line go through output_path: relative climbs and absolute paths refused
    out = tmp_path / "results"
    good = write_yaml(tmp_path / "ok.yaml", output_dir=str(out))
    for member in ("../../../x", str(tmp_path / "abs")):
        err = cli_error(capsys, "baseline", "--config", str(good), "--year", "2013", "--member", member)
        assert err == (f"path component {member + '.nc'!r} would escape output_dir {out}.\n"
                       "Fix: use plain facet names (letters, digits, '-', '_').\n")
    with pytest.raises(ConfigError, match=re.escape(f"path component '/etc' would escape output_dir {out}.")):
        output_path(load_config(good), "/etc")
    assert not (tmp_path / "abs").exists() and not (tmp_path / "x").exists()


def test_config_strings_never_reach_a_shell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    cfg = write_yaml(tmp_path / "c.yaml", output_dir=str(tmp_path / "r"), search={"members": [f"r1; touch {marker}"]})
    err = cli_error(capsys, "train", "--config", str(cfg))
    assert err == (f"{cfg}: invalid value for 'search.members.0': 'r1; touch {marker}' does not match "
                   "'^(?:s\\\\d{4}-)?r\\\\d+i\\\\d+p\\\\d+f\\\\d+$'.\n" + SCHEMA_FIX + "\n")
    cfg = write_yaml(tmp_path / "c2.yaml", reference={"static": f"z.nc`touch {marker}`"})
    err = cli_error(capsys, "train", "--config", str(cfg))
    assert err.startswith(f"{cfg}: invalid value for 'reference.static': 'z.nc`touch {marker}`' does not match ")
    assert not marker.exists()
    # ... and no code path hands a string to a shell: no shell=True / os.system / os.popen in aid,
    # no `shell:` directive in the workflow (every rule runs a Python `script:`).
    offenders = []
    for py in sorted((REPO_ROOT / "aid").rglob("*.py")):
        text = py.read_text()
        offenders += [f"{py.name}: {pat}" for pat in ("shell=True", "os.system(", "os.popen(") if pat in text]
    for smk in [REPO_ROOT / "Snakefile", *sorted((REPO_ROOT / "workflow" / "rules").glob("*.smk"))]:
        if re.search(r"^\s+shell:", smk.read_text(), flags=re.M):
            offenders.append(f"{smk.name}: shell:")
    assert offenders == []

