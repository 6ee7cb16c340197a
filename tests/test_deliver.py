"""What a user downloads: the output catalog (intake-esm, xscen columns), SHA256SUMS, value table,
and the report's landing page, on the session's tiny workflow run (conftest.py `pipeline`).

xscen itself is not installed: xscen 0.15.2 (PyPI, 2026-07) pins intake-esm==2025.2.3, xclim<0.62
and zarr<3, which would downgrade the intake-esm, xclim and zarr the workflow runs on. The catalog
is checked with intake-esm, and against xscen's documented columns and CSV conventions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from aid import naming
from aid.catalog_out import COLUMNS, open_catalog
from aid.manifest import sha256sums, verify_sha256sums

# xscen.catalog.COLUMNS as documented in xscen's docs/columns.rst (the project-catalog schema).
XSCEN_COLUMNS = ["id", "type", "processing_level", "bias_adjust_institution", "bias_adjust_project",
                 "bias_adjust_reference", "mip_era", "activity", "driving_model", "driving_member", "institution",
                 "source", "experiment", "member", "xrfreq", "frequency", "variable", "domain", "date_start",
                 "date_end", "version", "format", "path"]
SHA256SUM = shutil.which("sha256sum")


def test_sha256sums_format_is_what_coreutils_verifies(tmp_path: Path) -> None:
    root = tmp_path / "results"
    (root / "a" / "b").mkdir(parents=True)
    (root / "x.nc").write_bytes(b"\x89HDF\r\n" + bytes(range(256)))
    (root / "a" / "b" / "y.csv").write_text("v,min\ntas,250.5\n")
    text = sha256sums([root / "a" / "b" / "y.csv", root / "x.nc"], root)
    lines = text.splitlines()
    assert [ln.split("  ", 1)[1] for ln in lines] == ["a/b/y.csv", "x.nc"]  # relative, sorted
    assert all(len(ln.split("  ", 1)[0]) == 64 for ln in lines)
    (root / "SHA256SUMS").write_text(text)
    assert verify_sha256sums(root / "SHA256SUMS") == []
    if SHA256SUM:
        ok = subprocess.run([SHA256SUM, "-c", "SHA256SUMS"], cwd=root, capture_output=True, text=True)
        assert ok.returncode == 0, ok.stdout + ok.stderr
    (root / "x.nc").write_bytes(b"\x89HDF\r\n" + bytes(range(255)))  # one byte short
    assert verify_sha256sums(root / "SHA256SUMS") == ["x.nc"]
    if SHA256SUM:
        bad = subprocess.run([SHA256SUM, "-c", "SHA256SUMS"], cwd=root, capture_output=True, text=True)
        assert bad.returncode != 0 and "x.nc: FAILED" in bad.stdout
    with pytest.raises(Exception, match="not inside the output folder"):
        sha256sums([tmp_path / "elsewhere.nc"], root)


def _expected_datasets(cfg: dict) -> dict[str, int]:
    """Datasets per processing level, from the config alone (one per driving model, experiment,
    downscaling model; members and samples are joined inside)."""
    nsrc, nexp = len(cfg["search"]["sources"]), len(cfg["search"]["experiments"])
    evaluation = 1 if cfg["downscale"].get("evaluation_run", True) else 0
    return {"downscaled": 2 * (nsrc * nexp + evaluation), "indicators": nsrc * nexp,
            "ensemble-indicators": nsrc * nexp, "biasadjusted": nsrc * nexp, "coarsened": evaluation}


@pytest.mark.pipeline
def test_catalog_opens_and_assembles_members(pipeline, pipeline_lock) -> None:
    out, cfg = pipeline
    with pipeline_lock:
        csv = pd.read_csv(out / "aid-catalog.csv")
        assert list(csv.columns) == XSCEN_COLUMNS == list(COLUMNS)
        # xscen's readers: variable tuples as Python literals, dates parse to datetime64[ms]
        assert csv["variable"].str.startswith("(").all()
        pd.to_datetime(csv["date_start"].dropna()).to_numpy().astype("datetime64[ms]")
        assert csv[["id", "domain", "processing_level", "xrfreq", "path"]].notna().all().all()  # xscen's mandatory columns

        cat = open_catalog(out / "aid-catalog.json")
        jobs = naming.downscale_jobs(cfg)
        nvar, ns = len(cfg["search"]["variables"]), cfg["downscale"]["n_samples"]
        level = cat.df["processing_level"]
        assert (level == "downscaled").sum() == len(jobs) * nvar * (ns + 1)  # samples + bicubic baseline
        n_idx = len(cfg["search"]["sources"]) * len(cfg["search"]["experiments"]) * len(cfg["search"]["members"]) * ns
        assert (level == "indicators").sum() == n_idx
        groups = cat.df.groupby(["id", "domain", "processing_level", "xrfreq"]).ngroups
        assert len(cat) == groups
        assert cat.df.groupby("processing_level").apply(
            lambda d: d.groupby(["id", "domain", "xrfreq"]).ngroups, include_groups=False).to_dict() == _expected_datasets(cfg)
        assert all(Path(p).is_file() for p in cat.df["path"])

        # the diffusion samples of the ssp245 run assemble into (driving_member, member, time, lat, lon)
        source = cfg["search"]["sources"][0]
        sub = cat.search(processing_level="downscaled", source="aid", driving_model=source, experiment="ssp245")
        dsets = sub.to_dataset_dict(progressbar=False, threaded=False)
        assert len(dsets) == 1
        ds = next(iter(dsets.values()))
        y0, y1 = cfg["search"]["experiments"]["ssp245"]
        assert set(cfg["search"]["variables"]) <= set(ds.data_vars)
        assert ds["tas"].sizes == {"driving_member": len(cfg["search"]["members"]), "member": ns,
                                   "time": 365 * (y1 - y0 + 1), "lat": 32, "lon": 40}
        assert sorted(ds["member"].values.tolist()) == [f"r{s}" for s in range(1, ns + 1)]
        # the assembled array is the files' data: sample 2 of the first member, first year
        member = cfg["search"]["members"][0]
        f = naming.deliverable_paths(cfg, source, "ssp245", member, y0)[("tas", 2)]
        direct = xr.open_dataset(f)["tas"].values
        np.testing.assert_array_equal(ds["tas"].sel(driving_member=member, member="r2").isel(time=slice(0, 365)).values, direct)
        # GCM-driven products name the bias adjustment; the evaluation run (coarsened ERA5) does not
        row = sub.df.iloc[0]
        assert row["bias_adjust_project"] == "aid" and row["bias_adjust_reference"] == cfg["reference"]["name"]
        ev = cat.search(processing_level="downscaled", experiment=naming.EVALUATION_EXPERIMENT).df
        assert ev["bias_adjust_project"].isna().all() and set(ev["driving_model"]) == {cfg["reference"]["name"]}

        # ensemble statistics and per-sample indices open too
        ens = cat.search(processing_level="ensemble-indicators", experiment="ssp245").to_dataset_dict(progressbar=False, threaded=False)
        e = next(iter(ens.values()))
        assert "TXx_change" in e and list(e["statistic"].values) == ["p10", "median", "p90"]
        idx = cat.search(processing_level="indicators", experiment="historical").to_dataset_dict(progressbar=False, threaded=False)
        i = next(iter(idx.values()))
        assert i["TXx"].sizes["member"] == ns and i.sizes["time"] == len(naming.experiment_years(cfg, "historical"))


@pytest.mark.pipeline
def test_sha256sums_and_value_table(pipeline, pipeline_lock) -> None:
    out, cfg = pipeline
    with pipeline_lock:
        manifest = out / "SHA256SUMS"
        listed = [ln.split("  ", 1)[1] for ln in manifest.read_text().splitlines()]
        cat = pd.read_csv(out / "aid-catalog.csv")
        assert set(listed) == {os.path.relpath(p, out) for p in cat["path"]} | {"aid-catalog.json", "aid-catalog.csv",
                                                                                  "aid-value-ranges.csv"}
        # nothing rewrites the shared run after it ends (re-runs go to copies): every file verifies
        assert verify_sha256sums(manifest) == []
        if SHA256SUM:
            res = subprocess.run([SHA256SUM, "-c", "--quiet", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
            assert res.returncode == 0, res.stdout[-2000:]

        table = pd.read_csv(out / "aid-value-ranges.csv").set_index(["kind", "variable"])
        nvar, ns = len(cfg["search"]["variables"]), cfg["downscale"]["n_samples"]
        jobs = naming.downscale_jobs(cfg)
        for var in cfg["search"]["variables"]:
            r = table.loc[("downscaled", var)]
            assert r["n_files"] == len(jobs) * ns and r["n_nan"] == 0
            assert r["n_values"] == sum(365 * 32 * 40 for _ in jobs) * ns
        assert 230 < table.loc[("downscaled", "tasmin"), "min"] < table.loc[("downscaled", "tasmax"), "max"] < 320
        # the files carry CORDEX units (kg m-2 s-1); below 2000 mm d-1 as checks require
        assert table.loc[("downscaled", "pr"), "min"] >= 0 and table.loc[("downscaled", "pr"), "units"] == "kg m-2 s-1"
        assert table.loc[("downscaled", "pr"), "max"] < 2000.0 / 86400.0
        assert table.loc[("baseline", "tas"), "n_files"] == len(jobs)


@pytest.mark.pipeline
def test_properties_table_in_evaluation(pipeline) -> None:
    out, cfg = pipeline
    props = pd.read_csv(out / "evaluation" / "tables" / "all_properties.csv")
    assert set(props["variable"]) == set(cfg["evaluation"]["properties"])
    need = {"q01", "q99", "acf1", "correlogram", "decorrelation", "spectral_variance"}
    for var in cfg["evaluation"]["properties"]:
        got = set(props.loc[props["variable"] == var, "property"])
        assert need <= got, (var, need - got)
    if "pr" in cfg["evaluation"]["properties"]:
        assert {"dry_spell", "wet_spell"} <= set(props.loc[props["variable"] == "pr", "property"])
    f = props[["improved_vs_bicubic", "improved_vs_coarse"]].to_numpy(float)
    assert np.isfinite(f).all() and (f >= 0).all() and (f <= 1).all()
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    v = cfg["evaluation"]["properties"][0]
    assert set(metrics["variables"][v]["properties_improved_vs_bicubic"]) >= need


@pytest.mark.pipeline
@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None
                    and shutil.which("google-chrome") is None, reason="chromium not installed")
def test_report_landing_page_in_chromium(pipeline, tmp_path: Path) -> None:
    """``snakemake --report`` of the tiny run opens on the landing page: scores, maps, change, cost."""
    import base64
    import re

    import matplotlib.image as mpimg
    from test_report_browser import _chromium
    from workflow_run import snakemake

    out, cfg = pipeline
    report = tmp_path / "report.html"
    snakemake(out, "--report", str(report))
    dom = _chromium(["--virtual-time-budget=20000", "--dump-dom", report.as_uri()], tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    start = text.find('id="aid-landing"')
    assert start > 0, "landing fragment not rendered"
    landing = text[start:]
    # rendered before the configuration dump
    assert start < text.find("Configuration of this run")
    for needle in ("How good is it?", "spread-skill", "bicubic", "coarse", "What changes?", "Run cost per stage",
                   "What went in", "sha256", "catalog query", "TXx", "sfcWind_p99", "R95pTOT"):
        assert needle in landing, needle
    for var in cfg["search"]["variables"]:
        assert f"<b>{var}</b>" in landing, var
    assert landing.count("▼") + landing.count("▲") >= len(cfg["search"]["variables"])
    ckpt = out / "model" / "checkpoint.pt"
    from aid.provenance import sha256_file

    assert sha256_file(ckpt) in landing
    # the stages that ran, with their benchmark times
    for stage in ("downscale", "train", "evaluate", "deliver"):
        assert f'<td class="l">{stage}</td>' in landing, stage
    # one map row per variable + the change maps, real PNGs with content
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', landing)
    assert len(imgs) == len(cfg["search"]["variables"]) + 1
    for i, b64 in enumerate(imgs):
        png = tmp_path / f"img{i}.png"
        png.write_bytes(base64.b64decode(b64))
        im = mpimg.imread(png)
        assert im.shape[1] > 600 and im.std() > 0.05, (i, im.shape)
    # the first screen (1400 x 1000) shows the headline table, not the config: screenshot kept for review
    shot = tmp_path / "landing.png"
    res = _chromium(["--virtual-time-budget=20000", "--window-size=1400,1000", "--hide-scrollbars",
                     f"--screenshot={shot}", report.as_uri()], tmp_path / "p2")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    img = mpimg.imread(shot)
    assert img.shape[:2] == (1000, 1400) and img.std() > 0.05
    keep = os.environ.get("AID_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "landing-1400x1000.png")
        shutil.copy(report, Path(keep) / "report.html")


def test_five_year_files_are_what_every_later_stage_reads(tmp_path: Path) -> None:
    """deliverables.years_per_file 5 on the tiny config: Snakemake plans one join_years job per
    (model, variable, sample, block), and indices, evaluation and deliver take the joined block files
    (aid.naming.delivered_paths), not the yearly ones, which become temporary."""
    import re
    import sys

    import yaml
    from workflow_run import ROOT, TINY, tiny_config

    mine = tmp_path / "five.yaml"
    mine.write_text(yaml.safe_dump({"deliverables": {"years_per_file": 5}}))
    cfg = tiny_config(tmp_path / "res")
    cfg["deliverables"]["years_per_file"] = 5
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile",
                          str(ROOT / "config/config.yaml"), str(TINY), str(mine), "--config",
                          f"output_dir={tmp_path / 'res'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    nvar, ns = len(cfg["search"]["variables"]), cfg["downscale"]["n_samples"]
    blocks = {e: naming.file_blocks(cfg, naming.experiment_years(cfg, e))
              for e in [*cfg["search"]["experiments"], naming.EVALUATION_EXPERIMENT]}
    nblocks = sum(len(b) for b in blocks.values())
    assert re.search(rf"^join_years\s+{nblocks * nvar * (ns + 1)}$", res.stdout, re.M), res.stdout[-3000:]
    # every block folder is <first>-<last>, and the tiny run's historical 2012-2013 sits in one file
    assert blocks["historical"] == [(2012, 2013)]
    hist = naming.delivered_paths(cfg, cfg["search"]["sources"][0], "historical", cfg["search"]["members"][0])
    assert {p.parent.name for p in hist} == {"2012-2013"} and all(p.name.endswith("_day_20120101-20131231.nc")
                                                                 for p in hist)
    for p in hist[:2]:
        assert str(p) in res.stdout, p  # planned as an output of join_years
    # the indices read only joined files; the jobs' yearly files are removed once joined and checked
    inputs = re.findall(r"^rule indices:\n    input: (.*)$", res.stdout, re.M)
    assert inputs and all(re.search(r"/\d{4}-\d{4}/[^/]+\.nc$", p) for line in inputs for p in line.split(", "))
    yearly = naming.deliverable_paths(cfg, cfg["search"]["sources"][0], "historical", cfg["search"]["members"][0], 2012)
    assert f"Would remove temporary output {yearly[('tas', 1)]}" in res.stdout
