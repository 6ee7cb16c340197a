"""Every deliverable kind passes the IOOS compliance-checker's CF checks (docs/CF.md).

One file per kind from the tiny workflow run (the ``pipeline`` fixture: real ERA5-derived data
through every stage), plus a CORDEX 5-year file joined from two of its yearly files. Errors are the
checker's high-priority results (the CF "shall" rules): there must be none. Warnings (medium
priority, the "should" rules) must each be one docs/CF.md lists with its reason.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from aid import naming

pytest.importorskip("compliance_checker")

ROOT = Path(__file__).resolve().parents[1]
#: The checker's CF suite: the highest CF version compliance-checker 6.1 knows.
CF_SUITE = "cf:1.11"
#: Warnings aid accepts, each with the reason in docs/CF.md (key: the start of the checker's message).
ACCEPTED_WARNINGS: tuple[str, ...] = ()

log = logging.getLogger(__name__)


def cf_results(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of the compliance-checker CF suite on one file: its failed high- and
    medium-priority results, as its own report bins them."""
    from compliance_checker.runner import CheckSuite

    suite = CheckSuite()
    suite.load_all_available_checkers()
    # The checker's netCDF4.Dataset is closed here, never left to the garbage collector: netCDF-C is
    # not thread-safe and netCDF4 releases the GIL in its calls, so a Dataset finalised by a
    # collection in another thread while this process reads NetCDF crashes it (a segfault in
    # nc_open, seen on CI).
    ds = suite.load_dataset(str(path))
    try:
        groups, crashed = suite.run_all(ds, [CF_SUITE], skip_checks=[])[CF_SUITE]
        assert not crashed, f"{path.name}: checker crashed in {list(crashed)}"
        report = suite.build_structure(CF_SUITE, groups, str(path), 1)
    finally:
        ds.close()

    def failed(results: list) -> list[str]:
        return [f"{r.name}: {m}" for r in results if r.value[0] < r.value[1] for m in (r.msgs or ["(no message)"])]

    return failed(report["high_priorities"]), failed(report["medium_priorities"])


def one_file_per_kind(out: Path, cfg: dict) -> dict[str, Path]:
    source, member = cfg["search"]["sources"][0], cfg["search"]["members"][0]
    scenario = next(e for e in cfg["search"]["experiments"] if e != "historical")
    first = naming.experiment_years(cfg, "historical")[0]
    return {
        "downscaled": naming.deliverable_paths(cfg, source, "historical", member, first)[("pr", 1)],
        "baseline": naming.deliverable_paths(cfg, source, "historical", member, first, baseline=True)[("tas", 1)],
        "indices": out / "indices" / source / scenario / member / naming.index_file_name(1),
        "ensemble": out / "indices" / "ensemble" / naming.ensemble_file_name(source, scenario),
        "adjusted": out / "adjusted" / source / scenario / f"{member}.nc",
    }


def time_method(cell_methods: str) -> str:
    """The method CF cell_methods give the time dimension (``area: mean time: maximum`` -> maximum)."""
    m = re.search(r"\btime:\s+(?:[A-Za-z_]+:\s+)*([a-z_]+)", cell_methods)
    assert m, cell_methods
    return m[1]


def test_every_deliverable_kind_says_what_it_is(pipeline) -> None:
    """The CORDEX-CMIP6 identity on every kind: ``frequency``, ``domain_id``, ``driving_*``, and per
    variable the cell_methods of the CMIP6 day table (tasmax the daily maximum, not a mean)."""
    import xarray as xr

    from aid.deliverables import VARIABLES

    out, cfg = pipeline
    source, member = cfg["search"]["sources"][0], cfg["search"]["members"][0]
    scenario = next(e for e in cfg["search"]["experiments"] if e != "historical")
    expected = {"downscaled": ("day", "historical"), "baseline": ("day", "historical"),
                "indices": ("yr", scenario), "ensemble": ("yr", scenario), "adjusted": ("day", scenario)}
    for kind, path in one_file_per_kind(out, cfg).items():
        ds = xr.open_dataset(path, decode_times=False)
        a = ds.attrs
        freq, experiment = expected[kind]
        assert (a["frequency"], a["domain_id"]) == (freq, cfg["domain"]["id"]), kind
        assert (a["driving_source_id"], a["driving_experiment_id"]) == (source, experiment), kind
        assert member in a["driving_variant_label"].split(), kind
        for var in ds.data_vars:
            if "time" not in ds[var].dims or var.endswith("_bnds"):
                continue
            cm = ds[var].attrs["cell_methods"]
            if var in VARIABLES:
                assert time_method(cm) == time_method(VARIABLES[var].cell_methods), (kind, var, cm)
            else:  # an index: a statistic over the days of each year
                assert time_method(cm), (kind, var, cm)


def test_every_deliverable_kind_passes_the_cf_checker(pipeline, tmp_path) -> None:
    from aid.join_years import join_years

    out, cfg = pipeline
    files = one_file_per_kind(out, cfg)
    # a CORDEX multi-year file (deliverables.years_per_file: 5) joined from the run's yearly files
    source, member = cfg["search"]["sources"][0], cfg["search"]["members"][0]
    ys = naming.experiment_years(cfg, "historical")
    five = {**cfg, "output_dir": str(tmp_path), "deliverables": {**cfg["deliverables"], "years_per_file": 5}}
    block = naming.block_paths(five, source, "historical", member, ys[0], ys[-1])[("tasmax", 2)]
    join_years(five, [str(naming.deliverable_paths(cfg, source, "historical", member, y)[("tasmax", 2)]) for y in ys],
               block)
    files["downscaled 5-year"] = block
    docs = (ROOT / "docs" / "CF.md").read_text()
    summary, problems = {}, []
    for kind, path in files.items():
        assert path.exists(), f"{kind}: {path} missing from the pipeline run"
        errors, warnings = cf_results(path)
        summary[kind] = {"file": path.name, "errors": len(errors), "warnings": len(warnings),
                         "messages": errors + warnings}
        problems += [f"{kind} ERROR {m}" for m in errors]
        for w in warnings:
            ok = [a for a in ACCEPTED_WARNINGS if w.split(": ", 1)[1].startswith(a)]
            if not ok or ok[0] not in docs:
                problems.append(f"{kind} WARNING not listed in docs/CF.md: {w}")
    log.info("compliance-checker %s summary: %s", CF_SUITE, json.dumps(summary, indent=1))
    (tmp_path / "cf-summary.json").write_text(json.dumps(summary, indent=1))
    assert not problems, "\n".join(problems)
    # The checker keeps its datasets in caches (and a netCDF4.Dataset is in a reference cycle with
    # its variables): any left open would be closed by a garbage collection in whatever thread
    # runs it, racing this process's other netCDF-C calls (see cf_results).
    import gc

    import netCDF4

    checked = {str(p) for p in files.values()}
    # type(), not isinstance(): gc also lists dead weak proxies, which raise on isinstance
    still_open = [d.filepath() for d in gc.get_objects()
                  if issubclass(type(d), netCDF4.Dataset) and d.isopen() and d.filepath() in checked]
    assert not still_open, still_open


def test_checker_finds_what_aid_would_break(pipeline, tmp_path) -> None:
    """The checker is live on these files: a deliverable with pr in mm d-1 under the standard name
    precipitation_flux (the unit mistake this issue fixed), and one with a standard name not in the
    table, each fail it with an error about that attribute."""
    import shutil

    import netCDF4

    out, cfg = pipeline
    good = one_file_per_kind(out, cfg)["downscaled"]
    found = {}
    for attr, value in (("units", "mm d-1"), ("standard_name", "precipitation_rate_of_rain")):
        bad = tmp_path / attr / good.name
        bad.parent.mkdir()
        shutil.copy(good, bad)
        with netCDF4.Dataset(bad, "a") as nc:
            nc["pr"].setncattr(attr, value)
        errors, _ = cf_results(bad)
        found[attr] = errors
        assert any(attr in e for e in errors), (attr, errors)
    log.info("checker errors on broken copies: %s", found)
