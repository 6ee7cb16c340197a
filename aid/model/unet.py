"""The denoiser network F of EDM: a small ADM-style U-Net with noise/time embedding.

Why this shape: the residual field is a few channels on a ~0.25 deg patch, so a U-Net with
residual blocks, group norm, and (optionally) self-attention at the coarsest level is enough.
Widths are presets (:data:`SIZES`): ``tiny`` for tests, ``default`` sized so the default pipeline
(thousands of days x samples x 2*steps-1 evaluations at 32 x 40) runs in minutes on 2 CPU cores,
``paper`` ~85 M parameters in the spirit of the IPSL-AID / ADM widths for GPU nodes.

The network sees ``concat(c_in * x_noisy, conditioning)``: the conditioning channels are joined
*after* the c_in scaling so they are not shrunk with the noisy input. The noise level enters as
``c_noise`` through Fourier features; day-of-year and hour enter the same embedding as sin/cos.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Architecture presets (model.size). ``blocks`` is per level; ``attn`` lists levels with attention.
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"base": 8, "mults": (1, 2), "blocks": (1, 1), "attn": (), "emb": 32, "patch": 64, "dropout": 0.0},
    # default: sized so the default run's downscaling fits a laptop's CPU (cost: bench/sampler.py).
    "default": {"base": 8, "mults": (1, 2, 4, 8), "blocks": (1, 1, 2, 2), "attn": (3,), "emb": 64, "patch": 128,
                "dropout": 0.1},
    # paper: the IPSL-AID paper's network size (GPU).
    "paper": {"base": 128, "mults": (1, 2, 3, 4), "blocks": (2, 2, 2, 2), "attn": (3,), "emb": 512, "patch": 128,
              "dropout": 0.1},
}

#: Number of calendar features fed to the embedding: sin/cos day of year, sin/cos hour.
N_TIME_FEATURES = 4


def _groups(ch: int) -> int:
    """GroupNorm group count: up to 32 groups but at least 4 channels per group."""
    for g in (32, 16, 8, 4, 2, 1):
        if ch % g == 0 and ch // g >= 4:
            return g
    return 1


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer so each residual branch starts as identity (stable early training)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """Pre-activation residual block; the embedding modulates the second norm (scale and shift)."""

    def __init__(self, cin: int, cout: int, emb: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return (h + self.skip(x)) * (1 / math.sqrt(2))


class Attention(nn.Module):
    """Multi-head self-attention over all pixels of a (coarse) feature map."""

    def __init__(self, ch: int, head_dim: int = 32) -> None:
        super().__init__()
        self.heads = max(1, ch // head_dim)
        self.norm = nn.GroupNorm(_groups(ch), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(n, c, h, w)
        return (x + self.proj(out)) * (1 / math.sqrt(2))


class UNet(nn.Module):
    """F_theta(c_in x ++ cond, c_noise, time features) -> residual-space output.

    Inputs of any H x W are padded (replicate) to a multiple of 2**(levels-1) and cropped back,
    so the same network serves the 32 x 40 default domain, the 32 x 48 UK crop and tiles.
    """

    def __init__(
        self,
        out_channels: int,
        cond_channels: int,
        base: int = 16,
        mults: Sequence[int] = (1, 2, 4, 4),
        blocks: Sequence[int] = (1, 1, 2, 2),
        attn: Sequence[int] = (3,),
        emb: int = 64,
        dropout: float = 0.0,
        n_freq: int = 16,
        patch: int = 128,
        use_doy: bool = True,
    ) -> None:
        super().__init__()
        # use_doy=False drops the day-of-year sin/cos from the embedding (keeps the hour): with a
        # training set of one month the day of year only identifies training fields (memorisation)
        # and test days lie outside its training range.
        self.use_doy = bool(use_doy)
        if len(blocks) != len(mults):
            raise ValueError("blocks and mults need one entry per level")
        self.out_channels = out_channels
        self.levels = len(mults)
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(200.0), n_freq)), persistent=False)
        self.emb = nn.Sequential(
            nn.Linear(2 * n_freq + N_TIME_FEATURES, emb), nn.SiLU(), nn.Linear(emb, emb), nn.SiLU()
        )
        chans = [base * m for m in mults]
        self.conv_in = nn.Conv2d(out_channels + cond_channels, chans[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips = [chans[0]]
        ch = chans[0]
        for lvl, (c, nb) in enumerate(zip(chans, blocks)):
            for _ in range(nb):
                layer = nn.ModuleList([ResBlock(ch, c, emb, dropout)])
                if lvl in attn:
                    layer.append(Attention(c))
                self.down.append(layer)
                ch = c
                skips.append(ch)
            if lvl < self.levels - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb, dropout), Attention(ch) if attn else nn.Identity(),
                                  ResBlock(ch, ch, emb, dropout)])
        self.up = nn.ModuleList()
        for lvl in reversed(range(self.levels)):
            c = chans[lvl]
            for _ in range(blocks[lvl] + 1):
                layer = nn.ModuleList([ResBlock(ch + skips.pop(), c, emb, dropout)])
                if lvl in attn:
                    layer.append(Attention(c))
                self.up.append(layer)
                ch = c
            if lvl > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(ch, ch, 3, padding=1)]))
        self.norm_out = nn.GroupNorm(_groups(ch), ch)
        self.conv_out = _zero(nn.Conv2d(ch, out_channels, 3, padding=1))

    def embed(self, c_noise: torch.Tensor, tfeat: torch.Tensor) -> torch.Tensor:
        """Fourier features of c_noise = ln(sigma)/4 plus calendar sin/cos, through an MLP."""
        arg = c_noise.float()[:, None] * self.freqs[None, :]
        tfeat = tfeat.float()
        if not self.use_doy:
            tfeat = torch.cat([torch.zeros_like(tfeat[:, :2]), tfeat[:, 2:]], dim=1)
        return self.emb(torch.cat([arg.sin(), arg.cos(), tfeat], dim=1))

    def forward(self, x_in: torch.Tensor, cond: torch.Tensor, c_noise: torch.Tensor, tfeat: torch.Tensor) -> torch.Tensor:
        h0, w0 = x_in.shape[-2:]
        m = 2 ** (self.levels - 1)
        ph, pw = (-h0) % m, (-w0) % m
        h = torch.cat([x_in, cond.to(x_in.dtype)], dim=1)
        if ph or pw:
            h = F.pad(h, (0, pw, 0, ph), mode="replicate")
        emb = self.embed(c_noise, tfeat).to(h.dtype)
        h = self.conv_in(h)
        stack = [h]
        for layer in self.down:
            if isinstance(layer[0], ResBlock):
                h = layer[0](h, emb)
                for extra in layer[1:]:
                    h = extra(h)
            else:
                h = layer[0](h)
            stack.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for layer in self.up:
            if isinstance(layer[0], ResBlock):
                h = layer[0](torch.cat([h, stack.pop()], dim=1), emb)
                for extra in layer[1:]:
                    h = extra(h)
            else:
                h = layer[1](layer[0](h))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[..., :h0, :w0]


def build_unet(size: str, out_channels: int, cond_channels: int,
               dropout: float | None = None, use_doy: bool = True) -> tuple[UNet, dict[str, Any]]:
    """Instantiate a preset; returns the model and the kwargs (stored in checkpoints).

    ``dropout`` overrides the preset's residual-block dropout (model.train.dropout).
    """
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; use one of {', '.join(SIZES)}")
    kw = dict(SIZES[size])
    if dropout is not None:
        kw["dropout"] = float(dropout)
    if not use_doy:  # only stored when off, so older checkpoints' kwargs stay valid
        kw["use_doy"] = False
    kw = {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
    kw.update(out_channels=out_channels, cond_channels=cond_channels)
    return UNet(**kw), kw


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
