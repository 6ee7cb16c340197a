"""A user's own config file: replace semantics for lists and collections, years checked against
each other and against the real CMIP6 catalog, and the README's rerun recipes as Snakemake plans them."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from aid.resources import request
from aid.config import (
    DEFAULT_CONFIG,
    ConfigError,
    check_years,
    deep_update,
    load_config,
    merge_user_config,
    snakemake_user_config,
)

ROOT = Path(__file__).resolve().parents[1]


def _default() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def test_user_file_replaces_collections_and_merges_sections(tmp_path: Path) -> None:
    user = {"search": {"experiments": {"historical": [2012, 2014]}, "members": ["r2i1p1f1"]},
            "reference": {"files": {"tas": "era5/tas_*.nc"}}, "model": {"train": {"steps": 7}}}
    cfg = merge_user_config(_default(), user)
    assert cfg["search"]["experiments"] == {"historical": [2012, 2014]}  # ssp245 gone
    assert cfg["search"]["members"] == ["r2i1p1f1"]
    assert cfg["reference"]["files"] == {"tas": "era5/tas_*.nc"}
    assert cfg["reference"]["name"] == "ERA5"  # sections merge
    assert cfg["search"]["variables"] == _default()["search"]["variables"]
    assert cfg["model"]["train"]["steps"] == 7 and cfg["model"]["train"]["years"] == [2012, 2013]
    # several --configfile in order, then --config
    f1, f2 = tmp_path / "a.yaml", tmp_path / "b.yaml"
    f1.write_text(yaml.safe_dump({"search": {"experiments": {"historical": [2012, 2014], "ssp585": [2015, 2017]}}}))
    f2.write_text(yaml.safe_dump({"search": {"experiments": {"historical": [2012, 2013]}}}))
    cfg = snakemake_user_config(DEFAULT_CONFIG, [DEFAULT_CONFIG, f1, f2], {"output_dir": "elsewhere"})
    assert cfg["search"]["experiments"] == {"historical": [2012, 2013]} and cfg["output_dir"] == "elsewhere"


def test_years_checked_against_each_other_in_one_message() -> None:
    check_years(load_config())  # the default is consistent
    cfg = deep_update(load_config(), {
        "search": {"experiments": {"historical": [2012, 2013], "ssp245": [2015, 2019]}},
        "adjust": {"reference_period": [2011, 2013]},
        "indices": {"base_period": [2012, 2014]},
        "evaluation": {"period": [2016, 2016]},
    })
    with pytest.raises(ConfigError) as exc:
        check_years(cfg, source="my.yaml")
    msg = str(exc.value)
    assert msg.startswith("my.yaml: the years of the run are inconsistent:")
    for line in (
        "adjust.reference_period [2011, 2013] is not inside search.experiments.historical [2012, 2013]",
        "indices.base_period [2012, 2014] is not inside search.experiments.historical [2012, 2013]",
        "search.experiments.ssp245 [2015, 2019] is not inside demo_archive.scenario_years [2015, 2017]",
        "adjust.reference_period [2011, 2013] is not inside the demo reference's years (demo_archive.historical_years [2012, 2014])",
        "evaluation.period [2016, 2016] is not inside the demo reference's years (demo_archive.historical_years [2012, 2014])",
    ):
        assert f"  - {line}\n" in msg + "\n", (line, msg)
    assert "model.train.years" not in msg and "search.experiments.historical [2012, 2013] is not" not in msg


def test_years_checked_against_the_real_catalog(cmip6_catalog: Path) -> None:
    cfg = merge_user_config(load_config(), {
        "catalog": {"path": str(cmip6_catalog)}, "demo_archive": {"enabled": False},
        "search": {"sources": ["MIROC6", "CESM2-WACCM"], "members": ["r1i1p1f1"], "variables": ["tas"],
                   "experiments": {"historical": [2005, 2012], "ssp119": [2015, 2016]}},
        "adjust": {"reference_period": [2005, 2009]}, "indices": {"base_period": [2005, 2009]},
    })
    with pytest.raises(ConfigError) as exc:
        check_years(cfg)
    problems = re.findall(r"^  - (.*)$", str(exc.value), re.M)
    assert problems == [
        "search: the catalog holds no MIROC6/historical/r1i1p1f1/tas",
        "search.experiments.ssp119 [2015, 2016]: the catalog holds MIROC6/ssp119/r1i1p1f1/tas for 2015-2015 only",
        "search.experiments.historical [2005, 2012]: the catalog holds CESM2-WACCM/historical/r1i1p1f1/tas for 2000-2009 only",
        "search: the catalog holds no CESM2-WACCM/ssp119/r1i1p1f1/tas",
    ]


def _plan(tmp_path: Path, *args: str, quiet: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["snakemake", "-n", *(["--quiet", "rules"] if quiet else []), "--cores", "1", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def _job_resources(stdout: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:rule|localrule) \w+:)", stdout):
        m = re.match(r"(?:rule|localrule) (\w+):", block)
        r = re.search(r"resources: (.*)", block)
        if m and r:
            out.setdefault(m.group(1), []).append(r.group(1))
    return out


def test_snakemake_user_configfile_drops_a_default_experiment_and_refuses_bad_years(tmp_path: Path) -> None:
    mine = tmp_path / "my.yaml"
    mine.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "res"),
                                    "search": {"experiments": {"historical": [2012, 2014]}}}))
    # the README's order: targets first, or `--` after --configfile (which takes several files)
    slurm = {"AID_SLURM_QOS": "normal", "AID_SLURM_TRAIN_QOS": "gpu-long", "AID_SLURM_GPU_MODEL": "a100",
             "AID_SLURM_DOWNSCALE_CONSTRAINT": "hbm"}
    res = _plan(tmp_path, "--configfile", str(mine), quiet=False, env=slurm)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ssp245" not in res.stdout
    assert re.search(r"^fetch\s+2$", res.stdout, re.M), res.stdout  # historical x 2 members, no ssp245
    # SLURM settings per rule from the environment (profiles/default), scaled memory/runtime (aid/resources.py)
    jobs = _job_resources(res.stdout)
    train, down, fetch = jobs["train"][0], jobs["downscale"][0], jobs["fetch"][0]
    assert "qos=gpu-long" in train and "gpu_model=a100" in train and "constraint" not in train
    assert "qos=normal" in down and "constraint=hbm" in down and "gpu_model=a100" in down and "gpu=1" in down
    assert "qos=normal" in fetch and "gpu_model" not in fetch and "constraint" not in fetch
    want = request(load_config(), "downscale", {"year": "2013"})
    assert f"mem_mb={want['mem_mb']}," in down and f"runtime={want['runtime']}," in down
    # regenerate one year: exactly one downscale job planned up to (not past) downscale
    target = f"{tmp_path}/res/checks/AID-ERA5-DERIVED/historical/r1i1p1f1/2013.json"
    res = _plan(tmp_path, "--configfile", str(mine), "--forcerun", "downscale", "--until", "downscale", "--", target)
    assert res.returncode == 0, res.stderr[-3000:]
    assert re.search(r"^downscale\s+1$", res.stdout, re.M) and not re.search(r"^check\s", res.stdout, re.M), res.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "res"), "adjust": {"reference_period": [2010, 2013]},
                                   "search": {"experiments": {"historical": [2012, 2014], "ssp370": [2015, 2017]}}}))
    res = _plan(tmp_path, "--configfile", str(bad))
    assert res.returncode != 0
    err = res.stdout + res.stderr  # Snakemake logs a Snakefile's exception on stdout
    assert "adjust.reference_period [2010, 2013] is not inside search.experiments.historical [2012, 2014]" in err
    assert "search.experiments.ssp370: the demo archive (catalog.path null) holds only historical and ssp245" in err
