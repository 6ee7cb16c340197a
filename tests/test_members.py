"""DCPP member ids (``s1980-r6i1p1f1``) end to end on the real MPI-ESM1-2-LR dcppA-hindcast files:
schema, Snakemake wildcards, file names, fetch, and the "available members" suggestion."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import xarray as xr
import yaml

from aid.config import deep_update, load_config, load_schema, validate
from aid.errors import ConfigError, DataError
from aid.fetch import check_completeness, fetch_dataset
from aid.naming import MEMBER_RE, deliverable_name, parse_name, years_range

ROOT = Path(__file__).resolve().parents[1]
CFT = xr.coders.CFDatetimeCoder(use_cftime=True)
MPI = "DCPP/DWD/MPI-ESM1-2-LR/dcppA-hindcast"


def _cfg(**over: Any) -> dict[str, Any]:
    base = deep_update(load_config(), {
        "search": {"sources": ["MPI-ESM1-2-LR"], "experiments": {"dcppA-hindcast": [1981, 1982]},
                   "members": ["s1980-r6i1p1f1"], "variables": ["tasmax"]},
        "domain": {"lat": [-89.0, -88.0], "lon": [-0.5, 0.5], "halo_cells": 0},
    })
    return deep_update(base, over)


@pytest.fixture(scope="module")
def dcpp_catalog(cmip6_catalog: Path) -> Path:
    return cmip6_catalog


def test_schema_and_naming_share_the_member_pattern() -> None:
    schema = load_schema()
    for where in (schema["properties"]["search"], schema["properties"]["demo_archive"]):
        assert where["properties"]["members"]["items"]["pattern"] == f"^{MEMBER_RE}$"
    cfg = validate(_cfg())
    assert cfg["search"]["members"] == ["s1980-r6i1p1f1"]
    for bad in ("s1980r6i1p1f1", "S1980-r6i1p1f1", "s80-r6i1p1f1", "r6i1p1"):
        with pytest.raises(ConfigError, match=r"invalid value for 'search.members.0'"):
            validate(_cfg(search={"members": [bad]}))


def test_dcpp_member_fetch_and_file_names(dcpp_catalog: Path, shared_data: Path, tmp_path: Path) -> None:
    cfg = _cfg()
    out = fetch_dataset(dcpp_catalog, cfg, "MPI-ESM1-2-LR", "dcppA-hindcast", "s1980-r6i1p1f1", "tasmax", tmp_path / "tasmax.nc")
    ds = xr.open_dataset(out, decode_times=CFT)
    src = next((shared_data / "cmip6/CMIP6" / MPI / "s1980-r6i1p1f1").rglob("*.nc"))
    with xr.open_dataset(src, decode_times=CFT) as raw:
        want = raw["tasmax"].sel(time=slice("1981-01-01", "1982-12-31")).isel(lon=0).values[:, 0]
        assert raw.attrs["sub_experiment_id"] == "s1980" and raw.attrs["variant_label"] == "r6i1p1f1"
    assert ds.sizes["time"] == 730 and ds["lon"].values.tolist() == [0.0]
    assert ds["tasmax"].values[:, 0, 0] == pytest.approx(want, abs=1e-4)
    assert ds.attrs["aid_dataset_key"] == "DCPP.DWD.MPI-ESM1-2-LR.dcppA-hindcast.s1980-r6i1p1f1.day.tasmax.gn"
    check_completeness([out], cfg, "MPI-ESM1-2-LR", "dcppA-hindcast", "s1980-r6i1p1f1", tmp_path / "c.json")
    name = deliverable_name("tasmax", "UK-025", "MPI-ESM1-2-LR", "dcppA-hindcast", "s1980-r6i1p1f1", "AID", "v1", 2,
                            years_range(1981, 1981, None))
    assert parse_name(name) == {"variable": "tasmax", "domain": "UK-025", "source": "MPI-ESM1-2-LR",
                                "experiment": "dcppA-hindcast", "member": "s1980-r6i1p1f1", "institution": "AID",
                                "model": "aid", "version": "v1", "sample": "2", "start": "19810101", "end": "19811231"}


def test_available_members_only_what_the_config_accepts(dcpp_catalog: Path, tmp_path: Path) -> None:
    cfg = _cfg()
    with pytest.raises(DataError) as exc:  # the variant label alone is not a DCPP member id
        fetch_dataset(dcpp_catalog, cfg, "MPI-ESM1-2-LR", "dcppA-hindcast", "r6i1p1f1", "tasmax", tmp_path / "o" / "x.nc")
    msg = str(exc.value)
    listed = re.search(r"available member_id for source_id=MPI-ESM1-2-LR, experiment_id=dcppA-hindcast: (\[.*?\])", msg)
    members = yaml.safe_load(listed.group(1))
    assert members == sorted(f"s1980-r{k}i1p1f1" for k in range(1, 11))
    for m in members:  # each suggestion passes the config's validation
        validate(_cfg(search={"members": [m]}))
    assert "do not fit" not in msg

    # a site catalog holding a member id the config refuses (an underscore): counted, not suggested
    df = pd.read_csv(dcpp_catalog.with_suffix(".csv"))
    df.loc[df.member_id == "s1980-r6i1p1f1", "member_id"] = "s1980_r6i1p1f1"
    odd = tmp_path / "odd"
    odd.mkdir()
    df.to_csv(odd / dcpp_catalog.with_suffix(".csv").name, index=False)
    (odd / "dcpp.json").write_text(dcpp_catalog.read_text())
    with pytest.raises(DataError) as exc:
        fetch_dataset(odd / "dcpp.json", cfg, "MPI-ESM1-2-LR", "dcppA-hindcast", "s1980-r6i1p1f1", "tasmax", tmp_path / "o" / "x.nc")
    msg = str(exc.value)
    assert "s1980_r6i1p1f1" not in msg.split("; available")[1]
    assert "'s1980-r5i1p1f1', 's1980-r7i1p1f1'" in msg
    assert "(1 other value(s) in the catalog do not fit the config's pattern ^(?:s\\d{4}-)?r\\d+i\\d+p\\d+f\\d+$)" in msg
    assert not (tmp_path / "o").exists()


def test_dcpp_member_in_the_workflow_plan(dcpp_catalog: Path, tmp_path: Path) -> None:
    """Snakemake plans fetch -> downscale for a DCPP member (wildcard constraints, file names)."""
    raw = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    raw["demo_archive"]["enabled"] = False
    raw["catalog"]["build_root"] = str(ROOT.parent / "shared" / "data" / "cmip6" / "CMIP6")  # a site DRS tree, no catalog yet
    raw["output_dir"] = str(tmp_path / "res")
    raw["search"].update({"sources": ["MPI-ESM1-2-LR"], "members": ["s1980-r6i1p1f1"], "variables": ["tasmax"],
                          "experiments": {"historical": [1981, 1982], "dcppA-hindcast": [1983, 1984]}})
    raw["reference"]["files"] = {"tasmax": str(tmp_path / "era5" / "tasmax_*.nc")}
    raw["adjust"]["reference_period"] = [1981, 1982]
    raw["model"]["train"]["years"] = [1981, 1981]
    raw["indices"]["base_period"] = [1981, 1982]
    raw["indices"]["names"] = ["TXx"]
    raw["evaluation"]["period"] = [1982, 1982]
    user = tmp_path / "dcpp.yaml"
    user.write_text(yaml.safe_dump(raw))
    res = subprocess.run(["snakemake", "-n", "--quiet", "rules", "--configfile", str(user), "--cores", "1",
                          f"{tmp_path}/res/fetch/MPI-ESM1-2-LR/dcppA-hindcast/s1980-r6i1p1f1/tasmax.nc",
                          f"{tmp_path}/res/downscale/MPI-ESM1-2-LR/dcppA-hindcast/s1980-r6i1p1f1/1983/"
                          + deliverable_name("tasmax", "UK-025", "MPI-ESM1-2-LR", "dcppA-hindcast", "s1980-r6i1p1f1",
                                             "AID", "v1", 1, years_range(1983, 1983, None))],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"^catalog\s+1$", res.stdout, re.M), res.stdout
    assert re.search(r"^fetch\s+2$", res.stdout, re.M), res.stdout  # dcppA-hindcast and historical of the member
    assert re.search(r"^downscale\s+1$", res.stdout, re.M), res.stdout
