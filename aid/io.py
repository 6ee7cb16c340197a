"""Reading and writing files safely.

Why: a killed job must never leave a file that a later stage mistakes for output, so every writer
goes through :func:`atomic_path` (write to a temporary sibling, fsync, rename). Every reader goes
through :func:`open_dataset` so that a truncated or corrupt file fails with a message naming it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import xarray as xr

from aid.errors import DataError

log = logging.getLogger(__name__)

#: Chunking used for lazy opening: whole spatial fields, a month of days at a time.
DEFAULT_CHUNKS: dict[str, int] = {"time": 31}


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    The temporary name starts with ``.`` and ends with ``.part`` so no glob for outputs matches it;
    on any exception it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sfx = suffix if suffix is not None else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{sfx}.part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; outputs get the mode a plain open() would give (0666 less the umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write ``ds`` to NetCDF4 atomically (temp file + rename)."""
    path = Path(path)
    kwargs.setdefault("engine", "netcdf4")
    kwargs.setdefault("format", "NETCDF4")
    with atomic_path(path, suffix=".nc") as tmp:
        ds.to_netcdf(tmp, **kwargs)
    log.info("wrote %s", path)
    return path


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write a text file atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def open_dataset(
    path: str | os.PathLike[str],
    chunks: dict[str, int] | None | str = "default",
    **kwargs: Any,
) -> xr.Dataset:
    """Open a NetCDF/GRIB file lazily with dask chunks; corrupt files raise :class:`DataError`.

    GRIB files (``.grib``/``.grb``/``.grib2``) go through cfgrib without writing an index file.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist.", "check the path in your config or catalog.")
    if chunks == "default":
        chunks = DEFAULT_CHUNKS
    if path.suffix.lower() in {".grib", ".grb", ".grib2", ".grb2"}:
        kwargs.setdefault("engine", "cfgrib")
        kwargs.setdefault("backend_kwargs", {"indexpath": ""})
    try:
        ds = xr.open_dataset(path, chunks=chunks, **kwargs)
    except Exception as exc:  # netCDF4/h5py/cfgrib raise many types for a broken file
        raise DataError(
            f"{path}: cannot be read as NetCDF/GRIB ({type(exc).__name__}: {exc}); "
            "the file is corrupt or truncated.",
            "re-download or regenerate this file, then re-run.",
        ) from exc
    return ds
