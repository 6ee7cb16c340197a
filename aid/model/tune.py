"""Sampler settings chosen for each checkpoint on its own validation fields, stored with it.

Why per checkpoint: the few-step Heun settings that give the best ensemble depend on the network.
Measured (bench/sampler_settings.py, bench/sampler.py): 6 steps from sigma_max 2 beat IPSL-AID's
19-evaluation sampler on the default pipeline's checkpoint (tas CRPS 0.192 vs 0.233 K) but lost on
the hourly UK checkpoint (0.343 vs 0.295 K), where 6 steps from sigma_max 20 with rho 4 won. So
training ends by scoring a small grid of settings, all within :data:`MAX_NFE` network evaluations,
with the fair CRPS of a few members on held-out validation fields, and the winner becomes the
checkpoint's default (config ``downscale`` keys left null use it; set them to override).

With this tuning (2026-12-01): the UK checkpoint chose 5 steps from sigma_max 2 (9 evaluations),
CRPS 0.283 K against 0.286 K for IPSL-AID's sampler on all test hours; the default run's six-variable
checkpoint chose 6 steps from sigma_max 5, rho 4: tas 0.184 vs 0.197 K, but pr 1.381 vs 1.338 mm/d
(pr alone prefers the stochastic high-sigma sampler; the score here averages all channels). Trained
with sigma_relative (residual channels at sigma_data 0.5), the same run's checkpoint again chose 6
steps from sigma_max 5, rho 4 (model units): tas 0.131 vs 0.138 K, pr 1.336 vs 1.305 mm/d.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: (steps, sigma_max, rho) candidates, churn 0 (deterministic ODE); 2*steps-1 network evaluations.
#: sigma_max 5 and 5 steps joined the grid after the UK sweep of bench/sampler.py (offset-prior
#: checkpoint, 10 members, all 168 test hours): 5 steps from sigma_max 5 (9 evaluations) scored fair CRPS
#: 0.281 K against 0.285 K for 6 steps from sigma_max 2 and 0.286 K for IPSL-AID's 19-evaluation sampler.
CANDIDATES: tuple[tuple[int, float, float], ...] = tuple(
    (steps, sm, rho) for steps in (4, 5, 6) for sm in (2.0, 5.0, 20.0, 80.0) for rho in (7.0, 4.0))
MAX_NFE = 11
#: Relative CRPS margin within which the cheaper setting wins (sampling noise of the score).
TIE = 0.005
#: Settings used when a checkpoint carries none (trained before tuning existed, or tuning off).
FALLBACK = {"steps": 6, "churn": 0.0, "rho": 7.0}


def fair_crps(ens: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Fair CRPS of an ensemble (members on axis 0) at every point (Ferro 2014's unbiased estimator)."""
    m = ens.shape[0]
    skill = np.abs(ens - obs[None]).mean(0)
    srt = np.sort(ens, axis=0)
    # sum_{i<j} |x_i - x_j| from the sorted members: sum_k (2k - m + 1) x_(k)
    k = np.arange(m).reshape((m,) + (1,) * (ens.ndim - 1))
    pair_sum = ((2 * k - m + 1) * srt).sum(0)
    return skill - pair_sum / (m * (m - 1))


def tune_sampler(dl: Any, cond: np.ndarray, tfeat: np.ndarray, keys: Sequence[str], target: np.ndarray,
                 members: int = 3, seed: int = 0,
                 candidates: Sequence[tuple[int, float, float]] = CANDIDATES,
                 static: np.ndarray | None = None) -> dict[str, Any]:
    """Score ``candidates`` on validation fields; returns the chosen settings and the table.

    ``dl`` is a :class:`aid.model.api.Downscaler`; ``cond``/``tfeat``/``keys`` the validation
    fields' normalised conditioning (prior channels included), ``target`` their normalised
    residual (N, C, H, W) in the sampler's space (minus the prior in mode "offset"). The score is
    the fair CRPS averaged over points and channels (channels in units of their std, so every
    variable counts alike). Members share their noise across settings (common random numbers).
    ``static`` is the fields' static conditioning when they are a window of the checkpoint's grid.
    """
    rows = []
    for steps, sigma_max, rho in candidates:
        if 2 * steps - 1 > MAX_NFE:
            continue
        ens = dl.sample_normalised(cond, tfeat, keys, list(range(1, members + 1)), seed, steps, 0.0, rho,
                                   sigma_max=sigma_max, static=static)
        crps = float(fair_crps(ens, target).mean())
        rows.append({"steps": int(steps), "churn": 0.0, "rho": float(rho), "sigma_max": float(sigma_max),
                     "network_evaluations": 2 * int(steps) - 1, "crps_fair_normalised": crps})
        log.info("sampler tuning: %d steps, sigma_max %g, rho %g: fair CRPS %.4f (normalised)", steps, sigma_max, rho,
                 crps)
    best = min(r["crps_fair_normalised"] for r in rows)
    pick = min((r for r in rows if r["crps_fair_normalised"] <= best * (1 + TIE)),
               key=lambda r: (r["network_evaluations"], r["crps_fair_normalised"]))
    log.info("sampler tuning: chose %d steps, sigma_max %g, rho %g (CRPS %.4f; best %.4f)", pick["steps"],
             pick["sigma_max"], pick["rho"], pick["crps_fair_normalised"], best)
    return {"steps": pick["steps"], "churn": 0.0, "rho": pick["rho"], "sigma_max": pick["sigma_max"],
            "fields": int(cond.shape[0]), "members": int(members), "table": rows}
