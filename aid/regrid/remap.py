"""Regridding a dataset: conservative (banded weights), bilinear/nearest (xarray-regrid), xESMF;
the rim xarray-regrid leaves NaN; the workflow's ``coarsen`` and rule ``regrid``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from aid.errors import ConfigError, DataError
from aid.regrid.grid import source_lat_bounds, _outer_edges, _pad_edges, _rename_latlon, _rim_blocks, _spacing, _target_coords, align_longitudes, normalise_coords
from aid.regrid.banded import single_threaded_blas
from aid.regrid.weights import _conservative_plan, _PlanError

log = logging.getLogger(__name__)


METHODS = ("conservative", "bilinear", "nearest")


def _conservative(src: xr.Dataset, target: xr.Dataset, align: bool, lat_bounds: np.ndarray | None = None) -> xr.Dataset | None:
    """``src.regrid.conservative(target, latitude_coord="lat")`` without moving the data.

    With ``align`` the source is taken as stored (any latitude order, 0..360 or -180..180) and
    the plan includes :func:`normalise_coords` + :func:`align_longitudes`, so the result equals the
    accessor applied to ``align_longitudes(normalise_coords(src), target.lon)``. Dask-backed
    variables stay lazy (one call per chunk of the non-spatial dims). Returns None when the grid
    cannot be mapped (the caller then uses the accessor itself). ``lat_bounds`` (stored row order):
    the source's own latitude cell bounds, used instead of mid-points between centres.
    """
    try:
        plan = _conservative_plan(src["lat"].values, src["lon"].values, target, align, lat_bounds)
    except _PlanError as exc:
        log.warning("conservative regrid: fast path unavailable (%s); using xarray-regrid's accessor", exc)
        return None
    nt_lat, nt_lon = plan.target_shape
    out = {}
    for name, da in src.data_vars.items():
        res = xr.apply_ufunc(
            plan.apply,
            da,
            input_core_dims=[["lat", "lon"]],
            output_core_dims=[["lat", "lon"]],
            exclude_dims={"lat", "lon"},
            dask="parallelized",
            output_dtypes=[np.result_type(np.float32, da.dtype)],
            dask_gufunc_kwargs={"output_sizes": {"lat": nt_lat, "lon": nt_lon}, "allow_rechunk": True},
            keep_attrs=True,
        )
        out[name] = res.transpose(*da.dims)
    res_ds = xr.Dataset(out, attrs=dict(src.attrs))
    return res_ds.assign_coords(lat=target["lat"].values, lon=target["lon"].values)


def _xarray_regrid(src: xr.Dataset, target: xr.Dataset, method: str, spatial: list[str]) -> xr.Dataset:
    """One xarray-regrid call per method on an aligned source (as :func:`regrid`'s rim pass has).

    Conservative goes through :func:`_conservative` (xarray-regrid's weights, banded products);
    only if that cannot map the grid does it call the accessor, skipping NaNs only when there are
    any (``skipna`` costs a second contraction).
    """
    if method == "conservative":
        fast = _conservative(src[spatial], target, align=False)
        if fast is not None:
            return fast
        has_nan = any(bool(src[v].isnull().any()) for v in spatial)
        return src.regrid.conservative(target, latitude_coord="lat", skipna=has_nan)
    if method == "bilinear":
        return src.regrid.linear(target)
    return src.regrid.nearest(target)


def _regrid_rim(
    out: xr.Dataset, src: xr.Dataset, target: xr.Dataset, method: str, everywhere: bool = False, lat_rim: bool = True
) -> xr.Dataset:
    """Fill the target rim xarray-regrid masks: centres beyond the outermost source *centre*.

    xarray-regrid treats only targets between the first and last source centres as covered, so
    when refining it leaves half a source cell NaN at each edge (the polar rows on a global grid,
    the domain edges of a regional one) although those cells lie inside the outer source cells.
    Those rows/columns are regridded again from an edge-padded source (:func:`_pad_edges`), then
    targets whose centre lies beyond the source's outer cell edges are set back to NaN (or, with
    ``everywhere``, for upsampling, filled from the nearest source cell).
    """
    tlat, tlon = target["lat"].values, target["lon"].values
    slat, slon = src["lat"].values, src["lon"].values
    blocks = [("lat", b) for b in (_rim_blocks(tlat, slat) if lat_rim else [])] + [("lon", b) for b in _rim_blocks(tlon, slon)]
    if not blocks:
        return out
    padded = _pad_edges(src)
    spatial = [v for v in out.data_vars if {"lat", "lon"} <= set(out[v].dims)]
    for dim, (idx, is_rim) in blocks:
        sub_t = target.isel({dim: idx})
        sub = _xarray_regrid(padded, sub_t, method, spatial)
        if dim == "lat":
            # a target row centred on the pole lies beyond the (clamped) ghost: it sits in the same
            # source row as its neighbour, so it takes the neighbour's value
            sub = sub.ffill("lat", limit=1).bfill("lat", limit=1) if sub.sizes["lat"] > 1 else sub
        sub = sub.isel({dim: np.flatnonzero(is_rim)})
        for v in spatial:
            upd = sub[v].transpose(*out[v].dims).astype(out[v].dtype)
            if isinstance(out[v].data, np.ndarray):
                # ``out`` is always a fresh result of this module: write the few rim rows in
                # place rather than copying a (100, 721, 1440) array once per block
                out[v][{dim: idx[is_rim]}] = upd.values
            else:
                out[v] = out[v].copy()
                out[v].loc[{dim: upd[dim].values}] = upd.values if not hasattr(upd.data, "dask") else upd.compute().values
    la0, la1 = _outer_edges(slat)
    lo0, lo1 = _outer_edges(slon)
    lat_in = (tlat >= max(la0, -90.0) - 1e-9) & (tlat <= min(la1, 90.0) + 1e-9)
    lon_in = (tlon >= lo0 - 1e-9) & (tlon <= lo1 + 1e-9)
    if not everywhere and lat_in.all() and lon_in.all():
        return out
    if not everywhere and all(isinstance(out[v].data, np.ndarray) for v in spatial):
        for v in spatial:  # in place, as above
            if not lat_in.all():
                out[v][{"lat": np.flatnonzero(~lat_in)}] = np.nan
            if not lon_in.all():
                out[v][{"lon": np.flatnonzero(~lon_in)}] = np.nan
        return out
    inside = lat_in[:, None] & lon_in[None, :]
    mask = xr.DataArray(inside, dims=("lat", "lon"), coords={"lat": tlat, "lon": tlon})
    if everywhere:
        near = src.sel(lat=xr.DataArray(tlat, dims="lat"), lon=xr.DataArray(tlon, dims="lon"), method="nearest")
        near = near.assign_coords(lat=tlat, lon=tlon)
        for v in spatial:
            out[v] = out[v].where(mask | out[v].notnull(), near[v].transpose(*out[v].dims))
    else:
        for v in spatial:
            out[v] = out[v].where(mask)
    return out


def _xesmf_regrid(ds: xr.Dataset, target: xr.Dataset, method: str) -> xr.Dataset:
    try:
        import xesmf
    except Exception as exc:  # ImportError, or ESMF's own failures at import
        raise ConfigError(
            "regrid.backend is 'xesmf': xesmf backend needs ESMF/esmpy, which cannot be imported here "
            f"({type(exc).__name__}: {exc}).",
            "conda install -c conda-forge xesmf (envs/regrid.yaml); or set regrid.backend: xarray-regrid.",
        ) from exc

    def with_bounds(d: xr.Dataset) -> xr.Dataset:
        from aid.grids import make_grid

        g = make_grid(d.lat.values, d.lon.values, _spacing(d.lat.values), _spacing(d.lon.values))
        return g.assign_coords(
            lat_b=np.append(g.lat_bnds.values[:, 0], g.lat_bnds.values[-1, 1]),
            lon_b=np.append(g.lon_bnds.values[:, 0], g.lon_bnds.values[-1, 1]),
        )

    xe_method = {"conservative": "conservative_normed", "bilinear": "bilinear", "nearest": "nearest_s2d"}[method]
    rg = xesmf.Regridder(with_bounds(ds), with_bounds(target), xe_method, unmapped_to_nan=True)
    return rg(ds, keep_attrs=True, skipna=method == "conservative")


def regrid(
    ds: xr.Dataset, target_grid: xr.Dataset, method: str = "conservative", backend: str = "xarray-regrid"
) -> xr.Dataset:
    """Regrid ``ds`` (..., lat, lon) onto ``target_grid``'s lat/lon cell centres.

    Handles 0..360 and -180..180 sources, descending latitudes, global sources (periodic seam),
    targets crossing the antimeridian, and the rim xarray-regrid leaves NaN when refining.
    Conservative regridding is NaN-aware: each target is the area-weighted mean over its *valid*
    overlap (renormalised), so masked variables keep their coastlines; targets with no valid
    overlap and targets wholly outside the source stay NaN. Float32 input gives float32 output.

    Conservative with the xarray-regrid backend never reorders or copies the input: xarray-regrid
    formats the grid and computes the 1-D weights, which are folded onto the stored rows/columns
    and applied as banded products (see the comment above ``_VALID_MIN``); the aligned source is
    built only when a rim must be filled. Other methods/backends align the data first.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown regrid method {method!r}.", f"use one of {', '.join(METHODS)}.")
    if backend not in ("xarray-regrid", "xesmf"):
        raise ConfigError(f"unknown regrid backend {backend!r}.", "set regrid.backend to xarray-regrid or xesmf.")
    bounds = source_lat_bounds(ds)
    ds = _rename_latlon(ds)
    target = _target_coords(target_grid)
    tlon = target["lon"].values
    for c in ("lat", "lon"):
        if c not in ds.dims:
            raise DataError(
                f"dataset with variables {sorted(map(str, ds.data_vars))} has no '{c}' dimension; cannot regrid.",
                "regrid only gridded (time, lat, lon) fields; point/station data are not supported.",
            )
    if ds.sizes["lat"] < 2 or ds.sizes["lon"] < 2:
        what = ds.attrs.get("aid_dataset_key") or ds.attrs.get("source_id") or f"dataset with variables {sorted(map(str, ds.data_vars))}"
        raise DataError(
            f"{what}: the source grid has {ds.sizes['lat']} row(s) x {ds.sizes['lon']} column(s); regridding needs "
            "at least 2 of each (cell edges are taken half-way between neighbouring centres).",
            "fetch a larger box around the domain (domain.halo_cells, or a larger domain) or use a source "
            "with more than one cell in each direction.",
        )
    spatial = [v for v in ds.data_vars if {"lat", "lon"} <= set(ds[v].dims)]
    other = [v for v in ds.data_vars if v not in spatial]
    out = None
    aux = ds  # where the non-gridded variables and the attributes come from
    if backend == "xarray-regrid":
        import xarray_regrid  # noqa: F401  (registers the .regrid accessor)

    if backend == "xarray-regrid" and method == "conservative":
        # the data stay as stored; sorting, longitude alignment and the periodic seam live in
        # the weights (see _conservative); only a rim to fill needs the aligned source itself
        # the file's latitude bounds, when it has them, define the rows' extent (and reach the poles)
        lat_bounds = bounds
        out = _conservative(ds[spatial], target, align=True, lat_bounds=lat_bounds)
        if out is not None:
            plan = _conservative_plan(ds["lat"].values, ds["lon"].values, target, True, lat_bounds)
            lat_rim = lat_bounds is None and bool(_rim_blocks(target["lat"].values, plan.aligned_lat))
            if lat_rim or _rim_blocks(tlon, plan.aligned_lon):
                out = _regrid_rim(out, align_longitudes(normalise_coords(ds[spatial]), tlon), target, method,
                                  lat_rim=lat_bounds is None)
            aux = align_longitudes(normalise_coords(ds[other]), tlon) if other else ds
    if out is None:
        ds = aux = align_longitudes(normalise_coords(ds), tlon)
        src = ds[spatial]
        if backend == "xesmf":
            out = _xesmf_regrid(src, target, method)
        else:
            out = _xarray_regrid(src, target, method, spatial)
            out = _regrid_rim(out, src, target, method)
    for name in spatial:
        out[name].attrs = dict(ds[name].attrs)
        if ds[name].dtype.kind == "f" and out[name].dtype != ds[name].dtype:
            out[name] = out[name].astype(ds[name].dtype)
    for name in other:
        out[name] = aux[name]
    out = out.assign_coords(lat=target["lat"].values, lon=target["lon"].values)
    out["lat"].attrs.update({"standard_name": "latitude", "units": "degrees_north", "axis": "Y"})
    out["lon"].attrs.update({"standard_name": "longitude", "units": "degrees_east", "axis": "X"})
    out.attrs = dict(ds.attrs)
    return out


def coarsen(fine: xr.Dataset, cfg: Mapping[str, Any]) -> xr.Dataset:
    """Reference fine fields -> the model's coarse grid, conservatively.

    Why always conservative: this is the single code path for the model's training pairs and its
    inference inputs (coarsened reference in the evaluation run), and a coarse cell must be the
    area mean of the fine cells in it for the pair to be consistent. ``regrid.method`` applies to
    GCM regridding only; ``regrid.backend`` is honoured here too.
    """
    from aid.grids import coarse_grid

    backend = cfg["regrid"]["backend"]
    return regrid(fine, coarse_grid(cfg), "conservative", backend)


def regrid_file(in_path: str | os.PathLike[str], config: Mapping[str, Any], out_path: str | os.PathLike[str]) -> Path:
    """Rule ``regrid``: one fetched GCM variable -> the model coarse grid (``coarse_grid(config)``).

    Keeps the model calendar (time encoding) and the file's attributes, adds provenance. Refuses
    (DataError, nothing written) a source that leaves coarse cells without any value, which means
    the fetch box was too small for the configured domain.
    """
    from aid.grids import coarse_grid
    from aid.io import open_dataset, write_netcdf
    from aid.provenance import append_history, provenance_attrs, relpath_or_name

    rcfg = config["regrid"]
    method = rcfg["method"]
    backend = rcfg["backend"]
    ds = open_dataset(in_path)
    time_encoding = dict(ds["time"].encoding) if "time" in ds.variables else {}
    target = coarse_grid(config)
    with single_threaded_blas():  # dask's threads run the banded products; one BLAS thread each
        out = regrid(ds, target, method, backend).load()
    for name, da in out.data_vars.items():
        if not {"lat", "lon"} <= set(da.dims):
            continue
        reduce = [d for d in da.dims if d not in ("lat", "lon")]
        empty = da.isnull().all(dim=reduce) if reduce else da.isnull()
        if bool(empty.any()):
            bad = empty.where(empty, drop=True)
            raise DataError(
                f"{in_path}: variable '{name}' does not cover the model coarse grid after {method} regridding "
                f"({int(empty.sum())} coarse cells without data, e.g. lat {float(bad.lat[0])}, lon {float(bad.lon[0])}; "
                f"source lat {float(ds.lat.min())}..{float(ds.lat.max())}, lon {float(ds.lon.min())}..{float(ds.lon.max())}).",
                "fetch a larger box (domain.halo_cells) or check domain.lat/domain.lon against the GCM's coverage.",
            )
    if "time" in out.variables:
        out["time"].encoding.update({k: v for k, v in time_encoding.items() if k in ("units", "calendar", "dtype")})
    out.attrs.update(
        provenance_attrs(
            "regrid",
            regrid_method=method,
            regrid_backend=backend,
            regrid_target=f"{target.sizes['lat']}x{target.sizes['lon']} cells of {target.attrs.get('resolution_deg')} deg",
            regrid_input=relpath_or_name(in_path),
        )
    )
    out.attrs["history"] = append_history(ds.attrs, f"regrid ({method}, {backend}) of {relpath_or_name(in_path)}")
    encoding = {v: {"zlib": True, "complevel": 4} for v in out.data_vars}
    return write_netcdf(out, out_path, encoding=encoding)
