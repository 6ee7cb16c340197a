"""Configuration: one YAML file, validated against ``config/schema.yaml``.

Why both a schema and semantic checks: the JSON schema (also used by ``snakemake.utils.validate``)
catches unknown keys and wrong types; :func:`check_semantics` catches what a schema cannot express
(reversed year ranges, empty boxes, output paths that escape ``output_dir``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from aid.errors import ConfigError
from aid.variables import VARIABLES

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "config" / "schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"


def load_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def _with_defaults(validator_class: type) -> type:
    """A validator that fills every absent property with the schema's ``default`` before checking it.

    Why: the schema is the one home of every default (as ``snakemake.utils.validate(...,
    set_default=True)`` does for the workflow); code reads keys, never invents a fallback value.
    """
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator: Any, props: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]) -> Any:
        if isinstance(instance, dict):
            for name, sub in props.items():
                if isinstance(sub, Mapping) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


_DefaultingValidator = _with_defaults(jsonschema.Draft202012Validator)


def fill_defaults(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a partial config with every absent key that has a schema default filled in.

    Why: library callers (tests, benches) that build only the sections one function reads get the
    same values a validated run would, so the code can index every key (``cfg["key"]``) and never
    carries a default of its own. Nothing is checked here (no required keys, no semantics); a run's
    config goes through :func:`validate`.
    """
    cfg = copy.deepcopy(dict(cfg))
    for _ in _DefaultingValidator(load_schema()).iter_errors(cfg):
        pass
    return cfg


def validate(cfg: Mapping[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate ``cfg`` against the schema and semantic rules, filling the schema's defaults; return
    a deep copy.

    Raises :class:`ConfigError` naming the offending key.
    """
    cfg = copy.deepcopy(dict(cfg))
    validator = _DefaultingValidator(load_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        if err.validator == "additionalProperties":
            # Name the unknown key itself, not its parent.
            allowed = set(err.schema.get("properties", {}))
            unknown = sorted(set(err.instance) - allowed)
            parent = _key_path(err)
            where = unknown[0] if parent == "<top level>" else f"{parent}.{unknown[0]}"
            raise ConfigError(
                f"{source}: unknown key '{where}'.",
                f"remove it or fix its spelling; allowed keys here: {', '.join(sorted(allowed))}.",
            )
        raise ConfigError(
            f"{source}: invalid value for '{_key_path(err)}': {err.message}.",
            "see config/schema.yaml for the allowed values.",
        )
    check_semantics(cfg, source)
    return cfg


def _check_range(cfg: Mapping[str, Any], key: str, source: str) -> None:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return
        node = node[part]
    if node is not None and node[0] > node[1]:
        raise ConfigError(
            f"{source}: '{key}' is reversed ({node[0]} > {node[1]}).",
            f"write it as [{node[1]}, {node[0]}].",
        )


def check_semantics(cfg: Mapping[str, Any], source: str = "config") -> None:
    """Rules a JSON schema cannot express."""
    for key in (
        "domain.lat",
        "domain.lon",
        "adjust.reference_period",
        "model.train.years",
        "indices.base_period",
        "evaluation.period",
        "demo_archive.historical_years",
        "demo_archive.scenario_years",
    ):
        _check_range(cfg, key, source)
    for exp, years in cfg["search"]["experiments"].items():
        _check_range({"search": {"experiments": {exp: years}}}, f"search.experiments.{exp}", source)
    _check_held_out(cfg, source)
    _check_adjust(cfg, source)
    out = Path(cfg["output_dir"])
    if out.is_absolute() is False and ".." in out.parts:
        raise ConfigError(
            f"{source}: 'output_dir' ({cfg['output_dir']}) climbs out of the working directory.",
            "use a path below the repository (e.g. results) or an absolute path.",
        )
    ckpt = (cfg.get("model") or {}).get("checkpoint")
    if ckpt:
        ckpt_path = Path(str(ckpt).replace("{output_dir}", str(cfg["output_dir"])))
        if not ckpt_path.is_file():
            raise ConfigError(
                f"{source}: 'model.checkpoint' points at {ckpt_path}, which does not exist.",
                "set model.checkpoint: null to train the model (workflow rule `train` or `aid train`), "
                "or point it at an existing checkpoint file.",
            )
    methods = cfg["adjust"].get("methods")  # no schema default: every variable needs its own choice
    if methods is None:
        raise ConfigError(f"{source}: 'adjust.methods' is missing.",
                          "add adjust.methods with one {method, kind} entry per variable (see config/config.yaml).")
    for var in cfg["search"]["variables"]:
        if var not in cfg["reference"]["files"]:
            raise ConfigError(
                f"{source}: variable '{var}' is in search.variables but has no entry in 'reference.files'.",
                f"add reference.files.{var} (ERA5 daily files) or drop {var} from search.variables.",
            )
        if var not in methods:
            kind = VARIABLES[var].adjust_kinds[0]
            raise ConfigError(
                f"{source}: variable '{var}' has no bias-adjustment method in 'adjust.methods'.",
                f"add adjust.methods.{var}: {{method: QDM, kind: '{kind}'}}.",
            )
    for var, method in methods.items():
        kinds = VARIABLES[var].adjust_kinds
        if method["kind"] not in kinds:
            raise ConfigError(
                f"{source}: 'adjust.methods.{var}.kind' is '{method['kind']}', which is not valid for {var} "
                f"({VARIABLES[var].long_name}).",
                f"set adjust.methods.{var}.kind: '{kinds[0]}' (valid: {', '.join(kinds)}; see aid/variables.py).",
            )


def _check_adjust(cfg: Mapping[str, Any], source: str) -> None:
    """Adjustment settings that are valid alone but not together."""
    acfg = cfg.get("adjust") or {}
    if acfg.get("multivariate") == "MBCn" and acfg["group"] == "time.month":
        # xsdba's MBCn rotates the whole multivariate distribution of a group; it accepts only
        # Grouper("time") or a day-of-year window, not monthly groups
        raise ConfigError(
            f"{source}: 'adjust.group' is time.month, which 'adjust.multivariate: MBCn' cannot honour "
            "(xsdba's MBCn groups by the whole year or by a day-of-year window, not by month).",
            "set adjust.group: window (with adjust.window, e.g. 31 days) for MBCn, or adjust.multivariate: null.",
        )
    w, st = acfg.get("window_years"), acfg.get("step_years")
    if w is not None and st is not None and int(st) > int(w):
        raise ConfigError(
            f"{source}: 'adjust.step_years' ({st}) is longer than 'adjust.window_years' ({w}): the years of a "
            "target block outside its window would be adjusted from a window that does not contain them.",
            "set adjust.step_years <= adjust.window_years (default 1 and 30).",
        )


def _check_held_out(cfg: Mapping[str, Any], source: str) -> None:
    """The evaluation scores held-out years: ``evaluation.period`` must not overlap the training years.

    Scores on days the model was trained on are in-sample and look better than the model is.
    """
    ev = (cfg.get("evaluation") or {}).get("period")
    tr = ((cfg.get("model") or {}).get("train") or {}).get("years")
    if not ev or not tr or (cfg.get("model") or {}).get("checkpoint"):
        return
    (e0, e1), (t0, t1) = (int(y) for y in ev), (int(y) for y in tr)
    if e0 <= t1 and t0 <= e1:
        both = sorted(set(range(e0, e1 + 1)) & set(range(t0, t1 + 1)))
        raise ConfigError(
            f"{source}: 'evaluation.period' {[e0, e1]} overlaps 'model.train.years' {[t0, t1]} (years "
            f"{', '.join(map(str, both))}): the evaluation would score days the model was trained on.",
            "make them disjoint, e.g. train on the first years of the reference period and evaluate on the last.",
        )


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read a YAML config, apply nested ``overrides``, validate, return it."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist.", "pass --config with a valid path.")
    try:
        with open(path) as fh:
            cfg = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}).", "fix the YAML syntax.") from exc
    if overrides:
        cfg = deep_update(cfg, overrides)
    return resolve_placeholders(validate(cfg, source=str(path)))


def resolve_placeholders(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Replace ``{output_dir}`` in path strings (reference files, catalog root, checkpoint).

    Why: the demo archive lives under the output directory, so moving ``output_dir`` (tests, a
    second run) must move the paths that point into it without editing several keys.
    """
    out = copy.deepcopy(dict(cfg))
    root = str(out["output_dir"])

    def sub(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{output_dir}", root)
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v) for v in value]
        return value

    return sub(out)


def deep_update(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def output_path(cfg: Mapping[str, Any], *parts: str) -> Path:
    """A path under ``output_dir``; refuses components that would escape it.

    Why: wildcard values and config strings end up in file names; none may climb out of the
    output directory (``..``, absolute components, path separators inside a facet).
    """
    root = Path(cfg["output_dir"])
    for part in parts:
        p = str(part)
        if p in {"", ".", ".."} or os.path.isabs(p) or ".." in Path(p).parts:
            raise ConfigError(
                f"path component {p!r} would escape output_dir {root}.",
                "use plain facet names (letters, digits, '-', '_').",
            )
    path = root.joinpath(*map(str, parts))
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ConfigError(f"path {path} escapes output_dir {root}.", "use plain facet names.")
    return path


# ---------------------------------------------------------------------------------------------
# A user's own config file on top of the default


def _is_collection(schema: Mapping[str, Any]) -> bool:
    """A mapping whose keys are data (experiments, variables, fsspec options), not config keys:
    the schema gives it no ``properties`` but a schema for any key."""
    return schema.get("type") == "object" and "properties" not in schema and (
        isinstance(schema.get("additionalProperties"), Mapping) or "propertyNames" in schema
    )


def merge_user_config(base: Mapping[str, Any], user: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``base`` with ``user`` on top: sections merge key by key, values *replace*.

    Why not Snakemake's own merge: it merges every mapping, so a user's ``search.experiments:
    {historical: ...}`` kept the default's ``ssp245`` (17 stray jobs in a MIROC6 plan). Here the
    mappings that are collections in the schema (``search.experiments``, ``reference.files``,
    ``adjust.methods``, ``catalog.storage_options``: see :func:`_is_collection`) and all lists
    are replaced whole by the user's value; sections (``search``, ``model.train``, ...) still
    merge, so a user file holds only what it changes.
    """
    schema = load_schema() if schema is None else schema
    out = copy.deepcopy(dict(base))
    props = schema.get("properties", {}) if isinstance(schema, Mapping) else {}
    for key, value in user.items():
        sub = props.get(key, {})
        if (isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and isinstance(sub, Mapping)
                and "properties" in sub and not _is_collection(sub)):
            out[key] = merge_user_config(out[key], value, sub)
        else:
            out[key] = copy.deepcopy(value)
    return out


def snakemake_user_config(default_path: str | os.PathLike[str], configfiles: list[Any], cli_config: Mapping[str, Any]) -> dict[str, Any]:
    """The run's config: the default file, then each ``--configfile`` in order, then ``--config``,
    each on top of the last with :func:`merge_user_config`."""
    def read(p: Any) -> dict[str, Any]:
        try:
            with open(p) as fh:
                return yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {p} cannot be read ({exc}).", "check the path given to --configfile.") from exc

    cfg = read(default_path)
    for p in configfiles:
        if Path(p).resolve() != Path(default_path).resolve():
            cfg = merge_user_config(cfg, read(p))
    if cli_config:
        cfg = merge_user_config(cfg, dict(cli_config))
    return cfg


# ---------------------------------------------------------------------------------------------
# Years given in several places, and what the catalog holds


def _within(inner: Any, outer: Any) -> bool:
    return int(inner[0]) >= int(outer[0]) and int(inner[1]) <= int(outer[1])


def year_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Every inconsistency between the years the config gives in several places.

    - the bias adjustment is trained on, and percentile indices thresholded on, the *historical*
      run: ``adjust.reference_period`` and ``indices.base_period`` must lie in
      ``search.experiments.historical``;
    - with the demo archive as data (``catalog.path`` null), the experiments must be the archive's
      (``historical`` in ``demo_archive.historical_years``, ``demo_archive.scenario`` in
      ``demo_archive.scenario_years``) and the reference (written for the historical years only)
      must hold ``adjust.reference_period``, ``model.train.years``, ``evaluation.period`` and
      ``indices.base_period``.
    """
    out: list[str] = []
    exps = cfg["search"]["experiments"]
    hist = exps.get("historical")
    ref_period = (cfg.get("adjust") or {}).get("reference_period")
    base = (cfg.get("indices") or {}).get("base_period")
    train = ((cfg.get("model") or {}).get("train") or {}).get("years")
    evaluation = (cfg.get("evaluation") or {}).get("period")
    if hist is None:
        out.append(f"search.experiments has no 'historical' (it has {sorted(exps)}): the bias adjustment "
                   "(adjust.reference_period) and the indices' base period are taken from the historical run")
    else:
        for key, val in (("adjust.reference_period", ref_period), ("indices.base_period", base)):
            if val is not None and not _within(val, hist):
                out.append(f"{key} {list(val)} is not inside search.experiments.historical {list(hist)}")
    demo = cfg.get("demo_archive") or {}
    if demo.get("enabled") and not (cfg.get("catalog") or {}).get("path"):
        dh, scen, ds = demo.get("historical_years"), demo.get("scenario"), demo.get("scenario_years")
        for exp, years in exps.items():
            have = dh if exp == "historical" else ds if exp == scen else None
            if have is None:
                out.append(f"search.experiments.{exp}: the demo archive (catalog.path null) holds only "
                           f"historical and {scen}")
            elif not _within(years, have):
                which = "demo_archive.historical_years" if exp == "historical" else "demo_archive.scenario_years"
                out.append(f"search.experiments.{exp} {list(years)} is not inside {which} {list(have)}")
        for key, val in (("adjust.reference_period", ref_period), ("model.train.years", train),
                         ("evaluation.period", evaluation), ("indices.base_period", base)):
            if val is not None and dh is not None and not _within(val, dh):
                out.append(f"{key} {list(val)} is not inside the demo reference's years "
                           f"(demo_archive.historical_years {list(dh)})")
    return out


def catalog_year_problems(cfg: Mapping[str, Any], catalog_json: str | os.PathLike[str]) -> list[str]:
    """Each (source, experiment, member, variable) of the run that the catalog lacks, or holds for
    fewer years than ``search.experiments`` asks. Needs the catalog's ``time_range`` column
    (``YYYYMMDD-YYYYMMDD``, as ``aid catalog`` writes); without it only presence is checked."""
    import json

    import pandas as pd

    catalog_json = Path(catalog_json)
    try:
        doc = json.loads(catalog_json.read_text())
        csv = str(doc["catalog_file"])
        csv_path = csv if "://" in csv or Path(csv).is_absolute() else catalog_json.parent / csv
        df = pd.read_csv(csv_path, dtype=str)
    except (OSError, ValueError, KeyError) as exc:
        return [f"catalog.path {catalog_json}: cannot be read to check its years ({type(exc).__name__}: {exc})"]
    search = cfg["search"]
    facets = {"table_id": search.get("table_id"), "frequency": search.get("frequency")}
    for col, val in facets.items():
        if val and col in df.columns:
            df = df[df[col] == str(val)]
    out: list[str] = []
    for source in search["sources"]:
        for exp, years in search["experiments"].items():
            for member in search["members"]:
                for var in search["variables"]:
                    rows = df[(df.get("source_id") == source) & (df.get("experiment_id") == exp)
                              & (df.get("member_id") == member) & (df.get("variable_id") == var)]
                    what = f"{source}/{exp}/{member}/{var}"
                    if rows.empty:
                        out.append(f"search: the catalog holds no {what}")
                        continue
                    if "time_range" not in rows.columns or rows["time_range"].isna().all():
                        continue
                    spans = rows["time_range"].dropna().str.split("-", expand=True)
                    y0, y1 = int(spans[0].min()[:4]), int(spans[1].max()[:4])
                    if not _within(years, (y0, y1)):
                        out.append(f"search.experiments.{exp} {list(years)}: the catalog holds {what} for {y0}-{y1} only")
    return out


def check_years(cfg: Mapping[str, Any], source: str = "config") -> None:
    """Raise one :class:`ConfigError` naming every key whose years disagree with another key or
    with the user's catalog (when ``catalog.path`` is set and exists). Run when a run is planned."""
    problems = year_problems(cfg)
    cat = (cfg.get("catalog") or {}).get("path")
    if cat and Path(str(cat)).is_file():
        problems += catalog_year_problems(cfg, str(cat))
    if problems:
        raise ConfigError(
            f"{source}: the years of the run are inconsistent:\n  - " + "\n  - ".join(problems),
            "change the keys named above so each period lies inside the one it depends on "
            "(or narrow search.experiments to the years the catalog holds).",
        )
