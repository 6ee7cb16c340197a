"""The output catalog: an intake-esm ESM collection of everything a run delivered, xscen's columns.

Why: impact users open products through intake-esm / xscen project catalogs, not by globbing
file names. ``results/aid-catalog.json`` + ``.csv`` list the downscaled samples, the bicubic
baseline, the xclim indices of every sample, the ensemble statistics and the coarse inputs, with
the column schema of Ouranos' xscen project catalogs (docs/columns.rst of xscen), so
``intake.open_esm_datastore("results/aid-catalog.json")`` and ``xscen.ProjectCatalog(...)`` open it.

Column values follow xscen's definitions for downscaled (RCM-like) data: ``driving_model`` /
``driving_member`` are the GCM and its realization, ``source`` is the downscaling model
(``aid`` or ``aid-bicubic``), ``member`` is the realization *of the downscaling* (``rN``, the
diffusion sample: the realization part of CORDEX-CMIP6 ``version_realization``), ``version`` its
version part. Facets are read from each file's own global attributes (written by
:mod:`aid.deliverables`) and its time axis, so the catalog describes the files, not the config.

Aggregation: one dataset per (id, domain, processing_level, xrfreq) as in xscen, where ``id`` is
built from xscen's ID columns *without* ``driving_member`` and ``member`` (as xscen does when it
creates an ensemble on those columns): ``to_dataset_dict()`` then joins the GCM realizations and
the diffusion samples on new ``driving_member`` and ``member`` dimensions, yearly files along
``time``, variables by union. Rows for which a realization does not apply (ensemble statistics,
the coarse inputs) carry the placeholder ``ensemble`` / the GCM's own member so every row has
values for both join columns (intake-esm adds the dimension to every dataset it opens).

Asset paths are absolute (xarray opens them from any working directory); ``SHA256SUMS``
(:mod:`aid.manifest`) lists the same files relative to the output folder for moved copies.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from aid.errors import DataError
from aid.io import atomic_path, write_text
from aid.naming import EVALUATION_EXPERIMENT, MODEL_ID

log = logging.getLogger(__name__)

#: xscen's project-catalog columns, in xscen's order (xscen.catalog.COLUMNS).
COLUMNS: tuple[str, ...] = (
    "id", "type", "processing_level", "bias_adjust_institution", "bias_adjust_project", "bias_adjust_reference",
    "mip_era", "activity", "driving_model", "driving_member", "institution", "source", "experiment", "member",
    "xrfreq", "frequency", "variable", "domain", "date_start", "date_end", "version", "format", "path",
)
#: xscen's ID columns (xscen.catalog.ID_COLUMNS) less the two joined into ensemble dimensions.
ID_COLUMNS: tuple[str, ...] = (
    "bias_adjust_project", "bias_adjust_reference", "mip_era", "activity", "driving_model", "institution",
    "source", "experiment", "domain",
)
JOIN_NEW: tuple[str, ...] = ("driving_member", "member")
#: Value of ``driving_member``/``member`` for rows that summarise all realizations.
ENSEMBLE = "ensemble"

#: What each kind of delivered file is: (type, processing_level).
KINDS: dict[str, tuple[str, str]] = {
    "downscaled": ("simulation", "downscaled"),
    "baseline": ("simulation", "downscaled"),
    "indices": ("simulation", "indicators"),
    "ensemble": ("simulation", "ensemble-indicators"),
    "adjusted": ("simulation", "biasadjusted"),
    "coarse_reference": ("reconstruction", "coarsened"),
}

#: pandas/xarray frequency -> CMIP6 frequency (xscen fills both columns).
_FREQ = {"D": "day", "YS": "yr", "YS-JAN": "yr", "AS-JAN": "yr", "MS": "mon", "QS-DEC": "qtr"}


def _file_facets(path: Path) -> tuple[dict[str, Any], list[str], str, str]:
    """(global attributes, data variable names, first and last time stamp) of a file."""
    import cftime
    import netCDF4

    try:
        with netCDF4.Dataset(path) as nc:
            attrs = {k: nc.getncattr(k) for k in nc.ncattrs()}
            bounds = {str(v.getncattr("bounds")) for v in nc.variables.values() if "bounds" in v.ncattrs()}
            coords = set(nc.dimensions) | bounds | {"time_bnds", "lat_bnds", "lon_bnds", "statistic"}
            # string variables (the ensemble files' statistic labels) report the type ``str`` as dtype
            names = [n for n, v in nc.variables.items()
                     if n not in coords and v.ndim >= 1 and v.dtype is not str and v.dtype.kind == "f"]
            start = end = ""
            if "time" in nc.variables and nc.variables["time"].size:
                tv = nc.variables["time"]
                cal = tv.getncattr("calendar") if "calendar" in tv.ncattrs() else "standard"
                first, last = cftime.num2date([tv[0], tv[-1]], tv.getncattr("units"), calendar=cal)
                start, end = first.strftime("%Y-%m-%d %H:00"), last.strftime("%Y-%m-%d %H:00")
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: cannot read it for the output catalog ({type(exc).__name__}: {exc}).",
                        "re-run the rule that wrote it (snakemake --forcerun <rule>).") from exc
    return attrs, names, start, end


def catalog_row(path: str | os.PathLike[str], kind: str, config: Mapping[str, Any], **facets: Any) -> dict[str, Any]:
    """One catalog row for a delivered file of ``kind`` (a key of :data:`KINDS`).

    Downscaled and baseline files name every facet in their attributes; the other kinds take
    ``facets``: ``source``, ``experiment``, ``member`` (the GCM realization), ``sample`` (indices of
    one diffusion sample), ``activity`` and ``institution`` of the GCM (coarse inputs).
    """
    if kind not in KINDS:
        raise DataError(f"unknown catalog kind '{kind}'.", f"use one of {sorted(KINDS)}.")
    p = Path(path).resolve()
    attrs, names, start, end = _file_facets(p)
    typ, level = KINDS[kind]
    freq = str(config["indices"]["freq"]) if kind in ("indices", "ensemble") else "D"  # the rules' products
    ref = config["reference"]["name"]
    inst = config["downscale"]["institution_id"]
    domain = str(attrs.get("domain_id") or config["domain"]["id"])
    row: dict[str, Any] = dict(type=typ, processing_level=level, mip_era=str(attrs.get("mip_era", "CMIP6")),
                               xrfreq=freq, frequency=_FREQ.get(freq, freq), variable=tuple(sorted(names)),
                               domain=domain, date_start=start, date_end=end, format="nc", path=str(p))
    if kind in ("downscaled", "baseline"):
        version, _, realization = str(attrs["version_realization"]).partition("-")
        row.update(activity=str(attrs["activity_id"]), driving_model=str(attrs["driving_source_id"]),
                   driving_member=str(attrs["driving_variant_label"]), institution=str(attrs["institution_id"]),
                   source=str(attrs["source_id"]), experiment=str(attrs["driving_experiment_id"]),
                   member=realization, version=version)
    elif kind in ("indices", "ensemble"):
        sample = facets.get("sample")
        row.update(activity="DD", driving_model=facets["source"], institution=inst, source=MODEL_ID,
                   experiment=facets["experiment"], driving_member=facets.get("member", ENSEMBLE),
                   member=f"r{int(sample)}" if sample is not None else ENSEMBLE,
                   version=config["downscale"]["product_version"])
    elif kind == "adjusted":
        row.update(activity=facets.get("activity"), institution=facets.get("institution"), source=facets["source"],
                   experiment=facets["experiment"], driving_member=ENSEMBLE, member=facets["member"],
                   domain=f"{domain}-coarse")
    else:  # the coarsened reference, input of the evaluation run
        row.update(source=ref, experiment=EVALUATION_EXPERIMENT, driving_member=ENSEMBLE, member=ENSEMBLE,
                   domain=f"{domain}-coarse", mip_era=None)
    if kind != "coarse_reference" and row["experiment"] != EVALUATION_EXPERIMENT:
        # GCM-driven files went through aid's xsdba adjustment against the reference
        row.update(bias_adjust_institution=inst, bias_adjust_project=MODEL_ID, bias_adjust_reference=ref)
    row["id"] = "_".join(str(row[c]) for c in ID_COLUMNS if row.get(c) not in (None, ""))
    return {c: row.get(c) for c in COLUMNS}


def esm_collection(csv_name: str, title: str) -> dict[str, Any]:
    """The ESM collection JSON (esmcat 0.1.0) with xscen's aggregation control plus the ensemble joins."""
    return {
        "esmcat_version": "0.1.0",
        "id": "aid",
        "title": title,
        "description": "Deliverables of one aid run: diffusion-downscaled daily fields (member = diffusion "
                       "sample), bicubic baseline, xclim indices per sample, ensemble statistics, coarse inputs.",
        "catalog_file": csv_name,
        "attributes": [{"column_name": c} for c in COLUMNS if c not in ("path", "format", "date_start", "date_end")],
        "assets": {"column_name": "path", "format_column_name": "format"},
        "aggregation_control": {
            "variable_column_name": "variable",
            "groupby_attrs": ["id", "domain", "processing_level", "xrfreq"],
            "aggregations": [
                *({"type": "join_new", "attribute_name": c, "options": {"coords": "minimal", "compat": "override"}}
                  for c in JOIN_NEW),
                {"type": "join_existing", "attribute_name": "date_start", "options": {"dim": "time"}},
                {"type": "union", "attribute_name": "variable"},
            ],
        },
    }


def write_catalog(rows: Sequence[Mapping[str, Any]], json_path: str | os.PathLike[str], title: str = "aid output catalog") -> pd.DataFrame:
    """Write the CSV (next to the JSON, same stem) and the JSON atomically; return the table."""
    json_path = Path(json_path)
    csv_path = json_path.with_suffix(".csv")
    if not rows:
        raise DataError("output catalog: no delivered file to list.", "run the workflow's downscale stage first.")
    df = pd.DataFrame(list(rows), columns=list(COLUMNS))
    dup = df[df.duplicated(["id", "processing_level", "xrfreq", "driving_member", "member", "date_start", "variable"], keep=False)]
    if len(dup):
        raise DataError(f"output catalog: {len(dup)} files describe the same dataset slice, e.g. {dup['path'].iloc[0]}.",
                        "remove stale files of an earlier configuration from the output folder.")
    df = df.sort_values(["processing_level", "id", "driving_member", "member", "date_start", "path"]).reset_index(drop=True)
    out = df.copy()
    out["variable"] = [repr(tuple(v)) for v in out["variable"]]  # xscen writes tuples as Python literals
    with atomic_path(csv_path) as tmp:
        out.to_csv(tmp, index=False)
    write_text(json.dumps(esm_collection(csv_path.name, title), indent=2) + "\n", json_path)
    log.info("wrote %s (%d files, %d datasets)", json_path, len(df), df.groupby(["id", "domain", "processing_level", "xrfreq"]).ngroups)
    return df


def open_catalog(json_path: str | os.PathLike[str]):
    """The catalog as an intake-esm datastore (``variable`` parsed back into tuples).

    ``threaded=False``: intake-esm otherwise opens the files of a dataset from several threads at
    once, which crashes the process inside the non-thread-safe netCDF-C library (intake-esm #697).
    ``to_dataset_dict`` does not inherit the datastore's setting: call it with ``threaded=False`` too
    (or set ``ITK_ESM_THREADING=False``).
    """
    from intake_esm import esm_datastore

    from aid.indices import restore_statistic_labels

    class AidDatastore(esm_datastore):
        """Datasets open with the ensemble files' ``statistic`` labels as their index (the files hold
        them as an auxiliary coordinate, as CF requires for strings); ``search`` keeps the class."""

        def to_dataset_dict(self, *args, preprocess=None, **kwargs):
            def prep(ds):
                ds = restore_statistic_labels(ds)
                return preprocess(ds) if preprocess else ds
            return super().to_dataset_dict(*args, preprocess=prep, **kwargs)

    return AidDatastore(str(json_path), columns_with_iterables=["variable"], threaded=False)


__all__ = ["COLUMNS", "ENSEMBLE", "ID_COLUMNS", "KINDS", "catalog_row", "esm_collection", "open_catalog", "write_catalog"]
