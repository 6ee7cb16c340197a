"""Config validation: the default validates; bad keys, types and ranges are refused by name."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from aid.config import DEFAULT_CONFIG, load_config, validate
from aid.errors import ConfigError


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    with open(DEFAULT_CONFIG) as fh:
        return yaml.safe_load(fh)


def test_default_config_validates(raw: dict[str, Any]) -> None:
    cfg = validate(raw)
    assert cfg["search"]["table_id"] == "day"
    assert cfg["demo_archive"]["historical_years"] == [2012, 2014]
    loaded = load_config()
    # {output_dir} placeholders resolved in the loaded config
    assert loaded["catalog"]["build_root"] == "results/demo-archive/CMIP6"
    assert loaded["reference"]["files"]["tas"].startswith("results/demo-archive/reference/")


def test_unknown_key_is_named(raw: dict[str, Any]) -> None:
    bad = copy.deepcopy(raw)
    bad["search"]["tabel_id"] = "day"
    with pytest.raises(ConfigError) as exc:
        validate(bad, source="my.yaml")
    assert str(exc.value).startswith("my.yaml: unknown key 'search.tabel_id'.")
    assert "table_id" in str(exc.value)  # the allowed keys are listed in the fix


def test_unknown_top_level_key_is_named(raw: dict[str, Any]) -> None:
    bad = copy.deepcopy(raw)
    bad["ouput_dir"] = "x"
    with pytest.raises(ConfigError, match=r"config: unknown key 'ouput_dir'\."):
        validate(bad)


def test_wrong_type_is_named(raw: dict[str, Any]) -> None:
    bad = copy.deepcopy(raw)
    bad["grid"]["coarse_resolution"] = "two"
    with pytest.raises(ConfigError) as exc:
        validate(bad)
    assert "invalid value for 'grid.coarse_resolution': 'two' is not of type 'number'" in str(exc.value)


def test_bad_member_pattern_is_named(raw: dict[str, Any]) -> None:
    bad = copy.deepcopy(raw)
    bad["demo_archive"]["members"] = ["member1"]
    with pytest.raises(ConfigError, match=r"invalid value for 'demo_archive\.members\.0'"):
        validate(bad)


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("search", "experiments", "historical"), [2014, 2012], "search.experiments.historical"),
        (("demo_archive", "historical_years"), [2014, 2012], "demo_archive.historical_years"),
        (("adjust", "reference_period"), [2014, 2012], "adjust.reference_period"),
        (("domain", "lat"), [57.75, 50.0], "domain.lat"),
    ],
)
def test_reversed_ranges_are_named(raw: dict[str, Any], path: tuple[str, ...], value: list[Any], key: str) -> None:
    bad = copy.deepcopy(raw)
    node = bad
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as exc:
        validate(bad)
    assert f"'{key}' is reversed ({value[0]} > {value[1]})" in str(exc.value)
    assert f"[{value[1]}, {value[0]}]" in str(exc.value)  # the fix spells the right order
