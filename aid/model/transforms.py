"""Per-variable value transforms and per-channel normalisation.

Why: precipitation is skewed and bounded below, so the model works on ``log1p(pr)`` (or a cube
root, ``model.pr_transform: power``) in mm/day and the inverse is clipped at 0, which keeps every
delivered precipitation value non-negative. Every channel is then standardised with the mean and
std of the *fine* training field; the same statistics normalise the upsampled conditioning and the
residual (so the residual keeps its physical ratio to the field's variability; its own RMS becomes
sigma_data). The statistics live in the checkpoint so inference needs no training data.

Temperatures are conditioned *level-free* (:data:`LEVEL_FREE_VARIABLES`): the network and the
residual prior see the upsampled coarse field minus its own domain mean at that time step (divided
by the training std; one level shared by tas, tasmax and tasmin, see :func:`common_level`), not its
distance from the training mean. Why: the fine-minus-coarse residual
of a temperature field is set by the coarse field's spatial structure (gradients, land-sea
contrast, orography under a given flow) and the hour, not by how warm the domain is overall. An
absolute conditioning lets a scenario's warmer coarse input (+4 K is about one training std) move
the inputs of the network and of the linear prior out of their training range, where the prior
extrapolates linearly (or is clipped at its training range) and the network answers arbitrarily,
so the residual picks up a bias that comes from the warming alone. Level-free, a uniformly warmer
coarse input leaves the conditioning, hence the residual, unchanged, and the downscaled field
shifts exactly by the warming (the pseudo-global-warming test, bench/pgw.py). The absolute level
still enters the output, through the upsampled coarse field the residual is added to.
Precipitation keeps its absolute conditioning: its zero bound and its wet/dry structure depend on
the amount itself. Winds keep it too (a uniform wind shift is not a climate-change signal and
their level sets the flow the residual follows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aid.variables import VARIABLES

#: Variables transformed before the network (the registry's non-identity model transforms).
PR_VARIABLES = frozenset(v for v, m in VARIABLES.items() if "identity" not in m.model_transforms)
#: Variables conditioned as the anomaly from their own domain mean (see the module docstring).
LEVEL_FREE_VARIABLES = frozenset({"tas", "tasmax", "tasmin"})
#: Exponent of the ``power`` precipitation transform.
PR_POWER = 1.0 / 3.0
#: Ceiling of the inverse transform (mm/day). It only guards the exponential inverse against
#: overflow when a sampler run with too few steps goes astray; it sits well above the registry's
#: physical bound so that such a run is still flagged by the checks stage instead of being hidden.
PR_MAX = 2.5 * VARIABLES["pr"].bounds[1]


def forward(var: str, x: np.ndarray, pr_transform: str) -> np.ndarray:
    """Physical units -> model space (identity except for precipitation)."""
    if var not in PR_VARIABLES:
        return x
    if pr_transform not in VARIABLES[var].model_transforms:
        raise ValueError(f"transform {pr_transform!r} is not valid for {var}: use one of {VARIABLES[var].model_transforms}")
    x = np.maximum(x, 0.0)
    if pr_transform == "log1p":
        return np.log1p(x)
    if pr_transform == "power":
        return np.power(x, PR_POWER)
    raise ValueError(f"unknown pr_transform {pr_transform!r}")


def inverse(var: str, y: np.ndarray, pr_transform: str) -> np.ndarray:
    """Model space -> physical units; precipitation is clipped to >= 0."""
    if var not in PR_VARIABLES:
        return y
    y = np.clip(y, 0.0, forward(var, np.asarray(PR_MAX), pr_transform))
    if pr_transform == "log1p":
        return np.expm1(y)
    if pr_transform == "power":
        return np.power(y, 1.0 / PR_POWER)
    raise ValueError(f"unknown pr_transform {pr_transform!r}")


def forward_stack(variables: Sequence[str], arr: np.ndarray, pr_transform: str) -> np.ndarray:
    """Apply :func:`forward` along axis 1 (channels) of an (N, C, H, W) array."""
    out = np.empty_like(arr, dtype=np.float64)
    for i, v in enumerate(variables):
        out[:, i] = forward(v, arr[:, i].astype(np.float64), pr_transform)
    return out


def inverse_stack(variables: Sequence[str], arr: np.ndarray, pr_transform: str) -> np.ndarray:
    out = np.empty_like(arr, dtype=np.float64)
    for i, v in enumerate(variables):
        out[:, i] = inverse(v, arr[:, i].astype(np.float64), pr_transform)
    return out


def channel_stats(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of (N, C, H, W); std floored so a constant channel stays finite."""
    mean = arr.mean(axis=(0, 2, 3))
    std = arr.std(axis=(0, 2, 3))
    return mean, np.maximum(std, 1e-6)


def level_free(variables: Sequence[str]) -> np.ndarray:
    """(C,) bool: which channels are conditioned level-free (:data:`LEVEL_FREE_VARIABLES`)."""
    return np.array([v in LEVEL_FREE_VARIABLES for v in variables], dtype=bool)


def common_level(means: np.ndarray, free: np.ndarray) -> np.ndarray:
    """(N, C) reference level of each channel from its (N, C) domain means: for the level-free
    channels the mean of the level-free channels' domain means (one level for tas, tasmax and
    tasmin, so the conditioning keeps their differences, e.g. the diurnal range, which shapes the
    fine-scale residual on calm clear days), zeros for the others."""
    out = np.zeros(means.shape, dtype=np.float64)
    if free.any():
        out[:, free] = means[:, free].mean(axis=1, keepdims=True)
    return out


def domain_level(up_t: np.ndarray, free: np.ndarray) -> np.ndarray:
    """(N, C) :func:`common_level` of each time step's upsampled coarse field (model space)."""
    return common_level(up_t.mean(axis=(2, 3)), free)


def normalise_coarse(up_t: np.ndarray, mean: np.ndarray, std: np.ndarray, free: np.ndarray,
                     level: np.ndarray | None) -> np.ndarray:
    """(N, C, h, w) conditioning of the upsampled coarse field ``up_t`` (model space), float64.

    Channels with ``free`` set take ``(up_t - level) / std`` (``level``: (N, C) from
    :func:`domain_level` of the *whole* domain, so a piece is normalised exactly as the whole);
    the others ``(up_t - mean) / std``. A uniform shift of a level-free channel leaves its
    conditioning unchanged. No clipping: an input outside the training range stays visible.
    """
    offset = np.broadcast_to(mean[None, :], (up_t.shape[0], len(mean))).astype(np.float64)
    if free.any():
        if level is None:
            raise ValueError("normalise_coarse: level-free channels need the domain levels")
        offset = np.where(free[None, :], level, offset)
    return (up_t - offset[:, :, None, None]) / std[None, :, None, None]
