"""Per-variable value transforms and per-channel normalisation.

Why: precipitation is skewed and bounded below, so the model works on ``log1p(pr)`` (or a cube
root, ``model.pr_transform: power``) in mm/day and the inverse is clipped at 0, which keeps every
delivered precipitation value non-negative. Every channel is then standardised with the mean and
std of the *fine* training field; the same statistics normalise the upsampled conditioning and the
residual (so the residual keeps its physical ratio to the field's variability; its own RMS becomes
sigma_data). The statistics live in the checkpoint so inference needs no training data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aid.variables import VARIABLES

#: Variables transformed before the network (the registry's non-identity model transforms).
PR_VARIABLES = frozenset(v for v, m in VARIABLES.items() if "identity" not in m.model_transforms)
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
