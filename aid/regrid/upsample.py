"""Upsampling coarse fields back to 0.25 deg: bicubic (the model's conditioning and the baseline)
or conservative (blocky)."""

from __future__ import annotations

import numpy as np
import xarray as xr

from aid.errors import ConfigError, DataError
from aid.regrid.grid import _target_coords, align_longitudes, normalise_coords
from aid.regrid.remap import _regrid_rim, regrid


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
