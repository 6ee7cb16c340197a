"""The sampler tuner (aid.model.tune): its spread-skill estimate and its choice."""

from __future__ import annotations

import numpy as np

from aid.model.tune import TIE, choose, spread_skill


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
