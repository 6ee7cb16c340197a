"""One checkpoint, any region: a model trained on the western UK downscales a shifted window and the
whole 33 x 49 box of the real ERA5 month (tiny network, 40 steps, 3 network evaluations per sample).

Data: ERA5 2 m temperature, March 2019 (96 hours), training window lat 50..57.75, lon -10..-2.25
(32 x 32), and its x8 conservative coarsening over the whole box (lat 50..58, lon -10..2).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from aid.config import fill_defaults
from aid.errors import CheckpointError
from aid.grids import fine_grid
from aid.io import write_netcdf
from aid.model.api import Downscaler
from aid.model.data import static_channels, static_fields
from aid.model.tiling import tile_starts
from aid.model.train import train_from_config
from aid.regrid import coarsen, normalise_coords, upsample

STEPS = 2  # Heun steps: 3 network evaluations
SIGMA_MAX = 0.5  # two Heun steps cannot remove more starting noise than this (normalised units)


def _cfg(lat: list[float], lon: list[float]) -> dict:
    return fill_defaults({
        "search": {"variables": ["tas"]},
        "domain": {"id": "T", "lat": lat, "lon": lon},
        "grid": {"coarse_resolution": 2.0, "fine_resolution": 0.25},
        "regrid": {"method": "conservative", "backend": "xarray-regrid"},
        "model": {"size": "tiny", "upsample": "bicubic", "pr_transform": "log1p", "lat_weighting": True,
                  "prior": None, "tune_sampler": False,
                  "train": {"years": [2019, 2019], "steps": 40, "batch_size": 8, "lr": 2e-3, "lr_schedule": "cosine",
                            "warmup_steps": 5, "ema_decay": 0.9, "grad_clip": 1.0, "seed": 0, "sigma_relative": False}},
    })


@pytest.fixture(scope="module")
def trained(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("anyregion")
    era5 = shared_data / "era5"
    ds = xr.open_dataset(era5 / "era5-2mt-2019-03-uk.grib", engine="cfgrib", backend_kwargs={"indexpath": ""})
    ds = normalise_coords(ds[["t2m"]].drop_vars(["valid_time", "number", "step", "surface"], errors="ignore"))
    box = ds.rename(t2m="tas").isel(time=slice(0, 96)).load()
    box["tas"].attrs["units"] = "K"
    assert dict(box.tas.sizes) == {"time": 96, "lat": 33, "lon": 49}
    whole = _cfg([50.0, 58.0], [-10.0, 2.0])
    coarse = coarsen(box, whole).load()  # the coarse grid of the whole box
    cfg = _cfg([50.0, 57.75], [-10.0, -2.25])
    fg = fine_grid(cfg)
    write_netcdf(box.sel(lat=fg.lat.values, lon=fg.lon.values), d / "fine_tas.nc")
    write_netcdf(coarse, d / "coarse_tas.nc")
    static = era5 / "era5-static-z-lsm-global.nc"
    ck = train_from_config(cfg, [d / "fine_tas.nc"], [d / "coarse_tas.nc"], static, d / "ck.pt", threads=1)
    days = coarse.isel(time=[10, 40, 70, 90])
    return {"dir": d, "box": box, "coarse": coarse, "days": days, "ck": ck, "static": static, "cfg": cfg}


def _grid(lat: list[float], lon: list[float]) -> tuple[np.ndarray, np.ndarray]:
    g = fine_grid(_cfg(lat, lon))
    return g.lat.values, g.lon.values


def test_shifted_window_and_whole_box(trained: dict, caplog: pytest.LogCaptureFixture) -> None:
    dl = Downscaler.load(trained["ck"], device="cpu")
    assert dl.training_domain["lat"] == [50.0, 57.75] and dl.training_domain["lon"] == [-10.0, -2.25]
    samples = [1, 2, 3, 4]
    home = dl.sample(trained["days"], samples=samples, seed=0, steps=STEPS, sigma_max=SIGMA_MAX, stream="test")
    assert "WARNING" not in home.attrs["aid_training_domain"]

    # a window shifted 4 deg east (16 of its 32 columns overlap the training window)
    lat, lon = _grid([50.0, 57.75], [-6.0, 1.75])
    with caplog.at_level(logging.WARNING, logger="aid.model.api"):
        moved = dl.for_grid(lat, lon)
    assert "extends beyond the training region" in caplog.text
    # its static channels are the global file's at the new cells (the overlap equals the training grid's)
    oro, lsm = static_fields(trained["static"], lat, lon)
    np.testing.assert_array_equal(moved.static.numpy(), static_channels(oro, lsm, lat, lon))
    np.testing.assert_allclose(moved.static.numpy()[..., :16], dl.static.numpy()[..., 16:], atol=1e-6)
    shifted = moved.sample(trained["days"], samples=samples, seed=0, steps=STEPS, sigma_max=SIGMA_MAX, stream="test")
    np.testing.assert_allclose(shifted.lon.values, lon)
    assert "WARNING" in shifted.attrs["aid_training_domain"] and "lat 50..57.75" in shifted.attrs["aid_training_domain"]

    # on the overlap, the two ensembles agree within sampling noise
    a = home.tas.values[..., 16:].astype(np.float64)
    b = shifted.tas.values[..., :16].astype(np.float64)
    noise = np.sqrt(((a[0] - a[1]) ** 2).mean())  # two members of one ensemble
    mean_diff = np.sqrt(((a.mean(0) - b.mean(0)) ** 2).mean())
    assert noise > 0.01
    assert mean_diff < noise, (mean_diff, noise)
    # and both sit as close to the truth as the in-domain result does
    truth = trained["box"].tas.sel(time=trained["days"].time).values[:, :32, 16:32]
    err_home = np.abs(a.mean(0) - truth).mean()
    err_new = np.abs(b.mean(0) - truth).mean()
    assert err_new < 1.2 * err_home + 0.05, (err_new, err_home)

    # the whole 33 x 49 box in 24 x 24 tiles: no seam at the tile borders
    lat, lon = _grid([50.0, 58.0], [-10.0, 2.0])
    full = dl.for_grid(lat, lon).sample(trained["days"], samples=samples, seed=0, steps=STEPS, sigma_max=SIGMA_MAX, tile=24, stream="test")
    assert full.tas.shape == (4, 4, 33, 49)
    up = upsample(trained["days"], fine_grid(_cfg([50.0, 58.0], [-10.0, 2.0])), "bicubic").tas.values
    r = full.tas.values.astype(np.float64) - up[None]
    step_col = np.abs(np.diff(r, axis=3)).mean(axis=(0, 1, 2))  # (48,) mean jump between columns j, j+1
    step_row = np.abs(np.diff(r, axis=2)).mean(axis=(0, 1, 3))
    cols = tile_starts(49, 24, 6)
    rows = tile_starts(33, 24, 6)
    assert len(cols) > 1 and len(rows) > 1
    edge_c = sorted({c - 1 for c in cols[1:]} | {c + 23 for c in cols[:-1]})
    edge_r = sorted({r - 1 for r in rows[1:]} | {r + 23 for r in rows[:-1]})
    inner_c = np.setdiff1d(np.arange(48), edge_c)
    inner_r = np.setdiff1d(np.arange(32), edge_r)
    assert step_col[edge_c].max() <= step_col[inner_c].max(), (step_col[edge_c], step_col[inner_c].max())
    assert step_row[edge_r].max() <= step_row[inner_r].max(), (step_row[edge_r], step_row[inner_r].max())
    err_full = np.abs(full.tas.values - trained["box"].tas.sel(time=trained["days"].time).values[None]).mean(0)
    assert float(err_full.mean()) < 1.3 * float(np.abs(home.tas.values - trained["box"].tas.sel(
        time=trained["days"].time).values[None, :, :32, :32]).mean(0).mean()) + 0.05


def test_aid_sample_on_another_grid(trained: dict, tmp_path: Path) -> None:
    """``aid sample --lat --lon --static`` writes the requested grid, flagged outside the training region."""
    from aid.cli import main

    out = tmp_path / "s.nc"
    rc = main(["sample", "--checkpoint", str(trained["ck"]), "--coarse", str(trained["dir"] / "coarse_tas.nc"),
               "--out", str(out), "--steps", str(STEPS), "--start", "2019-03-02T00", "--end", "2019-03-02T01",
               "--lat", "52", "57.75", "--lon", "-4", "1.75", "--static", str(trained["static"]),
               "--source", "ERA5", "--experiment", "evaluation", "--member", "r1i1p1f1"])
    assert rc == 0
    with xr.open_dataset(out) as ds:
        assert ds.tas.shape == (1, 2, 24, 24)
        np.testing.assert_allclose(ds.lat.values[[0, -1]], [52.0, 57.75])
        np.testing.assert_allclose(ds.lon.values[[0, -1]], [-4.0, 1.75])
        assert "WARNING" in ds.attrs["aid_training_domain"]


def test_prior_checkpoint_refuses_another_grid(trained: dict) -> None:
    """The residual prior is per pixel of the training grid: moving it is refused by name."""
    from aid.model.checkpoint import load_checkpoint
    from aid.model.prior import RidgePrior

    content, digest = load_checkpoint(trained["ck"])
    h, w = len(content["fine_lat"]), len(content["fine_lon"])
    fake = RidgePrior(1, 8, False, "condition", np.zeros((h, w, 13, 1)), np.zeros((h, w, 13)), np.zeros((h, w, 1)),
                      np.ones(1))
    dl = Downscaler(dict(content, prior=fake.to_content()), digest, trained["ck"])
    with pytest.raises(CheckpointError, match="per-pixel residual prior"):
        dl.for_grid(*_grid([50.0, 57.75], [-6.0, 1.75]))
    assert dl.for_grid(dl.lat, dl.lon) is dl
