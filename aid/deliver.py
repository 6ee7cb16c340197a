"""The delivery stage: output catalog, checksum manifest and value table of one run.

Inputs are the files the workflow wrote, grouped by kind; the layout under ``output_dir`` (see
workflow/rules/*.smk) gives the facets the files' attributes do not carry:

- ``indices/<source>/<experiment>/<member>/r<sample>.nc``: xclim indices of one diffusion sample;
- ``indices/ensemble/<source>_<experiment>.nc``: ensemble statistics (source ids have no ``_``);
- ``adjusted/<source>/<experiment>/<member>.nc``: bias-adjusted coarse input (GCM activity and
  institution from the regridded file of the same dataset, which keeps the CMIP attributes).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aid.catalog_out import catalog_row, write_catalog
from aid.errors import DataError
from aid.io import atomic_path
from aid.manifest import value_ranges, write_sha256sums
from aid.naming import parse_ensemble_name, parse_index_path

log = logging.getLogger(__name__)


def _parts(path: str | os.PathLike[str], n: int, what: str) -> list[str]:
    parts = Path(path).parts
    if len(parts) < n:
        raise DataError(f"{path}: not a path of the {what} layout.", "pass the files the workflow wrote.")
    return list(parts[-n:])


def _gcm_attrs(regridded: Sequence[str | os.PathLike[str]]) -> dict[tuple[str, str, str], dict[str, str]]:
    """(source, experiment, member) -> activity and institution of the GCM dataset."""
    import netCDF4

    out = {}
    for p in regridded:
        source, experiment, member, _ = _parts(p, 4, "regrid/<source>/<experiment>/<member>/<var>.nc")
        with netCDF4.Dataset(p) as nc:
            a = {k: str(nc.getncattr(k)) for k in ("activity_id", "institution_id") if k in nc.ncattrs()}
        out[(source, experiment, member)] = dict(activity=a.get("activity_id"), institution=a.get("institution_id"))
    return out


def catalog_rows(
    config: Mapping[str, Any],
    downscaled: Sequence[str],
    baseline: Sequence[str],
    indices: Sequence[str],
    ensemble: Sequence[str],
    adjusted: Sequence[str],
    regridded: Sequence[str],
    coarse_reference: Sequence[str],
) -> list[dict[str, Any]]:
    rows = [catalog_row(p, "downscaled", config) for p in downscaled]
    rows += [catalog_row(p, "baseline", config) for p in baseline]
    for p in indices:
        f = parse_index_path(p)
        if f is None:
            raise DataError(f"{p}: not an index file path (indices/<source>/<experiment>/<member>/r<sample>.nc).",
                            "pass the files the indices rule wrote.")
        rows.append(catalog_row(p, "indices", config, source=f["source"], experiment=f["experiment"],
                                member=f["member"], sample=int(f["sample"])))
    for p in ensemble:
        f = parse_ensemble_name(p)
        if f is None:
            raise DataError(f"{p}: not an ensemble statistics file (<source>_<experiment>.nc).",
                            "pass the files the ensemble_stats rule wrote.")
        rows.append(catalog_row(p, "ensemble", config, source=f["source"], experiment=f["experiment"]))
    gcm = _gcm_attrs(regridded)
    for p in adjusted:
        source, experiment, name = _parts(p, 3, "adjusted/<source>/<experiment>/<member>.nc")
        member = Path(name).stem
        rows.append(catalog_row(p, "adjusted", config, source=source, experiment=experiment, member=member,
                                **gcm.get((source, experiment, member), {})))
    rows += [catalog_row(p, "coarse_reference", config) for p in coarse_reference]
    return rows


def deliver(
    config: Mapping[str, Any],
    downscaled: Sequence[str],
    baseline: Sequence[str],
    indices: Sequence[str],
    ensemble: Sequence[str],
    adjusted: Sequence[str],
    regridded: Sequence[str],
    coarse_reference: Sequence[str],
    catalog_json: str | os.PathLike[str],
    ranges_csv: str | os.PathLike[str],
    sha256sums: str | os.PathLike[str],
) -> dict[str, int]:
    """Write the catalog (JSON + CSV), the value table and SHA256SUMS (which covers them too)."""
    rows = catalog_rows(config, downscaled, baseline, indices, ensemble, adjusted, regridded, coarse_reference)
    df = write_catalog(rows, catalog_json, title=f"aid deliverables, domain {config['domain']['id']}")
    kinds = {"downscaled": downscaled, "baseline": baseline, "indices": indices, "ensemble": ensemble,
             "adjusted": adjusted, "coarse_reference": coarse_reference}
    table = value_ranges({k: v for k, v in kinds.items() if v})
    with atomic_path(ranges_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    log.info("wrote %s (%d rows)", ranges_csv, len(table))
    root = Path(sha256sums).parent
    listed = [*df["path"], catalog_json, Path(catalog_json).with_suffix(".csv"), ranges_csv]
    write_sha256sums(listed, root, sha256sums)
    return {"files": len(df), "datasets": int(df.groupby(["id", "domain", "processing_level", "xrfreq"]).ngroups)}


__all__ = ["catalog_rows", "deliver"]
