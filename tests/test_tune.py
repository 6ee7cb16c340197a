"""The sampler tuner (aid.model.tune): its spread-skill estimate and its choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aid.model.sampler import heun_sample
from aid.model.tune import NOISE_FACTORS, TIE, _per_channel, channel_factors, choose, spread_skill


def test_spread_skill_of_a_calibrated_and_an_under_dispersed_ensemble() -> None:
    """Members and truth drawn from the same distribution give 1 (with the finite-ensemble factor,
    also for 3 members); members with half the spread give about half."""
    rng = np.random.default_rng(0)
    centre = rng.normal(size=(16, 2, 32, 32))
    truth = centre + rng.normal(size=centre.shape)
    for m in (3, 10):
        ens = centre[None] + rng.normal(size=(m, *centre.shape))
        assert abs(spread_skill(ens, truth) - 1.0) < 0.03, m
        # half the spread: sqrt((m+1)/m) 0.5 / sqrt(1 + 0.25/m) (the mean's own error grows too)
        want = np.sqrt((m + 1) / m) * 0.5 / np.sqrt(1 + 0.25 / m)
        assert abs(spread_skill(centre[None] + 0.5 * rng.normal(size=(m, *centre.shape)), truth) - want) < 0.02


def _row(steps: int, crps: float, ssr: float) -> dict:
    return {"steps": steps, "churn": 0.0, "rho": 7.0, "sigma_max": 5.0, "network_evaluations": 2 * steps - 1,
            "crps_fair_normalised": crps, "spread_skill": ssr}


def test_choice_is_the_cheapest_setting_within_the_tie_margin() -> None:
    best = _row(6, 0.1000, 0.66)
    cheaper = _row(4, 0.1000 * (1 + TIE / 2), 0.95)
    cheapest_but_worse = _row(3, 0.1000 * (1 + 2 * TIE), 1.0)
    assert choose([best, cheaper, cheapest_but_worse]) is cheaper


def _gaussian_denoiser(mean: torch.Tensor, std: torch.Tensor):  # noqa: ANN202
    """The exact denoiser of data ~ N(mean, std**2) per channel: D(x; sigma) = E[x0 | x0 + sigma n = x]."""
    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        v = std.reshape(1, -1, 1, 1) ** 2
        return mean.reshape(1, -1, 1, 1) + (x - mean.reshape(1, -1, 1, 1)) * v / (v + sigma.double() ** 2)
    return denoise


def test_noise_factor_scales_each_channels_spread_for_a_gaussian_target() -> None:
    """The probability-flow ODE maps the starting noise linearly onto a Gaussian target, so a channel's
    noise factor multiplies its sample spread and leaves its mean; factor 1 is the plain sampler."""
    mean, std = torch.tensor([0.0, 2.0, -1.0], dtype=torch.float64), torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    den = _gaussian_denoiser(mean, std)

    def run(scale):  # noqa: ANN001, ANN202
        gens = [torch.Generator().manual_seed(i) for i in range(400)]
        return heun_sample(den, gens, (3, 4, 4), 40, 0.002, 80.0, noise_scale=scale).double()

    plain, scaled = run(None), run([0.5, 1.0, 1.8])
    assert torch.equal(plain, run([1.0, 1.0, 1.0]))
    got = scaled.std(dim=(0, 2, 3)) / plain.std(dim=(0, 2, 3))
    np.testing.assert_allclose(got.numpy(), [0.5, 1.0, 1.8], rtol=2e-3)
    np.testing.assert_allclose(plain.std(dim=(0, 2, 3)).numpy(), std.numpy(), rtol=0.05)
    np.testing.assert_allclose(scaled.mean(dim=(0, 2, 3)).numpy(), mean.numpy(), atol=0.06)
    with pytest.raises(ValueError, match="one positive factor per channel"):
        run([1.0, 1.0])
    with pytest.raises(ValueError, match="one positive factor per channel"):
        run([1.0, 0.0, 1.0])


def test_channel_factors_calibrate_an_under_and_an_over_dispersed_channel() -> None:
    """With the fair CRPS (a proper score), every channel keeps the factor that makes its ensemble as
    wide as its errors: channel 0 is sampled at 0.6 x the spread it needs, channel 1 at 1.6 x, so
    they need 1/0.6 and 1/1.6 (the grid's nearest values, or a neighbour within the tie margin)."""
    rng = np.random.default_rng(3)
    centre = rng.normal(size=(16, 2, 32, 32))
    truth = centre + rng.normal(size=centre.shape)
    native = np.array([0.6, 1.6]).reshape(1, 1, 2, 1, 1)
    z = rng.normal(size=(3, *centre.shape))  # common random numbers across factors
    rows = []
    for f in NOISE_FACTORS:
        crps, ssr = _per_channel(centre[None] + f * native * z, truth)
        rows.append({"factor": f, "crps_fair_normalised_per_channel": crps, "spread_skill_per_channel": ssr})
    pick = channel_factors(rows, ["tasmax", "uas"])
    grid = np.array(NOISE_FACTORS)
    for c, need in (("tasmax", 1 / 0.6), ("uas", 1 / 1.6)):
        nearest = sorted(grid, key=lambda f: abs(np.log(f / need)))[:2]
        assert pick[c] in nearest, (c, pick, need)
        row = next(r for r in rows if r["factor"] == pick[c])
        assert 0.85 < row["spread_skill_per_channel"][["tasmax", "uas"].index(c)] < 1.15
    # a flat score keeps the plain sampler: factor 1 wins every tie
    flat = [{**r, "crps_fair_normalised_per_channel": [0.1, 0.1]} for r in rows]
    assert channel_factors(flat, ["tasmax", "uas"]) == {"tasmax": 1.0, "uas": 1.0}
