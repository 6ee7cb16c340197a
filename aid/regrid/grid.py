"""Source and target grids for regridding: names, order, longitude windows, edges and ghost cells.

Why apart: every regridding path (conservative weights, xarray-regrid's other methods, xESMF,
upsampling) first agrees on what the grids are; nothing here touches the data values.
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def _rename_latlon(ds: xr.Dataset) -> xr.Dataset:
    """lat/lon names, cell-bounds variables dropped; the data are not touched (no copy)."""
    ren = {k: v for k, v in {"latitude": "lat", "longitude": "lon"}.items() if k in ds.dims or k in ds.coords}
    if ren:
        ds = ds.rename(ren)
    drop = [v for v in ds.data_vars if v.endswith(("_bnds", "_bounds")) or v in ("lat_bnds", "lon_bnds")]
    return ds.drop_vars(drop, errors="ignore")


def source_lat_bounds(ds: xr.Dataset) -> np.ndarray | None:
    """The source's own latitude cell bounds, (n_lat, 2) in stored row order, or None.

    Taken from the variable the latitude's CF ``bounds`` attribute names (else ``lat_bnds``/
    ``lat_bounds``), and only when they are usable: one pair per row, within -90..90, each
    containing its centre, rows not overlapping. Otherwise regridding uses mid-points.
    """
    name = "lat" if "lat" in ds.coords else "latitude" if "latitude" in ds.coords else None
    if name is None or name not in ds.dims:
        return None
    cands = [ds[name].attrs.get("bounds"), "lat_bnds", "lat_bounds", "latitude_bnds"]
    bname = next((c for c in cands if c and c in ds.variables), None)
    if bname is None:
        return None
    b = np.asarray(ds[bname].values, dtype="float64")
    c = np.asarray(ds[name].values, dtype="float64")
    if b.shape != (c.size, 2) or not np.isfinite(b).all():
        return None
    b = np.sort(b, axis=1)
    order = np.argsort(c)
    ok = (b.min() >= -90.0 - 1e-6) and (b.max() <= 90.0 + 1e-6) and np.all((b[:, 0] <= c + 1e-9) & (c <= b[:, 1] + 1e-9))
    ok = ok and bool(np.all(b[order][1:, 0] >= b[order][:-1, 1] - 1e-6))
    if not ok or c.size < 2:
        return None
    # bounds that are just the mid-points (a regular grid) add nothing: keep the mid-point path,
    # whose results are then bit for bit what they were
    cs = c[order]
    h = float(np.median(np.diff(cs)))
    mid = np.clip(np.concatenate([[cs[0] - h / 2], (cs[:-1] + cs[1:]) / 2, [cs[-1] + h / 2]]), -90.0, 90.0)
    edges = np.concatenate([[b[order][0, 0]], b[order][:, 1]])
    if np.abs(edges - mid).max() <= 1e-6 * abs(h) and np.allclose(b[order][1:, 0], b[order][:-1, 1], atol=1e-6 * abs(h)):
        return None
    return b


def normalise_coords(ds: xr.Dataset) -> xr.Dataset:
    """lat/lon names, latitude ascending, longitudes in -180..180 sorted.

    An axis already in order is left alone: ``sortby`` always copies the whole array (fancy
    indexing), which for 100 global 0.25 deg fields is ~0.5 s per axis for nothing.
    """
    ds = _rename_latlon(ds)
    if "lon" in ds.coords and float(ds.lon.max()) > 180:
        ds = ds.assign_coords(lon=((ds.lon + 180) % 360) - 180)
    for dim in ("lon", "lat"):
        if dim in ds.dims and not ds.indexes[dim].is_monotonic_increasing:
            ds = ds.sortby(dim)
    return ds


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
    """One ghost cell on each side of lat and lon (lon only if not already global), repeating the edge values.

    The real edge cells keep their exact extent (the midpoint to a ghost one spacing away is the
    edge), so a target inside an edge cell gets that cell's value and one straddling two edge
    cells their area-weighted mean, as a conservative regridder would give.
    """
    for dim in ("lat", "lon"):
        vals = src[dim].values.astype("float64")
        if vals.size < 2:
            continue
        h = _spacing(vals)
        if dim == "lon" and vals[-1] - vals[0] + h >= 360.0 - 1e-6 * h:
            # a global source already has its periodic columns (align_longitudes): a ghost here
            # would sit on a real column modulo 360 with the wrong data, and xarray-regrid, which
            # wraps longitudes and keeps the first of two coinciding columns, used the ghost
            # (seen: polar rim rows at 177E took the 179E value)
            continue
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
