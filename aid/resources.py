"""Memory and runtime requests of a job that scale with what it holds (SLURM ``--mem`` / ``-t``).

Why: a fixed request sized for the UK demo (32 x 40 cells, 3 years) is far too small for a
European domain over 1950-2100 and wastes a node's memory on the demo. A job's request here is

    mem_mb  = (base_mb  + mb_per_data_mb  * data_mb) * attempt
    runtime = (base_min + min_per_data_mb * data_mb) * attempt

where ``data_mb`` is the float32 volume the job holds: grid cells (the 0.25 deg domain for
downscale/baseline/indices/evaluate, the coarse grid for fetch/regrid/adjust) x days x variables
(x diffusion samples where each is written). ``base_*`` are the requests the workflow profile used
to make for the default run (imports, the model) and stay the floor; the per-MB terms are a ~10x
working-set multiple (float64 intermediates, xarray copies). They are a starting point: each job's
benchmark TSV (``results/benchmarks/<rule>/...tsv``: ``max_rss``, ``s``) gives the site's own
numbers to tune ``SCALING`` with. Retries (``attempt``) double the request as before.
``AID_SLURM_MAX_MEM_MB`` (environment, like the other site settings in profiles/default) caps
``mem_mb`` at what the site's nodes hold, so a large domain is not refused by sbatch outright.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

#: rule -> (grid, base_mb, mb_per_data_mb, base_min, min_per_data_mb, samples?)
SCALING: dict[str, tuple[str, float, float, float, float, bool]] = {
    "fetch": ("coarse", 1000, 10, 30, 0.5, False),
    "regrid": ("coarse", 1000, 10, 30, 0.5, False),
    "train_adjustment": ("coarse", 4000, 10, 30, 0.5, False),
    "adjust": ("coarse", 4000, 10, 30, 0.5, False),
    "downscale": ("fine", 4000, 10, 120, 0.5, True),
    "baseline": ("fine", 1000, 10, 30, 0.5, False),
    "indices": ("fine", 1000, 10, 30, 0.5, False),
    "evaluate": ("fine", 8000, 10, 30, 0.5, True),
}


def _cells(config: Mapping[str, Any], grid: str) -> int:
    from aid.grids import coarse_grid, fine_grid

    g = fine_grid(config) if grid == "fine" else coarse_grid(config)
    halo = int(config["domain"]["halo_cells"]) if grid == "coarse" else 0
    return (g.sizes["lat"] + 2 * halo) * (g.sizes["lon"] + 2 * halo)


def job_years(config: Mapping[str, Any], rule: str, wildcards: Mapping[str, Any]) -> int:
    """Years one job of ``rule`` covers: one for a downscale/baseline year, the experiment's years
    for fetch..adjust and indices, the reference period for train_adjustment, the evaluation period."""
    from aid.naming import experiment_years

    if "year" in wildcards:
        return 1
    if rule == "train_adjustment":
        y0, y1 = config["adjust"]["reference_period"]
        return int(y1) - int(y0) + 1
    if rule == "evaluate":
        y0, y1 = config["evaluation"]["period"]
        return int(y1) - int(y0) + 1
    return len(experiment_years(config, str(wildcards["experiment"])))


def job_data_mb(config: Mapping[str, Any], rule: str, wildcards: Mapping[str, Any]) -> float:
    grid, *_, per_sample = SCALING[rule]
    days = 366 * job_years(config, rule, wildcards)
    n = _cells(config, grid) * days * len(config["search"]["variables"]) * 4
    if per_sample:
        n *= int(config["downscale"]["n_samples"])
    return n / 2**20


def request(config: Mapping[str, Any], rule: str, wildcards: Mapping[str, Any], attempt: int = 1) -> dict[str, int]:
    """``{"mem_mb": ..., "runtime": ...}`` (MB, minutes) of one job of ``rule``."""
    _, base_mb, k_mb, base_min, k_min, _ = SCALING[rule]
    data = job_data_mb(config, rule, wildcards)
    mem = int(math.ceil((base_mb + k_mb * data) * attempt))
    cap = os.environ.get("AID_SLURM_MAX_MEM_MB", "")
    if cap.isdigit() and int(cap) > 0:
        mem = min(mem, int(cap))
    return {"mem_mb": mem, "runtime": int(math.ceil((base_min + k_min * data) * attempt))}
