"""Build an intake-esm ESM collection (JSON + CSV) for a CMIP6 DRS directory tree.

Why build our own: a site may have no catalog for its local CMIP6 mirror, and the demo archive needs
one. The catalog follows the ESM collection spec (``esmcat_version`` 0.1.0) so any intake-esm client,
and :func:`aid.fetch.fetch_dataset`, can open it.

Facets come from the *path* (CMIP6 DRS)::

    <activity>/<institution>/<source>/<experiment>/<member>/<table>/<variable>/<grid>/<version>/<file>

and ``time_range`` (``YYYYMMDD-YYYYMMDD``) from the file's own time axis (first and last stamp), so
it is right even when the file name is not. ``frequency`` is derived from the path's table: the
headers of real files can disagree (the MPI-ESM1-2-LR DCPP daily files say ``table_id = Amon`` /
``frequency = mon`` although the data and the DRS path are daily); such disagreements are logged and
the path wins, because the directory is what every CMIP6 search tool (ESGF, intake-esm) indexes.

Aggregation control: one dataset per (activity, institution, source, experiment, table, grid);
members joined on a new ``member_id`` dimension, files of a member concatenated along ``time``
(ordered by ``time_range``), variables merged.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

from aid.errors import DataError
from aid.io import atomic_path, write_text

log = logging.getLogger(__name__)

#: Catalog columns, in order.
COLUMNS = [
    "activity_id",
    "institution_id",
    "source_id",
    "experiment_id",
    "member_id",
    "table_id",
    "variable_id",
    "grid_label",
    "version",
    "time_range",
    "frequency",
    "path",
]

DRS_FACETS = COLUMNS[:9]

#: CMIP6 MIP table -> frequency (CMIP6 CV ``frequency`` values).
TABLE_FREQUENCY: dict[str, str] = {
    "day": "day",
    "Eday": "day",
    "CFday": "day",
    "SIday": "day",
    "Oday": "day",
    "AERday": "day",
    "Amon": "mon",
    "Omon": "mon",
    "Lmon": "mon",
    "LImon": "mon",
    "SImon": "mon",
    "Emon": "mon",
    "CFmon": "mon",
    "AERmon": "mon",
    "Oyr": "yr",
    "Eyr": "yr",
    "3hr": "3hr",
    "E3hr": "3hr",
    "CF3hr": "3hr",
    "6hrPlev": "6hr",
    "6hrLev": "6hr",
    "1hr": "1hr",
    "E1hr": "1hr",
    "fx": "fx",
    "Ofx": "fx",
    "Efx": "fx",
}


def _time_range(path: Path) -> tuple[str, dict[str, str]]:
    """``YYYYMMDD-YYYYMMDD`` of the file's first and last time stamp (``""`` without time axis),
    plus the header attributes we compare against the path."""
    import cftime
    import netCDF4

    try:
        with netCDF4.Dataset(path) as nc:
            header = {k: str(nc.getncattr(k)) for k in ("table_id", "frequency", "variable_id") if k in nc.ncattrs()}
            if "time" not in nc.variables or nc.variables["time"].size == 0:
                return "", header
            tv = nc.variables["time"]
            units = tv.getncattr("units")
            cal = tv.getncattr("calendar") if "calendar" in tv.ncattrs() else "standard"
            first, last = cftime.num2date([tv[0], tv[-1]], units, calendar=cal)
    except (OSError, RuntimeError, KeyError, ValueError, IndexError) as exc:
        raise DataError(
            f"{path}: cannot read its time axis ({type(exc).__name__}: {exc}); the file is corrupt or not CF.",
            "re-download or remove this file, then rebuild the catalog.",
        ) from exc
    return f"{first.strftime('%Y%m%d')}-{last.strftime('%Y%m%d')}", header


def scan(root: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per NetCDF file below ``root`` that sits in a CMIP6 DRS path."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"catalog root {root} is not a directory.", "pass the top of a CMIP6 DRS tree (the folder holding CMIP/, ScenarioMIP/, ...).")
    rows: list[dict[str, Any]] = []
    skipped = 0
    for path in sorted(root.rglob("*.nc")):
        if path.name.startswith("."):
            continue  # temporary .part files of an interrupted writer
        parts = path.relative_to(root).parts
        if len(parts) >= 11 and parts[0] == "CMIP6":
            parts = parts[1:]  # root given one level above the DRS tree
        if len(parts) < 10:
            skipped += 1
            log.debug("not a DRS path, skipped: %s", path)
            continue
        facets = dict(zip(DRS_FACETS, parts[:9]))
        time_range, header = _time_range(path)
        table = facets["table_id"]
        freq = TABLE_FREQUENCY.get(table, header.get("frequency", ""))
        if header.get("table_id") and header["table_id"] != table:
            log.warning(
                "%s: header says table_id=%s frequency=%s but the DRS path says table %s; using the path (%s).",
                path, header.get("table_id"), header.get("frequency"), table, freq,
            )
        elif header.get("frequency") and header["frequency"] != freq:
            log.warning("%s: header frequency=%s disagrees with table %s; using %s.", path, header["frequency"], table, freq)
        rows.append({**facets, "time_range": time_range, "frequency": freq, "path": str(path.resolve())})
    if skipped:
        log.info("%d files below %s are not in a CMIP6 DRS path and were skipped", skipped, root)
    if not rows:
        raise DataError(
            f"no CMIP6 DRS NetCDF files found below {root}.",
            "the tree must look like <activity>/<institution>/<source>/<experiment>/<member>/<table>/<variable>/<grid>/<version>/<file>.nc.",
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def esm_collection(csv_name: str, description: str) -> dict[str, Any]:
    """The ESM collection spec document pointing at ``csv_name`` (relative to the JSON)."""
    return {
        "esmcat_version": "0.1.0",
        "id": "aid-cmip6",
        "description": description,
        "catalog_file": csv_name,
        "attributes": [{"column_name": c, "vocabulary": ""} for c in COLUMNS if c != "path"],
        "assets": {"column_name": "path", "format": "netcdf"},
        "aggregation_control": {
            "variable_column_name": "variable_id",
            "groupby_attrs": ["activity_id", "institution_id", "source_id", "experiment_id", "table_id", "grid_label"],
            "aggregations": [
                {"type": "union", "attribute_name": "variable_id"},
                {
                    "type": "join_new",
                    "attribute_name": "member_id",
                    "options": {"coords": "minimal", "compat": "override"},
                },
                {"type": "join_existing", "attribute_name": "time_range", "options": {"dim": "time"}},
            ],
        },
    }


def build_catalog(root: str | os.PathLike[str], out_json: str | os.PathLike[str]) -> Path:
    """Scan ``root`` and write ``out_json`` + the CSV beside it (same stem). Returns the JSON path.

    Both files are written atomically; the CSV first, so a JSON never points at a missing CSV.
    """
    out_json = Path(out_json)
    df = scan(root)
    csv_path = out_json.with_suffix(".csv")
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    doc = esm_collection(csv_path.name, f"CMIP6 files below {Path(root).name} (built by aid)")
    write_text(json.dumps(doc, indent=2) + "\n", out_json)
    log.info("catalog %s: %d files, %d datasets", out_json, len(df),
             df.groupby(["source_id", "experiment_id", "member_id", "variable_id"]).ngroups)
    return out_json
