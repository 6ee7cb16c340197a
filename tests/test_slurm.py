"""SLURM for real: sbatch, the `slurm` profile, and the aid workflow submitted job by job.

Needs a running controller (CI starts one with `bash scripts/slurm-up.sh`, root + Debian packages);
skipped when `sinfo` is not on PATH or `scontrol ping` does not answer UP.

Proof that work went through SLURM comes from SLURM itself: every job Snakemake reports as
submitted is looked up with `scontrol show job` (slurm-up.sh keeps records for MinJobAge=3600 s)
and must be COMPLETED, carry the rule in its Comment, and GPU rules must hold `gres:gpu:1`.

AID_SLURM_WORKFLOW selects the aid run: `slice` (default: demo archive -> catalog -> fetch ->
check_fetch of one member, and reference -> train, the GPU rule), `full` (tests/data/tiny.yaml end
to end: the suite's shared pipeline run itself goes through SLURM, tests/workflow_run.py, and is
checked here) or `off`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from workflow_run import (ROOT, SUBMITTED, TINY, job_records, scontrol_job, slurm_args, slurm_up,
                          slurm_workflow_mode)

PROFILE = ROOT / "slurm"
RULE_BLOCK = re.compile(r"^(localrule|rule) (\w+):$", re.M)


pytestmark = [
    pytest.mark.slurm,
    # One worker runs this whole file in order (tests/conftest.py ONE_WORKER_MODULES).
    pytest.mark.skipif(not slurm_up(), reason="no SLURM controller (run: bash scripts/slurm-up.sh)"),
]


def gpu_available() -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%G"], capture_output=True, text=True, check=True).stdout
    return "gpu" in out


def run_snakemake(args: list[str], cwd: Path, timeout: int) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    return res, time.monotonic() - t0


def check_submissions(log: str, records: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """Rule name -> SLURM job ids, from Snakemake's log; every job in it must be COMPLETED in SLURM
    (``records``: ``scontrol show job`` of each, :func:`workflow_run.job_records`)."""
    by_rule: dict[str, list[str]] = {}
    for jobid, logpath in SUBMITTED.findall(log):
        # <logdir>/rule_<name>[/<wildcards>]/<jobid>.log
        rule = next(p for p in Path(logpath).parts if p.startswith("rule_")).removeprefix("rule_")
        by_rule.setdefault(rule, []).append(jobid)
        info = records[jobid]
        assert info["JobState"] == "COMPLETED", (jobid, info.get("JobState"), info.get("Reason"))
        assert info["Comment"].startswith(f"rule_{rule}"), (jobid, info["Comment"])
    return by_rule


# ------------------------------------------------------------------------------------------------
def test_sbatch_plain_and_gpu_jobs(tmp_path: Path) -> None:
    """The cluster itself: a plain job and a --gpus=1 job run to completion (in the queue behind the
    shared pipeline run's jobs when that goes through SLURM, hence the long timeouts)."""
    plain = subprocess.run(
        ["sbatch", "--parsable", "--wait", "-t", "2", "-o", str(tmp_path / "plain.out"), "--wrap", "hostname"],
        capture_output=True, text=True, timeout=1800,
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
        capture_output=True, text=True, timeout=1800,
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
        ["--profile", str(PROFILE), "--slurm-keep-successful-logs", "out/all.txt"], tmp_path, timeout=1800
    )
    assert res.returncode == 0, res.stderr[-5000:]
    by_rule = check_submissions(res.stderr, job_records(res.stderr))
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


@pytest.mark.pipeline  # full: it checks the shared run (scheduled with the other tests of that run)
@pytest.mark.skipif(slurm_workflow_mode() == "off", reason="AID_SLURM_WORKFLOW=off")
def test_aid_workflow_through_sbatch(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The aid workflow (tests/data/tiny.yaml) with `--profile slurm`: every non-local job is a SLURM job.

    ``full``: the suite's shared pipeline run (conftest ``pipeline``) is that run; its log and the
    SLURM records of its jobs were saved when it finished. ``slice``: a part of it, run here.
    """
    mode = slurm_workflow_mode()
    if mode == "full":
        out, _ = request.getfixturevalue("pipeline")
        log = (out.parent / "snakemake.log").read_text()
        records = json.loads((out.parent / "slurm_jobs.json").read_text())
        took = None
    else:
        out = tmp_path / "results"
        source, member = "AID-ERA5-DERIVED", "r1i1p1f1"
        targets = [f"{out}/fetch/{source}/historical/{member}/completeness.json", f"{out}/model/checkpoint.pt"]
        args = [
            *slurm_args(tmp_path),
            "--configfile", str(ROOT / "config/config.yaml"), str(TINY),
            "--config", f"output_dir={out}",
            "--", *targets,
        ]
        res, took = run_snakemake(args, ROOT, timeout=3000)
        assert res.returncode == 0, f"{res.stdout[-2000:]}\n{res.stderr[-8000:]}"
        log = res.stderr
        records = job_records(log)
    by_rule = check_submissions(log, records)
    ran = RULE_BLOCK.findall(log)
    remote = sorted({name for kind, name in ran if kind == "rule"})
    local = sorted({name for kind, name in ran if kind == "localrule"})
    # Every non-local job Snakemake ran was submitted with sbatch, and nothing else was.
    assert sorted(by_rule) == remote, (by_rule, remote)
    assert sum(len(v) for v in by_rule.values()) == sum(1 for kind, _ in ran if kind == "rule")
    assert set(local) <= {"all", "catalog", "check_fetch", "check", "downscale_member",
                          "downscale_experiment", "ensemble_stats", "landing", "multi_model_stats"}, local
    assert "train" in by_rule
    train = records[by_rule["train"][0]]
    assert "gpu:1" in train.get("TresPerJob", ""), train
    assert int(train["NumCPUs"]) >= 1
    if mode == "full":  # the whole workflow: every stage down to the report's inputs ran as SLURM jobs
        assert {"fetch", "regrid", "adjust", "downscale", "indices", "evaluate"} <= set(by_rule), sorted(by_rule)
    njobs = sum(len(v) for v in by_rule.values())
    print(f"aid {mode}: {njobs} SLURM jobs ({', '.join(f'{k}={len(v)}' for k, v in sorted(by_rule.items()))}), "
          f"local {local}" + (f", {took:.0f} s" if took is not None else ""))
