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


def test_evaluation_overlapping_training_years_is_refused(raw: dict[str, Any]) -> None:
    bad = copy.deepcopy(raw)
    bad["model"]["train"]["years"] = [2012, 2014]  # the default evaluation.period is [2014, 2014]
    with pytest.raises(ConfigError) as exc:
        validate(bad, source="my.yaml")
    msg = str(exc.value)
    assert "'evaluation.period' [2014, 2014] overlaps 'model.train.years' [2012, 2014]" in msg and "2014" in msg
    ok = copy.deepcopy(raw)
    ok["model"]["train"]["years"], ok["evaluation"]["period"] = [2012, 2012], [2013, 2014]
    assert validate(ok)["evaluation"]["period"] == [2013, 2014]


def test_config_slice_refuses_undeclared_keys(raw: dict[str, Any]) -> None:
    """A rule's params slice holds exactly the declared keys; reading another one is an error, never a
    silent code default (tests/test_rerun_triggers.py checks what the slices re-run)."""
    import pickle

    from aid.config_slice import SliceKeyError, config_slice

    cfg = validate(raw)
    sl = config_slice(cfg, "adjust", "search.variables", "downscale.seed")
    assert sl["adjust"] == cfg["adjust"] and sl["search"]["variables"] == cfg["search"]["variables"]
    assert sl["downscale"].get("seed") == cfg["downscale"]["seed"]
    with pytest.raises(SliceKeyError, match="'downscale.n_samples' is not in this rule's params slice"):
        sl["downscale"].get("n_samples", 3)
    with pytest.raises(SliceKeyError, match="'model' is not in this rule's params slice"):
        sl["model"]
    assert repr(sl) == repr(dict(adjust=cfg["adjust"], search={"variables": cfg["search"]["variables"]},
                                 downscale={"seed": cfg["downscale"]["seed"]}))
    back = pickle.loads(pickle.dumps(sl))  # as Snakemake hands it to the rule's script
    assert back == sl
    with pytest.raises(SliceKeyError):
        back["search"]["members"]
    with pytest.raises(KeyError, match="no key 'adjust.nope'"):
        config_slice(cfg, "adjust.nope")


def _leaves(node: Any, path: str = ""):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _leaves(v, f"{path}.{k}" if path else k)
    else:
        yield path, node


#: Keys where the default run's config/config.yaml deliberately differs from the schema's default.
DEMO_RUN_CHOICES = {"demo_archive.enabled"}


def test_schema_holds_the_defaults(raw: dict[str, Any]) -> None:
    """Defaults live in config/schema.yaml only: a config naming just the run-specific keys validates
    to every other key's default, and config/config.yaml agrees with the schema wherever it sets a key
    the schema defaults (so the two never drift apart, as sigma_relative once did between code and config)."""
    minimal = {k: raw[k] for k in ("output_dir", "catalog", "search", "domain", "reference", "adjust", "model",
                                   "downscale", "indices", "evaluation")}
    minimal = {**minimal, "search": {k: raw["search"][k] for k in ("sources", "experiments", "members")},
               "domain": {k: raw["domain"][k] for k in ("id", "lat", "lon")},
               "reference": {"files": raw["reference"]["files"]},
               "adjust": {"methods": raw["adjust"]["methods"]}, "model": {}, "downscale": {}, "indices": {},
               "evaluation": {}, "catalog": {}}
    filled = validate(minimal)
    full = validate(raw)
    differ = {p for p, v in _leaves(full) if p.split(".")[0] in filled and _get(filled, p) != v}
    assert differ <= DEMO_RUN_CHOICES | {"demo_archive.enabled"}, sorted(differ)
    assert filled["model"]["train"]["sigma_relative"] is True and filled["downscale"]["seed"] == 2024
    assert filled["demo_archive"]["enabled"] is False  # a user's run never builds derived data unasked


def _get(node: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return "<absent>"
        node = node[part]
    return node


def test_every_schema_key_reaches_the_workflow() -> None:
    """Every config key reaches the workflow: named in a rule's ``cfg_slice`` (alone, or with its
    whole section) or in its params, or read by the Snakefile to build the DAG. A job script sees
    only its rule's slice, so a key left out of every slice is a KeyError in the job or, read with a
    fallback, silently ignored, and changing it re-runs nothing (``downscale.noise_scale`` was once
    left out of the downscale rule's slice)."""
    import re

    from aid.config import REPO_ROOT, load_schema

    text = "".join(p.read_text() for p in [*(REPO_ROOT / "workflow").rglob("*.smk"), REPO_ROOT / "Snakefile"])
    named = set(re.findall(r'"([a-z_]+\.[a-z_0-9.]+)"', text))  # "section.key" in slices and params
    named |= {f"{a}.{b}" for a, b in re.findall(r'config\["([a-z_]+)"\]\["([a-z_0-9]+)"\]', text)}  # DAG reads
    slice_args = re.findall(r"cfg_slice\(([^)]*)\)", text) + re.findall(r"[A-Z_]+_KEYS = \(([^)]*)\)", text)
    sections = {k for args in slice_args for k in re.findall(r'"([a-z_]+)"', args)}
    missing = [f"{sec}.{key}" if key else sec for sec, node in load_schema()["properties"].items()
               if sec not in sections for key in (node.get("properties") or {"": None})
               if (f"{sec}.{key}" if key else sec) not in named]
    assert missing == [], f"config keys no rule receives: {missing}"
