"""Defaults live only in config/schema.yaml: the code reads config keys, it never invents a value.

Why it matters: a code fallback that differs from the schema's default (``sigma_relative`` false in
code, true in the schema) silently changes the science for any caller that builds a config by hand,
and a fallback equal to it is a second copy that drifts. Behavioural tests on real ERA5 data, plus a
scan of the sources for config look-ups with a literal fallback.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid.config import REPO_ROOT, fill_defaults, load_config, load_schema
from aid.grids import fine_grid
from aid.io import write_netcdf
from aid.model.precond import EDM_SIGMA_DATA
from aid.model.prepare import prepare_training
from aid.regrid import coarsen, normalise_coords

ERA5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "era5"
STATIC = ERA5 / "era5-static-z-lsm-global.nc"

#: Modules the scan skips (none: naming.py and deliverables.py passed once the CORDEX naming landed).
NOT_YET_SCANNED: set[str] = set()


def _partial() -> dict:
    """Only the keys a training run needs to know about its data; everything else from the schema."""
    return {
        "search": {"variables": ["tas"]},
        "domain": {"id": "T", "lat": [50.0, 57.75], "lon": [-10.0, -2.25]},
        "grid": {"coarse_resolution": 2.0, "fine_resolution": 0.25},
        "model": {"size": "tiny", "prior": None, "train": {"years": [2019, 2019]}},
    }


@pytest.fixture(scope="module")
def uk(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Real ERA5 t2m (48 h, 32 x 32 cells) and its x8 conservative coarsening as reference files."""
    d = tmp_path_factory.mktemp("defaults")
    ds = xr.open_dataset(ERA5 / "era5-2mt-2019-03-uk.grib", engine="cfgrib", backend_kwargs={"indexpath": ""})
    ds = normalise_coords(ds[["t2m"]].drop_vars(["valid_time", "number", "step", "surface"], errors="ignore"))
    cfg = fill_defaults(_partial())
    g = fine_grid(cfg)
    fine = ds.rename(t2m="tas").sel(lat=g.lat.values, lon=g.lon.values).isel(time=slice(0, 48)).load()
    write_netcdf(fine, d / "fine_tas.nc")
    write_netcdf(coarsen(fine, cfg).load(), d / "coarse_tas.nc")
    return d / "fine_tas.nc", d / "coarse_tas.nc"


def test_a_key_left_out_takes_the_schema_value_in_the_code_path(uk: tuple[Path, Path]) -> None:
    """A config that does not mention model.train.sigma_relative trains with the schema's value (true):
    every residual channel scaled to EDM's sigma_data (a code fallback of false would silently train
    a different model)."""
    schema_default = fill_defaults({})["model"]["train"]["sigma_relative"]
    assert schema_default is True
    prep = prepare_training(fill_defaults(_partial()), [uk[0]], [uk[1]], STATIC)
    assert float(prep.sigma_data[0]) == EDM_SIGMA_DATA
    assert abs(float(prep.res_scale[0]) - 1.0) > 0.05  # the real residual RMS is not 0.5 already: scaling applied
    y = prep.arrays()[0]
    assert float(np.sqrt((y.astype(np.float64) ** 2).mean())) == pytest.approx(EDM_SIGMA_DATA, rel=1e-3)
    # the same run set explicitly to the schema's value gives bit-identical training pairs
    explicit = fill_defaults(_partial())
    explicit["model"]["train"]["sigma_relative"] = True
    np.testing.assert_array_equal(prepare_training(explicit, [uk[0]], [uk[1]], STATIC).arrays()[0], y)


def test_a_key_missing_after_all_fails_loudly(uk: tuple[Path, Path]) -> None:
    """Without the schema's defaults the code names the missing key instead of guessing one."""
    from aid.resources import request

    cfg = fill_defaults(_partial())
    del cfg["model"]["train"]["sigma_relative"]
    with pytest.raises(KeyError, match="sigma_relative"):
        prepare_training(cfg, [uk[0]], [uk[1]], STATIC)
    run = load_config()
    wild = {"source": run["search"]["sources"][0], "experiment": "historical", "member": run["search"]["members"][0]}
    assert request(run, "fetch", wild)["mem_mb"] > 0
    no_halo = copy.deepcopy(run)
    del no_halo["domain"]["halo_cells"]  # a fallback of 0 would under-size the job (the schema says 1)
    with pytest.raises(KeyError, match="halo_cells"):
        request(no_halo, "fetch", wild)


def _config_gets_with_fallback(source: str, label: str) -> list[str]:
    """``X.get("key", fallback)`` calls whose receiver is a config mapping (its text names cfg/config)."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and len(node.args) == 2 and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            receiver = ast.unparse(node.func.value)
            # ``self.config`` is a checkpoint's stored training config: an older checkpoint may lack
            # keys added since, so reading it with a fallback is a compatibility choice, not a default
            if ("cfg" in receiver or "config" in receiver) and not receiver.startswith("self.config"):
                found.append(f"{label}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_config_lookup_carries_its_own_default() -> None:
    files = sorted((REPO_ROOT / "aid").rglob("*.py")) + sorted((REPO_ROOT / "workflow").rglob("*.py"))
    rel = {f: str(f.relative_to(REPO_ROOT)) for f in files}
    offenders = [hit for f in files if rel[f] not in NOT_YET_SCANNED
                 for hit in _config_gets_with_fallback(f.read_text(), rel[f])]
    assert offenders == [], "\n".join(offenders)
    # the scan finds such a look-up (and leaves look-ups on other mappings alone)
    probe = 'a = cfg["model"]["train"].get("sigma_relative", False)\nb = ds.attrs.get("units", "K")\n'
    assert _config_gets_with_fallback(probe, "probe") == [
        'probe:1: cfg[\'model\'][\'train\'].get(\'sigma_relative\', False)']


#: ``config[...].get("key", fallback)`` in the workflow's Snakemake files (not Python, so not parsed).
SMK_FALLBACK = re.compile(r"config\b[^\n]*?\.get\(\s*[\"'][^\"']+[\"']\s*,")


def test_no_workflow_rule_carries_its_own_default() -> None:
    files = [REPO_ROOT / "Snakefile", *sorted((REPO_ROOT / "workflow" / "rules").glob("*.smk"))]
    offenders = [f"{f.relative_to(REPO_ROOT)}:{i}: {line.strip()}" for f in files
                 for i, line in enumerate(f.read_text().splitlines(), 1) if SMK_FALLBACK.search(line)]
    assert offenders == [], "\n".join(offenders)
    assert SMK_FALLBACK.search('if config["downscale"].get("evaluation_run", True):')
    assert not SMK_FALLBACK.search('if config["downscale"]["evaluation_run"]:')


def _schema_keys(node: object, out: dict[str, set[bool]]) -> dict[str, set[bool]]:
    """Every property name in the schema -> whether it is ever defaulted or required where it appears."""
    if isinstance(node, dict):
        required = set(node.get("required", []))
        for name, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict):
                out.setdefault(name, set()).add("default" in sub or name in required)
        for v in node.values():
            _schema_keys(v, out)
    elif isinstance(node, list):
        for v in node:
            _schema_keys(v, out)
    return out


def _config_keys_read(source: str, label: str) -> list[tuple[str, str]]:
    """``X["key"]`` reads whose receiver is a config mapping (its text names cfg/config)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str)):
            receiver = ast.unparse(node.value)
            if ("cfg" in receiver or "config" in receiver) and not receiver.startswith("self.config"):
                found.append((node.slice.value, f"{label}:{node.lineno}: {ast.unparse(node)}"))
    return found


def test_every_config_key_the_code_reads_is_defaulted_or_required_by_the_schema() -> None:
    """Indexing ``cfg["key"]`` is only safe when validation guarantees the key: a schema default fills
    it, or the schema requires the user to give it. A key the schema does not know, or knows without
    either, would be a KeyError for the user (or a silent fallback, were it read with ``.get``)."""
    known = _schema_keys(load_schema(), {})
    files = sorted((REPO_ROOT / "aid").rglob("*.py")) + sorted((REPO_ROOT / "workflow").rglob("*.py"))
    offenders = [where for f in files for key, where in _config_keys_read(f.read_text(), str(f.relative_to(REPO_ROOT)))
                 if not any(known.get(key, ()))]
    assert offenders == [], "\n".join(offenders)
    assert True in known["sigma_relative"] and True in known["halo_cells"]
    # the scan sees a key the schema lacks
    probe = _config_keys_read('x = cfg["model"]["train"]["sigma_relativ"]\n', "probe")
    assert [k for k, _ in probe if not any(known.get(k, ()))] == ["sigma_relativ"]
