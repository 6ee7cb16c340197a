"""Zarr and remote intake-esm assets, and domains across the antimeridian, on real MIROC6 data.

The Zarr store is written from the real MIROC6 ssp119 global daily file; the catalogs follow
Pangeo's CMIP6 layout (``zstore`` column, ``assets.format: zarr``). The same store is then served
over HTTP by a server this module starts on 127.0.0.1 (stopped at the end, or after 120 s at the
latest) and read through fsspec. Every route must give exactly the values of the NetCDF route.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from aid.config import deep_update, load_config
from aid.errors import DataError
from aid.fetch import fetch_dataset

CFT = xr.coders.CFDatetimeCoder(use_cftime=True)
MIROC = "cmip6/CMIP6/ScenarioMIP/MIROC/MIROC6/ssp119/r1i1p1f1/day/tas/gn/v20191016/tas_day_MIROC6_ssp119_r1i1p1f1_gn_20150101.nc"
FACETS = dict(activity_id="ScenarioMIP", institution_id="MIROC", source_id="MIROC6", experiment_id="ssp119",
              member_id="r1i1p1f1", table_id="day", variable_id="tas", grid_label="gn", dcpp_init_year="", version="20191016")
STORE = "stores/CMIP6/ScenarioMIP/MIROC/MIROC6/ssp119/r1i1p1f1/day/tas/gn/v20191016"


def _cfg(**over: Any) -> dict[str, Any]:
    cfg = deep_update(load_config(), {"search": {"experiments": {"ssp119": [2015, 2015]}, "variables": ["tas"]}})
    return deep_update(cfg, over)


def pangeo_catalog(folder: Path, location: str, fmt: str | None = "zarr", column: str = "zstore") -> Path:
    """A Pangeo-style ESM collection (JSON + CSV) with one asset at ``location``."""
    row = {**FACETS, column: location}
    assets: dict[str, Any] = {"column_name": column}
    if fmt is None:  # the format per row
        row["format"] = "netcdf"
        assets["format_column_name"] = "format"
    else:
        assets["format"] = fmt
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([row]).to_csv(folder / "pangeo-cmip6.csv", index=False)
    doc = {
        "esmcat_version": "0.1.0",
        "id": "pangeo-cmip6-test",
        "description": "Pangeo-style catalog of a Zarr store written from the real MIROC6 file",
        "catalog_file": "pangeo-cmip6.csv",
        "attributes": [{"column_name": c, "vocabulary": ""} for c in FACETS],
        "assets": assets,
        "aggregation_control": {
            "variable_column_name": "variable_id",
            "groupby_attrs": ["activity_id", "institution_id", "source_id", "experiment_id", "table_id", "grid_label"],
            "aggregations": [
                {"type": "union", "attribute_name": "variable_id"},
                {"type": "join_new", "attribute_name": "member_id", "options": {"coords": "minimal", "compat": "override"}},
            ],
        },
    }
    (folder / "pangeo-cmip6.json").write_text(json.dumps(doc, indent=1))
    return folder / "pangeo-cmip6.json"


@pytest.fixture(scope="module")
def site(shared_data: Path, cmip6_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the Zarr store (Zarr v2 with consolidated metadata, as Pangeo's) and the
    NetCDF catalog of the real DRS tree."""
    root = tmp_path_factory.mktemp("site")
    with xr.open_dataset(shared_data / MIROC) as src:
        src.to_zarr(root / STORE, zarr_format=2, consolidated=True, mode="w")
    (root / "netcdf").mkdir()
    shutil.copy(cmip6_catalog, root / "netcdf" / "catalog.json")
    shutil.copy(cmip6_catalog.with_suffix(".csv"), root / "netcdf" / cmip6_catalog.with_suffix(".csv").name)
    return root


@pytest.fixture(scope="module")
def http_root(site: Path) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` serving ``site``; shut down after the module (120 s at most)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    guard = threading.Timer(120.0, server.shutdown)
    guard.daemon = True
    guard.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        guard.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def _netcdf_route(site: Path, cfg: dict[str, Any], out: Path) -> xr.Dataset:
    path = fetch_dataset(site / "netcdf" / "catalog.json", cfg, "MIROC6", "ssp119", "r1i1p1f1", "tas", out)
    return xr.open_dataset(path, decode_times=CFT)


def _same(a: xr.Dataset, b: xr.Dataset) -> None:
    np.testing.assert_array_equal(a["tas"].values, b["tas"].values)
    np.testing.assert_array_equal(a["lat_bnds"].values, b["lat_bnds"].values)
    np.testing.assert_array_equal(a["lat"].values, b["lat"].values)
    np.testing.assert_array_equal(a["lon"].values, b["lon"].values)
    assert a["time"].values.tolist() == b["time"].values.tolist()


def test_local_zarr_pangeo_catalog_matches_netcdf(site: Path, shared_data: Path, tmp_path: Path) -> None:
    cfg = _cfg()
    ref = _netcdf_route(site, cfg, tmp_path / "nc.nc")
    # the UK box (-12..1.75 E with the halo) straddles 0 E of MIROC6's 0..360 grid: two runs of columns
    assert ref["lon"].values.min() < 0 < ref["lon"].values.max()
    with netCDF4.Dataset(shared_data / MIROC) as nc:
        lat, lon = nc["lat"][:].data, nc["lon"][:].data
        i, j = int(np.argmin(np.abs(lat - 52.5))), int(np.argmin(np.abs(lon - 358.59375)))
        raw = float(nc["tas"][0, i, j])
    assert float(ref["tas"].sel(lat=lat[i], lon=-1.40625).item()) == pytest.approx(raw, abs=1e-4)
    # the Gaussian rows' own bounds travel with the crop (regridding uses them)
    with netCDF4.Dataset(shared_data / MIROC) as nc:
        bnds = nc["lat_bnds"][:].data
    k = np.searchsorted(lat, ref["lat"].values)
    np.testing.assert_allclose(ref["lat_bnds"].values, bnds[k])

    cat = pangeo_catalog(site / "local", f"../{STORE}")  # relative to the catalog folder
    out = fetch_dataset(cat, cfg, "MIROC6", "ssp119", "r1i1p1f1", "tas", tmp_path / "zarr.nc")
    got = xr.open_dataset(out, decode_times=CFT)
    _same(got, ref)
    assert got.attrs["aid_dataset_key"] == "ScenarioMIP.MIROC.MIROC6.ssp119.r1i1p1f1.day.tas.gn"
    assert got.attrs["aid_source_tracking_id"] == ref.attrs["aid_source_tracking_id"]
    assert got.attrs["aid_source_tracking_id"].startswith("hdl:21.14100/")


def test_zarr_over_http_and_netcdf_over_file_url(site: Path, http_root: str, tmp_path: Path) -> None:
    cfg = _cfg()
    ref = _netcdf_route(site, cfg, tmp_path / "nc.nc")
    url = f"{http_root}/{STORE}"
    cat = pangeo_catalog(tmp_path / "remote", url)
    out = fetch_dataset(cat, cfg, "MIROC6", "ssp119", "r1i1p1f1", "tas", tmp_path / "http.nc")
    got = xr.open_dataset(out, decode_times=CFT)
    _same(got, ref)
    assert url in got.attrs["aid_source_files"]  # the URL as given, not joined to the catalog folder

    # a NetCDF asset named by a file:// URL, its format given per row (format_column_name)
    src = pd.read_csv(next((site / "netcdf").glob("*.csv")))
    path = src[src.source_id == "MIROC6"].path.iloc[0]
    cat = pangeo_catalog(tmp_path / "fileurl", f"file://{path}", fmt=None, column="path")
    out = fetch_dataset(cat, cfg, "MIROC6", "ssp119", "r1i1p1f1", "tas", tmp_path / "fileurl.nc")
    _same(xr.open_dataset(out, decode_times=CFT), ref)

    # an unreachable store: named, with the storage_options hint; nothing written
    cat = pangeo_catalog(tmp_path / "gone", f"{http_root}/stores/nope.zarr")
    with pytest.raises(DataError) as exc:
        fetch_dataset(cat, cfg, "MIROC6", "ssp119", "r1i1p1f1", "tas", tmp_path / "o" / "x.nc")
    assert str(exc.value).startswith(f"{http_root}/stores/nope.zarr: cannot be opened as zarr (")
    assert "catalog.storage_options" in str(exc.value)
    assert not (tmp_path / "o").exists()


def test_fiji_across_the_antimeridian(site: Path, shared_data: Path, tmp_path: Path) -> None:
    """Fiji 175E..175.25W from the global MIROC6 grid: one contiguous box past 180, the values of
    the file at those longitudes, and it regrids to the model's coarse grid without gaps."""
    from aid.grids import coarse_grid
    from aid.regrid import regrid

    cfg = _cfg(domain={"id": "FJI-025", "lat": [-20.0, -15.0], "lon": [175.0, -175.25], "halo_cells": 1})
    ds = _netcdf_route(site, cfg, tmp_path / "fiji.nc")
    lon = ds["lon"].values
    step = 360.0 / 256
    np.testing.assert_allclose(np.diff(lon), step)
    assert lon[0] < 173.0 + step and lon[-1] > 186.75 - step and lon[0] > 170.0 and lon[-1] < 190.0
    with netCDF4.Dataset(shared_data / MIROC) as nc:
        rlat, rlon, tas = nc["lat"][:].data, nc["lon"][:].data, nc["tas"][0].data
    for want in (178.59375, 180.0, 181.40625 + step):  # east of 180 it is stored as 180..360 -> kept past 180
        j = int(np.argmin(np.abs(rlon - want % 360.0)))
        i = int(np.argmin(np.abs(rlat - float(ds.lat[2]))))
        assert float(ds["tas"].isel(time=0, lat=2).sel(lon=want)) == pytest.approx(float(tas[i, j]), abs=1e-4)
    # the same from the Zarr store
    zs = fetch_dataset(pangeo_catalog(site / "local", f"../{STORE}"), cfg, "MIROC6", "ssp119", "r1i1p1f1", "tas",
                       tmp_path / "fiji-zarr.nc")
    _same(xr.open_dataset(zs, decode_times=CFT), ds)
    coarse = regrid(ds, coarse_grid(cfg), "conservative")
    assert coarse["tas"].notnull().all() and 290.0 < float(coarse["tas"].mean()) < 305.0  # tropical Pacific, January
