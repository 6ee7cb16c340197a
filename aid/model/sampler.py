"""EDM Heun sampler (Karras et al. 2022, Algorithm 2) with per-member seeded noise.

Why one ``torch.Generator`` per (stream, sample, date): the initial noise and any churn noise of a
member depend only on (seed, noise stream, sample index, date), never on which other members or
days share the batch. The stream names the driving run (source, experiment, member; see
:func:`noise_stream`), so two GCM members, two scenarios or the evaluation run never share the
fine-scale detail of a date: sharing it would copy the sampled detail across the ensemble and
understate its spread.
With ``day_correlation`` > 0 the noise of a date is a moving average of the per-date noises of
that date and the days before it (:func:`day_weights`, :class:`DayNoise`), so the sampled detail of
consecutive days is correlated as real weather is, while each date's noise still depends on dates
only (no state carried through a job).
Together with fixed-size micro-batches on CPU (see :func:`chunked`), any member of any year can be
regenerated alone, bit-identically, from the deliverable's recorded seed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

#: CPU micro-batch: every network call sees exactly this many rows (the tail is padded), so a
#: member's result cannot depend on the batch size the caller chose. The size is the fastest of
#: those bench/sampler.py compares (its ``cpu_options``).
CPU_MICRO_BATCH = 16


def noise_stream(source: str, experiment: str, member: str) -> str:
    """The noise-stream key of one driving run: every (source, experiment, member) its own noise."""
    for name, value in (("source", source), ("experiment", experiment), ("member", member)):
        if not value or "|" in str(value):
            raise ValueError(f"noise_stream: {name} {value!r} must be a non-empty string without '|'.")
    return f"{source}|{experiment}|{member}"


def member_seed(seed: int, stream: str, sample: int, date_key: str) -> int:
    """A 63-bit generator seed from (global seed, noise stream, sample index, date), platform-stable."""
    digest = hashlib.sha256(f"aid-edm|{int(seed)}|{stream}|{int(sample)}|{date_key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


#: Day-correlated noise: the lag weights rho**j stop once they fall below this share of the first.
DAY_WEIGHT_CUTOFF = 0.01
#: Longest lag (days) of day-correlated noise, whatever rho.
MAX_DAY_LAG = 60


def day_weights(rho: float) -> np.ndarray:
    """Weights w_0..w_L of the day-correlated noise z_d = sum_j w_j e_(d-j) (EDM's noise e per day).

    w_j is proportional to rho**j, cut at :data:`DAY_WEIGHT_CUTOFF` (at most :data:`MAX_DAY_LAG`
    lags) and scaled so that sum w_j**2 = 1: z_d stays standard normal, and consecutive days share
    sum_j w_j w_(j+1), which is rho up to the cut-off. A moving average of per-date noise, not
    a recursion: the noise of a day depends on its own date and the L dates before it only, so any
    day of any year is regenerated alone, and a year's first days continue the previous year's
    noise although the two years are different jobs. ``rho = 0`` gives [1.0]: independent days.
    """
    rho = float(rho)
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"day correlation {rho} must be in [0, 1)")
    if rho == 0.0:
        return np.ones(1)
    lags = min(MAX_DAY_LAG, int(math.ceil(math.log(DAY_WEIGHT_CUTOFF) / math.log(rho))))
    w = rho ** np.arange(lags + 1, dtype=np.float64)
    return w / np.sqrt((w**2).sum())


class DayNoise:
    """Standard normal draws of one member and date, correlated with the neighbouring dates'.

    ``generators`` hold one generator per lag j = 0..L (seeded from the date j days earlier by
    :func:`member_seed`); every draw takes the next draw of each and mixes them with
    :func:`day_weights`, so the k-th draw of a date is the same whichever batch or job asks for it.
    """

    def __init__(self, generators: Sequence[torch.Generator], weights: np.ndarray) -> None:
        if len(generators) != len(weights):
            raise ValueError("DayNoise: one generator per lag weight")
        self.generators, self.weights = list(generators), [float(w) for w in weights]

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        out = torch.zeros(shape, dtype=torch.float64)
        for g, w in zip(self.generators, self.weights):
            out += w * torch.randn(shape, generator=g, dtype=torch.float32).double()
        return out.float()


def draw(source: torch.Generator | DayNoise, shape: tuple[int, ...]) -> torch.Tensor:
    """One standard normal draw from a plain generator or a :class:`DayNoise`."""
    if isinstance(source, torch.Generator):
        return torch.randn(shape, generator=source, dtype=torch.float32)
    return source.draw(shape)


def sigma_schedule(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """t_0 = sigma_max > ... > t_{N-1} = sigma_min, t_N = 0 (EDM eq. 5), float64."""
    if steps == 1:
        t = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        i = torch.arange(steps, dtype=torch.float64)
        a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
        t = (a + i / (steps - 1) * (b - a)) ** rho
    return torch.cat([t, torch.zeros(1, dtype=torch.float64)])


def chunked(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], micro: int | None,
            x: torch.Tensor, cond: torch.Tensor, tfeat: torch.Tensor) -> torch.Tensor:
    """Evaluate ``fn`` over the batch in micro-batches of exactly ``micro`` rows (tail padded).

    ``micro=None`` evaluates the whole batch at once (GPU path, where bit-reproducibility is not
    promised).
    """
    n = x.shape[0]
    if micro is None or n == 0:
        return fn(x, cond, tfeat)
    outs = []
    for i in range(0, n, micro):
        xs, cs, ts = x[i : i + micro], cond[i : i + micro], tfeat[i : i + micro]
        k = xs.shape[0]
        if k < micro:
            pad = micro - k
            xs = torch.cat([xs, xs[:1].expand(pad, *xs.shape[1:])])
            cs = torch.cat([cs, cs[:1].expand(pad, *cs.shape[1:])])
            ts = torch.cat([ts, ts[:1].expand(pad, *ts.shape[1:])])
        outs.append(fn(xs, cs, ts)[:k])
    return torch.cat(outs)


def heun_sample(
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    generators: Sequence[torch.Generator | DayNoise],
    shape: tuple[int, int, int],
    steps: int,
    sigma_min: float,
    sigma_max: float,
    rho: float = 7.0,
    churn: float = 0.0,
    s_noise: float = 1.0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    noise_scale: Sequence[float] | None = None,
) -> torch.Tensor:
    """Draw one field per generator with the 2nd-order EDM sampler (2*steps-1 evaluations).

    ``generators`` holds one noise source per row: a ``torch.Generator`` (independent days) or a
    :class:`DayNoise` (noise correlated with the neighbouring dates'); the initial noise and every
    churn draw come from it.

    ``denoise(x, sigma)`` returns D(x; sigma) for the whole batch (x: (B, C, H, W), sigma: scalar
    tensor). ``churn`` is S_churn; 0 gives the deterministic probability-flow ODE.

    ``noise_scale`` (one factor per channel, default all 1) multiplies every noise draw of that
    channel: a per-channel sampling temperature. For a Gaussian target the probability-flow ODE
    maps its starting noise linearly onto the sample, so the factor scales that channel's ensemble
    spread about its conditional mean; it is the lever that calibrates channels a network makes
    over- or under-dispersed at the same time (:func:`aid.model.tune.tune_noise_scale`).
    """
    t = sigma_schedule(steps, sigma_min, sigma_max, rho)
    gamma = min(churn / steps, math.sqrt(2) - 1) if churn > 0 else 0.0
    scale = None
    if noise_scale is not None:
        factors = [float(f) for f in noise_scale]
        if len(factors) != shape[0] or not all(math.isfinite(f) and f > 0 for f in factors):
            raise ValueError(f"heun_sample: noise_scale {factors} needs one positive factor per channel ({shape[0]})")
        if any(f != 1.0 for f in factors):
            scale = torch.tensor(factors, dtype=torch.float32).reshape(1, -1, 1, 1)

    def noise() -> torch.Tensor:
        z = torch.stack([draw(g, shape) for g in generators])
        return (z if scale is None else z * scale).to(device)

    x = noise() * float(t[0])
    for i in tqdm(range(steps), desc="heun", leave=False, disable=not progress):
        t_cur, t_next = float(t[i]), float(t[i + 1])
        t_hat = t_cur * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(t_hat**2 - t_cur**2) * s_noise * noise()
        d = (x - denoise(x, torch.tensor(t_hat, dtype=torch.float32, device=device))) / t_hat
        x_next = x + (t_next - t_hat) * d
        if t_next > 0:
            d2 = (x_next - denoise(x_next, torch.tensor(t_next, dtype=torch.float32, device=device))) / t_next
            x_next = x + (t_next - t_hat) * 0.5 * (d + d2)
        x = x_next
    return x
