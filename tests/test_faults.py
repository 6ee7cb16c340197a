"""Faults lose nothing: a killed run resumes to identical deliverables; a broken member fails alone.

Both tests start from a copy of the session pipeline run (tests/test_workflow.py) with its
downscale-stage outputs removed, so upstream artefacts (checkpoint, adjusted inputs) are shared
and only the stage under test re-runs: they ask Snakemake for every job's checked deliverables
(rule check), not for the indices and evaluation built on them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid import naming
from workflow_run import ROOT, TINY, copy_upstream, snakemake, tiny_config

pytestmark = pytest.mark.pipeline  # shares test_workflow's run (conftest.py `pipeline`)


def _deliverables(cfg: dict) -> dict[Path, np.ndarray]:
    out = {}
    for job in naming.downscale_jobs(cfg):
        for (var, _s), p in naming.deliverable_paths(cfg, job["source"], job["experiment"], job["member"], job["year"]).items():
            with xr.open_dataset(p) as ds:
                out[p.relative_to(cfg["output_dir"])] = ds[var].values.copy()
    return out


def _check_file(cfg: dict, job: dict) -> Path:
    """The check report of one downscale job (rule check's output)."""
    return Path(cfg["output_dir"]) / "checks" / job["source"] / job["experiment"] / job["member"] / f"{job['year']}.json"


def _checked(cfg: dict) -> list[Path]:
    """Every downscale job's check file: the targets that need exactly the downscale stage."""
    return [_check_file(cfg, j) for j in naming.downscale_jobs(cfg)]


def test_sigkill_mid_downscale_then_resume_is_identical(pipeline, tmp_path) -> None:  # noqa: F811
    ref_out, ref_cfg = pipeline
    out = tmp_path / "results"
    copy_upstream(ref_out, out)
    cfg = tiny_config(out)
    cmd = [
        sys.executable, "-m", "snakemake", "--cores", "1", *map(str, _checked(cfg)),
        "--configfile", str(ROOT / "config/config.yaml"), str(TINY), "--config", f"output_dir={out}",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # Wait until a downscale job is running (its log exists), then SIGKILL the whole process group.
    logs = out / "logs" / "downscale"
    deadline = time.time() + 300
    while time.time() < deadline and not (logs.exists() and any(logs.iterdir())):
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert logs.exists(), "downscale never started"
    # Nothing a later stage could take for output: every deliverable present is complete or absent.
    for p in (out / "downscale").rglob("*.nc") if (out / "downscale").exists() else []:
        xr.open_dataset(p).close()
    # What a user does after a crash (README): release the killed run's lock, re-run the incomplete jobs.
    snakemake(out, "--unlock")
    snakemake(out, "--rerun-incomplete", targets=_checked(cfg))
    before = _deliverables(ref_cfg)
    after = _deliverables(cfg)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=str(key))


def test_corrupt_member_fails_alone_with_keep_going(pipeline, tmp_path) -> None:  # noqa: F811
    ref_out, _ = pipeline
    out = tmp_path / "results"
    copy_upstream(ref_out, out)
    cfg = tiny_config(out)
    bad = out / "adjusted" / cfg["search"]["sources"][0] / "ssp245" / cfg["search"]["members"][0]
    bad = bad.with_suffix(".nc")
    good = bad.read_bytes()
    # Truncated file, written now: newer than its own inputs, so Snakemake does not regenerate it.
    bad.write_bytes(good[: len(good) // 3])
    res = snakemake(out, "--keep-going", check=False, targets=_checked(cfg))
    assert res.returncode != 0
    log_text = "".join(p.read_text() for p in (out / "logs" / "downscale").glob("*ssp245*"))
    assert str(bad.name) in log_text and "corrupt or truncated" in log_text, res.stderr[-6000:]
    # Independent jobs (historical and evaluation) completed.
    hist = [j for j in naming.downscale_jobs(cfg) if j["experiment"] != "ssp245"]
    for j in hist:
        assert _check_file(cfg, j).exists()
    assert not all(p.exists() for p in _checked(cfg))
    # Fix the file, re-run: completes.
    bad.write_bytes(good)
    snakemake(out, targets=_checked(cfg))
    assert all(p.exists() for p in _checked(cfg))
