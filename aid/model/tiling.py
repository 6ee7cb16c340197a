"""Overlapping tiles with smooth blending, for domains larger than the training patch.

Why blend the *denoiser output at every sampler step* (not the final fields): neighbouring tiles
then agree on the common noisy state at each noise level, so the sampled fields carry no seam.
Weights are sin^2 ramps over the overlap, strictly positive, normalised by their sum; longitude
wraps around when the fine grid spans 360 degrees (global runs), so there is no seam at the
date line either.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch


def tile_starts(n: int, tile: int, overlap: int, periodic: bool = False) -> list[int]:
    """Start indices of tiles of length ``tile`` covering ``n`` cells with at least ``overlap``."""
    if n <= tile:
        return [0]
    stride = max(1, tile - overlap)
    if periodic:
        k = math.ceil(n / stride)
        return [int(round(i * n / k)) for i in range(k)]
    k = math.ceil((n - overlap) / stride)
    k = max(k, 2)
    return [int(round(s)) for s in np.linspace(0, n - tile, k)]


def ramp(length: int, overlap: int) -> torch.Tensor:
    """1-D blending weight: sin^2 rise over ``overlap`` cells at both ends, 1 in the middle."""
    i = torch.arange(length, dtype=torch.float64)
    r = max(1, overlap)
    up = torch.clamp((i + 0.5) / r, max=1.0)
    down = torch.clamp((length - i - 0.5) / r, max=1.0)
    return (torch.sin(0.5 * math.pi * torch.minimum(up, down)) ** 2).to(torch.float32)


def tiled_apply(
    fn: Callable[[torch.Tensor, torch.Tensor, slice, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    cond: torch.Tensor,
    tile: tuple[int, int],
    overlap: int,
    periodic_lon: bool = False,
) -> torch.Tensor:
    """Apply ``fn(x_tile, cond_tile, row_slice, col_index)`` over tiles and blend the outputs.

    ``x``: (B, C, H, W); ``cond``: (B, Cc, H, W). Returns (B, C_out, H, W) where C_out is the
    channel count ``fn`` returns (equal to C for the denoiser).
    """
    _, _, h, w = x.shape
    th, tw = min(tile[0], h), min(tile[1], w)
    if th >= h and tw >= w:
        return fn(x, cond, slice(0, h), torch.arange(w, device=x.device))
    rows = tile_starts(h, th, overlap, periodic=False)
    cols = tile_starts(w, tw, overlap, periodic=periodic_lon)
    out: torch.Tensor | None = None
    wsum = torch.zeros(h, w, dtype=torch.float32, device=x.device)
    wr = ramp(th, overlap if th < h else 0).to(x.device)
    wc = ramp(tw, overlap if tw < w else 0).to(x.device)
    wt = wr[:, None] * wc[None, :]
    for r0 in rows:
        rs = slice(r0, r0 + th)
        for c0 in cols:
            ci = (torch.arange(c0, c0 + tw, device=x.device)) % w
            y = fn(x[:, :, rs].index_select(3, ci), cond[:, :, rs].index_select(3, ci), rs, ci).to(torch.float32)
            if out is None:
                out = torch.zeros(x.shape[0], y.shape[1], h, w, dtype=torch.float32, device=x.device)
            out[:, :, rs].index_add_(3, ci, y * wt)
            wsum[rs].index_add_(1, ci, wt)
    assert out is not None
    return out / wsum
