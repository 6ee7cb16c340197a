"""SLURM requests: memory/runtime scale with the job's domain and years. (QoS, constraint and GPU
model per rule, as Snakemake plans the jobs: tests/test_user_config.py, which plans a run anyway.)"""

from __future__ import annotations


from aid.config import deep_update, load_config
from aid.resources import job_data_mb, request

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
