"""Regridding: conservative to the model grid, and back up to 0.25 deg.

Why one module: the coarse field the diffusion model is trained on and the coarse field it is
given at inference must come from the same code path (:func:`coarsen` / :func:`regrid`), and the
upsampled conditioning the model sees must be the one the bicubic baseline delivers
(:func:`upsample`). xarray-regrid is the default backend; xESMF is used only when ESMF imports.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
    return xr.Dataset(coords={"lat": target["lat"].values, "lon": target["lon"].values})


def _xesmf_regrid(ds: xr.Dataset, target: xr.Dataset, method: str) -> xr.Dataset:
    try:
        import xesmf  # noqa: F401
    except Exception as exc:  # ImportError, or ESMF's own failures at import
        raise ConfigError(
            "regrid.backend is 'xesmf' but xESMF/ESMF cannot be imported here "
            f"({type(exc).__name__}: {exc}).",
            "install it with `conda install -c conda-forge xesmf` (envs/regrid.yaml) or set regrid.backend: xarray-regrid.",
        ) from exc
    import xesmf

    def with_bounds(d: xr.Dataset) -> xr.Dataset:
        from aid.grids import make_grid

        dlat = float(np.diff(d.lat.values).mean()) if d.sizes["lat"] > 1 else 1.0
        dlon = float(np.diff(d.lon.values).mean()) if d.sizes["lon"] > 1 else 1.0
        g = make_grid(d.lat.values, d.lon.values, dlat, dlon)
        return g.assign_coords(
            lat_b=np.append(g.lat_bnds.values[:, 0], g.lat_bnds.values[-1, 1]),
            lon_b=np.append(g.lon_bnds.values[:, 0], g.lon_bnds.values[-1, 1]),
        )

    xe_method = {"conservative": "conservative_normed", "bilinear": "bilinear", "nearest": "nearest_s2d"}[method]
    rg = xesmf.Regridder(with_bounds(ds), with_bounds(target), xe_method)
    return rg(ds, keep_attrs=True)


def regrid(
    ds: xr.Dataset, target_grid: xr.Dataset, method: str = "conservative", backend: str = "xarray-regrid"
) -> xr.Dataset:
    """Regrid ``ds`` (time, lat, lon) onto ``target_grid``'s lat/lon.

    Conservative regridding is NaN-aware (cells renormalised over valid overlap), so masked
    variables keep their coastlines; targets wholly outside the source stay NaN.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown regrid method {method!r}.", f"use one of {', '.join(METHODS)}.")
    ds = normalise_coords(ds)
    target = _target_coords(normalise_coords(target_grid))
    if backend == "xesmf":
        out = _xesmf_regrid(ds, target, method)
    elif backend == "xarray-regrid":
        import xarray_regrid  # noqa: F401  (registers the .regrid accessor)

        if method == "conservative":
            out = ds.regrid.conservative(target, latitude_coord="lat", skipna=True)
        elif method == "bilinear":
            out = ds.regrid.linear(target)
        else:
            out = ds.regrid.nearest(target)
    else:
        raise ConfigError(f"unknown regrid backend {backend!r}.", "use xarray-regrid or xesmf.")
    for name in ds.data_vars:
        if name in out:
            out[name].attrs = dict(ds[name].attrs)
    out.attrs = dict(ds.attrs)
    return out


def coarsen(fine: xr.Dataset, cfg: Mapping[str, Any]) -> xr.Dataset:
    """Reference fine fields -> the model's coarse grid (the single training/inference path)."""
    from aid.grids import coarse_grid

    rcfg = cfg.get("regrid", {})
    return regrid(fine, coarse_grid(cfg), rcfg.get("method", "conservative"), rcfg.get("backend", "xarray-regrid"))


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
        out = regrid(coarse, fine_grid, "conservative")
        if any(bool(out[v].isnull().any()) for v in out.data_vars):
            # fine cells at the domain rim partly outside the coarse cover: nearest cell value
            out = out.fillna(regrid(coarse, fine_grid, "nearest"))
        return out
    if method != "bicubic":
        raise ConfigError(f"unknown upsampling method {method!r}.", "use bicubic or conservative.")
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
