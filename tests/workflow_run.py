"""The tiny workflow run shared by the pipeline tests (tests/test_workflow.py, tests/test_faults.py).

Its helpers live here and its session fixture (``pipeline``) in conftest.py, so the run happens
once per test session: a fixture imported into two test modules would be two fixtures, two runs.

With ``AID_SLURM_WORKFLOW=full`` and a SLURM controller up (CI: ``.ci/run``), that one run goes
through ``--profile slurm``, every non-local job an sbatch job: tests/test_slurm.py checks its log
and SLURM's records of its jobs, and every other pipeline test reads (or re-runs locally, bit for
bit) what SLURM produced, instead of the workflow running twice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from aid.config import deep_update, resolve_placeholders, validate

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"
#: Snakemake's line for each job the slurm executor submitted.
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
#: Output folders of the downscale stage and everything built on it (what a copy of a run leaves out).
DOWNSTREAM = ("downscale", "baseline", "checks", "indices", "evaluation", "targets")


def snakemake(out: Path, *extra: str, check: bool = True, targets: Sequence[Path | str] = (),
              **kw) -> subprocess.CompletedProcess:
    """Run the workflow into ``out`` (all of it, or only what ``targets`` need)."""
    cmd = [
        sys.executable, "-m", "snakemake", "--cores", "2", *map(str, targets),
        "--configfile", str(ROOT / "config/config.yaml"), str(TINY),
        "--config", f"output_dir={out}", *extra,
    ]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}")
    return res


def copy_upstream(src: Path, dst: Path) -> None:
    """A copy of the run ``src`` without its :data:`DOWNSTREAM` outputs (mtimes kept), for tests that
    re-run jobs without touching the shared run."""
    shutil.copytree(src, dst, copy_function=shutil.copy2, ignore=shutil.ignore_patterns(*DOWNSTREAM))


def tiny_config(out: Path) -> dict:
    base = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg = deep_update(base, yaml.safe_load(TINY.read_text()))
    cfg["output_dir"] = str(out)
    return resolve_placeholders(validate(cfg))


def slurm_up() -> bool:
    """A SLURM controller answers (``scontrol ping`` says UP)."""
    if not shutil.which("sinfo") or not shutil.which("scontrol"):
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "UP" in out


def slurm_workflow_mode() -> str:
    """AID_SLURM_WORKFLOW: ``slice`` (default), ``full`` (the shared run goes through SLURM) or ``off``."""
    return os.environ.get("AID_SLURM_WORKFLOW", "slice")


def scontrol_job(jobid: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", str(jobid)], capture_output=True, text=True, check=True
    ).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def job_records(log: str) -> dict[str, dict[str, str]]:
    """``scontrol show job`` of every job a Snakemake log says it submitted to SLURM, taken now:
    SLURM keeps finished jobs' records only MinJobAge seconds."""
    return {jobid: scontrol_job(jobid) for jobid, _ in SUBMITTED.findall(log)}


def node_resources() -> tuple[int, int]:
    """(CPUs, RealMemory MB) of the smallest node of the default partition."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%c %m"], capture_output=True, text=True, check=True).stdout
    rows = [tuple(int(x.rstrip("+")) for x in line.split()) for line in out.splitlines() if line.strip()]
    return min(r[0] for r in rows), min(r[1] for r in rows)


def ci_workflow_profile(dest: Path) -> Path:
    """profiles/default with cpus_per_gpu and mem_mb clamped to this cluster's node (CI: 2 CPUs)."""
    cpus, mem = node_resources()
    text = (ROOT / "profiles" / "default" / "config.yaml").read_text()
    text = re.sub(r"(cpus_per_gpu:\s*)(\d+)", lambda m: f"{m[1]}{min(int(m[2]), cpus)}", text)
    cap = max(mem // 2, 256)  # attempt 2 (retries: 1) must fit as well
    text = re.sub(r'(mem_mb:\s*"?)(\d+)', lambda m: f"{m[1]}{min(int(m[2]), cap)}", text)
    os.environ["AID_SLURM_MAX_MEM_MB"] = str(cap)  # the rules' scaled requests (aid/resources.py) too
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(text)
    return dest


def slurm_args(run_dir: Path) -> list[str]:
    """Snakemake arguments that send every non-local job of a run to SLURM (logs under ``run_dir``)."""
    return [
        "--profile", "slurm",
        "--workflow-profile", str(ci_workflow_profile(run_dir / "wfprofile")),
        "--slurm-keep-successful-logs", "--slurm-logdir", str(run_dir / "slurm_logs"),
    ]


def run_pipeline(out: Path) -> tuple[Path, dict]:
    """The real default workflow with tests/data/tiny.yaml into ``out``; returns (out, config).

    Through SLURM when :func:`slurm_workflow_mode` is ``full`` and a controller is up. Snakemake's
    log goes to ``<out>/../snakemake.log`` and, for a SLURM run, ``scontrol show job`` of every
    submitted job to ``<out>/../slurm_jobs.json`` (:func:`job_records`, right after the run).
    """
    run_dir = out.parent
    through_slurm = slurm_workflow_mode() == "full" and slurm_up()
    res = snakemake(out, *(slurm_args(run_dir) if through_slurm else []))
    (run_dir / "snakemake.log").write_text(res.stderr)
    if through_slurm:
        (run_dir / "slurm_jobs.json").write_text(json.dumps(job_records(res.stderr), indent=1))
    return out, tiny_config(out)
