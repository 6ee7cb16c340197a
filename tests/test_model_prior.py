"""The linear residual prior and the per-checkpoint sampler tuning, on real ERA5 (UK t2m, March 2019)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scoringrules as sr
import torch
import xarray as xr

from aid.config import fill_defaults
from aid.downscale import sampler_settings
from aid.errors import CheckpointError
from aid.grids import fine_grid
from aid.io import write_netcdf
from aid.model import prior as residual_prior
from aid.model import transforms
from aid.model.api import Downscaler
from aid.model.checkpoint import load_checkpoint
from aid.model.data import time_features
from aid.model.prepare import prepare_training
from aid.model.train import train_from_config
from aid.model.tune import CANDIDATES, NOISE_FACTORS, TIE, choose, fair_crps
from aid.regrid import coarsen, normalise_coords, upsample

ERA5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "era5"
if not ERA5.exists():
    ERA5 = Path("/work/shared/data/era5")
STATIC = ERA5 / "era5-static-z-lsm-global.nc"


def _cfg(steps: int = 30, prior: dict | None = None) -> dict:
    return fill_defaults({
        "search": {"variables": ["tas"]},
        "domain": {"id": "T", "lat": [50.0, 57.75], "lon": [-10.0, 1.75]},
        "grid": {"coarse_resolution": 2.0, "fine_resolution": 0.25},
        "regrid": {"method": "conservative", "backend": "xarray-regrid"},
        "model": {"size": "tiny", "upsample": "bicubic", "pr_transform": "log1p", "lat_weighting": True,
                  "prior": prior,
                  "train": {"years": [2019, 2019], "steps": steps, "batch_size": 8, "lr": 2e-3,
                            "lr_schedule": "cosine", "warmup_steps": 5, "ema_decay": 0.9, "grad_clip": 1.0, "seed": 0,
                            "use_doy": False, "sigma_relative": False}},
    })


@pytest.fixture(scope="module")
def march(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Real hourly ERA5 t2m, 32 x 48, with its x8 conservative coarsening; train = days 1-14, test = 25-31."""
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("march")
    ds = xr.open_dataset(ERA5 / "era5-2mt-2019-03-uk.grib", engine="cfgrib", backend_kwargs={"indexpath": ""})
    ds = normalise_coords(ds[["t2m"]].drop_vars(["valid_time", "number", "step", "surface"], errors="ignore"))
    ds = ds.rename(t2m="tas")
    ds["tas"].attrs["units"] = "K"
    cfg = _cfg()
    fg = fine_grid(cfg)
    fine = ds.sel(lat=fg.lat.values, lon=fg.lon.values).load()
    coarse = coarsen(fine, cfg).load()
    day = fine.time.dt.day.values
    train, test = day <= 14, day >= 25
    write_netcdf(fine.isel(time=train), d / "fine_tas.nc")
    write_netcdf(coarse.isel(time=train), d / "coarse_tas.nc")
    return {"dir": d, "cfg": cfg, "fine": fine, "coarse": coarse, "train": train, "test": test, "grid": fg}


def test_prior_halves_the_bicubic_error_on_unseen_days(march: dict) -> None:
    """A 3x3-stencil ridge fitted on 14 days explains most of the residual of 7 later days."""
    cfg = march["cfg"]
    prep = prepare_training(cfg, [march["dir"] / "fine_tas.nc"], [march["dir"] / "coarse_tas.nc"], STATIC)
    y, cond, tfeat = prep.arrays()
    fitted, cv = residual_prior.fit(cond, tfeat, y, 8, 1, use_doy=False)
    # cross-fitted predictions are honest: they explain much, but not all, of the training residual
    rms_y = float(np.sqrt((y**2).mean()))
    rms_cv = float(np.sqrt(((y - cv) ** 2).mean()))
    rms_in = float(np.sqrt(((y - fitted.predict(cond, tfeat)) ** 2).mean()))
    assert rms_cv < 0.7 * rms_y
    assert rms_in < rms_cv  # in-sample fit is optimistic; training the network on it would over-trust it
    # unseen days: bicubic + prior against bicubic alone, in kelvin
    c_test = march["coarse"].isel(time=march["test"])
    truth = march["fine"].tas.isel(time=march["test"]).values.astype(np.float64)
    bic = upsample(c_test, march["grid"], "bicubic").tas.transpose("time", "lat", "lon").values.astype(np.float64)
    # conditioned as in training: level-free (anomaly from each field's domain mean, training std)
    c_bic = transforms.normalise_coarse(bic[:, None], prep.mean, prep.std, prep.free,
                                        bic.mean(axis=(1, 2))[:, None]).astype(np.float32)
    corr = bic + fitted.predict(c_bic, time_features(c_test.time.values))[:, 0] * prep.std[0]
    mae_bic, mae_prior = np.abs(bic - truth).mean(), np.abs(corr - truth).mean()
    assert 0.6 < mae_bic < 0.9  # the documented bicubic error of this month
    assert mae_prior < 0.62 * mae_bic, (mae_prior, mae_bic)


def test_prior_does_not_extrapolate_outside_the_training_climate(march: dict) -> None:
    """A coarse field far outside training (a scenario's extreme day) cannot push the linear prior past
    the range of its own cross-fitted training predictions; in-range fields are predicted unchanged."""
    cfg = march["cfg"]
    prep = prepare_training(cfg, [march["dir"] / "fine_tas.nc"], [march["dir"] / "coarse_tas.nc"], STATIC)
    y, cond, tfeat = prep.arrays()
    fitted, cv = residual_prior.fit(cond, tfeat, y, 8, 1, use_doy=False)
    np.testing.assert_allclose(fitted.lo, cv.min(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(fitted.hi, cv.max(axis=(0, 2, 3)), rtol=1e-6)
    unclipped = dataclasses.replace(fitted, lo=None, hi=None)  # what checkpoints before the guard did
    # in-range: the guard changes (almost) nothing on the training fields themselves
    inside = fitted.predict(cond, tfeat)
    assert np.mean(inside != unclipped.predict(cond, tfeat)) < 0.01
    # a tilted, amplified field (+-6 std across the domain): the raw linear map leaves the range
    w = cond.shape[-1]
    wild = (cond[:8] * 6 + np.linspace(-6, 6, w, dtype=np.float32)[None, None, None, :]).astype(np.float32)
    raw = unclipped.predict(wild, tfeat[:8])
    assert raw.max() > fitted.hi[0] or raw.min() < fitted.lo[0]
    out = fitted.predict(wild, tfeat[:8])
    assert out.min() >= fitted.lo[0] - 1e-6 and out.max() <= fitted.hi[0] + 1e-6
    # the bounds travel with the checkpoint content
    again = residual_prior.RidgePrior.from_content(fitted.to_content())
    np.testing.assert_allclose(again.predict(wild, tfeat[:8]), out, atol=1e-6)


def test_prior_penalty_grows_when_the_signal_is_noise() -> None:
    """Blocked CV picks the largest penalty for a pure-noise target and a small one for a linear signal."""
    rng = np.random.default_rng(0)
    cond = rng.normal(size=(200, 1, 16, 16)).astype(np.float32)
    tfeat = time_features(np.arange("2019-03-01", "2019-03-10", np.timedelta64(1, "h"), dtype="datetime64[h]")[:200]
                          .astype("datetime64[ns]"))
    noise = rng.normal(size=cond.shape).astype(np.float32)
    p_noise, _ = residual_prior.fit(cond, tfeat, noise, 4, 1, use_doy=False)
    east = cond[..., np.clip(np.arange(16) + 4, 0, 15)]  # the coarse cell to the east, clamped at the edge
    signal = (0.8 * east + 0.05 * noise).astype(np.float32)
    p_sig, cv = residual_prior.fit(cond, tfeat, signal, 4, 1, use_doy=False)
    assert p_noise.lam[0] == max(residual_prior.LAMBDAS)
    assert p_sig.lam[0] <= 1e-3
    assert np.sqrt(((cv - signal) ** 2).mean()) < 0.07


def test_fair_crps_matches_scoringrules() -> None:
    rng = np.random.default_rng(1)
    ens, obs = rng.normal(size=(5, 40, 7)), rng.normal(size=(40, 7))
    ref = sr.crps_ensemble(obs, ens, m_axis=0, estimator="fair")
    np.testing.assert_allclose(fair_crps(ens, obs), ref, rtol=1e-10, atol=1e-12)


def test_checkpoint_with_prior_and_tuned_sampler(march: dict, tmp_path: Path) -> None:
    """Training stores the prior and the chosen sampler; inference rebuilds both; config can override."""
    cfg = _cfg(steps=30, prior={"half_width": 1, "mode": "offset"})
    cfg["model"]["tune_noise_scale"] = True
    ck = tmp_path / "ck.pt"
    train_from_config(cfg, [march["dir"] / "fine_tas.nc"], [march["dir"] / "coarse_tas.nc"], STATIC, ck, threads=1)
    content, _ = load_checkpoint(ck)
    assert content["prior"]["mode"] == "offset" and content["prior"]["coef"].shape[:2] == (32, 48)
    tuned = content["sampler"]
    assert (tuned["steps"], tuned["sigma_max"], tuned["rho"]) in CANDIDATES
    assert len(tuned["table"]) == len(CANDIDATES)
    best = min(r["crps_fair_normalised"] for r in tuned["table"])
    chosen = next(r for r in tuned["table"] if (r["steps"], r["sigma_max"], r["rho"])
                  == (tuned["steps"], tuned["sigma_max"], tuned["rho"]))
    assert chosen["crps_fair_normalised"] <= best * 1.005 and chosen == choose(tuned["table"])
    assert all(0.05 < r["spread_skill"] < 5 for r in tuned["table"])
    # the per-variable noise factor: the one with (within the tie margin) the lowest validation CRPS
    factor = tuned["noise_scale"]["tas"]
    scored = {r["factor"]: r["crps_fair_normalised_per_channel"][0] for r in tuned["noise_scale_table"]}
    assert set(scored) == set(NOISE_FACTORS) and scored[factor] <= min(scored.values()) * (1 + TIE)
    dl = Downscaler.load(ck, device="cpu")
    assert dl.prior is not None and dl.sampler_defaults == {**{k: tuned[k] for k in ("steps", "churn", "rho", "sigma_max")},
                                                    "day_correlation": content["day_correlation"]["value"],
                                                    "noise_scale": {"tas": factor}}
    # null config keys take the checkpoint's choice, set ones override it
    assert sampler_settings({"steps": None, "churn": None, "rho": None, "sigma_max": None, "noise_scale": None},
                            dl.sampler_defaults) == {k: dl.sampler_defaults[k]
                                                     for k in ("steps", "churn", "rho", "sigma_max", "noise_scale")}
    assert sampler_settings({"steps": None, "churn": None, "rho": None, "sigma_max": None, "noise_scale": {"tas": 1.5}},
                            dl.sampler_defaults)["noise_scale"] == {"tas": 1.5}
    # the day correlation was estimated on consecutive training days (hourly March: same hour, next day)
    assert content["day_correlation"]["pairs"] >= 8 and 0.0 <= content["day_correlation"]["value"] <= 0.95
    assert sampler_settings({"steps": 9, "churn": None, "rho": None, "sigma_max": 5.0, "noise_scale": None},
                            dl.sampler_defaults)["steps"] == 9
    # offset mode: the members' mean sits near bicubic + prior, not near bicubic alone
    c_test = march["coarse"].isel(time=np.flatnonzero(march["test"])[:6])
    out = dl.sample(c_test, samples=[1, 2, 3, 4], seed=0, **dl.sampler_defaults, stream="test")
    truth = march["fine"].tas.sel(time=c_test.time).values
    bic = upsample(c_test, march["grid"], "bicubic").tas.transpose("time", "lat", "lon").values
    assert np.abs(out.tas.mean("sample").values - truth).mean() < 0.8 * np.abs(bic - truth).mean()
    assert out.attrs["aid_sampler_noise_scale"] == f"tas {factor:g}"
    # the factor scales the members' spread about their mean (linearly for a Gaussian target)
    spread = {}
    for f in (0.5, 2.0):
        o = dl.sample(c_test, samples=[1, 2, 3, 4], seed=0, **{**dl.sampler_defaults, "noise_scale": {"tas": f}},
                      stream="test")
        spread[f] = float(o.tas.std("sample").mean())
        assert o.attrs["aid_sampler_noise_scale"] == f"tas {f:g}"
    assert 2.5 < spread[2.0] / spread[0.5] < 6.0, spread
    # a factor for a variable the checkpoint does not downscale is refused, naming the key and the fix
    with pytest.raises(CheckpointError, match="(?s)noise_scale names \\['pr'\\].*name only the checkpoint's variables"):
        dl.noise_factors({"pr": 1.2})
