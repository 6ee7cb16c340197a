"""Conda env files: one per heavy rule, each listing what the code its rules run imports."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

#: Python import name -> accepted conda-forge package names.
CONDA_NAMES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",), "pandas": ("pandas",), "xarray": ("xarray",), "dask": ("dask", "dask-core"),
    "netCDF4": ("netcdf4",), "h5netcdf": ("h5netcdf",), "cftime": ("cftime",), "cfgrib": ("cfgrib",),
    "intake": ("intake-esm",), "intake_esm": ("intake-esm",), "xclim": ("xclim",), "xsdba": ("xsdba",),
    "xarray_regrid": ("xarray-regrid",), "xesmf": ("xesmf",), "esmpy": ("esmpy",), "torch": ("pytorch",),
    "scipy": ("scipy",), "tqdm": ("tqdm",), "scoringrules": ("scoringrules",),
    "matplotlib": ("matplotlib", "matplotlib-base"), "yaml": ("pyyaml",), "jsonschema": ("jsonschema",), "pint": ("pint",),
    "threadpoolctl": ("threadpoolctl",), "opt_einsum": ("opt_einsum", "opt-einsum"),
}

#: env -> the aid modules its rules run (globs; modules not written yet are skipped).
ENV_MODULES: dict[str, tuple[str, ...]] = {
    "fetch": ("aid/demo.py", "aid/catalog.py", "aid/fetch.py", "aid/standardise.py", "aid/io.py", "aid/config.py"),
    "regrid": ("aid/regrid.py", "aid/grids.py", "aid/reference.py", "aid/io.py"),
    "adjust": ("aid/adjust.py", "aid/io.py"),
    "downscale": ("aid/downscale.py", "aid/model/*.py", "aid/checks.py", "aid/deliverables.py", "aid/join_years.py",
                  "aid/io.py"),
    "indices": ("aid/indices.py", "aid/io.py"),
    "evaluate": ("aid/evaluate/*.py", "aid/io.py"),
}

#: What each env must provide whatever the code says today (the stage's core libraries).
REQUIRED: dict[str, set[str]] = {
    "fetch": {"intake-esm", "xclim", "netcdf4", "cftime", "cfgrib", "xarray", "numpy", "pandas"},
    "regrid": {"xesmf", "esmpy", "xarray-regrid", "xarray", "numpy", "netcdf4"},
    "adjust": {"xsdba", "xarray", "numpy", "netcdf4", "cftime"},
    "downscale": {"pytorch", "numpy", "xarray", "netcdf4", "cftime"},
    "indices": {"xclim", "xarray", "numpy", "netcdf4"},
    "evaluate": {"scoringrules", "matplotlib-base", "scipy", "xarray", "numpy"},
}


def _env(name: str) -> dict:
    return yaml.safe_load((REPO / "envs" / f"{name}.yaml").read_text())


def _packages(doc: dict) -> set[str]:
    names = set()
    for dep in doc["dependencies"]:
        if isinstance(dep, str):
            names.add(re.split(r"[<>=!~ ]", dep, maxsplit=1)[0].strip())
    return names


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out - set(sys.stdlib_module_names) - {"aid", "__future__"}


def test_every_rule_env_exists() -> None:
    used = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        used |= set(re.findall(r'"\.\./\.\./envs/([a-z]+)\.yaml"', smk.read_text()))
    assert used <= set(ENV_MODULES), used - set(ENV_MODULES)
    for name in ENV_MODULES:
        assert (REPO / "envs" / f"{name}.yaml").exists(), name


@pytest.mark.parametrize("name", sorted(ENV_MODULES))
def test_env_is_valid_conda_yaml(name: str) -> None:
    doc = _env(name)
    assert doc["name"] == f"aid-{name}"
    assert "conda-forge" in doc["channels"]
    pkgs = _packages(doc)
    assert "python" in pkgs
    assert REQUIRED[name] <= pkgs, REQUIRED[name] - pkgs
    if name in ("indices", "adjust", "fetch"):
        xclim = next(d for d in doc["dependencies"] if isinstance(d, str) and d.startswith("xclim"))
        assert "<1.0" in xclim  # the indices code uses the xclim<1.0 API


@pytest.mark.parametrize("name", sorted(ENV_MODULES))
def test_env_covers_what_the_code_imports(name: str) -> None:
    pkgs = _packages(_env(name))
    files = [p for pattern in ENV_MODULES[name] for p in sorted(REPO.glob(pattern))]
    assert files, f"no module found for env {name}"
    missing = {}
    for f in files:
        for mod in _imports(f):
            accepted = CONDA_NAMES.get(mod)
            assert accepted is not None, f"{f.relative_to(REPO)} imports {mod}: add it to CONDA_NAMES and to envs/{name}.yaml"
            if not set(accepted) & pkgs:
                missing[mod] = str(f.relative_to(REPO))
    assert not missing, f"envs/{name}.yaml lacks {missing}"
