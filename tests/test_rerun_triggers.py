"""A config change re-runs exactly the jobs it affects (every rule gets its config slice as params).

Planned against the shared tiny run (tests/data/tiny.yaml: one source, one member, historical
2012-2013, ssp245 2015, evaluation 2013, two samples): each case changes one key in an overlay and
asks Snakemake for its dry-run plan. Before the slices, every case but ``downscale.seed`` planned
nothing, and the old outputs were reported as the new ones.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from workflow_run import ROOT, TINY

pytestmark = pytest.mark.pipeline

# The tiny run's jobs per stage: 2 GCM fetch/regrid/adjust datasets (historical, ssp245), 3 GCM
# downscaling years + 1 evaluation year, 2 samples -> 4 index files, 2 ensemble files.
# deliver (catalog + checksums) and landing (the report's first page) follow every delivered file;
# signal (1 scenario) reads the regridded, adjusted and downscaled GCM files.
REPORT = {"deliver": 1, "landing": 1}
GCM_DOWNSCALE = {"downscale": 3, "baseline": 3, "check": 3, "indices": 4, "ensemble_stats": 2, "evaluate": 1,
                 "signal": 1, **REPORT}
ADJUST = {"train_adjustment": 1, "adjust": 2, **GCM_DOWNSCALE}
REGRID = {"regrid": 2, **ADJUST}
CASES = {
    "domain.halo_cells": ({"domain": {"halo_cells": 2}}, {"fetch": 2, "check_fetch": 2, **REGRID}),
    "regrid.method": ({"regrid": {"method": "bilinear"}}, REGRID),
    "adjust.nquantiles": ({"adjust": {"nquantiles": 15}}, ADJUST),
    "model.train.steps": ({"model": {"train": {"steps": 21}}},
                          {"train": 1, "downscale": 4, "check": 4, "indices": 4, "ensemble_stats": 2, "evaluate": 1,
                           "signal": 1, **REPORT}),
    "downscale.seed": ({"downscale": {"seed": 7}},
                       {"downscale": 4, "check": 4, "indices": 4, "ensemble_stats": 2, "evaluate": 1,
                        "signal": 1, **REPORT}),
    "downscale.noise_scale": ({"downscale": {"noise_scale": {"tas": 1.2}}},
                              {"downscale": 4, "check": 4, "indices": 4, "ensemble_stats": 2, "evaluate": 1,
                               "signal": 1, **REPORT}),
    "downscale.conserve": ({"downscale": {"conserve": []}},
                           {"downscale": 4, "check": 4, "indices": 4, "ensemble_stats": 2, "evaluate": 1,
                            "signal": 1, **REPORT}),
    "indices.names": ({"indices": {"names": ["TXx", "TNn", "RX1day"]}},
                      {"indices": 4, "reference_indices": 1, "ensemble_stats": 2, "evaluate": 1, **REPORT}),
    "evaluation.seasons": ({"evaluation": {"seasons": ["DJF", "JJA"]}}, {"evaluate": 1, "landing": 1}),
    # Execution only: the sampler's results do not depend on the day-batch size.
    "downscale.batch_days": ({"downscale": {"batch_days": 16}}, {}),
}


def planned(out: Path, overlay: Path) -> Counter:
    """Rule -> number of jobs Snakemake would run (the dry run's job-stats table), 'all' left out."""
    # params trigger only: what this test is about (a forced re-run elsewhere may leave newer mtimes)
    cmd = [sys.executable, "-m", "snakemake", "-n", "--nolock", "--cores", "1", "--rerun-triggers", "params",
           "--configfile", str(ROOT / "config/config.yaml"), str(TINY), str(overlay),
           "--config", f"output_dir={out}"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    text = res.stdout + res.stderr
    if "Nothing to be done" in text:
        return Counter()
    table = text.split("Job stats:", 1)[1].split("total", 1)[0]
    jobs = Counter({m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)})
    jobs.pop("all", None)
    return jobs


@pytest.fixture(scope="module")
def up_to_date(pipeline, pipeline_lock, tmp_path_factory):
    """The shared run plans nothing without a change (else every case below would be meaningless)."""
    out, _ = pipeline
    overlay = tmp_path_factory.mktemp("overlay") / "none.yaml"
    overlay.write_text("{}\n")
    with pipeline_lock:
        assert planned(out, overlay) == Counter(), "the shared run is not up to date"
    return out


@pytest.mark.parametrize("key", list(CASES))
def test_config_change_plans_exactly_its_downstream_jobs(up_to_date, pipeline_lock, tmp_path, key) -> None:
    change, expected = CASES[key]
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(change))
    with pipeline_lock:
        assert planned(up_to_date, overlay) == Counter(expected), key
