"""aid.naming formats and parses every deliverable name: round trips, calendars, 5-year blocks."""

from __future__ import annotations

import cftime
import pytest

from aid import naming
from aid.config import load_config
from aid.deliverables import year_days


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("naming")
    return load_config(overrides={"output_dir": str(out / "results"),
                                  "deliverables": {"calendars": {"HadGEM3-GC31-MM": "360_day"}}})


def test_every_kind_round_trips(cfg) -> None:
    """Every file a run delivers parses back to the facets it was formatted from."""
    source, member = cfg["search"]["sources"][0], cfg["search"]["members"][0]
    kinds = {}
    for baseline in (False, True):
        for year in (2012, 2013):
            kinds[("yearly", baseline, year)] = naming.deliverable_paths(cfg, source, "historical", member, year,
                                                                         baseline)
        five = {**cfg, "deliverables": {**cfg["deliverables"], "years_per_file": 5}}
        kinds[("block", baseline)] = naming.block_paths(five, source, "historical", member, 2011, 2015, baseline)
        kinds[("360_day", baseline)] = naming.deliverable_paths(cfg, "HadGEM3-GC31-MM", "ssp245", "s1960-r2i1p1f1",
                                                                2030, baseline)
    seen = 0
    for kind, paths in kinds.items():
        for (var, sample), p in paths.items():
            f = naming.parse_name(p)
            assert f is not None, p
            assert (f["variable"], int(f["sample"]), f["domain"], f["institution"], f["version"]) == (
                var, sample, cfg["domain"]["id"], cfg["downscale"]["institution_id"], cfg["downscale"]["product_version"])
            assert f["model"] == (naming.BASELINE_ID if kind[1] else naming.MODEL_ID)
            again = naming.deliverable_name(f["variable"], f["domain"], f["source"], f["experiment"], f["member"],
                                            f["institution"], f["version"], int(f["sample"]),
                                            f"{f['start']}-{f['end']}", model=f["model"])
            assert again == p.name
            seen += 1
    assert seen == 4 * len(cfg["search"]["variables"]) * (cfg["downscale"]["n_samples"] + 1)  # 4 kinds
    # index and ensemble files: facets in folder and file names, parsed by naming too
    idx = naming.output_path(cfg, "indices", source, "ssp245", "s1960-r2i1p1f1", naming.index_file_name(3))
    assert naming.parse_index_path(idx) == {"source": source, "experiment": "ssp245", "member": "s1960-r2i1p1f1",
                                            "sample": "3"}
    assert naming.parse_ensemble_name(naming.ensemble_file_name(source, "ssp245")) == {"source": source,
                                                                                       "experiment": "ssp245"}
    assert naming.parse_name("tas_UK-025_x.nc") is None and naming.parse_index_path("a/b.nc") is None


def test_time_range_is_the_real_first_and_last_day(cfg) -> None:
    """360_day years end on the 30th of December; names agree with the days a job writes."""
    for cal, end in (("360_day", "1230"), ("noleap", "1231"), ("standard", "1231"), ("all_leap", "1231")):
        days = year_days(2030, cal)
        assert naming.days_range(days[0], days[-1]) == f"20300101-2030{end}"
        assert naming.years_range(2030, 2030, cal) == f"20300101-2030{end}"
    p = naming.deliverable_paths(cfg, "HadGEM3-GC31-MM", "ssp245", "r1i1p1f1", 2030)[("tas", 1)]
    assert p.name.endswith("_day_20300101-20301230.nc")
    # a DCPP hindcast starting in November: the file starts where the data start
    d0, d1 = cftime.datetime(1960, 11, 1, 12, calendar="360_day"), cftime.datetime(1960, 12, 30, 12, calendar="360_day")
    assert naming.days_range(d0, d1) == "19601101-19601230"


def test_five_year_blocks_align_like_cordex(cfg) -> None:
    five = {**cfg, "deliverables": {**cfg["deliverables"], "years_per_file": 5}}
    assert naming.file_blocks(five, list(range(2012, 2026))) == [(2012, 2015), (2016, 2020), (2021, 2025)]
    assert naming.file_blocks(five, [2015]) == [(2015, 2015)]
    assert naming.file_blocks(cfg, [2012, 2013]) == [(2012, 2012), (2013, 2013)]
    p = naming.block_paths(five, "HadGEM3-GC31-MM", "ssp245", "r1i1p1f1", 2016, 2020)[("pr", 1)]
    assert p.parent.name == "2016-2020" and p.name.endswith("_day_20160101-20201230.nc")
    # delivered files of an experiment: one per block, restricted to the blocks holding asked years
    hist = five["search"]["experiments"]["historical"]
    got = naming.delivered_paths(five, "S", "historical", "r1i1p1f1", years=[hist[0]])
    assert {naming.parse_name(p)["start"][:4] for p in got} == {str(hist[0])}
    one = naming.delivered_paths(cfg, "S", "historical", "r1i1p1f1")
    assert len(one) == len(naming.experiment_years(cfg, "historical")) * len(cfg["search"]["variables"]) * \
        cfg["downscale"]["n_samples"]
