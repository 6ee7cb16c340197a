"""EDM preconditioning and loss (Karras et al. 2022, Table 1), with a per-channel sigma_data.

Why per-channel and estimated: the normalised residual (fine minus upsampled coarse, divided by
the fine field's std) has a std of 0.1-0.3, not 1. With sigma_data fixed at 1 (as in IPSL-AID) the
skip/output scalings mix signal and noise at the wrong noise levels and the effective loss weight
is off by an order of magnitude at small sigma. We estimate sigma_data per channel as the RMS of
the normalised training residuals and use it in c_skip, c_out, c_in and lambda(sigma).

    c_skip = sd^2 / (sigma^2 + sd^2)          c_out = sigma sd / sqrt(sigma^2 + sd^2)
    c_in   = 1 / sqrt(sigma^2 + sd^2)         c_noise = ln(sigma) / 4
    D(x; sigma) = c_skip x + c_out F(c_in x ++ cond, c_noise)
    lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2
"""

from __future__ import annotations

import torch
from torch import nn

#: The sigma_data EDM's training noise distribution, sigma_max and loss weighting were chosen for (images in [-1, 1]);
#: ``model.train.sigma_relative`` scales each residual channel to it (aid.model.train.prepare).
EDM_SIGMA_DATA = 0.5


def edm_coefficients(
    sigma: torch.Tensor, sigma_data: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) for ``sigma`` of shape (N,) and ``sigma_data`` of shape (C,).

    The first three are returned broadcastable to (N, C, 1, 1); c_noise has shape (N,).
    """
    s = sigma.reshape(-1, 1, 1, 1).to(torch.float32)
    sd = sigma_data.reshape(1, -1, 1, 1).to(torch.float32)
    denom = s**2 + sd**2
    c_skip = sd**2 / denom
    c_out = s * sd / denom.sqrt()
    c_in = 1 / denom.sqrt()
    c_noise = sigma.to(torch.float32).log() / 4
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: torch.Tensor) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2, shape (N, C, 1, 1): unit effective weight."""
    s = sigma.reshape(-1, 1, 1, 1).to(torch.float32)
    sd = sigma_data.reshape(1, -1, 1, 1).to(torch.float32)
    return (s**2 + sd**2) / (s * sd) ** 2


class EDMDenoiser(nn.Module):
    """D(x; sigma, cond) around a raw network F (see module docstring)."""

    def __init__(self, net: nn.Module, sigma_data: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("sigma_data", torch.as_tensor(sigma_data, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor, tfeat: torch.Tensor) -> torch.Tensor:
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        c_skip, c_out, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        x32 = x.to(torch.float32)
        f = self.net(c_in * x32, cond, c_noise, tfeat)
        return c_skip * x32 + c_out * f.to(torch.float32)


def sample_sigma(n: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu",
                 *, p_mean: float, p_std: float) -> torch.Tensor:
    """Training noise levels: ln(sigma) ~ N(p_mean, p_std^2) (``model.train.p_mean``/``p_std``)."""
    z = torch.randn(n, generator=generator)
    return (p_mean + p_std * z).exp().to(device)


def edm_loss(
    denoiser: nn.Module,
    y: torch.Tensor,
    cond: torch.Tensor,
    tfeat: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    pixel_weight: torch.Tensor | None = None,
    sigma_data: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted denoising loss: mean of lambda(sigma) w_lat |D(y + sigma n) - y|^2.

    ``pixel_weight`` (H, W) is the optional cos(latitude) area weight, normalised to mean 1, so
    the loss is an area mean rather than a grid-point mean.
    """
    sd = sigma_data if sigma_data is not None else denoiser.sigma_data  # type: ignore[union-attr]
    d = denoiser(y + sigma.reshape(-1, 1, 1, 1) * noise, sigma, cond, tfeat)
    err = loss_weight(sigma, sd) * (d - y) ** 2
    if pixel_weight is not None:
        err = err * pixel_weight
    return err.mean()
