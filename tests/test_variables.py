"""The variable registry (aid/variables.py) is the one home of units, bounds and CF names, and the
one temperature-order policy (aid/physics.py) is what the downscale job enforces and the checks verify.

Real data: a CMIP6 CESM2-WACCM daily tas file (fetch's completeness gate), the bicubic baseline
deliverables of tests/test_deliverables.py (the checks stage, written attributes), the demo archive
(reference and GCM-like files) and ERA5-derived temperatures.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

from aid import deliverables, physics
from aid.checks import _order, check_job
from aid.config import REPO_ROOT, validate
from aid.downscale import enforce_physics
from aid.errors import ConfigError, DataError
from aid.fetch import check_completeness
from aid.io import open_dataset, write_netcdf
from aid.standardise import standardise
from aid.variables import MODEL_VARIABLES, VARIABLES
from test_deliverables import baseline_files, case  # noqa: F401  (fixtures)

CESM_TAS = Path("/work/shared/data/cmip6/CMIP6/CMIP/NCAR/CESM2-WACCM/historical/r1i1p1f1/day/tas/gn/v20190227/"
                "tas_day_CESM2-WACCM_historical_r1i1p1f1_gn_20000101-20091231.nc")
CFT = xr.coders.CFDatetimeCoder(use_cftime=True)


# ----------------------------------------------------------------------------------------------
# One object, every stage
# ----------------------------------------------------------------------------------------------
def test_every_stage_reads_the_registry() -> None:
    """The deliverables' valid ranges are the registry's bounds (the same objects), the config schema
    knows exactly the registry's variables, and the canonical units are those of docs/CONTRACTS.md."""
    from aid import standardise as st
    from aid.evaluate.run import UNITS
    from aid.indices import INPUT_VARIABLES
    from aid.model.transforms import PR_VARIABLES

    for v, meta in VARIABLES.items():
        assert deliverables.VARIABLES[v].valid_range is meta.bounds
        # deliverables are written in the CMIP/CORDEX unit (pr: kg m-2 s-1) and read back to aid's own
        assert deliverables.VARIABLES[v].units is meta.cmip_units
        assert (deliverables.VARIABLES[v].internal_units or deliverables.VARIABLES[v].units) == meta.units
        assert st.CANONICAL_UNITS[v] is meta.units and st.STANDARD_NAMES[v] is meta.standard_name
    assert {v: m.units for v, m in VARIABLES.items() if not m.derived} == {
        "tas": "K", "tasmax": "K", "tasmin": "K", "pr": "mm d-1", "uas": "m s-1", "vas": "m s-1"}
    assert UNITS == {v: VARIABLES[v].units for v in MODEL_VARIABLES} and INPUT_VARIABLES == MODEL_VARIABLES
    assert PR_VARIABLES == {"pr"}
    schema = yaml.safe_load((REPO_ROOT / "config" / "schema.yaml").read_text())
    assert schema["$defs"]["variable"]["enum"] == list(VARIABLES)
    # one temperature range (the recorded extremes 184 K and 330 K lie inside with a margin)
    assert {VARIABLES[v].bounds for v in ("tas", "tasmax", "tasmin")} == {(170.0, 345.0)}
    assert VARIABLES["pr"].bounds == (0.0, 2000.0) and VARIABLES["uas"].bounds == (-100.0, 100.0)


def _cesm_tas(tmp_path: Path, value: float) -> Path:
    """The real CESM2-WACCM daily tas of 2005-2006 (standardised as fetch does), one value set to ``value``."""
    ds = standardise(open_dataset(CESM_TAS, chunks=None, decode_times=CFT), "tas", str(CESM_TAS))
    ds = ds.sel(time=slice("2005-01-01", "2006-12-31")).load()
    assert float(ds["tas"].max()) < 320.0  # the real data are nowhere near the bound
    ds["tas"][100, 0, 1] = value
    out = tmp_path / f"tas_{value:g}.nc"
    write_netcdf(ds, out)
    return out


def _fetch_flags(path: Path, tmp_path: Path) -> bool:
    cfg = {"search": {"experiments": {"historical": [2005, 2006]}, "variables": ["tas"]}}
    try:
        check_completeness([path], cfg, "CESM2-WACCM", "historical", "r1i1p1f1", tmp_path / f"{path.stem}.json")
    except DataError as exc:
        assert "outside the physical bounds 170..345 K" in str(exc)
        return True
    return False


def _checks_flag(case, baseline_files, tmp_path: Path, value: float) -> bool:  # noqa: F811
    """The checks stage on the real baseline deliverables with tas = tasmax = ``value`` at one cell."""
    job = tmp_path / f"job_{value:g}"
    job.mkdir()
    files = {k: Path(shutil.copy(p, job / p.name)) for k, p in baseline_files.items()}
    for var in ("tas", "tasmax"):
        with netCDF4.Dataset(files[(var, 1)], "a") as nc:
            nc[var][100, 2, 3] = value
    try:
        check_job(case["cfg"], [], [str(p) for p in files.values()], tmp_path / f"report_{value:g}.json")
    except DataError as exc:
        assert f"1 value(s) of tas > 345 K (max {value:g}" in str(exc)
        return True
    return False


@pytest.mark.parametrize("value", [341.0, 345.5])
def test_a_hot_value_is_judged_alike_by_fetch_and_checks(case, baseline_files, tmp_path: Path, value: float) -> None:  # noqa: F811
    """341 K (above the old 340 K deliverable bound) passes both gates, 345.5 K (below the old 350 K
    fetch bound) fails both: a value can no longer pass one stage and fail the next."""
    expected = value > VARIABLES["tas"].bounds[1]
    assert _fetch_flags(_cesm_tas(tmp_path, value), tmp_path) is expected
    assert _checks_flag(case, baseline_files, tmp_path, value) is expected


def test_written_files_carry_the_registry_metadata(case, baseline_files, demo_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    """Fetched (standardised) CMIP6 data and the demo archive's reference files carry the registry's
    CF attributes; the deliverables (CORDEX-CMIP6) and the demo GCM files the CMIP6 tables' (pr in kg m-2 s-1)."""
    for (var, _), p in baseline_files.items():
        with netCDF4.Dataset(p) as nc:
            attrs = {k: nc[var].getncattr(k) for k in ("standard_name", "long_name", "units", "cell_methods")}
        assert attrs == VARIABLES[var].cmip_attrs(), p.name
    fetched = xr.open_dataset(_cesm_tas(tmp_path, 290.0), decode_times=CFT)
    assert fetched["tas"].attrs["units"] == VARIABLES["tas"].units
    assert fetched["tas"].attrs["standard_name"] == VARIABLES["tas"].standard_name
    manifest = json.loads((demo_archive / "manifest.json").read_text())
    seen = set()
    for f in manifest["files"]:
        var = f["variable"]
        with netCDF4.Dataset(demo_archive / f["path"]) as nc:
            attrs = {k: nc[var].getncattr(k) for k in ("standard_name", "long_name", "units", "cell_methods")}
        want = VARIABLES[var].cf_attrs() if f["kind"] == "reference" else VARIABLES[var].cmip_attrs()
        assert attrs == want, f["path"]
        seen.add((f["kind"], var))
    assert seen == {(k, v) for k in ("reference", "gcm") for v in MODEL_VARIABLES}
    assert VARIABLES["pr"].cmip_attrs()["units"] == "kg m-2 s-1"


# ----------------------------------------------------------------------------------------------
# Valid transforms
# ----------------------------------------------------------------------------------------------
def test_adjustment_kind_must_suit_the_variable() -> None:
    """Multiplicative temperature factors (or additive precipitation) are refused, naming the key."""
    raw = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    validate(raw)
    for var, kind in (("tasmax", "*"), ("pr", "+"), ("uas", "*")):
        bad = copy.deepcopy(raw)
        bad["adjust"]["methods"][var]["kind"] = kind
        with pytest.raises(ConfigError) as err:
            validate(bad)
        assert f"'adjust.methods.{var}.kind' is '{kind}'" in str(err.value)
        assert f"set adjust.methods.{var}.kind: '{VARIABLES[var].adjust_kinds[0]}'" in str(err.value)


def test_model_transform_must_suit_the_variable() -> None:
    from aid.model import transforms

    x = np.array([0.0, 3.0, 120.0])
    np.testing.assert_allclose(transforms.inverse("pr", transforms.forward("pr", x, "power"), "power"), x, rtol=1e-12)
    with pytest.raises(ValueError, match="not valid for pr"):
        transforms.forward("pr", x, "sqrt")


# ----------------------------------------------------------------------------------------------
# One temperature-order policy
# ----------------------------------------------------------------------------------------------
def _real_temperatures(case) -> dict[str, np.ndarray]:  # noqa: F811
    """(sample, day, lat, lon) tasmin/tas/tasmax derived from real ERA5 hourly t2m."""
    fine = case["fine"]
    return {v: fine[v].values[None, :60].astype("f4").copy() for v in ("tasmin", "tas", "tasmax")}


def test_crossed_pair_without_tas_is_swapped_keeping_the_range(case) -> None:  # noqa: F811
    """Without tas a crossed tasmin/tasmax pair is swapped: mean and diurnal range kept (a mid-point
    would zero the range), and the checks' rule finds nothing left to flag."""
    t = _real_temperatures(case)
    crossed = {"tasmin": t["tasmax"].copy(), "tasmax": t["tasmin"].copy()}  # every cell with a real range crossed
    n_crossed = (crossed["tasmin"] > crossed["tasmax"]).sum(axis=(1, 2, 3))
    assert n_crossed[0] > 0.9 * t["tas"].size
    counts = enforce_physics(crossed)
    assert counts["temperature_order"].tolist() == n_crossed.tolist()
    np.testing.assert_array_equal(crossed["tasmin"], t["tasmin"])
    np.testing.assert_array_equal(crossed["tasmax"], t["tasmax"])
    dtr = float((t["tasmax"] - t["tasmin"]).mean())
    assert dtr > 0.2  # K: real diurnal ranges, not collapsed to zero
    assert float((crossed["tasmax"] - crossed["tasmin"]).mean()) == pytest.approx(dtr, rel=1e-6)
    assert not any(m.any() for m in physics.order_violations(crossed).values())


def test_with_tas_the_offending_bound_moves_onto_tas_and_checks_agree(case, tmp_path: Path) -> None:  # noqa: F811
    t = _real_temperatures(case)
    fields = {"tas": t["tas"].copy(), "tasmin": t["tasmin"] + 1.5, "tasmax": t["tasmax"] - 1.5}
    before = {k: v.copy() for k, v in fields.items()}
    bad = (before["tasmin"] > before["tas"]) | (before["tasmax"] < before["tas"])
    assert bad.any()
    counts = enforce_physics(fields)
    assert int(counts["temperature_order"][0]) == int(bad.sum())
    np.testing.assert_array_equal(fields["tas"], before["tas"])
    np.testing.assert_array_equal(fields["tasmin"], np.minimum(before["tasmin"], before["tas"]))
    np.testing.assert_array_equal(fields["tasmax"], np.maximum(before["tasmax"], before["tas"]))
    # the checks stage's order test, on the fixed fields, finds nothing; on the unfixed ones it does
    coords = {"time": np.arange(60), "lat": case["fine"].lat.values, "lon": case["fine"].lon.values}
    group = {v: (tmp_path / f"{v}.nc", xr.DataArray(a[0], dims=("time", "lat", "lon"), coords=coords))
             for v, a in fields.items()}
    assert _order(group) == []
    group["tasmin"] = (tmp_path / "tasmin.nc", xr.DataArray(before["tasmin"][0], dims=("time", "lat", "lon"), coords=coords))
    assert "with tasmin > tas remain after the fixes" in _order(group)[0]
