"""Checksums and value ranges of the delivered files, so a user can verify a download.

``SHA256SUMS`` is in the format ``sha256sum -c`` reads (``<64 hex>  <path>``, two spaces, text
mode), paths relative to the output folder: ``cd results && sha256sum -c SHA256SUMS``. The value
table gives per kind of file and variable the minimum, maximum and NaN count over all its files,
so a truncated or mangled copy shows up without re-running anything.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd

from aid.errors import DataError
from aid.io import open_dataset, write_text
from aid.provenance import sha256_file

log = logging.getLogger(__name__)


def relative_to_root(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> str:
    """``path`` relative to the output folder ``root``; a file outside it is an error (the
    manifest must verify a copy of that folder alone)."""
    p, r = Path(path).resolve(), Path(root).resolve()
    try:
        return p.relative_to(r).as_posix()
    except ValueError as exc:
        raise DataError(f"{p}: not inside the output folder {r}; SHA256SUMS lists paths relative to it.",
                        "keep every delivered file under output_dir.") from exc


def sha256sums(paths: Iterable[str | os.PathLike[str]], root: str | os.PathLike[str]) -> str:
    """The text of a ``sha256sum -c`` manifest of ``paths``, sorted by path."""
    lines = []
    for p in sorted({relative_to_root(p, root) for p in paths}):
        if "\n" in p or "\\" in p:
            raise DataError(f"{p}: a file name with a newline or backslash cannot go into SHA256SUMS.", "rename the file.")
        lines.append(f"{sha256_file(Path(root) / p)}  {p}")
    return "\n".join(lines) + "\n"


def write_sha256sums(paths: Iterable[str | os.PathLike[str]], root: str | os.PathLike[str],
                     out: str | os.PathLike[str]) -> Path:
    text = sha256sums(paths, root)
    write_text(text, out)
    log.info("wrote %s (%d files)", out, text.count("\n"))
    return Path(out)


def verify_sha256sums(manifest: str | os.PathLike[str]) -> list[str]:
    """Paths (relative) whose checksum does not match or that are missing; [] when all verify."""
    root = Path(manifest).parent
    bad = []
    for line in Path(manifest).read_text().splitlines():
        digest, _, rel = line.partition("  ")
        f = root / rel
        if not f.is_file() or sha256_file(f) != digest:
            bad.append(rel)
    return bad


def value_ranges(files: Mapping[str, Sequence[str | os.PathLike[str]]]) -> pd.DataFrame:
    """Per (kind, variable): units, files, values, min, max, NaN count and fraction.

    ``files`` maps a kind (e.g. ``downscaled``) to its NetCDF files. Statistics are over every
    floating-point data variable with a time axis (bounds excluded), reduced chunk by chunk with dask.
    """
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, paths in files.items():
        for p in paths:
            ds = open_dataset(p)  # dask chunks: a month of days at a time, whatever the domain size
            try:
                for name, da in ds.data_vars.items():
                    if da.dtype.kind != "f" or "time" not in da.dims or name.endswith(("_bnds", "_bounds")):
                        continue
                    lo, hi, nan = dask.compute(da.min(), da.max(), da.isnull().sum(), scheduler="synchronous")
                    a = acc.setdefault((kind, name), dict(kind=kind, variable=name, units=str(da.attrs.get("units", "")),
                                                          n_files=0, n_values=0, min=math.inf, max=-math.inf, n_nan=0))
                    a["n_files"] += 1
                    a["n_values"] += int(da.size)
                    a["n_nan"] += int(nan)
                    if np.isfinite(float(lo)):
                        a["min"] = min(a["min"], float(lo))
                        a["max"] = max(a["max"], float(hi))
            finally:
                ds.close()
    rows = []
    for a in acc.values():
        a["nan_fraction"] = a["n_nan"] / a["n_values"] if a["n_values"] else math.nan
        for k in ("min", "max"):
            if not np.isfinite(a[k]):
                a[k] = math.nan
        rows.append(a)
    cols = ["kind", "variable", "units", "n_files", "n_values", "min", "max", "n_nan", "nan_fraction"]
    return pd.DataFrame(rows, columns=cols).sort_values(["kind", "variable"]).reset_index(drop=True)


__all__ = ["relative_to_root", "sha256sums", "value_ranges", "verify_sha256sums", "write_sha256sums"]
