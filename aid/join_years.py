"""Join consecutive yearly deliverables of one variable and sample into one multi-year file.

Why a separate step: a downscale job stays one year (bounded memory and run time, one SLURM job
each, per-year checks), while CORDEX-CMIP6 archives daily data in 5-year files
(``deliverables.years_per_file: 5``). Joining is a byte-level copy of the yearly files' data,
coordinates and metadata (netCDF4, one year in memory at a time) under the block's name
(:mod:`aid.naming`), written to a temporary file and renamed when complete.

Attributes that differ between the years are per-year counts (``aid_*_fixes``: summed) or
provenance of each year's job (kept from the first year, every input file listed in
``aid_joined_from``); the block gets its own ``tracking_id``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aid.deliverables import tracking_id
from aid.errors import DataError
from aid.io import atomic_path
from aid.naming import parse_name

log = logging.getLogger(__name__)

#: Facets the joined files must share (everything but the time range).
_SAME = ("variable", "domain", "source", "experiment", "member", "institution", "model", "version", "sample")


def _check_names(inputs: Sequence[Path], output: Path) -> list[Path]:
    out = parse_name(output)
    if out is None:
        raise DataError(f"{output}: not a deliverable file name.", "use aid.naming.block_paths for the output.")
    facets = []
    for p in inputs:
        f = parse_name(p)
        if f is None or any(f[k] != out[k] for k in _SAME):
            raise DataError(f"{p}: not a yearly file of {output.name}.", "pass the yearly files of the same "
                            "variable, sample, member and experiment.")
        facets.append((f["start"], p))
    ordered = [p for _, p in sorted(facets)]
    first, last = parse_name(ordered[0]), parse_name(ordered[-1])
    if (first["start"], last["end"]) != (out["start"], out["end"]):
        raise DataError(f"{output.name}: its time range is not {first['start']}-{last['end']}, the span of its "
                        "yearly files.", "pass every year of the block, or name the output after the years passed.")
    return ordered


def _joined_attrs(attrs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(attrs[0])
    for key in attrs[0]:
        vals = [a.get(key) for a in attrs]
        if key.endswith("_fixes") and all(str(v).lstrip("-").isdigit() for v in vals):
            out[key] = str(sum(int(v) for v in vals))
    return out


def join_years(
    config: Mapping[str, Any],
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
) -> Path:
    """Write ``output``: the yearly ``inputs`` concatenated along time (checked contiguous)."""
    import netCDF4

    output = Path(output)
    ordered = _check_names([Path(p) for p in inputs], output)
    srcs = [netCDF4.Dataset(p) for p in ordered]
    try:
        var = parse_name(output)["variable"]
        times = [s.variables["time"] for s in srcs]
        for s, t, p in zip(srcs, times, ordered, strict=True):
            if (t.getncattr("units"), t.getncattr("calendar")) != (times[0].getncattr("units"),
                                                                    times[0].getncattr("calendar")):
                raise DataError(f"{p}: time units or calendar differ from {ordered[0].name}.",
                                "regenerate the yearly files with the same aid version.")
            for c in ("lat", "lon"):
                if not np.array_equal(s.variables[c][:], srcs[0].variables[c][:]):
                    raise DataError(f"{p}: '{c}' differs from {ordered[0].name}.", "join files of one domain only.")
        t_all = np.concatenate([np.asarray(t[:], dtype="f8") for t in times])
        steps = np.diff(t_all)
        if steps.size and not np.allclose(steps, steps[0]):
            gap = int(np.argmax(~np.isclose(steps, steps[0])))
            raise DataError(f"{output.name}: the yearly files are not contiguous (time step changes after value "
                            f"{t_all[gap]:g} {times[0].getncattr('units')}).", "pass every year of the block.")
        first = srcs[0]
        attrs = _joined_attrs([{k: s.getncattr(k) for k in s.ncattrs()} for s in srcs])
        attrs["tracking_id"] = tracking_id(config["deliverables"]["tracking_prefix"], output.name,
                                           *(s.getncattr("tracking_id") for s in srcs))
        attrs["aid_joined_from"] = " ".join(p.name for p in ordered)
        with atomic_path(output) as tmp:
            with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
                nc.set_fill_off()
                for name, dim in first.dimensions.items():
                    nc.createDimension(name, t_all.size if name == "time" else len(dim))
                for name, v in first.variables.items():
                    filters = v.filters() or {}
                    chunks = v.chunking()
                    fill = v.getncattr("_FillValue") if "_FillValue" in v.ncattrs() else False
                    nv = nc.createVariable(name, v.dtype, v.dimensions, fill_value=fill,
                                           zlib=bool(filters.get("zlib")), complevel=filters.get("complevel") or 4,
                                           shuffle=bool(filters.get("shuffle")),
                                           chunksizes=None if chunks == "contiguous" else chunks)
                    nv.setncatts({k: v.getncattr(k) for k in v.ncattrs() if k != "_FillValue"})
                    nv.set_auto_maskandscale(False)
                    if "time" not in v.dimensions:
                        nv[:] = v[:]
                        continue
                    i = 0
                    for s in srcs:
                        sv = s.variables[name]
                        sv.set_auto_maskandscale(False)
                        n = sv.shape[0]
                        nv[i:i + n] = sv[:]
                        i += n
                nc.setncatts(attrs)
    finally:
        for s in srcs:
            s.close()
    log.info("wrote %s (%s from %d yearly files)", output, var, len(ordered))
    return output


__all__ = ["join_years"]
