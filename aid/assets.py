"""Where a catalog asset lives and how it opens: local NetCDF, local Zarr, or a URL (fsspec).

Why a module of its own: intake-esm catalogs name their assets in two ways (a fixed
``assets.format`` for the whole catalog, or a ``format_column_name`` column per row) and in two
kinds of place (paths relative to the catalog, or URLs such as Pangeo's ``gs://cmip6/...`` Zarr
stores). Fetch must read every one of them the same way: lazily, so only the region and years it
keeps are ever read, and failing with a message that names the asset.

Rules:

- a URL (``scheme://...``: ``gs``, ``s3``, ``https``, ``http``, ``file``, ...) is used as it is, never
  joined to the catalog folder, and opened through fsspec with ``catalog.storage_options`` from the
  config (e.g. ``{token: anon}`` for public Google buckets, ``{anon: true}`` for public S3);
- a relative path is tried against the catalog's folder and its parents (intake-esm's own sample
  CSV is relative to two folders above its JSON), then the working directory;
- ``zarr`` assets open with xarray's zarr engine (consolidated metadata when present), ``netcdf``
  assets with netCDF4 locally and h5netcdf on a file-like object from fsspec when remote.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from aid.errors import DataError
from aid.io import open_dataset

log = logging.getLogger(__name__)

#: Asset formats fetch can open (intake-esm's DataFormat values it supports).
FORMATS = ("netcdf", "zarr")

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(location: str) -> bool:
    """True for ``scheme://...`` locations (a Windows drive letter ``C:\\`` is not one)."""
    return bool(_URL.match(str(location)))


@dataclass(frozen=True)
class Asset:
    """One catalog asset: its location (absolute path or URL) and format (``netcdf``/``zarr``)."""

    location: str
    format: str

    @property
    def remote(self) -> bool:
        return is_url(self.location)


def resolve_location(location: str, catalog_path: Path) -> str:
    """Absolute path of a relative catalog asset; URLs and absolute paths are returned unchanged."""
    if is_url(location):
        return location
    p = Path(location)
    if p.is_absolute():
        return str(p)
    here = catalog_path.resolve().parent
    for base in (here, *here.parents, Path.cwd()):
        cand = (base / p).resolve()
        if cand.exists():
            return str(cand)
    return str((here / p).resolve())


def catalog_assets(cat: Any, rows: pd.DataFrame, catalog_path: Path) -> list[Asset]:
    """The assets of ``rows`` of intake-esm datastore ``cat``, each with its format.

    The format comes from ``assets.format_column_name`` (one per row) when the catalog has one, else
    from ``assets.format``; a format fetch cannot open is refused naming the catalog and the row.
    """
    spec = cat.esmcat.assets
    col = spec.column_name
    fixed = getattr(spec.format, "value", spec.format)
    out = []
    for _, row in rows.iterrows():
        fmt = row[spec.format_column_name] if spec.format_column_name else fixed
        fmt = str(getattr(fmt, "value", fmt)).lower()
        loc = str(row[col])
        if fmt not in FORMATS:
            raise DataError(
                f"catalog {catalog_path}: asset {loc} has format '{fmt}', which fetch cannot open.",
                f"use assets of format {' or '.join(FORMATS)} (assets.format or the "
                f"'{spec.format_column_name or 'format'}' column of the catalog).",
            )
        out.append(Asset(resolve_location(loc, catalog_path), fmt))
    return out


def open_asset(asset: Asset, storage_options: Mapping[str, Any] | None = None, **kwargs: Any) -> xr.Dataset:
    """Open ``asset`` lazily; unreadable assets raise DataError naming them.

    Lazy without dask (``chunks=None``): xarray's lazily indexed backend arrays read only the
    hyperslab a later ``isel`` selects, whatever the on-disk chunking (a contiguous NetCDF variable
    is one dask chunk, so ``chunks={}`` would read the whole field to crop it).

    ``kwargs`` go to :func:`xarray.open_dataset` (e.g. ``decode_times``).
    """
    opts = dict(storage_options or {})
    if asset.format == "netcdf" and not asset.remote:
        return open_dataset(asset.location, chunks=None, **kwargs)
    if not asset.remote and not Path(asset.location).exists():
        raise DataError(f"{asset.location}: Zarr store does not exist.", "check the path in your catalog.")
    try:
        if asset.format == "zarr":
            return xr.open_dataset(
                asset.location, engine="zarr", chunks=None, storage_options=opts if asset.remote else None, **kwargs
            )
        import fsspec

        fobj = fsspec.open(asset.location, mode="rb", **opts).open()
        return xr.open_dataset(fobj, engine="h5netcdf", chunks=None, **kwargs)
    except Exception as exc:  # fsspec/aiohttp/zarr/h5py raise many types for an unreachable or broken store
        how = "through fsspec with catalog.storage_options " + (str(sorted(opts)) if opts else "(none set)")
        raise DataError(
            f"{asset.location}: cannot be opened as {asset.format} ({type(exc).__name__}: {exc}).",
            f"check that the store exists and is readable {how if asset.remote else 'here'}; "
            "for a private bucket set catalog.storage_options (e.g. {token: ...} for gs://, {key: ..., secret: ...} for s3://).",
        ) from exc
