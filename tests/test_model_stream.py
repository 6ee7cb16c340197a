"""The lazily read training archive on real ERA5: validation split, train-only statistics, pieces.

Data: ERA5 2 m temperature over the UK, March 2019 (hourly, 744 steps, 32 x 32 cells here) with
its x8 conservative coarsening, written as reference files; the real daily time axis of the ERA5
Canadian-cities file (1990-1993) for the seasonal spread of the validation split.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid.config import fill_defaults
from aid.grids import fine_grid
from aid.io import write_netcdf
from aid.model.data import validation_split
from aid.model.prepare import prepare_training
from aid.model.train import training_stream
from aid.regrid import coarsen, normalise_coords, upsample


def _cfg(prior: dict | None = None) -> dict:
    return fill_defaults({
        "search": {"variables": ["tas"]},
        "domain": {"id": "T", "lat": [50.0, 57.75], "lon": [-10.0, -2.25]},
        "grid": {"coarse_resolution": 2.0, "fine_resolution": 0.25},
        "regrid": {"method": "conservative", "backend": "xarray-regrid"},
        "model": {"size": "tiny", "upsample": "bicubic", "pr_transform": "log1p", "lat_weighting": True,
                  "prior": prior,
                  "train": {"years": [2019, 2019], "steps": 10, "batch_size": 8, "seed": 0, "use_doy": False,
                            "warmup_steps": 0, "sigma_relative": False}},
    })


@pytest.fixture(scope="module")
def month(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("stream")
    ds = xr.open_dataset(shared_data / "era5" / "era5-2mt-2019-03-uk.grib", engine="cfgrib",
                         backend_kwargs={"indexpath": ""})
    ds = normalise_coords(ds[["t2m"]].drop_vars(["valid_time", "number", "step", "surface"], errors="ignore"))
    cfg = _cfg()
    fg = fine_grid(cfg)
    fine = ds.rename(t2m="tas").sel(lat=fg.lat.values, lon=fg.lon.values).load()
    fine["tas"].attrs["units"] = "K"
    coarse = coarsen(fine, cfg).load()
    write_netcdf(fine, d / "fine_tas.nc")
    write_netcdf(coarse, d / "coarse_tas.nc")
    files = ([d / "fine_tas.nc"], [d / "coarse_tas.nc"])
    return {"dir": d, "cfg": cfg, "fine": fine, "coarse": coarse, "grid": fg, "files": files,
            "static": shared_data / "era5" / "era5-static-z-lsm-global.nc"}


def test_validation_blocks_are_spread_over_every_season(shared_data: Path) -> None:
    """Four real years of daily steps: ~10 % validation in every season, in week-long blocks."""
    ds = xr.open_dataset(shared_data / "era5" / "daily_surface_cancities_1990-1993.nc")
    times = ds.time.values
    tr, va = validation_split(times, 0.1, 7)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(times)
    assert 0.08 < len(va) / len(times) < 0.12
    months = ds.time.dt.month.values
    for season in ([12, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]):
        in_season = np.isin(months, season)
        frac = np.isin(np.flatnonzero(in_season), va).mean()
        assert 0.04 < frac < 0.2, (season, frac)  # the last 10 % (one autumn/winter) fails this
    # consecutive validation days come in blocks (neighbouring days are not split apart)
    runs = np.split(va, np.flatnonzero(np.diff(va) != 1) + 1)
    assert {len(r) for r in runs} <= {7} | {len(runs[-1])}


def test_hourly_validation_blocks_are_whole_days(shared_data: Path) -> None:
    """The real UK month's hours (bench/model_skill.py trains on days 1-24): validation holds whole
    days. Hours of one day are near-copies, so validation hours between training hours of the same
    day would be scored on fields the network has practically seen (and the sampler tuned on them
    under-dispersed on new days: bench/calibration.py)."""
    ds = xr.open_dataset(shared_data / "era5" / "era5-2mt-2019-03-uk.grib", engine="cfgrib",
                         backend_kwargs={"indexpath": ""})
    times = ds.time.values[ds.time.dt.day.values <= 24]
    assert len(times) == 24 * 24
    tr, va = validation_split(times, 0.1, 7)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(times)
    days = lambda idx: set(times[idx].astype("datetime64[D]").tolist())  # noqa: E731
    assert days(va) and not days(va) & days(tr)  # no day on both sides
    assert len(va) % 24 == 0 and len(days(va)) >= 2  # whole days, more than one
    assert 0.05 < len(va) / len(times) < 0.15


def test_statistics_come_from_the_training_fields_only(month: dict) -> None:
    """mean/std/sigma_data are those of the training steps, not of all steps (validation unseen),
    and the per-piece upsampling equals the whole-domain bicubic upsampling."""
    prep = prepare_training(month["cfg"], *month["files"], month["static"])
    assert prep.archive.n == 744
    va = prep.val_idx
    # spread over the month, not its last 10 %
    assert va.min() < 744 * 0.3 and va.max() > 744 * 0.6 and 0.08 < len(va) / 744 < 0.12
    f = month["fine"].tas.transpose("time", "lat", "lon").values.astype(np.float64)
    tr = prep.train_idx
    assert prep.mean[0] == pytest.approx(f[tr].mean(), abs=1e-9)
    assert prep.std[0] == pytest.approx(f[tr].std(), rel=1e-9)
    assert abs(f.mean() - f[tr].mean()) > 1e-3  # including validation would change it measurably
    bic = upsample(month["coarse"], month["grid"], "bicubic").tas.transpose("time", "lat", "lon").values
    rms = np.sqrt((((f[tr] - bic[tr]) / prep.std[0]) ** 2).mean())
    assert prep.sigma_data[0] == pytest.approx(rms, rel=1e-6)  # the test's bicubic is float32
    y, cond, _ = prep.arrays(va[:5])
    # temperature is conditioned level-free: the anomaly from the whole domain's mean of that step
    lvl = bic[va[:5]].astype(np.float64).mean(axis=(1, 2))[:, None, None]
    np.testing.assert_allclose(cond[:, 0], (bic[va[:5]] - lvl) / prep.std[0], atol=1e-5)
    np.testing.assert_allclose(y[:, 0], (f[va[:5]] - bic[va[:5]]) / prep.std[0], atol=1e-5)


def test_pieces_and_bounded_cache_give_the_whole_domain_values(month: dict) -> None:
    """With the residual prior, a (time, window) piece equals the whole-domain field cropped; a
    stream with a small cache holds at most its capacity and serves the same values."""
    cfg = copy.deepcopy(month["cfg"])
    cfg["model"]["prior"] = {"half_width": 1, "mode": "offset"}
    prep = prepare_training(cfg, *month["files"], month["static"])
    t = np.concatenate([prep.train_idx[100:104], prep.val_idx[:2]])
    y_all, c_all, _ = prep.arrays(np.sort(t))
    y, c = prep.piece(np.sort(t), slice(7, 23), np.arange(11, 29))
    np.testing.assert_allclose(y, y_all[:, :, 7:23, 11:29], atol=2e-5)
    np.testing.assert_allclose(c, c_all[:, :, 7:23, 11:29], atol=2e-5)
    assert np.abs(c[:, 1]).max() > 0.05  # the prior's channel is not empty

    stream = training_stream(prep, (16, 16), 8, 0, 0, 1, cache_mb=0.2)
    assert 1 <= stream.active < len(stream.units)
    for step in range(0, 60, 3):
        yb, cb, ti, r0, c0 = stream.batch_at(step)
        assert len(stream._cache) <= stream.active
        assert np.isin(ti, prep.train_idx).all()
        k = step % 8
        y1, c1 = prep.piece(np.array([ti[k]]), slice(int(r0[k]), int(r0[k]) + 16), np.arange(c0[k], c0[k] + 16))
        np.testing.assert_allclose(yb[k], y1[0], atol=2e-5)
        np.testing.assert_allclose(cb[k], c1[0], atol=2e-5)
    # the same step always draws the same batch (resumed runs see what the uninterrupted one saw)
    again = training_stream(prep, (16, 16), 8, 0, 0, 1, cache_mb=0.2).batch_at(21)
    np.testing.assert_array_equal(again[0], stream.batch_at(21)[0])
