"""Catalog building over the real CMIP6 DRS tree; intake-esm opens and aggregates it."""

from __future__ import annotations

import json
from pathlib import Path

import intake
import pandas as pd
import pytest

from aid.catalog import COLUMNS, build_catalog
from aid.cli import main
from aid.errors import DataError


@pytest.fixture(scope="module")
def real_catalog(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_catalog(shared_data / "cmip6" / "CMIP6", tmp_path_factory.mktemp("cat") / "cmip6.json")


def test_catalog_columns_and_real_facets(real_catalog: Path) -> None:
    df = pd.read_csv(real_catalog.with_suffix(".csv"))
    assert list(df.columns) == COLUMNS
    assert len(df) == 30  # every .nc file of the real tree
    cesm = df[df.source_id == "CESM2-WACCM"].iloc[0]
    assert (cesm.activity_id, cesm.institution_id, cesm.experiment_id, cesm.member_id) == ("CMIP", "NCAR", "historical", "r1i1p1f1")
    assert (cesm.table_id, cesm.variable_id, cesm.grid_label, cesm.version) == ("day", "tas", "gn", "v20190227")
    assert cesm.time_range == "20000101-20091231"
    assert Path(cesm.path).is_absolute() and Path(cesm.path).exists()
    had = df[df.source_id == "HadGEM3-GC31-MM"].sort_values("time_range")
    assert had.time_range.tolist() == ["19601101-19601230", "19610101-19611230"]  # 360_day: ends on the 30th
    acc = df[(df.source_id == "ACCESS-ESM1-5") & (df.table_id == "Amon") & (df.variable_id == "tas") & (df.experiment_id == "historical")]
    assert acc.frequency.tolist() == ["mon"] and acc.time_range.tolist() == ["20000116-20141216"]
    assert set(df[df.table_id == "fx"].frequency) == {"fx"}


def test_frequency_comes_from_the_path_not_the_header(real_catalog: Path, shared_data: Path) -> None:
    import netCDF4

    df = pd.read_csv(real_catalog.with_suffix(".csv"))
    mpi = df[df.source_id == "MPI-ESM1-2-LR"]
    with netCDF4.Dataset(mpi.path.iloc[0]) as nc:
        assert (nc.table_id, nc.frequency) == ("Amon", "mon")  # the real header quirk
    assert set(mpi.table_id) == {"day"} and set(mpi.frequency) == {"day"}
    assert set(mpi.time_range) == {"19801101-19901231"}


def test_esm_collection_json(real_catalog: Path) -> None:
    doc = json.loads(real_catalog.read_text())
    assert doc["catalog_file"] == "cmip6.csv"
    agg = doc["aggregation_control"]
    assert agg["variable_column_name"] == "variable_id"
    assert agg["groupby_attrs"] == ["activity_id", "institution_id", "source_id", "experiment_id", "table_id", "grid_label"]
    kinds = {a["type"]: a["attribute_name"] for a in agg["aggregations"]}
    assert kinds == {"union": "variable_id", "join_new": "member_id", "join_existing": "time_range"}


def test_intake_esm_joins_the_ten_mpi_members(real_catalog: Path) -> None:
    cat = intake.open_esm_datastore(str(real_catalog))
    sub = cat.search(source_id="MPI-ESM1-2-LR", variable_id="tasmax", frequency="day")
    assert len(sub.df) == 10
    # threaded=False: concurrent netCDF4/HDF5 opens in intake-esm's thread pool can crash (bus error seen here)
    dsets = sub.to_dataset_dict(progressbar=False, threaded=False)
    assert list(dsets) == ["DCPP.DWD.MPI-ESM1-2-LR.dcppA-hindcast.day.gn"]
    ds = next(iter(dsets.values()))
    assert ds.sizes["member_id"] == 10
    assert ds.sizes["time"] == 3713
    assert sorted(ds.member_id.values.tolist())[0] == "s1980-r10i1p1f1"


def test_intake_esm_joins_hadgem_files_along_time(real_catalog: Path) -> None:
    cat = intake.open_esm_datastore(str(real_catalog))
    sub = cat.search(source_id="HadGEM3-GC31-MM", variable_id="tasmin")
    ds = next(iter(sub.to_dataset_dict(progressbar=False, threaded=False).values()))
    assert ds.sizes["time"] == 60 + 360  # Nov-Dec 1960 + 1961, 360_day calendar


def test_cli_catalog_build(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "cmip6" / "CMIP6" / "DCPP" / ".."  # any folder holding activities works
    out = tmp_path / "c.json"
    assert main(["catalog", "build", str(root), "--out", str(out)]) == 0
    assert out.exists() and out.with_suffix(".csv").exists()
    assert len(pd.read_csv(out.with_suffix(".csv"))) == 30


def test_not_a_drs_tree(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError) as exc:
        build_catalog(tmp_path / "flat", tmp_path / "c.json")
    assert str(exc.value).startswith(f"no CMIP6 DRS NetCDF files found below {tmp_path / 'flat'}.")
    with pytest.raises(DataError, match=r"catalog root .*missing is not a directory"):
        build_catalog(tmp_path / "missing", tmp_path / "c.json")
    assert not list(tmp_path.glob("c.*"))


def test_truncated_file_is_named(shared_data: Path, tmp_path: Path) -> None:
    src = next((shared_data / "cmip6" / "CMIP6" / "CMIP" / "NCAR").rglob("*.nc"))
    rel = src.relative_to(shared_data / "cmip6" / "CMIP6")
    dst = tmp_path / "tree" / rel
    dst.parent.mkdir(parents=True)
    dst.write_bytes(src.read_bytes()[:5000])
    with pytest.raises(DataError) as exc:
        build_catalog(tmp_path / "tree", tmp_path / "out" / "c.json")
    assert str(exc.value).startswith(f"{dst}: cannot read its time axis")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
