"""Regridding: conservative to the model grid, and back up to 0.25 deg.

Why one module: the coarse field the diffusion model is trained on and the coarse field it is
given at inference must come from the same code path (:func:`coarsen` / :func:`regrid`), and the
upsampled conditioning the model sees must be the one the bicubic baseline delivers
(:func:`upsample`). xarray-regrid is the default backend; xESMF is used only when ESMF imports.
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

log = logging.getLogger(__name__)

METHODS = ("conservative", "bilinear", "nearest")


def normalise_coords(ds: xr.Dataset) -> xr.Dataset:
    """lat/lon names, latitude ascending, longitudes in -180..180 sorted."""
    ren = {k: v for k, v in {"latitude": "lat", "longitude": "lon"}.items() if k in ds.dims or k in ds.coords}
    if ren:
        ds = ds.rename(ren)
    if "lon" in ds.coords and float(ds.lon.max()) > 180:
        ds = ds.assign_coords(lon=((ds.lon + 180) % 360) - 180)
    if "lon" in ds.dims:
        ds = ds.sortby("lon")
    if "lat" in ds.dims:
        ds = ds.sortby("lat")
    drop = [v for v in ds.data_vars if v.endswith(("_bnds", "_bounds")) or v in ("lat_bnds", "lon_bnds")]
    return ds.drop_vars(drop, errors="ignore")


def _target_coords(target: xr.Dataset) -> xr.Dataset:
    """Bare lat/lon of a target grid, latitude ascending; longitudes kept as given (may run past 180)."""
    ren = {k: v for k, v in {"latitude": "lat", "longitude": "lon"}.items() if k in target.coords}
    target = target.rename(ren) if ren else target
    lat = np.sort(np.asarray(target["lat"].values, dtype="float64"))
    lon = np.sort(np.asarray(target["lon"].values, dtype="float64"))
    return xr.Dataset(coords={"lat": lat, "lon": lon})


def _spacing(values: np.ndarray, default: float = 1.0) -> float:
    return float(np.median(np.diff(values))) if values.size > 1 else default


def _outer_edges(values: np.ndarray) -> tuple[float, float]:
    """Outer cell edges of a regular centre axis (half a spacing beyond the first/last centre)."""
    h = _spacing(values)
    return float(values[0] - h / 2), float(values[-1] + h / 2)


def align_longitudes(ds: xr.Dataset, target_lon: np.ndarray) -> xr.Dataset:
    """Express ``ds``'s longitudes in the 360-degree window centred on the target's longitudes.

    Why: a regional target crossing the antimeridian runs e.g. 170..190 (see
    :func:`aid.grids.fine_grid`), and a 0..360 source must meet a -180..180 target; shifting the
    source (not the target) keeps the target's coordinates exactly as requested. A global source
    gets one periodic column on each side, so cells straddling the seam get their full overlap.
    """
    if "lon" not in ds.dims:
        return ds
    tlon = np.asarray(target_lon, dtype="float64")
    base = 0.5 * (float(tlon.min()) + float(tlon.max())) - 180.0
    lon = ds["lon"].values.astype("float64")
    new = (lon - base) % 360.0 + base
    ds = ds.assign_coords(lon=("lon", new, ds["lon"].attrs)).sortby("lon")
    lon = ds["lon"].values
    h = _spacing(lon)
    if lon.size > 2 and abs(lon.size * h - 360.0) < 1e-6 * 360.0:
        first = ds.isel(lon=[0]).assign_coords(lon=[float(lon[0]) + 360.0])
        last = ds.isel(lon=[-1]).assign_coords(lon=[float(lon[-1]) - 360.0])
        ds = xr.concat([last, ds, first], dim="lon", data_vars="minimal", coords="minimal", compat="override")
    return ds


def _pad_edges(src: xr.Dataset) -> xr.Dataset:
    """One ghost cell on each side of lat and lon, repeating the edge values.

    The real edge cells keep their exact extent (the midpoint to a ghost one spacing away is the
    edge), so a target inside an edge cell gets that cell's value and one straddling two edge
    cells their area-weighted mean, as a conservative regridder would give.
    """
    for dim in ("lat", "lon"):
        vals = src[dim].values.astype("float64")
        if vals.size < 2:
            continue
        h = _spacing(vals)
        g0, g1 = float(vals[0]) - h, float(vals[-1]) + h
        if dim == "lat":
            # a ghost beyond a pole would get a negative spherical weight (sin decreasing past
            # 90 deg) and cancel the edge row; keep it just inside the pole instead
            g0, g1 = max(g0, -90.0 + 1e-3 * h), min(g1, 90.0 - 1e-3 * h)
        lo = src.isel({dim: [0]}).assign_coords({dim: [g0]})
        hi = src.isel({dim: [-1]}).assign_coords({dim: [g1]})
        src = xr.concat([lo, src, hi], dim=dim, data_vars="minimal", coords="minimal", compat="override")
    return src


def _rim_blocks(tvals: np.ndarray, svals: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Contiguous target index blocks beyond the first/last source centre.

    Returned as (indices to regrid, mask of those that are rim); each block carries one inward
    neighbour so it has at least two centres (xarray-regrid derives cell edges from neighbours).
    """
    blocks = []
    n = tvals.size
    low = np.flatnonzero(tvals < svals.min())
    high = np.flatnonzero(tvals > svals.max())
    if low.size:
        idx = np.arange(0, min(low.max() + 2, n))
        blocks.append((idx, tvals[idx] < svals.min()))
    if high.size:
        idx = np.arange(max(high.min() - 1, 0), n)
        blocks.append((idx, tvals[idx] > svals.max()))
    return blocks


def _xarray_regrid(src: xr.Dataset, target: xr.Dataset, method: str, spatial: list[str]) -> xr.Dataset:
    """One xarray-regrid call per method; conservative skips NaNs only when there are any."""
    if method == "conservative":
        has_nan = any(bool(src[v].isnull().any()) for v in spatial)
        return src.regrid.conservative(target, latitude_coord="lat", skipna=has_nan)
    if method == "bilinear":
        return src.regrid.linear(target)
    return src.regrid.nearest(target)


def _regrid_rim(
    out: xr.Dataset, src: xr.Dataset, target: xr.Dataset, method: str, everywhere: bool = False
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
    blocks = [("lat", b) for b in _rim_blocks(tlat, slat)] + [("lon", b) for b in _rim_blocks(tlon, slon)]
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
            out[v] = out[v].copy()
            out[v].loc[{dim: upd[dim].values}] = upd.values if not hasattr(upd.data, "dask") else upd.compute().values
    la0, la1 = _outer_edges(slat)
    lo0, lo1 = _outer_edges(slon)
    inside = (
        ((tlat >= max(la0, -90.0) - 1e-9) & (tlat <= min(la1, 90.0) + 1e-9))[:, None]
        & ((tlon >= lo0 - 1e-9) & (tlon <= lo1 + 1e-9))[None, :]
    )
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
    """
    if method not in METHODS:
        raise ConfigError(f"unknown regrid method {method!r}.", f"use one of {', '.join(METHODS)}.")
    ds = normalise_coords(ds)
    target = _target_coords(target_grid)
    for c in ("lat", "lon"):
        if c not in ds.dims:
            raise DataError(
                f"dataset with variables {sorted(map(str, ds.data_vars))} has no '{c}' dimension; cannot regrid.",
                "regrid only gridded (time, lat, lon) fields; point/station data are not supported.",
            )
    ds = align_longitudes(ds, target["lon"].values)
    spatial = [v for v in ds.data_vars if {"lat", "lon"} <= set(ds[v].dims)]
    other = [v for v in ds.data_vars if v not in spatial]
    src = ds[spatial]
    if backend == "xesmf":
        out = _xesmf_regrid(src, target, method)
    elif backend == "xarray-regrid":
        import xarray_regrid  # noqa: F401  (registers the .regrid accessor)

        out = _xarray_regrid(src, target, method, spatial)
        out = _regrid_rim(out, src, target, method)
    else:
        raise ConfigError(f"unknown regrid backend {backend!r}.", "set regrid.backend to xarray-regrid or xesmf.")
    for name in spatial:
        out[name].attrs = dict(ds[name].attrs)
        if ds[name].dtype.kind == "f" and out[name].dtype != ds[name].dtype:
            out[name] = out[name].astype(ds[name].dtype)
    for name in other:
        out[name] = ds[name]
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

    backend = cfg.get("regrid", {}).get("backend", "xarray-regrid")
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

    rcfg = config.get("regrid", {})
    method = rcfg.get("method", "conservative")
    backend = rcfg.get("backend", "xarray-regrid")
    ds = open_dataset(in_path)
    time_encoding = dict(ds["time"].encoding) if "time" in ds.variables else {}
    target = coarse_grid(config)
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


def _cubic_weights(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Matrix W (len(dst) x len(src)) of Keys cubic convolution (a = -0.5) on a regular 1-D axis.

    Points outside the source range use linearly extrapolated ghost cells, so edge cells are
    never NaN and a linear field is reproduced exactly.
    """
    n = src.size
    if n == 1:
        return np.ones((dst.size, 1))
    h = float(src[1] - src[0])
    x = (dst - src[0]) / h
    W = np.zeros((dst.size, n))
    a = -0.5

    def kern(t: np.ndarray) -> np.ndarray:
        t = np.abs(t)
        return np.where(
            t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1, np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0)
        )

    base = np.floor(x).astype(int)
    for off in (-1, 0, 1, 2):
        j = base + off
        w = kern(x - j)
        # ghost cells: linear extrapolation f(-k) = f0 + k (f0 - f1), f(n-1+k) = f_{n-1} + k (f_{n-1} - f_{n-2})
        for i_dst, (jj, ww) in enumerate(zip(j, w)):
            if ww == 0:
                continue
            if jj < 0:
                k = -jj
                W[i_dst, 0] += ww * (1 + k)
                W[i_dst, 1] -= ww * k
            elif jj > n - 1:
                k = jj - (n - 1)
                W[i_dst, n - 1] += ww * (1 + k)
                W[i_dst, n - 2] -= ww * k
            else:
                W[i_dst, jj] += ww
    return W


def upsample(coarse: xr.Dataset, fine_grid: xr.Dataset, method: str = "bicubic") -> xr.Dataset:
    """Bring a coarse field back to the fine grid: ``bicubic`` (smooth) or ``conservative`` (blocky).

    Bicubic is separable Keys cubic convolution through the coarse cell centres with linear edge
    extrapolation: no NaN on the fine domain, linear fields reproduced exactly.
    """
    coarse = normalise_coords(coarse)
    if method == "conservative":
        target = _target_coords(fine_grid)
        src = align_longitudes(coarse, target["lon"].values)
        out = regrid(coarse, fine_grid, "conservative")
        # fine cells beyond the coarse cover (domain rim): the nearest coarse cell's value
        return _regrid_rim(out, src, target, "conservative", everywhere=True)
    if method != "bicubic":
        raise ConfigError(f"unknown upsampling method {method!r}.", "use bicubic or conservative.")
    coarse = align_longitudes(coarse, np.asarray(fine_grid["lon"].values, dtype=float))
    Wy = _cubic_weights(coarse.lat.values, np.asarray(fine_grid.lat.values, dtype=float))
    Wx = _cubic_weights(coarse.lon.values, np.asarray(fine_grid.lon.values, dtype=float))
    out = xr.Dataset(coords={k: v for k, v in coarse.coords.items() if "lat" not in v.dims and "lon" not in v.dims})
    out = out.assign_coords(lat=fine_grid.lat.values, lon=fine_grid.lon.values)
    for name, da in coarse.data_vars.items():
        if not {"lat", "lon"} <= set(da.dims):
            continue
        if bool(da.isnull().any()):
            raise DataError(
                f"variable {name!r} has NaN cells on the coarse grid; bicubic upsampling would spread them.",
                "fill or mask the coarse input before downscaling (check the regrid/adjust outputs).",
            )
        arr = da.transpose(..., "lat", "lon")
        vals = np.einsum("ij,...jk,lk->...il", Wy, arr.values.astype("float64"), Wx)
        out[name] = (arr.dims, vals.astype(da.dtype if da.dtype.kind == "f" else "float64"), dict(da.attrs))
    out.attrs = dict(coarse.attrs)
    return out
