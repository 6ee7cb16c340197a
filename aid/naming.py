"""File names and paths of every artefact, in one place: formatted *and* parsed here only.

Why here and not in the Snakefile: the workflow, the CLI and the tests must agree on names, and a
rerun of one member must find exactly the files the first run wrote.

Deliverables follow the CORDEX-CMIP6 file-name template::

    <var>_<domain>_<driving source>_<experiment>_<member>_<institution>_<model>_<vN-rM>_day_<start>-<end>.nc

where ``vN`` is aid's product version and ``rM`` the diffusion sample index (1-based).
``<start>-<end>`` are the first and last day held in the file, in the file's calendar: a 360_day
year ends on ``YYYY1230``, a 365/366-day year on ``YYYY1231``, and a file cut short by the
experiment's period ends at its last year.

One downscale job writes one sample of one variable for one year. With
``deliverables.years_per_file: 5`` the delivered files hold the CORDEX 5-year blocks (years
``..1-..5`` and ``..6-..0``, cut to the experiment's years) joined from those yearly files
(:mod:`aid.join_years`), in a ``<first>-<last>`` folder beside the yearly ones.

The workflow names files before any data exist, so it cannot read the calendar from the data:
``deliverables.calendars`` declares the sources whose years do not end on 31 December, and the
downscale job refuses names that disagree with its data's calendar.
"""

from __future__ import annotations

import os
import re
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

#: The one pattern of a deliverable file name (see the module docstring).
_NAME_RE = re.compile(
    r"^(?P<variable>[A-Za-z]+)_(?P<domain>[A-Za-z0-9-]+)_(?P<source>[A-Za-z0-9-]+)_(?P<experiment>[A-Za-z0-9-]+)_"
    rf"(?P<member>{MEMBER_RE})_(?P<institution>[A-Za-z0-9-]+)_(?P<model>[A-Za-z0-9-]+)_(?P<version>v\d+)"
    r"-r(?P<sample>\d+)_day_(?P<start>\d{8})-(?P<end>\d{8})\.nc$"
)
#: Index files: ``indices/<source>/<experiment>/<member>/r<sample>.nc`` (facets in the folders).
_INDEX_RE = re.compile(
    r"(?:^|[/\\])(?P<source>[A-Za-z0-9-]+)[/\\](?P<experiment>[A-Za-z0-9-]+)[/\\]"
    rf"(?P<member>{MEMBER_RE})[/\\]r(?P<sample>\d+)\.nc$"
)
#: Ensemble statistics: ``indices/ensemble/<source>_<experiment>.nc`` (source ids have no ``_``).
_ENSEMBLE_RE = re.compile(r"^(?P<source>[A-Za-z0-9-]+)_(?P<experiment>[A-Za-z0-9-]+)\.nc$")


# ----------------------------------------------------------------------------------------------
# Time ranges
# ----------------------------------------------------------------------------------------------
def last_day_of_year(calendar: str | None) -> str:
    """``MMDD`` of the last day of a year: ``1230`` in a 360_day calendar, ``1231`` in every other."""
    return "1230" if calendar is not None and str(calendar).lower() == "360_day" else "1231"


def years_range(first: int, last: int, calendar: str | None) -> str:
    """``<start>-<end>`` of whole years ``first``..``last`` in ``calendar``."""
    return f"{int(first):04d}0101-{int(last):04d}{last_day_of_year(calendar)}"


def days_range(first_day: Any, last_day: Any) -> str:
    """``<start>-<end>`` of the first and last day actually held (dates with year/month/day)."""
    return (f"{first_day.year:04d}{first_day.month:02d}{first_day.day:02d}-"
            f"{last_day.year:04d}{last_day.month:02d}{last_day.day:02d}")


def source_calendar(cfg: Mapping[str, Any], source: str) -> str | None:
    """The calendar ``deliverables.calendars`` declares for ``source``; None: its years end on 31 December."""
    return cfg["deliverables"]["calendars"].get(source)


def file_blocks(cfg: Mapping[str, Any], years: list[int]) -> list[tuple[int, int]]:
    """The (first, last) years of each delivered file: one per year, or CORDEX 5-year blocks
    (``..1``-``..5``, ``..6``-``..0``) cut to ``years``."""
    n = int(cfg["deliverables"]["years_per_file"])
    blocks: dict[int, list[int]] = {}
    for y in sorted(int(y) for y in years):
        blocks.setdefault((y - 1) // n if n > 1 else y, []).append(y)
    return [(ys[0], ys[-1]) for ys in blocks.values()]


# ----------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------
def deliverable_name(
    variable: str,
    domain: str,
    source: str,
    experiment: str,
    member: str,
    institution: str,
    version: str,
    sample: int,
    time_range: str,
    model: str = MODEL_ID,
) -> str:
    """The CORDEX-CMIP6 file name; ``time_range`` from :func:`years_range` or :func:`days_range`."""
    return (
        f"{variable}_{domain}_{source}_{experiment}_{member}_{institution}_{model}_"
        f"{version}-r{sample}_day_{time_range}.nc"
    )


def parse_name(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """Facets of a deliverable file name (variable, domain, source, experiment, member, institution,
    model, version, sample, start, end); None if it is not one."""
    m = _NAME_RE.match(Path(path).name)
    return m.groupdict() if m else None


def index_file_name(sample: int) -> str:
    """Name of one sample's index file inside ``indices/<source>/<experiment>/<member>/``."""
    return f"r{int(sample)}.nc"


def parse_index_path(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """(source, experiment, member, sample) of an index file path; None if it is not one."""
    m = _INDEX_RE.search(str(path))
    return m.groupdict() if m else None


def ensemble_file_name(source: str, experiment: str) -> str:
    """Name of the ensemble statistics file of one (source, experiment) in ``indices/ensemble/``."""
    return f"{source}_{experiment}.nc"


def parse_ensemble_name(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """(source, experiment) of an ensemble statistics file; None if it is not one."""
    m = _ENSEMBLE_RE.match(Path(path).name)
    return m.groupdict() if m else None


# ----------------------------------------------------------------------------------------------
# Paths
# ----------------------------------------------------------------------------------------------
def downscale_dir(cfg: Mapping[str, Any], source: str, experiment: str, member: str, year: int | str, baseline: bool = False) -> Path:
    """Folder of one job's yearly files (``year``) or of one block's joined files (``"<first>-<last>"``)."""
    stage = "baseline" if baseline else "downscale"
    return output_path(cfg, stage, source, experiment, member, str(year))


def _samples(cfg: Mapping[str, Any], baseline: bool) -> range:
    return range(1, 2) if baseline else range(1, int(cfg["downscale"]["n_samples"]) + 1)


def _files(cfg: Mapping[str, Any], folder: Path, source: str, experiment: str, member: str, time_range: str,
           baseline: bool) -> dict[tuple[str, int], Path]:
    ds = cfg["downscale"]
    return {
        (var, s): folder / deliverable_name(
            var, cfg["domain"]["id"], source, experiment, member, ds["institution_id"], ds["product_version"], s,
            time_range, model=BASELINE_ID if baseline else MODEL_ID,
        )
        for var in cfg["search"]["variables"]
        for s in _samples(cfg, baseline)
    }


def deliverable_paths(
    cfg: Mapping[str, Any],
    source: str,
    experiment: str,
    member: str,
    year: int | str,
    baseline: bool = False,
) -> dict[tuple[str, int], Path]:
    """Every yearly file one downscale (or baseline) job writes, keyed by (variable, sample)."""
    tr = years_range(int(year), int(year), source_calendar(cfg, source))
    return _files(cfg, downscale_dir(cfg, source, experiment, member, year, baseline), source, experiment, member,
                  tr, baseline)


def block_paths(
    cfg: Mapping[str, Any],
    source: str,
    experiment: str,
    member: str,
    first: int,
    last: int,
    baseline: bool = False,
) -> dict[tuple[str, int], Path]:
    """Every delivered file of one block of years ``first``..``last``, keyed by (variable, sample).

    With one year per file these are the job's own files; with more, the joined files in the
    ``<first>-<last>`` folder.
    """
    if int(cfg["deliverables"]["years_per_file"]) == 1:
        return deliverable_paths(cfg, source, experiment, member, first, baseline)
    folder = downscale_dir(cfg, source, experiment, member, f"{int(first):04d}-{int(last):04d}", baseline)
    tr = years_range(first, last, source_calendar(cfg, source))
    return _files(cfg, folder, source, experiment, member, tr, baseline)


def delivered_paths(
    cfg: Mapping[str, Any],
    source: str,
    experiment: str,
    member: str,
    baseline: bool = False,
    years: list[int] | None = None,
) -> list[Path]:
    """Every delivered file of one (source, experiment, member), in time order: what indices,
    evaluation, catalog and manifest read in either ``deliverables.years_per_file`` mode.

    ``years`` (default: the experiment's) restricts to the blocks holding those years.
    """
    ys = sorted(int(y) for y in (years if years is not None else experiment_years(cfg, experiment)))
    blocks = file_blocks(cfg, experiment_years(cfg, experiment))
    out: list[Path] = []
    for first, last in blocks:
        if any(first <= y <= last for y in ys):
            out += block_paths(cfg, source, experiment, member, first, last, baseline).values()
    return out


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
    if cfg["downscale"]["evaluation_run"]:
        ref = cfg["reference"]["name"]
        for year in experiment_years(cfg, EVALUATION_EXPERIMENT):
            jobs.append(dict(source=ref, experiment=EVALUATION_EXPERIMENT, member=EVALUATION_MEMBER, year=year))
    return jobs


def deliverable_patterns(cfg: Mapping[str, Any], baseline: bool = False) -> list[str]:
    """Snakemake output patterns of one job's yearly files (wildcards ``{source} {experiment}
    {member} {year} {end}``; ``{end}`` is the last day, which depends on the source's calendar)."""
    ds = cfg["downscale"]
    stage = "baseline" if baseline else "downscale"
    root = f"{cfg['output_dir']}/{stage}/{{source}}/{{experiment}}/{{member}}/{{year}}"
    model = BASELINE_ID if baseline else MODEL_ID
    return [
        f"{root}/" + deliverable_name(var, cfg["domain"]["id"], "{source}", "{experiment}", "{member}",
                                      ds["institution_id"], ds["product_version"], s, "{year}0101-{end}", model=model)
        for var in cfg["search"]["variables"]
        for s in _samples(cfg, baseline)
    ]


def block_pattern(cfg: Mapping[str, Any]) -> str:
    """Snakemake output pattern of one joined multi-year file (wildcards ``{stage} {variable}
    {source} {experiment} {member} {model} {sample} {first} {last} {end}``)."""
    ds = cfg["downscale"]
    name = deliverable_name("{variable}", cfg["domain"]["id"], "{source}", "{experiment}", "{member}",
                            ds["institution_id"], ds["product_version"], "{sample}", "{first}0101-{end}",
                            model="{model}")
    return f"{cfg['output_dir']}/{{stage}}/{{source}}/{{experiment}}/{{member}}/{{first}}-{{last}}/{name}"
