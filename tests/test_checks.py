"""Physical checks: pass on real deliverables, catch injected violations with exact messages.

Deliverables come from the bicubic baseline job on the derived-from-ERA5 case of
tests/test_deliverables.py (and, in tests/test_downscale.py, from the diffusion job).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import yaml

from aid.checks import check_job
from aid.errors import DataError
from test_deliverables import EXP, MEMBER, SOURCE, YEAR, baseline_files, case  # noqa: F401  (fixtures)


def test_checks_pass_and_report_fixes(case, baseline_files, tmp_path) -> None:  # noqa: F811
    out = tmp_path / "checks" / f"{YEAR}.json"
    report = check_job(case["cfg"], [], [str(p) for p in baseline_files.values()], out)
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["status"] == "passed" and on_disk["n_files"] == 6
    assert on_disk["job"] == {"source": SOURCE, "experiment": EXP, "member": MEMBER, "year": YEAR}
    assert {f["days"] for f in on_disk["files"]} == {365} and {f["calendar"] for f in on_disk["files"]} == {"noleap"}
    # the fix counts in the report are those the job recorded in the files
    with netCDF4.Dataset(baseline_files[("tasmin", 1)]) as nc:
        recorded = int(nc.getncattr("aid_temperature_order_fixes"))
    assert on_disk["fixes"]["aid-bicubic r1"]["temperature_order"] == recorded
    pr = next(f for f in on_disk["files"] if f["variable"] == "pr")
    assert pr["units"] == "kg m-2 s-1" and pr["min"] >= 0 and pr["max"] > 5 / 86400  # real rain: > 5 mm d-1


def _copy(files: dict, dst: Path) -> dict:
    dst.mkdir(parents=True)
    return {k: Path(shutil.copy(p, dst / p.name)) for k, p in files.items()}


def test_injected_violations_fail_with_exact_messages(case, baseline_files, tmp_path) -> None:  # noqa: F811
    files = _copy(baseline_files, tmp_path / "job")
    with netCDF4.Dataset(files[("tas", 1)]) as nc:
        tas = float(nc["tas"][10, 3, 4])
    with netCDF4.Dataset(files[("tasmin", 1)], "a") as nc:
        nc["tasmin"][10, 3, 4] = tas + 1.5
    with netCDF4.Dataset(files[("pr", 1)], "a") as nc:
        nc["pr"][5, 0, 0] = -0.5
    with netCDF4.Dataset(files[("uas", 1)], "a") as nc:
        nc["uas"][7, 15, 19] = 1e20  # the fill value: a hole in the domain
    with netCDF4.Dataset(files[("vas", 1)], "a") as nc:
        nc["time"][1] = nc["time"][0]  # duplicated day, 2013-01-02 missing
    out = tmp_path / "report.json"
    with pytest.raises(DataError) as err:
        check_job(case["cfg"], [], [str(p) for p in files.values()], out)
    msg = str(err.value)
    tn = np.float32(tas + 1.5)
    assert (f"{files[('tasmin', 1)]}: 1 value(s) with tasmin > tas remain after the fixes (first on 2013-01-11 at "
            f"lat 50.75, lon -9: tasmin {tn:.3f} K > tas {tas:.3f} K in {files[('tas', 1)].name}).") in msg
    assert f"{files[('pr', 1)]}: 1 value(s) of pr < 0 (min -0.5 on 2013-01-06 at lat 50, lon -10)." in msg
    assert (f"{files[('uas', 1)]}: 1 missing/NaN value(s) of uas inside the domain (first on 2013-01-08 at "
            f"lat 53.75, lon -5.25).") in msg
    assert f"{files[('vas', 1)]}: 1 duplicated day(s) in the time axis." in msg
    assert (f"{files[('vas', 1)]}: time axis has 365 day(s), expected 365 for 2013 in the noleap calendar: "
            f"1 missing (first 2013-01-02).") in msg
    assert "Fix: inspect the named files" in msg
    assert not out.exists()  # no report on failure


def test_unit_mixup_and_missing_file(case, baseline_files, tmp_path) -> None:  # noqa: F811
    files = _copy(baseline_files, tmp_path / "job")
    with netCDF4.Dataset(files[("tasmax", 1)], "a") as nc:
        v = nc["tasmax"]
        v[:] = v[:] - 273.15  # degC written as K
    files[("uas", 1)].unlink()
    with pytest.raises(DataError) as err:
        check_job(case["cfg"], [], [str(p) for p in files.values()], tmp_path / "r.json")
    msg = str(err.value)
    assert f"{files[('tasmax', 1)]}: {365 * 16 * 20} value(s) of tasmax < 170 K" in msg
    assert "value(s) with tas > tasmax remain after the fixes" in msg
    assert f"{files[('uas', 1)]}: file does not exist." in msg
    assert "aid-bicubic: 1 expected file(s) missing, e.g. variable uas sample r1" in msg


def test_cli_check_fails_the_command(case, baseline_files, tmp_path, capsys) -> None:  # noqa: F811
    """`aid check` on the workflow's paths: exit 2 and the violation on stderr."""
    from aid.cli import main

    cfg = dict(case["cfg"])
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "ok.json"
    assert main(["check", "--config", str(cfg_path), "--source", SOURCE, "--experiment", EXP, "--member", MEMBER,
                 "--year", str(YEAR), "--no-baseline", "--out", str(out)]) == 2  # no diffusion files: missing
    assert "file does not exist" in capsys.readouterr().err
    assert not out.exists()
