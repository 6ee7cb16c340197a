"""Verification scores with known answers, on real ERA5 fields where a field is needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from aid.evaluate import metrics as M

STATIC = Path("/work/shared/data/era5/era5-static-z-lsm-global.nc")


@pytest.fixture(scope="module")
def truth() -> xr.DataArray:
    """Real ERA5 surface geopotential (m2 s-2 / 9.81 = m) over the UK box, 30 'days' of shifted rows.

    Used only as a realistic non-Gaussian spatial field; the time axis is made by taking 30 boxes
    shifted by one cell westwards each, so each 'day' is a different real field.
    """
    if not STATIC.exists():
        pytest.skip("shared ERA5 static file not present")
    z = xr.open_dataset(STATIC)["z"].squeeze(drop=True)
    z = z.sortby("latitude").rename(latitude="lat", longitude="lon")
    box = z.sel(lat=slice(50.0, 57.75)) / 9.81
    fields = [box.isel(lon=slice(i, i + 40)).assign_coords(lon=np.arange(40) * 0.25 - 10.0) for i in range(30)]
    return xr.concat(fields, dim="time").assign_coords(time=np.arange(30)).load()


def test_area_weights_known_answer() -> None:
    lat = xr.DataArray(np.linspace(-80, 80, 17), dims="lat")
    lat = lat.assign_coords(lat=lat)
    field = xr.DataArray(np.cos(np.deg2rad(lat.values))[:, None] * np.ones((1, 4)), dims=("lat", "lon"),
                         coords={"lat": lat.values, "lon": np.arange(4.0)})
    w = np.cos(np.deg2rad(lat.values))
    expected = (w * w).sum() / w.sum()  # weighted mean of cos-lat with cos-lat weights
    assert float(M.weighted_mean(field)) == pytest.approx(expected, rel=1e-12)
    assert float(M.weighted_mean(field)) != pytest.approx(float(field.mean()), rel=1e-3)
    # constant field -> weighted mean is the constant, NaN cells are skipped
    const = xr.full_like(field, 3.0).where(field.lat != 0)
    assert float(M.weighted_mean(const)) == pytest.approx(3.0)


def test_deterministic_scores(truth: xr.DataArray) -> None:
    assert float(M.bias(truth + 2.5, truth)) == pytest.approx(2.5, rel=1e-6)
    assert float(M.mae(truth - 1.5, truth)) == pytest.approx(1.5, rel=1e-6)
    assert float(M.rmse(truth + 4.0, truth)) == pytest.approx(4.0, rel=1e-6)
    # RMSE >= MAE, equality only for constant errors
    noisy = truth + xr.DataArray(np.random.default_rng(0).normal(size=truth.shape), dims=truth.dims)
    assert float(M.rmse(noisy, truth)) > float(M.mae(noisy, truth))


def test_crps_perfect_and_offset_ensemble(truth: xr.DataArray) -> None:
    ens = xr.concat([truth] * 5, dim="sample")
    assert float(abs(M.crps_fair(ens, truth)).max()) == pytest.approx(0.0, abs=1e-9)
    crps = M.crps_fair(ens + 3.0, truth)
    np.testing.assert_allclose(crps.values, 3.0, rtol=1e-9)
    # spread of members about the truth: fair CRPS of {t-1, t+1} is |1| - (1/2) * 2 * 2 / 2 = 0
    spread = xr.concat([truth - 1.0, truth + 1.0], dim="sample")
    np.testing.assert_allclose(M.crps_fair(spread, truth).values, 0.0, atol=1e-9)


def test_crps_fair_is_unbiased_for_ensemble_size() -> None:
    """Members drawn from N(0,1), obs from N(0,1): fair CRPS ~ CRPS(N(0,1), y) for M=2 and M=20."""
    rng = np.random.default_rng(1)
    y = rng.normal(size=20000)
    expected = 1.0 / np.sqrt(np.pi)  # E[CRPS(N(0,1), Y)] for Y ~ N(0,1)
    for m in (2, 20):
        ens = xr.DataArray(rng.normal(size=(m, y.size)), dims=("sample", "x"))
        val = float(M.crps_fair(ens, xr.DataArray(y, dims="x")).mean())
        assert val == pytest.approx(expected, rel=0.03), (m, val)


def test_rank_histogram_flat_for_exchangeable_members(truth: xr.DataArray) -> None:
    rng = np.random.default_rng(2)
    m = 7
    noise = rng.normal(size=(m + 1, *truth.shape))
    obs = truth + xr.DataArray(noise[0], dims=truth.dims)
    ens = xr.concat([truth + xr.DataArray(noise[i], dims=truth.dims) for i in range(1, m + 1)], dim="sample")
    counts = M.rank_histogram(ens, obs)
    assert counts.size == m + 1 and counts.sum() == truth.size
    # independent draws: chi-square against flat does not reject
    chi2, p = M.rank_histogram_chi2(counts)
    assert p > 0.001, (chi2, counts)
    # an overconfident ensemble (members = truth exactly, obs noisy) is U-shaped
    sharp = xr.concat([truth + 0.1 * xr.DataArray(noise[i], dims=truth.dims) for i in range(1, m + 1)], dim="sample")
    u = M.rank_histogram(sharp, obs)
    assert u[0] + u[-1] > 0.6 * u.sum()


def test_rank_histogram_ties_broken_at_random() -> None:
    """Dry days: obs = all members = 0 must spread over all ranks, not pile up in rank 1."""
    ens = xr.DataArray(np.zeros((4, 10000)), dims=("sample", "x"))
    counts = M.rank_histogram(ens, xr.DataArray(np.zeros(10000), dims="x"))
    assert stats.chisquare(counts).pvalue > 0.001


def test_spread_skill_calibrated_and_overconfident(truth: xr.DataArray) -> None:
    rng = np.random.default_rng(3)
    for m in (3, 10):  # the sqrt((M+1)/M) factor makes small ensembles score 1 too
        mean_err = rng.normal(size=truth.shape)  # common to members: centre of the predictive dist.
        centre = truth + xr.DataArray(mean_err, dims=truth.dims)
        ens = xr.concat([centre + xr.DataArray(rng.normal(size=truth.shape), dims=truth.dims) for _ in range(m)], "sample")
        # truth is a draw from N(centre, 1), so obs = centre - mean_err is exchangeable with members
        ssr = float(M.spread_skill_ratio(ens, truth))
        assert ssr == pytest.approx(1.0, abs=0.03), (m, ssr)
        ssr_sharp = float(M.spread_skill_ratio(centre + 0.3 * (ens - centre), truth))
        assert ssr_sharp < 0.5, ssr_sharp


def test_quantiles_of_tail() -> None:
    v = np.arange(1, 100001, dtype=float)
    q = M.quantiles(v, [0.99, 0.999])
    np.testing.assert_allclose(q, [99000.0, 99900.0], rtol=1e-4)
