"""The tiny workflow run shared by the pipeline tests (tests/test_workflow.py, tests/test_faults.py).

Its helpers live here and its session fixture (``pipeline``) in conftest.py, so the run happens
once per test session: a fixture imported into two test modules would be two fixtures, two runs.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from aid.config import deep_update, resolve_placeholders, validate

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"


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


def tiny_config(out: Path) -> dict:
    base = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg = deep_update(base, yaml.safe_load(TINY.read_text()))
    cfg["output_dir"] = str(out)
    return resolve_placeholders(validate(cfg))


def run_pipeline(out: Path) -> tuple[Path, dict]:
    """The real default workflow with tests/data/tiny.yaml into ``out``; returns (out, config)."""
    snakemake(out)
    return out, tiny_config(out)
