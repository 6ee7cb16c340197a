"""File names and paths of every artefact, in one place.

Why here and not in the Snakefile: the workflow, the CLI and the tests must agree on names, and a
rerun of one member must find exactly the files the first run wrote.

Deliverables follow the CORDEX-CMIP6 file-name template::

    <var>_<domain>_<driving source>_<experiment>_<member>_<institution>_<model>_<vN-rM>_day_<start>-<end>.nc

where ``vN`` is aid's product version and ``rM`` the diffusion sample index (1-based). One file holds
one sample of one variable for one year (``<start>-<end>`` = ``YYYY0101-YYYY1231`` nominally, also for
360_day calendars whose last day is the 30th).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aid.config import output_path

MODEL_ID = "aid"
BASELINE_ID = "aid-bicubic"
EVALUATION_EXPERIMENT = "evaluation"
EVALUATION_MEMBER = "r1i1p1f1"

#: A CMIP6 member id: the variant label ``r<k>i<l>p<m>f<n>``, prefixed by the sub-experiment for
#: DCPP (``s1961-r6i2p1f1``: hindcast started in 1961). Wildcard constraint and file-name parsing
#: use this; config/schema.yaml holds the same pattern anchored (tests/test_naming_members.py).
MEMBER_RE = r"(?:s\d{4}-)?r\d+i\d+p\d+f\d+"


def deliverable_name(
    variable: str,
    domain: str,
    source: str,
    experiment: str,
    member: str,
    institution: str,
    version: str,
    sample: int,
    year: int,
    model: str = MODEL_ID,
) -> str:
    return (
        f"{variable}_{domain}_{source}_{experiment}_{member}_{institution}_{model}_"
        f"{version}-r{int(sample)}_day_{int(year):04d}0101-{int(year):04d}1231.nc"
    )


def downscale_dir(cfg: Mapping[str, Any], source: str, experiment: str, member: str, year: int | str, baseline: bool = False) -> Path:
    stage = "baseline" if baseline else "downscale"
    return output_path(cfg, stage, source, experiment, member, str(year))


def deliverable_paths(
    cfg: Mapping[str, Any],
    source: str,
    experiment: str,
    member: str,
    year: int | str,
    baseline: bool = False,
) -> dict[tuple[str, int], Path]:
    """Every file one downscale (or baseline) job writes, keyed by (variable, sample)."""
    ds = cfg["downscale"]
    samples = [1] if baseline else range(1, int(ds["n_samples"]) + 1)
    d = downscale_dir(cfg, source, experiment, member, year, baseline)
    return {
        (var, s): d
        / deliverable_name(
            var,
            cfg["domain"]["id"],
            source,
            experiment,
            member,
            ds.get("institution_id", "AID"),
            ds.get("product_version", "v1"),
            s,
            int(year),
            model=BASELINE_ID if baseline else MODEL_ID,
        )
        for var in cfg["search"]["variables"]
        for s in samples
    }


def experiment_years(cfg: Mapping[str, Any], experiment: str) -> list[int]:
    if experiment == EVALUATION_EXPERIMENT:
        y0, y1 = cfg["evaluation"]["period"]
    else:
        y0, y1 = cfg["search"]["experiments"][experiment]
    return list(range(int(y0), int(y1) + 1))


def downscale_jobs(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """All (source, experiment, member, year) jobs of a run, the evaluation run included."""
    jobs = []
    for source in cfg["search"]["sources"]:
        for experiment in cfg["search"]["experiments"]:
            for member in cfg["search"]["members"]:
                for year in experiment_years(cfg, experiment):
                    jobs.append(dict(source=source, experiment=experiment, member=member, year=year))
    if cfg["downscale"].get("evaluation_run", True):
        ref = cfg["reference"].get("name", "ERA5")
        for year in experiment_years(cfg, EVALUATION_EXPERIMENT):
            jobs.append(dict(source=ref, experiment=EVALUATION_EXPERIMENT, member=EVALUATION_MEMBER, year=year))
    return jobs


def deliverable_patterns(cfg: Mapping[str, Any], baseline: bool = False) -> list[str]:
    """Snakemake output patterns (wildcards ``{source} {experiment} {member} {year}``) of one job."""
    ds = cfg["downscale"]
    samples = [1] if baseline else range(1, int(ds["n_samples"]) + 1)
    stage = "baseline" if baseline else "downscale"
    root = f"{cfg['output_dir']}/{stage}/{{source}}/{{experiment}}/{{member}}/{{year}}"
    model = BASELINE_ID if baseline else MODEL_ID
    inst = ds.get("institution_id", "AID")
    ver = ds.get("product_version", "v1")
    return [
        f"{root}/{var}_{cfg['domain']['id']}_{{source}}_{{experiment}}_{{member}}_{inst}_{model}_"
        f"{ver}-r{s}_day_{{year}}0101-{{year}}1231.nc"
        for var in cfg["search"]["variables"]
        for s in samples
    ]
