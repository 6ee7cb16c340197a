"""The residual EDM downscaler on real ERA5 data (tiny model, few steps, CPU).

Data: ERA5 2 m temperature over the UK, March 2019 (hourly; the first 96 hours, 32 x 48 cells,
coarsened x8 with the pipeline's own conservative coarsening), and ERA5 total precipitation on the
2021-07-15 flood day (24 hours, 32 x 32 cells) for the precipitation path.
"""

from __future__ import annotations

import copy
import json
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
from aid.model import transforms
from aid.model.api import Downscaler
from aid.model.checkpoint import load_checkpoint
from aid.model.data import validation_split
from aid.model.precond import EDM_SIGMA_DATA, EDMDenoiser, edm_coefficients, edm_loss, loss_weight
from aid.model.sampler import heun_sample, member_seed, noise_stream
from aid.model.tiling import tiled_apply, tile_starts
from aid.model.prepare import prepare_training
from aid.model.train import train_from_config, train_model
from aid.model.unet import build_unet
from aid.regrid import coarsen, normalise_coords

ERA5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "era5"
if not ERA5.exists():
    ERA5 = Path("/work/shared/data/era5")
STATIC = ERA5 / "era5-static-z-lsm-global.nc"


def _cfg(variables: list[str], lat: list[float], lon: list[float], steps: int = 40) -> dict:
    return fill_defaults({
        "search": {"variables": variables},
        "domain": {"id": "T", "lat": lat, "lon": lon},
        "grid": {"coarse_resolution": 2.0, "fine_resolution": 0.25},
        "regrid": {"method": "conservative", "backend": "xarray-regrid"},
        "model": {"size": "tiny", "upsample": "bicubic", "pr_transform": "log1p", "lat_weighting": True, "prior": None,
                  "train": {"years": [2000, 2030], "steps": steps, "batch_size": 8, "lr": 2e-3, "lr_schedule": "cosine",
                            "warmup_steps": 5, "ema_decay": 0.9, "grad_clip": 1.0, "seed": 0, "sigma_relative": False}},
    })


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def uk(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Real ERA5 t2m (96 h, 32 x 48) + its x8 conservative coarsening, written as reference files."""
    d = tmp_path_factory.mktemp("uk")
    ds = xr.open_dataset(ERA5 / "era5-2mt-2019-03-uk.grib", engine="cfgrib", backend_kwargs={"indexpath": ""})
    ds = normalise_coords(ds[["t2m"]].drop_vars(["valid_time", "number", "step", "surface"], errors="ignore"))
    ds = ds.rename(t2m="tas")
    cfg = _cfg(["tas"], [50.0, 57.75], [-10.0, 1.75])
    fg = fine_grid(cfg)
    fine = ds.sel(lat=fg.lat.values, lon=fg.lon.values).isel(time=slice(0, 96)).load()
    coarse = coarsen(fine, cfg).load()
    write_netcdf(fine, d / "fine_tas.nc")
    write_netcdf(coarse, d / "coarse_tas.nc")
    ck = d / "ck.pt"
    train_from_config(cfg, [d / "fine_tas.nc"], [d / "coarse_tas.nc"], STATIC, ck, threads=1)
    return {"dir": d, "cfg": cfg, "fine": fine, "coarse": coarse, "ckpt": ck}


# ---------------------------------------------------------------------------------------------
# Preconditioning
# ---------------------------------------------------------------------------------------------
def test_preconditioning_identities(uk: dict) -> None:
    cfg = uk["cfg"]
    prep = prepare_training(cfg, [uk["dir"] / "fine_tas.nc"], [uk["dir"] / "coarse_tas.nc"], STATIC)
    sd = torch.tensor(prep.sigma_data)
    # sigma_data is estimated from the real residual, and it is far from 1 (IPSL-AID's fixed value).
    assert 0.05 < float(sd[0]) < 0.8
    y = torch.from_numpy(prep.arrays()[0])  # the training fields, whose RMS sigma_data is
    assert abs(float(y.pow(2).mean().sqrt()) - float(sd[0])) < 1e-4

    gen = torch.Generator().manual_seed(0)
    for s in (0.01, 0.1, 0.5, 2.0, 20.0):
        sigma = torch.full((y.shape[0],), s)
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, sd)
        x = y + s * torch.randn(y.shape, generator=gen)
        # c_in makes the network input unit variance at every noise level.
        assert abs(float((c_in * x).std()) - 1.0) < 0.06, s
        # lambda(sigma) * c_out^2 = 1: every noise level has unit effective loss weight.
        assert torch.allclose(loss_weight(sigma, sd) * c_out**2, torch.ones(1), atol=1e-5)
        assert torch.allclose(c_noise, torch.log(sigma) / 4)

    # c_skip x + c_out F recovers x as sigma -> 0, whatever F is (a bounded random network).
    net, _ = build_unet("tiny", 1, 6)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2, generator=gen)
    den = EDMDenoiser(net, sd)
    x = y[:4]
    cond = torch.randn(4, 6, *x.shape[-2:], generator=gen)
    tf = torch.zeros(4, 4)
    with torch.no_grad():
        f = net(x, cond, torch.zeros(4), tf)
        assert float(f.abs().max()) > 0.1  # the network output is not trivially zero
        d_small = den(x, torch.tensor(1e-5), cond, tf)
        d_large = den(x, torch.tensor(1e3), cond, tf)
    assert float((d_small - x).abs().max()) < 1e-3 * float(f.abs().max())
    # ... and at large sigma the skip vanishes: D is the network's (scaled) prediction, not x.
    assert float((d_large - x).abs().mean()) > 0.5 * float(x.abs().mean())


def test_sigma_relative_scales_each_residual_channel_to_edm_sigma_data(uk: dict) -> None:
    """sigma_relative: the diffusion sees every channel at sigma_data 0.5; outputs are scaled back."""
    files = [uk["dir"] / "fine_tas.nc"], [uk["dir"] / "coarse_tas.nc"]
    plain = prepare_training(uk["cfg"], *files, STATIC)
    cfg_rel = copy.deepcopy(uk["cfg"])
    cfg_rel["model"]["train"]["sigma_relative"] = True
    rel = prepare_training(cfg_rel, *files, STATIC)
    plain_y, plain_cond, plain_tfeat = plain.arrays()
    rel_y = rel.arrays()[0]
    sd = float(plain.sigma_data[0])
    assert float(rel.sigma_data[0]) == EDM_SIGMA_DATA
    assert float(np.sqrt((rel_y.astype(np.float64) ** 2).mean())) == pytest.approx(EDM_SIGMA_DATA, rel=1e-4)
    assert float(rel.res_scale[0]) == pytest.approx(sd / EDM_SIGMA_DATA, rel=1e-6)
    np.testing.assert_allclose(rel_y * rel.res_scale[0], plain_y, rtol=1e-5, atol=1e-6)
    assert np.all(plain.res_scale == 1.0)
    # inference undoes the scale: same network and noise, residuals (normalised units) times res_scale
    content, digest = load_checkpoint(uk["ckpt"])
    assert "res_scale" in content and float(content["res_scale"][0]) == 1.0
    scaled = dict(content, res_scale=torch.tensor([0.37], dtype=torch.float64))
    cond, tfeat = plain_cond[:2], plain_tfeat[:2]
    unscaled = Downscaler(content, digest, uk["ckpt"])
    assert unscaled.prior is None  # the fixture trains without a prior, so cond needs no prior channels
    a = unscaled.sample_normalised(cond, tfeat, ["d0", "d1"], [1, 2], 0, 3, sigma_max=2.0, stream="test")
    b = Downscaler(scaled, digest, uk["ckpt"]).sample_normalised(cond, tfeat, ["d0", "d1"], [1, 2], 0, 3, sigma_max=2.0, stream="test")
    assert float(np.abs(a).mean()) > 0
    np.testing.assert_allclose(b, 0.37 * a, rtol=1e-6, atol=1e-9)


def test_loss_decreases_on_real_patch(uk: dict) -> None:
    cfg = uk["cfg"]
    prep = prepare_training(cfg, [uk["dir"] / "fine_tas.nc"], [uk["dir"] / "coarse_tas.nc"], STATIC)
    all_y, all_cond, all_tfeat = prep.arrays(np.arange(prep.archive.n))
    torch.manual_seed(0)
    net, _ = build_unet("tiny", 1, 6)
    den = EDMDenoiser(net, torch.tensor(prep.sigma_data))
    g = torch.Generator().manual_seed(1)
    idx = torch.arange(0, 96, 6)
    y = torch.from_numpy(all_y)[idx]
    cond = torch.cat([torch.from_numpy(all_cond)[idx], torch.from_numpy(prep.static)[None].expand(len(idx), -1, -1, -1)], 1)
    tf = torch.from_numpy(all_tfeat)[idx]
    sig = torch.tensor([0.05, 0.2, 0.5, 1.0] * 4)
    noise = torch.randn(y.shape, generator=g)

    def loss() -> float:
        with torch.no_grad():
            return float(edm_loss(den, y, cond, tf, sig, noise))

    before = loss()
    opt = torch.optim.AdamW(den.parameters(), lr=3e-3)
    for _ in range(25):
        opt.zero_grad()
        edm_loss(den, y, cond, tf, torch.exp(-1.2 + 1.2 * torch.randn(16, generator=g)), torch.randn(y.shape, generator=g)).backward()
        opt.step()
    after = loss()
    assert after < 0.8 * before, (before, after)


# ---------------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("churn", [0.0, 2.0])
def test_sampler_determinism_and_single_member(uk: dict, churn: float) -> None:
    dl = Downscaler.load(uk["ckpt"], device="cpu")
    coarse = uk["coarse"].isel(time=slice(10, 13))
    a = dl.sample(coarse, samples=[1, 2, 3], seed=7, steps=3, churn=churn, stream="test")
    b = dl.sample(coarse, samples=[1, 2, 3], seed=7, steps=3, churn=churn, stream="test")
    np.testing.assert_array_equal(a.tas.values, b.tas.values)
    c = dl.sample(coarse, samples=[1, 2, 3], seed=8, steps=3, churn=churn, stream="test")
    assert float(np.abs(a.tas.values - c.tas.values).mean()) > 1e-3
    # members differ from each other
    assert float(np.abs(a.tas.sel(sample=1).values - a.tas.sel(sample=2).values).mean()) > 1e-3
    # one member of one day regenerated alone equals that member inside the batch, bit for bit
    alone = dl.sample(coarse.isel(time=[2]), samples=[2], seed=7, steps=3, churn=churn, stream="test")
    np.testing.assert_array_equal(alone.tas.values[0, 0], a.tas.sel(sample=2).values[2])
    assert alone.tas.dtype == np.float32 and a.tas.dims == ("sample", "time", "lat", "lon")


def test_compile_option_is_ignored_on_cpu(uk: dict) -> None:
    """torch.compile is a CUDA-only option: on CPU the eager network runs and results stay bit-identical."""
    coarse = uk["coarse"].isel(time=slice(20, 22))
    plain = Downscaler.load(uk["ckpt"], device="cpu")
    asked = Downscaler.load(uk["ckpt"], device="cpu", compile=True)
    assert not asked.compile and asked._network() is asked.den
    a = plain.sample(coarse, samples=[1, 2], seed=11, steps=2, churn=3.0, stream="test")
    b = asked.sample(coarse, samples=[1, 2], seed=11, steps=2, churn=3.0, stream="test")
    np.testing.assert_array_equal(a.tas.values, b.tas.values)


def test_member_seed_depends_on_seed_stream_sample_date() -> None:
    s = member_seed(1, "A|historical|r1i1p1f1", 2, "2019032512")
    assert s == member_seed(1, "A|historical|r1i1p1f1", 2, "2019032512")
    others = {member_seed(2, "A|historical|r1i1p1f1", 2, "2019032512"),
              member_seed(1, "A|historical|r2i1p1f1", 2, "2019032512"),
              member_seed(1, "A|ssp245|r1i1p1f1", 2, "2019032512"),
              member_seed(1, "B|historical|r1i1p1f1", 2, "2019032512"),
              member_seed(1, "A|historical|r1i1p1f1", 3, "2019032512"),
              member_seed(1, "A|historical|r1i1p1f1", 2, "2019032513")}
    assert s not in others and len(others) == 6
    assert noise_stream("A", "historical", "s1961-r1i1p1f1") == "A|historical|s1961-r1i1p1f1"
    with pytest.raises(ValueError, match="member"):
        noise_stream("A", "historical", "")


def test_members_get_independent_noise(uk: dict) -> None:
    """Two driving members on the same dates: their sampled fine-scale noise is uncorrelated.

    The noise of a run is isolated as the difference of two of its samples (the conditional mean
    cancels); with noise seeded by (seed, sample, date) alone, both members' differences were
    identical (r = 1). The same job twice is bit-identical.
    """
    dl = Downscaler.load(uk["ckpt"], device="cpu")
    coarse = uk["coarse"].isel(time=slice(30, 34))
    kw = dict(samples=[1, 2], seed=5, steps=2, churn=0.0)
    r1 = dl.sample(coarse, stream=noise_stream("GCM", "ssp245", "r1i1p1f1"), **kw).tas.values.astype(np.float64)
    r2 = dl.sample(coarse, stream=noise_stream("GCM", "ssp245", "r2i1p1f1"), **kw).tas.values.astype(np.float64)
    again = dl.sample(coarse, stream=noise_stream("GCM", "ssp245", "r1i1p1f1"), **kw).tas.values
    np.testing.assert_array_equal(again, r1.astype(np.float32))
    n1, n2 = (r1[0] - r1[1]).ravel(), (r2[0] - r2[1]).ravel()
    assert n1.std() > 1e-3  # the samples of a member do differ
    r = float(np.corrcoef(n1, n2)[0, 1])
    assert abs(r) < 0.05, r


def test_heun_recovers_gaussian_variance() -> None:
    """With the exact denoiser of N(0, s^2) data, the ODE sampler must return std s (checks the solver)."""
    s2 = 0.3**2

    def exact(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x * s2 / (s2 + float(sigma) ** 2)

    def std(steps: int) -> float:
        gens = [torch.Generator().manual_seed(i) for i in range(64)]
        return float(heun_sample(exact, gens, (1, 16, 16), steps=steps, sigma_min=0.002, sigma_max=3.0).std())

    # converges to the data std; second order: the error shrinks fast with the step count
    e8, e32 = abs(std(8) - 0.3), abs(std(32) - 0.3)
    assert e32 < 0.006 and e32 < e8 / 4


# ---------------------------------------------------------------------------------------------
# Tiling
# ---------------------------------------------------------------------------------------------
def test_tile_weights_partition_of_unity() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 40, 60, generator=g)
    for periodic in (False, True):
        y = tiled_apply(lambda xt, ct, rs, ci: xt * 2, x, x[:, :1], (16, 16), 4, periodic_lon=periodic)
        torch.testing.assert_close(y, 2 * x)
    starts = tile_starts(60, 16, 4, periodic=True)
    covered = set()
    for s in starts:
        covered |= {(s + i) % 60 for i in range(16)}
    assert covered == set(range(60))


def test_tiles_blend_without_seams(uk: dict) -> None:
    dl = Downscaler.load(uk["ckpt"], device="cpu")
    dl.patch = 16  # force tiling of the 32 x 48 domain into 16 x 16 tiles (overlap 4)
    coarse = uk["coarse"].isel(time=slice(0, 4))
    out = dl.sample(coarse, samples=[1, 2], seed=3, steps=3, stream="test").tas.values  # (S, T, 32, 48)
    from aid.regrid import upsample

    # the generated residual (large-scale gradients of the coarse field would hide a seam)
    resid = out - upsample(coarse, fine_grid(uk["cfg"]), "bicubic").tas.values[None]
    assert float(np.abs(resid).mean()) > 0.05
    dx = np.abs(np.diff(resid, axis=-1)).mean(axis=(0, 1, 2))  # (47,) mean |jump| between columns j, j+1
    dy = np.abs(np.diff(resid, axis=-2)).mean(axis=(0, 1, 3))  # (31,)
    cols = tile_starts(48, 16, 4)
    rows = tile_starts(32, 16, 4)
    col_borders = sorted({c + 16 - 1 for c in cols[:-1]} | {c - 1 for c in cols[1:]})
    row_borders = sorted({r + 16 - 1 for r in rows[:-1]} | {r - 1 for r in rows[1:]})
    inner_x = np.delete(dx, col_borders)
    inner_y = np.delete(dy, row_borders)
    assert dx[col_borders].max() <= np.percentile(inner_x, 95) * 1.1, (dx[col_borders], inner_x)
    assert dy[row_borders].max() <= np.percentile(inner_y, 95) * 1.1, (dy[row_borders], inner_y)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
def test_checkpoint_round_trip(uk: dict) -> None:
    content, digest = load_checkpoint(uk["ckpt"])
    assert content["variables"] == ["tas"] and len(digest) == 64
    cfg = json.loads(content["config_json"])
    assert cfg["model"]["size"] == "tiny"
    for key in ("model", "ema", "optimizer", "norm_mean", "norm_std", "sigma_data", "fine_lat", "fine_lon", "static",
                "orography", "land_sea_mask"):
        assert key in content
    # fine grid and static fields are stored: real orography (Scottish Highlands > 500 m) and coasts
    assert content["orography"].max() > 500 and 0 < content["land_sea_mask"].mean() < 1
    np.testing.assert_allclose(content["fine_lat"].numpy(), uk["fine"].lat.values)
    # early stopping: the held-out hours chose EMA weights, and inference uses them
    assert content["best_step"] > 0 and content["best_ema"] and content["best_val"] == content["best_val"]
    dl = Downscaler.load(uk["ckpt"], device="cpu")
    assert dl.checkpoint_sha256 == digest and dl.variables == ["tas"]
    w = next(iter(content["best_ema"]))
    torch.testing.assert_close(dict(dl.den.net.state_dict())[w], content["best_ema"][w])
    # normalisation statistics are those of the training fields (the held-out day excluded)
    tcfg = uk["cfg"]["model"]["train"]
    tr, va = validation_split(uk["fine"].time.values, tcfg["val_fraction"], tcfg["val_block_days"])
    assert len(va) == 24
    assert abs(float(content["norm_mean"][0]) - float(uk["fine"].tas.isel(time=tr).mean())) < 1e-3
    # 5 steps from a low sigma_max: a 40-step model is too rough for EDM's sigma_max = 80
    out = dl.sample(uk["coarse"].isel(time=slice(0, 4)), samples=[1], seed=0, steps=5, sigma_max=2.0, stream="test")
    np.testing.assert_allclose(out.lat.values, uk["fine"].lat.values)
    # the sample sits near the truth (40 training steps; bicubic MAE here is ~0.6 K)
    assert float(np.abs(out.tas.values[0] - uk["fine"].tas.values[:4]).mean()) < 1.5


def test_training_resumes_from_last(uk: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = copy.deepcopy(uk["cfg"])
    cfg["model"]["train"]["steps"] = 6
    prep = prepare_training(cfg, [uk["dir"] / "fine_tas.nc"], [uk["dir"] / "coarse_tas.nc"], STATIC)
    first = train_model(prep, cfg, tmp_path / "a.pt", threads=1, progress=False)
    (tmp_path / "b.pt.last").write_bytes(first.read_bytes())
    cfg["model"]["train"]["steps"] = 10
    with caplog.at_level(logging.INFO, logger="aid.model.train"):
        second = train_model(prep, cfg, tmp_path / "b.pt", threads=1, progress=False)
    assert "resuming from" in caplog.text and "at step 6" in caplog.text
    content, _ = load_checkpoint(second)
    assert content["step"] == 10 and len(content["loss_history"]) == 10
    assert not (tmp_path / "b.pt.last").exists()


def test_tampered_checkpoint_refused(uk: dict, tmp_path: Path) -> None:
    payload = torch.load(uk["ckpt"], weights_only=True)
    key = next(iter(payload["content"]["ema"]))
    payload["content"]["ema"][key] = payload["content"]["ema"][key] + 1e-3
    bad = tmp_path / "tampered.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="hash mismatch") as err:
        Downscaler.load(bad, device="cpu")
    assert str(bad) in str(err.value) and "Fix:" in str(err.value)


class _Evil:
    """A pickle payload that would create a file when unpickled (it must never run)."""

    marker: Path = Path("/nonexistent")

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_pickle_payload_refused(uk: dict, tmp_path: Path) -> None:
    payload = torch.load(uk["ckpt"], weights_only=True)
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    payload["content"]["extra"] = evil
    bad = tmp_path / "evil.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="refused to load") as err:
        Downscaler.load(bad, device="cpu")
    assert not (tmp_path / "pwned").exists()
    assert str(bad) in str(err.value)


def test_checkpoint_for_other_variables_refused(uk: dict) -> None:
    with pytest.raises(CheckpointError, match="trained on variables"):
        Downscaler.load(uk["ckpt"], device="cpu", expect_variables=["tas", "pr"])
    dl = Downscaler.load(uk["ckpt"], device="cpu")
    with pytest.raises(CheckpointError, match="lacks"):
        dl.sample(uk["coarse"].rename(tas="pr").isel(time=[0]), samples=[1], seed=0, steps=1, stream="test")


# ---------------------------------------------------------------------------------------------
# Precipitation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pr_transform", ["log1p", "power"])
def test_precipitation_never_negative(tmp_path: Path, pr_transform: str) -> None:
    ds = normalise_coords(xr.open_dataset(ERA5 / "ERA5_2021-07-15_tp.nc"))
    pr = (ds["tp"] * 24000.0).rename("pr")  # m per hour -> mm/day
    pr.attrs["units"] = "mm d-1"
    cfg = _cfg(["pr"], [46.0, 53.75], [1.0, 8.75], steps=12)
    cfg["model"]["pr_transform"] = pr_transform
    fg = fine_grid(cfg)
    fine = pr.to_dataset().sel(lat=fg.lat.values, lon=fg.lon.values).load()
    coarse = coarsen(fine, cfg).load()
    write_netcdf(fine, tmp_path / "fine.nc")
    write_netcdf(coarse, tmp_path / "coarse.nc")
    ck = train_from_config(cfg, [tmp_path / "fine.nc"], [tmp_path / "coarse.nc"], STATIC, tmp_path / "pr.pt", threads=1)
    dl = Downscaler.load(ck, device="cpu")
    out = dl.sample(coarse.isel(time=slice(0, 6)), samples=[1, 2], seed=1, steps=2, churn=5.0, stream="test")
    assert float(out.pr.min()) >= 0.0
    assert float(out.pr.max()) > 1.0  # real rain on the flood day survives
    # a drier-than-zero residual in model space maps to exactly zero, never below
    assert transforms.inverse("pr", np.array([-3.0, -0.1]), pr_transform).tolist() == [0.0, 0.0]
    np.testing.assert_allclose(transforms.inverse("pr", transforms.forward("pr", np.array([0.0, 2.5, 80.0]), pr_transform),
                                                  pr_transform), [0.0, 2.5, 80.0], rtol=1e-12)
