"""Provenance attributes carried by every output file."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from pathlib import Path
from typing import Any

import aid


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def provenance_attrs(stage: str, **extra: Any) -> dict[str, str]:
    """Global attributes every aid output carries.

    Values are stringified so they survive NetCDF attribute encoding unchanged. The creation date
    is the only non-deterministic attribute; data values never depend on it.
    """
    attrs = {
        "aid_version": aid.__version__,
        "aid_stage": stage,
        "creation_date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    for key, value in extra.items():
        if value is None:
            continue
        attrs[f"aid_{key}" if not key.startswith(("aid_", "driving_", "bias_")) else key] = (
            value if isinstance(value, str) else str(value)
        )
    return attrs


def append_history(attrs: dict[str, Any], line: str) -> str:
    """Return the CF ``history`` attribute with a timestamped line prepended."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = attrs.get("history", "")
    return f"{stamp} aid {aid.__version__}: {line}" + (f"\n{old}" if old else "")


def relpath_or_name(path: str | os.PathLike[str]) -> str:
    """A path for attributes that does not leak the user's home directory."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name
