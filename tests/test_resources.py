"""SLURM requests: memory/runtime scale with the job's domain and years; QoS, constraint and GPU
model per rule from the environment through the workflow profile (as Snakemake plans the jobs)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from aid.config import deep_update, load_config
from aid.resources import job_data_mb, request

ROOT = Path(__file__).resolve().parents[1]


def test_requests_scale_with_domain_years_and_samples(monkeypatch) -> None:
    monkeypatch.delenv("AID_SLURM_MAX_MEM_MB", raising=False)
    cfg = load_config()
    year = {"source": "S", "experiment": "ssp245", "member": "r1i1p1f1", "year": "2016"}
    small = request(cfg, "downscale", year)
    # the default UK year: 32 x 40 cells x 366 days x 6 variables x 3 samples, float32
    assert job_data_mb(cfg, "downscale", year) == 32 * 40 * 366 * 6 * 3 * 4 / 2**20
    europe = deep_update(cfg, {"domain": {"lat": [35.0, 71.75], "lon": [-25.0, 44.75]}})  # 148 x 280 cells
    big = request(europe, "downscale", year)
    assert job_data_mb(europe, "downscale", year) == job_data_mb(cfg, "downscale", year) * 148 * 280 / (32 * 40)
    ratio = (big["mem_mb"] - 4000) / (small["mem_mb"] - 4000)  # the per-data term, above the 4000 MB floor
    assert abs(ratio / (148 * 280 / (32 * 40)) - 1) < 0.005
    assert big["runtime"] > small["runtime"] >= 120
    # fetch covers the experiment's years: 3 (default) vs 86
    exp = {"source": "S", "experiment": "ssp245", "member": "r1i1p1f1"}
    long = deep_update(cfg, {"search": {"experiments": {"ssp245": [2015, 2100]}}})
    assert job_data_mb(long, "fetch", exp) == job_data_mb(cfg, "fetch", exp) * 86 / 3
    assert request(long, "fetch", exp, attempt=2)["mem_mb"] == 2 * request(long, "fetch", exp)["mem_mb"]
    monkeypatch.setenv("AID_SLURM_MAX_MEM_MB", "5000")
    assert request(europe, "downscale", year)["mem_mb"] == 5000


def _job_resources(stdout: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:rule|localrule) \w+:)", stdout):
        m = re.match(r"(?:rule|localrule) (\w+):", block)
        r = re.search(r"resources: (.*)", block)
        if m and r:
            out.setdefault(m.group(1), []).append(r.group(1))
    return out


def test_profile_sets_qos_constraint_gpu_model_per_rule(tmp_path: Path) -> None:
    env = {**os.environ, "AID_SLURM_QOS": "normal", "AID_SLURM_TRAIN_QOS": "gpu-long",
           "AID_SLURM_GPU_MODEL": "a100", "AID_SLURM_DOWNSCALE_CONSTRAINT": "hbm"}
    res = subprocess.run(["snakemake", "-n", "--cores", "1", "--config", f"output_dir={tmp_path / 'res'}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = _job_resources(res.stdout)
    train, down, fetch = jobs["train"][0], jobs["downscale"][0], jobs["fetch"][0]
    assert "qos=gpu-long" in train and "gpu_model=a100" in train and "constraint" not in train
    assert "qos=normal" in down and "constraint=hbm" in down and "gpu_model=a100" in down and "gpu=1" in down
    assert "qos=normal" in fetch and "gpu_model" not in fetch and "constraint" not in fetch
    cfg = load_config()
    want = request(cfg, "downscale", {"year": "2016"})
    assert f"mem_mb={want['mem_mb']}," in down and f"runtime={want['runtime']}," in down
