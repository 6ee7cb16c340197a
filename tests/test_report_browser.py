"""The Snakemake report renders in a real browser and shows the evaluation figures and tables.

Design (works from a fresh clone, no pipeline run needed): a tiny Snakemake workflow in a temporary
directory *includes the real rule file* ``workflow/rules/evaluate.smk`` (so the real report()
declarations, captions and script are exercised), fed with the small evaluation case derived from
real ERA5 (:mod:`aid.evaluate.sample`). It runs the rule, builds ``report.html`` and opens it in
headless Chromium. Skipped only when no ``chromium`` binary exists (CI installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DATA = Path("/work/shared/data")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed"),
    pytest.mark.skipif(not (DATA / "era5/era5-2mt-2019-03-uk.grib").exists(), reason="shared data missing"),
]


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from aid.evaluate.sample import build_sample_evaluation

    wd = tmp_path_factory.mktemp("smk")
    # mirror the real workflow layout (rule file, script, captions, env file) so that relative
    # paths inside evaluate.smk resolve exactly as in the repository
    for sub in ("workflow/rules/evaluate.smk", "workflow/scripts/evaluate.py", "workflow/report"):
        src, dst = REPO / sub, wd / sub
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    env_file = wd / "envs" / "evaluate.yaml"
    env_file.parent.mkdir()
    if (REPO / "envs" / "evaluate.yaml").exists():
        shutil.copy(REPO / "envs" / "evaluate.yaml", env_file)
    else:
        env_file.write_text("channels: [conda-forge]\ndependencies: [python>=3.11]\n")
    inputs = build_sample_evaluation(DATA, wd / "case", n_samples=3)
    # xsdba properties off: they are tested in test_properties.py and on the pipeline's report (test_deliver.py)
    overlay = {"output_dir": "results", "evaluation": {"period": [2019, 2019], "properties": []},
               "indices": {"base_period": [1990, 1992]}}
    (wd / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    (wd / "Snakefile").write_text(textwrap.dedent(f"""
        configfile: "{REPO / 'config' / 'config.yaml'}"
        configfile: "overlay.yaml"
        report: "workflow/report/workflow.rst"
        OUT = config["output_dir"]
        INPUTS = {json.dumps(inputs)}

        def evaluation_inputs():
            return INPUTS

        from aid.config_slice import config_slice

        def cfg_slice(*paths):
            return config_slice(config, *paths)

        def scaled_mem(rule):  # the real ones (common.smk) scale with the domain; this case is tiny
            return 2000

        def scaled_runtime(rule):
            return 30

        include: "workflow/rules/evaluate.smk"

        rule all:
            input: f"{{OUT}}/evaluation/metrics.json"
            default_target: True
        """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    smk = [sys.executable, "-m", "snakemake", "--cores", "1", "--snakefile", "Snakefile"]
    run = subprocess.run([*smk], cwd=wd, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    rep = subprocess.run([*smk, "--report", "report.html"], cwd=wd, capture_output=True, text=True, env=env, timeout=300)
    assert rep.returncode == 0, rep.stderr[-4000:]
    return wd / "report.html"


def test_report_contains_figures_tables_config(report: Path) -> None:
    html = report.read_text(errors="replace")
    assert report.stat().st_size > 100_000
    for name in ("tas_spectrum.png", "tas_rank-histogram.png", "tas_tail.png", "tas_bias-map.png",
                 "indices_bias.png", "TXx_bias-map.png", "all_scores.csv", "indices_bias.csv", "metrics.json"):
        assert name in html, name
    assert "Evaluation figures" in html and "Evaluation tables" in html
    assert "radially averaged power spectrum" in html.lower()  # caption of the spectrum figure rendered
    # the configuration is embedded through the workflow description (workflow.rst)
    assert "Configuration of this run" in html and "coarse_resolution" in html and "base_period" in html
    assert "Runtimes of jobs" in html  # job run times (Statistics section)


def test_report_renders_in_chromium(report: Path, tmp_path: Path) -> None:
    dom = _chromium(["--virtual-time-budget=20000", "--dump-dom", report.as_uri()], tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    # the React app rendered its navigation: categories of the real rule appear as rendered DOM
    assert "<body" in text and len(text) > 10_000
    assert "Evaluation figures" in text, text[:2000]
    shot = tmp_path / "report.png"
    res = _chromium(["--virtual-time-budget=20000", "--window-size=1400,1000", f"--screenshot={shot}",
                     report.as_uri()], tmp_path / "p2")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert img.shape[0] >= 900 and img.std() > 0.05  # not a blank page
