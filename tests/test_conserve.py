"""Coarse-cell conservation (aid.model.conserve) on real ERA5 fields, and in the pipeline's product:
every downscaled pr sample averages back to its coarse input, so a wetter input comes out exactly as
much wetter (the pseudo-global-warming test of issue 19 that pr failed without it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid.config import fill_defaults
from aid.model.conserve import RTOL, CellMap, kind
from aid.regrid import coarsen, normalise_coords

#: Clausius-Clapeyron scaling at +4 K (bench/pgw.py's pr change).
CC_4K = 1.0 + 0.07 * 4.0


def _box(shared_data: Path, name: str) -> xr.Dataset:
    return normalise_coords(xr.open_dataset(shared_data / "era5" / name))


@pytest.fixture(scope="module")
def flood(shared_data: Path) -> dict:
    """Real hourly ERA5 precipitation of the 2021-07-15 Rhine/Meuse flood day (each hour taken as a
    day's pattern, mm/d) and its conservative 2 deg coarsening by the pipeline's own regridder."""
    ds = _box(shared_data, "ERA5_2021-07-15_tp.nc")
    pr = (ds["tp"].clip(min=0) * 24000.0).rename("pr").to_dataset()
    pr["pr"].attrs["units"] = "mm d-1"
    cfg = fill_defaults({"search": {"variables": ["pr"]}, "domain": {"id": "T", "lat": [45.0, 55.0], "lon": [0.0, 10.0]},
                         "grid": {"coarse_resolution": 2.0, "fine_resolution": 0.25},
                         "regrid": {"method": "conservative", "backend": "xarray-regrid"},
                         "reference": {"name": "x"}, "adjust": {}, "output_dir": "unused"})
    coarse = coarsen(pr, cfg).load()
    cmap = CellMap.build(pr.lat.values, pr.lon.values, coarse.lat.values, coarse.lon.values)
    return {"fine": pr["pr"].values.astype(np.float64), "coarse": coarse["pr"].values.astype(np.float64), "map": cmap}


def test_cell_means_are_the_conservative_regrid(flood: dict) -> None:
    """The operator's coarse-cell means of the real field are the pipeline's conservative coarsening
    (fine cells on a 2 deg edge are shared by two cells), to 0.1 % of the field's largest value."""
    m = flood["map"].cell_means(flood["fine"])
    assert m.shape == flood["coarse"].shape
    assert np.nanmax(np.abs(m - flood["coarse"])) <= 1e-3 * np.nanmax(flood["coarse"])
    assert np.nanmax(flood["coarse"]) > 20  # a wet day: mm/d


def test_multiplicative_pr_keeps_the_pattern_and_matches_the_coarse(flood: dict) -> None:
    """Hour 3's fine pattern put under hour 15's coarse amounts: every cell mean is the coarse value,
    nothing is negative, the dry fine cells of a cell that stays wet stay dry, the sub-cell ratios of
    a wet cell are kept, and a 28 % wetter input (PGW +4 K) gives exactly 28 % more everywhere."""
    cmap, f, c = flood["map"], flood["fine"][3], flood["coarse"][15]
    assert kind("pr") == "*" and kind("tas") == "+" and kind("uas") == "+"
    g = cmap.conserve(f, c, "*")
    np.testing.assert_allclose(cmap.cell_means(g), c, rtol=10 * RTOL, atol=1e-6)
    assert (g >= 0).all()
    wet_cell = (cmap.cell_means(f) > 0.5) & (c > 0.5)
    assert wet_cell.sum() >= 5
    in_wet = (cmap.share_op @ wet_cell.ravel().astype(float)).reshape(f.shape) > 0.999
    assert ((f == 0) & in_wet).sum() > 0
    assert (g[(f == 0) & in_wet] == 0).all()
    ratio = g[in_wet & (f > 0.1)] / f[in_wet & (f > 0.1)]
    assert np.unique(np.round(ratio, 6)).size < ratio.size / 4  # one factor per cell, not per pixel
    np.testing.assert_allclose(cmap.conserve(f, CC_4K * c, "*"), CC_4K * g, rtol=1e-9, atol=1e-9)
    # without the constraint the pattern's own amounts are far from the coarse input
    assert np.nanmax(np.abs(cmap.cell_means(f) - c)) > 5.0


def test_additive_wind_matches_the_coarse(shared_data: Path) -> None:
    """Real 10 m wind (hour 2's pattern under hour 20's coarse wind): cell means match; the fine
    anomaly from the cell mean is unchanged."""
    ds = _box(shared_data, "ERA5_2020-01-01_u10.nc")
    u = ds["u10"].values.astype(np.float64)
    lat, lon = ds.lat.values, ds.lon.values
    clat, clon = np.arange(45.0, 55.01, 2.0), np.arange(1.0, 9.01, 2.0)
    cmap = CellMap.build(lat, lon, clat, clon)
    c = cmap.cell_means(u[20])
    g = cmap.conserve(u[2], c, "+")
    np.testing.assert_allclose(cmap.cell_means(g), c, atol=1e-5)
    assert np.abs(cmap.cell_means(u[2]) - c).max() > 1.0  # a real change was needed


def test_pipeline_pr_is_conserved_and_follows_a_wetter_input(pipeline) -> None:
    """The tiny run's delivered evaluation-year pr samples average back to their coarse input (the
    default downscale.conserve), and the run's checkpoint, given the evaluation days' coarse input
    with pr x 1.28, returns an area-weighted mean over the coarse cells exactly 1.28 times larger
    (without the constraint it does not: the figure is printed for the record)."""
    from aid.evaluate.run import load_ensemble
    from aid.model.api import Downscaler
    from aid.naming import EVALUATION_EXPERIMENT, EVALUATION_MEMBER, deliverable_paths

    out, cfg = pipeline
    assert cfg["downscale"]["conserve"] == ["pr"]
    year = int(cfg["evaluation"]["period"][0])
    files = deliverable_paths(cfg, cfg["reference"]["name"], EVALUATION_EXPERIMENT, EVALUATION_MEMBER, year)
    ens = load_ensemble([str(p) for (v, _), p in files.items() if v == "pr"], "downscaled")["pr"]
    coarse = xr.open_dataset(Path(out) / "reference" / "coarse" / "pr.nc")
    coarse = normalise_coords(coarse).sel(time=coarse.time.dt.year == year)
    cmap = CellMap.build(ens.lat.values, ens.lon.values, coarse.lat.values, coarse.lon.values)
    got = cmap.cell_means(ens.transpose("sample", "time", "lat", "lon").values.astype(np.float64))
    want = coarse["pr"].transpose("time", "lat", "lon").values.astype(np.float64)
    assert got.shape[1:] == want.shape
    # float32 files: within 1e-4 mm/d + 1e-5 relative of the coarse input, every cell, day and sample
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-5, atol=1e-4)

    dl = Downscaler.load(Path(out) / "model" / "checkpoint.pt", device="cpu")
    days = xr.open_mfdataset(sorted(str(p) for p in (Path(out) / "reference" / "coarse").glob("*.nc")))
    days = normalise_coords(days.sel(time=days.time.dt.year == year).isel(time=slice(0, 8)))[dl.variables].load()
    wet = days.copy()
    wet["pr"] = days["pr"] * np.float32(CC_4K)
    wet["pr"].attrs = dict(days["pr"].attrs)
    kw = {"samples": [1, 2], "seed": 5, "steps": 1, "churn": 0.0, "rho": 7.0, "stream": "pgw-test"}
    # the conserved quantity: the area-weighted mean over the coarse cells (cos(lat) is proportional to
    # a 2-degree cell's area); an unweighted fine-grid mean would also count the domain's outer half
    # cells, which lie outside every coarse cell
    area = np.cos(np.deg2rad(coarse.lat.values))[:, None] * np.ones(coarse.sizes["lon"])

    def domain_mean(ds: xr.Dataset) -> float:
        cells = cmap.cell_means(ds["pr"].transpose("sample", "time", "lat", "lon").values.astype(np.float64))
        return float((cells * area).sum(axis=(-2, -1)).mean() / area.sum())

    ratios = {}
    for conserve in ((), ("pr",)):
        m0 = domain_mean(dl.sample(days, conserve=conserve, **kw))
        m1 = domain_mean(dl.sample(wet, conserve=conserve, **kw))
        ratios[conserve] = m1 / m0
    print(f"pr domain-mean ratio at x{CC_4K}: unconstrained {ratios[()]:.4f}, conserved {ratios[('pr',)]:.4f}")
    assert abs(ratios[("pr",)] - CC_4K) <= 1e-4
    assert dl.sample(days, conserve=("pr",), **kw).attrs["aid_coarse_cell_conservation"].startswith("pr multiplicative")


def test_every_real_pattern_under_every_other_days_amounts(shared_data: Path, flood: dict) -> None:
    """All 72 real hourly patterns of the three ERA5 days (winter, flood, late summer) put under
    shuffled coarse amounts: the hard cases (a sample's rain in fine cells shared with a nearly dry
    neighbour, cells the sample leaves dry) still match every coarse cell, nothing is negative and
    a dry coarse cell is exactly dry."""
    fields = []
    for day in ("2020-01-01", "2021-07-15", "2022-08-31"):
        ds = _box(shared_data, f"ERA5_{day}_tp.nc")
        fields.append((ds["tp"].clip(min=0) * 24000.0).values.astype(np.float64))
    f = np.concatenate(fields)
    cmap = flood["map"]
    c = cmap.cell_means(f)  # the coarse amounts of each real hour (the regridder's, to 0.1 %)
    c[c < 1e-3] = 0.0
    perm = np.random.default_rng(0).permutation(len(f))
    g = cmap.conserve(f[perm], c, "*")
    np.testing.assert_allclose(cmap.cell_means(g), c, rtol=1e-5, atol=1e-4)
    assert (g >= 0).all()
    dry = (cmap.share_op @ (c == 0).reshape(len(c), -1).T.astype(float)).T.reshape(g.shape) > 0
    assert dry.any() and (g[dry] == 0).all()
    # the same field alone gives the same numbers (batch independence)
    np.testing.assert_array_equal(cmap.conserve(f[perm][7], c[7], "*"), g[7])
