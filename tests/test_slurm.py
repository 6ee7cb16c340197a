"""SLURM for real: sbatch, the `slurm` profile, and the aid workflow submitted job by job.

Needs a running controller (CI starts one with `bash scripts/slurm-up.sh`, root + Debian packages);
skipped when `sinfo` is not on PATH or `scontrol ping` does not answer UP.

Proof that work went through SLURM comes from SLURM itself: every job Snakemake reports as
submitted is looked up with `scontrol show job` (slurm-up.sh keeps records for MinJobAge=3600 s)
and must be COMPLETED, carry the rule in its Comment, and GPU rules must hold `gres:gpu:1`.

AID_SLURM_WORKFLOW selects the aid run: `slice` (default: demo archive -> catalog -> fetch ->
check_fetch of one member, and reference -> train, the GPU rule), `full` (tests/data/tiny.yaml end
to end) or `off`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"
PROFILE = ROOT / "slurm"
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
RULE_BLOCK = re.compile(r"^(localrule|rule) (\w+):$", re.M)


def _controller_up() -> bool:
    if not shutil.which("sinfo") or not shutil.which("scontrol"):
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "UP" in out


pytestmark = [
    pytest.mark.slurm,
    # One worker runs this whole file in order (tests/conftest.py ONE_WORKER_MODULES).
    pytest.mark.skipif(not _controller_up(), reason="no SLURM controller (run: bash scripts/slurm-up.sh)"),
]


def scontrol_job(jobid: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", str(jobid)], capture_output=True, text=True, check=True
    ).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def node_resources() -> tuple[int, int]:
    """(CPUs, RealMemory MB) of the smallest node of the default partition."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%c %m"], capture_output=True, text=True, check=True).stdout
    rows = [tuple(int(x.rstrip("+")) for x in line.split()) for line in out.splitlines() if line.strip()]
    return min(r[0] for r in rows), min(r[1] for r in rows)


def gpu_available() -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, check=True).stdout
    return "gpu" in out


def run_snakemake(args: list[str], cwd: Path, timeout: int) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    return res, time.monotonic() - t0


def check_submissions(log: str) -> dict[str, list[str]]:
    """Rule name -> SLURM job ids, from Snakemake's log; every job in it must be COMPLETED in SLURM."""
    by_rule: dict[str, list[str]] = {}
    for jobid, logpath in SUBMITTED.findall(log):
        # <logdir>/rule_<name>[/<wildcards>]/<jobid>.log
        rule = next(p for p in Path(logpath).parts if p.startswith("rule_")).removeprefix("rule_")
        by_rule.setdefault(rule, []).append(jobid)
        info = scontrol_job(jobid)
        assert info["JobState"] == "COMPLETED", (jobid, info.get("JobState"), info.get("Reason"))
        assert info["Comment"].startswith(f"rule_{rule}"), (jobid, info["Comment"])
    return by_rule


# ------------------------------------------------------------------------------------------------
def test_sbatch_plain_and_gpu_jobs(tmp_path: Path) -> None:
    """The cluster itself: a plain job and a --gpus=1 job run to completion."""
    plain = subprocess.run(
        ["sbatch", "--parsable", "--wait", "-t", "2", "-o", str(tmp_path / "plain.out"), "--wrap", "hostname"],
        capture_output=True, text=True, timeout=300,
    )
    assert plain.returncode == 0, plain.stderr
    jid = plain.stdout.strip().split(";")[0]
    assert scontrol_job(jid)["JobState"] == "COMPLETED"
    assert (tmp_path / "plain.out").read_text().strip()

    if not gpu_available():
        pytest.skip("no gpu GRES configured on this cluster")
    gpu = subprocess.run(
        ["sbatch", "--parsable", "--wait", "-t", "2", "--gpus=1", "-o", str(tmp_path / "gpu.out"),
         "--wrap", "echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"],
        capture_output=True, text=True, timeout=300,
    )
    assert gpu.returncode == 0, gpu.stderr
    info = scontrol_job(gpu.stdout.strip().split(";")[0])
    assert info["JobState"] == "COMPLETED"
    assert "gpu:1" in info.get("TresPerJob", ""), info
    assert "CUDA_VISIBLE_DEVICES=" in (tmp_path / "gpu.out").read_text()


def test_profile_resolves_from_repo_root() -> None:
    """`snakemake --profile slurm` from the repo root finds ./slurm/config.yaml (+ profiles/default)."""
    res, _ = run_snakemake(["--profile", "slurm", "-n", "--quiet", "all"], ROOT, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Using profiles slurm and workflow specific profile profiles/default" in res.stderr


SMALL_WORKFLOW = """
localrules: collect

rule collect:
    input: "out/cpu.txt", "out/gpu.txt"
    output: "out/all.txt"
    shell: "cat {input} > {output}; echo local=${{SLURM_JOB_ID:-none}} >> {output}"

rule cpu:
    output: "out/cpu.txt"
    resources: mem_mb=300, runtime=5
    shell: "echo cpu job=$SLURM_JOB_ID > {output}"

rule gpu:
    output: "out/gpu.txt"
    resources: gpu=1, cpus_per_gpu=1, mem_mb=400, runtime=5
    shell: "echo gpu job=$SLURM_JOB_ID cvd=$CUDA_VISIBLE_DEVICES > {output}"
"""


def test_profile_small_workflow(tmp_path: Path) -> None:
    """Two rules through sbatch with this repository's profile; the localrule stays local."""
    if not gpu_available():
        pytest.skip("no gpu GRES configured on this cluster")
    (tmp_path / "Snakefile").write_text(SMALL_WORKFLOW)
    res, took = run_snakemake(
        ["--profile", str(PROFILE), "--slurm-keep-successful-logs", "out/all.txt"], tmp_path, timeout=600
    )
    assert res.returncode == 0, res.stderr[-5000:]
    by_rule = check_submissions(res.stderr)
    assert sorted(by_rule) == ["cpu", "gpu"], by_rule
    gpu = scontrol_job(by_rule["gpu"][0])
    assert "gpu:1" in gpu.get("TresPerJob", ""), gpu
    assert gpu["MinMemoryNode"] == "400M"
    assert scontrol_job(by_rule["cpu"][0])["MinMemoryNode"] == "300M"
    text = (tmp_path / "out" / "all.txt").read_text()
    assert f"cpu job={by_rule['cpu'][0]}" in text and f"gpu job={by_rule['gpu'][0]}" in text
    assert "local=none" in text  # the localrule did not run inside a SLURM job
    assert (tmp_path / ".snakemake" / "slurm_logs" / "rule_gpu" / f"{by_rule['gpu'][0]}.log").exists()
    print(f"2 SLURM jobs + 1 local rule in {took:.1f} s")


def ci_workflow_profile(dest: Path) -> Path:
    """profiles/default with cpus_per_gpu and mem_mb clamped to this cluster's node (CI: 2 CPUs)."""
    cpus, mem = node_resources()
    text = (ROOT / "profiles" / "default" / "config.yaml").read_text()
    text = re.sub(r"(cpus_per_gpu:\s*)(\d+)", lambda m: f"{m[1]}{min(int(m[2]), cpus)}", text)
    cap = max(mem // 2, 256)  # attempt 2 (retries: 1) must fit as well
    text = re.sub(r'(mem_mb:\s*"?)(\d+)', lambda m: f"{m[1]}{min(int(m[2]), cap)}", text)
    os.environ["AID_SLURM_MAX_MEM_MB"] = str(cap)  # the rules' scaled requests (aid/resources.py) too
    dest.mkdir(parents=True)
    (dest / "config.yaml").write_text(text)
    return dest


@pytest.mark.skipif(os.environ.get("AID_SLURM_WORKFLOW", "slice") == "off", reason="AID_SLURM_WORKFLOW=off")
def test_aid_workflow_through_sbatch(tmp_path: Path) -> None:
    """The aid workflow (tests/data/tiny.yaml) with `--profile slurm`: every non-local job is a SLURM job."""
    mode = os.environ.get("AID_SLURM_WORKFLOW", "slice")
    out = tmp_path / "results"
    source, member = "AID-ERA5-DERIVED", "r1i1p1f1"
    targets = (
        []
        if mode == "full"
        else [f"{out}/fetch/{source}/historical/{member}/completeness.json", f"{out}/model/checkpoint.pt"]
    )
    args = [
        "--profile", "slurm",
        "--workflow-profile", str(ci_workflow_profile(tmp_path / "wfprofile")),
        "--slurm-keep-successful-logs", "--slurm-logdir", str(tmp_path / "slurm_logs"),
        "--configfile", str(ROOT / "config/config.yaml"), str(TINY),
        "--config", f"output_dir={out}",
        "--", *targets,
    ]
    res, took = run_snakemake(args, ROOT, timeout=3000)
    assert res.returncode == 0, f"{res.stdout[-2000:]}\n{res.stderr[-8000:]}"
    log = res.stderr
    by_rule = check_submissions(log)
    ran = RULE_BLOCK.findall(log)
    remote = sorted({name for kind, name in ran if kind == "rule"})
    local = sorted({name for kind, name in ran if kind == "localrule"})
    # Every non-local job Snakemake ran was submitted with sbatch, and nothing else was.
    assert sorted(by_rule) == remote, (by_rule, remote)
    assert sum(len(v) for v in by_rule.values()) == sum(1 for kind, _ in ran if kind == "rule")
    assert set(local) <= {"all", "catalog", "check_fetch", "check", "downscale_member",
                          "downscale_experiment", "ensemble_stats", "landing", "multi_model_stats"}, local
    assert "train" in by_rule
    train = scontrol_job(by_rule["train"][0])
    assert "gpu:1" in train.get("TresPerJob", ""), train
    assert int(train["NumCPUs"]) >= 1
    njobs = sum(len(v) for v in by_rule.values())
    print(f"aid {mode}: {njobs} SLURM jobs ({', '.join(f'{k}={len(v)}' for k, v in sorted(by_rule.items()))}), "
          f"local {local}, {took:.0f} s")
