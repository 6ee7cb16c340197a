"""Sampler settings chosen for each checkpoint on its own validation fields, stored with it.

Why per checkpoint: the few-step Heun settings that give the best ensemble depend on the network
(bench/sampler_settings.py and bench/sampler.py compare them; their JSON and the README hold the
figures). So training ends by scoring a small grid of settings, all within :data:`MAX_NFE` network
evaluations, with the fair CRPS of a few members on held-out validation fields, and the winner
becomes the checkpoint's default (config ``downscale`` keys left null use it; set them to override).
The score averages all channels in units of their std, so one variable cannot pick the sampler alone.

Each setting's spread-skill ratio, sqrt((M+1)/M) x RMS ensemble spread / RMSE of the ensemble
mean (Fortin et al. 2014; per channel, averaged), is recorded in the table beside its score.
The CRPS, a proper score, chooses calibrated settings only when the validation fields are weather
the network has not seen: validation holds whole blocks of days that training never sees
(:func:`aid.model.data.validation_split`), because fields close in time to training fields are
near-copies of them; scored on such fields, the ensemble looks skilful and the tuner prefers
settings that are under-dispersed on new days (bench/calibration.py measures both cases).

One setting of the schedule sets one spread for all channels, but a network can be
over-dispersed in one variable and under-dispersed in another at once. So, with the chosen
setting, each channel then gets its own noise factor (:func:`tune_noise_scale`, the sampler's
``noise_scale``): the factor of :data:`NOISE_FACTORS` with the lowest fair CRPS of that channel.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: (steps, sigma_max, rho) candidates, churn 0 (deterministic ODE); 2*steps-1 network evaluations.
#: The grid spans the settings that won on the benches' sweeps (bench/sampler.py), within MAX_NFE.
CANDIDATES: tuple[tuple[int, float, float], ...] = tuple(
    (steps, sm, rho) for steps in (4, 5, 6) for sm in (2.0, 5.0, 20.0, 80.0) for rho in (7.0, 4.0))
MAX_NFE = 11
#: Relative CRPS margin within which the cheaper setting wins (sampling noise of the score).
TIE = 0.005
#: Settings used when a checkpoint carries none (trained before tuning existed, or tuning off).
FALLBACK = {"steps": 6, "churn": 0.0, "rho": 7.0}


#: Per-channel noise factors tried (aid.model.sampler.heun_sample's noise_scale); 1 is the plain sampler.
NOISE_FACTORS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.15, 1.3, 1.5, 1.75, 2.0)

#: The validation fields' own noise stream (never a driving run's, see aid.model.sampler.noise_stream).
TUNING_STREAM = "aid-sampler-tuning"


def fair_crps(ens: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Fair CRPS of an ensemble (members on axis 0) at every point (Ferro 2014's unbiased estimator)."""
    m = ens.shape[0]
    skill = np.abs(ens - obs[None]).mean(0)
    srt = np.sort(ens, axis=0)
    # sum_{i<j} |x_i - x_j| from the sorted members: sum_k (2k - m + 1) x_(k)
    k = np.arange(m).reshape((m,) + (1,) * (ens.ndim - 1))
    pair_sum = ((2 * k - m + 1) * srt).sum(0)
    return skill - pair_sum / (m * (m - 1))


def spread_skill_per_channel(ens: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Spread-skill ratio (:func:`aid.evaluate.metrics.spread_skill_ratio`, unweighted on these
    fields) of ``ens`` (members, N, C, H, W) against ``obs`` (N, C, H, W), one per channel."""
    import xarray as xr

    from aid.evaluate.metrics import spread_skill_ratio

    dims = ("field", "channel", "y", "x")
    return np.asarray(spread_skill_ratio(xr.DataArray(ens, dims=("sample", *dims)), xr.DataArray(obs, dims=dims),
                                         dims=("field", "y", "x")), dtype=np.float64)


def spread_skill(ens: np.ndarray, obs: np.ndarray) -> float:
    """:func:`spread_skill_per_channel`, mean over channels."""
    return float(spread_skill_per_channel(ens, obs).mean())


def choose(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The setting of ``rows`` the checkpoint keeps: the cheapest within :data:`TIE` of the best score."""
    best = min(r["crps_fair_normalised"] for r in rows)
    return min((r for r in rows if r["crps_fair_normalised"] <= best * (1 + TIE)),
               key=lambda r: (r["network_evaluations"], r["crps_fair_normalised"]))


def channel_factors(rows: Sequence[dict[str, Any]], channels: Sequence[str]) -> dict[str, float]:
    """Per channel, the factor of ``rows`` with the lowest fair CRPS of that channel; factors within
    :data:`TIE` of that channel's best count as equal and the one nearest 1 (in ratio) wins."""
    out = {}
    for i, c in enumerate(channels):
        best = min(r["crps_fair_normalised_per_channel"][i] for r in rows)
        ok = [r for r in rows if r["crps_fair_normalised_per_channel"][i] <= best * (1 + TIE)]
        out[c] = float(min(ok, key=lambda r: (abs(np.log(r["factor"])), r["crps_fair_normalised_per_channel"][i]))["factor"])
    return out


def _per_channel(ens: np.ndarray, target: np.ndarray) -> tuple[list[float], list[float]]:
    """Fair CRPS (mean over fields and points) and spread-skill ratio of every channel."""
    crps = fair_crps(ens, target).mean(axis=(0, 2, 3))
    return [float(v) for v in crps], [float(v) for v in spread_skill_per_channel(ens, target)]


def tune_noise_scale(dl: Any, cond: np.ndarray, tfeat: np.ndarray, keys: Sequence[str], target: np.ndarray,
                     setting: dict[str, Any], members: int = 3, seed: int = 0,
                     factors: Sequence[float] = NOISE_FACTORS, static: np.ndarray | None = None) -> dict[str, Any]:
    """Per-variable noise factors for the sampler ``setting`` (steps, rho, sigma_max), scored on
    validation fields as :func:`tune_sampler` scores settings.

    Each factor of ``factors`` is tried on all channels at once and every channel keeps its own best
    (:func:`channel_factors`); the chosen factors are then sampled together and kept only if their
    mean fair CRPS is no worse than the plain sampler's (channels interact through the network, so
    the combination is checked, not assumed). Returns ``{"noise_scale": {variable: factor}, "table":
    [...]}``; the table holds every factor's per-channel fair CRPS and spread-skill.
    """
    channels = list(dl.variables)

    def run(scale: Sequence[float]) -> np.ndarray:
        return dl.sample_normalised(cond, tfeat, keys, list(range(1, members + 1)), seed, int(setting["steps"]), 0.0,
                                    float(setting["rho"]), sigma_max=float(setting["sigma_max"]), static=static,
                                    stream=TUNING_STREAM, noise_scale=scale)

    rows = []
    for f in factors:
        crps, ssr = _per_channel(run([float(f)] * len(channels)), target)
        rows.append({"factor": float(f), "crps_fair_normalised_per_channel": crps, "spread_skill_per_channel": ssr})
        log.info("noise factor %g: fair CRPS per channel %s, spread-skill %s", f,
                 " ".join(f"{c} {v:.4f}" for c, v in zip(channels, crps)),
                 " ".join(f"{c} {v:.2f}" for c, v in zip(channels, ssr)))
    pick = channel_factors(rows, channels)
    plain = next((r for r in rows if r["factor"] == 1.0), None)
    plain_crps = float(np.mean(plain["crps_fair_normalised_per_channel"])) if plain else np.inf
    if plain and all(f == 1.0 for f in pick.values()):  # the plain sampler itself: already scored
        crps, ssr = plain["crps_fair_normalised_per_channel"], plain["spread_skill_per_channel"]
    else:
        crps, ssr = _per_channel(run([pick[c] for c in channels]), target)
    combined = {"noise_scale": pick, "crps_fair_normalised_per_channel": crps, "spread_skill_per_channel": ssr,
                "crps_fair_normalised": float(np.mean(crps))}
    kept = combined["crps_fair_normalised"] <= plain_crps
    log.info("noise factors %s: fair CRPS %.4f (factor 1: %.4f): %s", pick, combined["crps_fair_normalised"],
             plain_crps, "kept" if kept else "not kept, factor 1 for all")
    return {"noise_scale": pick if kept else {c: 1.0 for c in channels}, "table": rows, "combined": combined,
            "kept": bool(kept)}


def tune_sampler(dl: Any, cond: np.ndarray, tfeat: np.ndarray, keys: Sequence[str], target: np.ndarray,
                 members: int = 3, seed: int = 0,
                 candidates: Sequence[tuple[int, float, float]] = CANDIDATES,
                 static: np.ndarray | None = None, noise_factors: Sequence[float] = NOISE_FACTORS) -> dict[str, Any]:
    """Score ``candidates`` on validation fields; returns the chosen settings and the table.

    ``dl`` is a :class:`aid.model.api.Downscaler`; ``cond``/``tfeat``/``keys`` the validation
    fields' normalised conditioning (prior channels included), ``target`` their normalised
    residual (N, C, H, W) in the sampler's space (minus the prior in mode "offset"). The score is
    the fair CRPS averaged over points and channels (channels in units of their std, so every
    variable counts alike). Members share their noise across settings (common random numbers).
    ``static`` is the fields' static conditioning when they are a window of the checkpoint's grid.
    The chosen setting then gets per-variable noise factors (:func:`tune_noise_scale` over
    ``noise_factors``; empty: none, every factor 1).
    """
    rows = []
    for steps, sigma_max, rho in candidates:
        if 2 * steps - 1 > MAX_NFE:
            continue
        ens = dl.sample_normalised(cond, tfeat, keys, list(range(1, members + 1)), seed, steps, 0.0, rho,
                                   sigma_max=sigma_max, static=static, stream=TUNING_STREAM)
        crps = float(fair_crps(ens, target).mean())
        ssr = spread_skill(ens, target)
        rows.append({"steps": int(steps), "churn": 0.0, "rho": float(rho), "sigma_max": float(sigma_max),
                     "network_evaluations": 2 * int(steps) - 1, "crps_fair_normalised": crps, "spread_skill": ssr})
        log.info("sampler tuning: %d steps, sigma_max %g, rho %g: fair CRPS %.4f (normalised), spread-skill %.2f",
                 steps, sigma_max, rho, crps, ssr)
    pick = choose(rows)
    best = min(r["crps_fair_normalised"] for r in rows)
    log.info("sampler tuning: chose %d steps, sigma_max %g, rho %g (CRPS %.4f, spread-skill %.2f; best CRPS %.4f)",
             pick["steps"], pick["sigma_max"], pick["rho"], pick["crps_fair_normalised"], pick["spread_skill"], best)
    out = {"steps": pick["steps"], "churn": 0.0, "rho": pick["rho"], "sigma_max": pick["sigma_max"],
           "fields": int(cond.shape[0]), "members": int(members), "table": rows}
    if noise_factors:
        scale = tune_noise_scale(dl, cond, tfeat, keys, target, out, members, seed, noise_factors, static)
        out.update({"noise_scale": scale["noise_scale"], "noise_scale_table": scale["table"],
                    "noise_scale_combined": scale["combined"]})
    return out
