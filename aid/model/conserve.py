"""Coarse-cell conservation: each downscaled field averages back to its coarse input.

Why: the diffusion model adds a fine-scale residual to the upsampled coarse field, and nothing in the
network forces the area mean of that residual over a coarse cell to vanish. For a temperature the
level-free conditioning already makes the response to a uniform warming exact (aid.model.transforms),
but precipitation is conditioned on its absolute amount and transformed (log1p), so a wetter
scenario input comes out with a mean change that is not the input's: the pseudo-global-warming test
(bench/pgw.py) scales the coarse pr by 1 + 0.07 dT and the downscaled domain mean follows only part
of it. Renormalising every sample so that its area-weighted mean over each coarse cell equals the
coarse value is the hard constraint of Harder et al. (2023, "Hard-constrained deep learning for
climate downscaling", JMLR 24): multiplicative for a non-negative amount (the zeros, the wet/dry
pattern and the spatial ratios of the sample are kept), additive for the others. The coarse input
then sets every coarse-scale property of the product (its mean, its change under a scenario, what
bias adjustment did to it), and the model supplies only the sub-cell distribution.

The kind of each variable is its registry adjustment kind (``*`` multiplicative, ``+`` additive:
the same reasoning that chooses ratio or difference factors in bias adjustment).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from aid.variables import VARIABLES

#: Coarse-cell means below this (in the variable's internal units, mm/d for pr) count as dry: a
#: multiplicative factor from a near-zero sample mean would blow up, so such a cell takes the
#: coarse value's missing amount spread evenly instead.
DRY_MEAN = 1e-6
#: Fine cells that straddle a coarse edge belong to two coarse cells, so one pass of per-cell factors
#: leaves a small mismatch; the passes repeat (iterative proportional fitting) until every cell mean
#: is within this relative tolerance of its coarse value, or :data:`MAX_PASSES` are done.
RTOL = 1e-6
MAX_PASSES = 200


def kind(var: str) -> str:
    """``"*"`` (multiplicative) or ``"+"`` (additive) conservation of ``var`` (registry adjust kind)."""
    kinds = VARIABLES[var].adjust_kinds
    return "*" if "*" in kinds and "+" not in kinds else "+"


def _bounds(centres: np.ndarray) -> np.ndarray:
    """Cell bounds halfway between centres (the outer ones half a spacing out), ascending."""
    c = np.sort(np.asarray(centres, dtype=np.float64))
    if c.size == 1:
        raise ValueError("coarse-cell conservation needs at least two centres per axis")
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])


def _overlap(fine: np.ndarray, coarse: np.ndarray, measure, periodic: bool) -> np.ndarray:  # noqa: ANN001
    """(n_coarse, n_fine) overlap of the cells along one axis, in ``measure`` units, in the callers' order."""
    fb, cb = _bounds(fine), _bounds(coarse)
    f_order, c_order = np.argsort(fine), np.argsort(coarse)
    f_lo, f_hi = np.empty(len(fine)), np.empty(len(fine))
    f_lo[f_order], f_hi[f_order] = fb[:-1], fb[1:]
    c_lo, c_hi = np.empty(len(coarse)), np.empty(len(coarse))
    c_lo[c_order], c_hi[c_order] = cb[:-1], cb[1:]
    shifts = (-360.0, 0.0, 360.0) if periodic else (0.0,)
    out = np.zeros((len(coarse), len(fine)))
    for sh in shifts:
        lo = np.maximum(c_lo[:, None], f_lo[None, :] + sh)
        hi = np.minimum(c_hi[:, None], f_hi[None, :] + sh)
        out += np.where(hi > lo, measure(hi) - measure(lo), 0.0)
    return out


@dataclass(frozen=True)
class CellMap:
    """Area overlaps of the fine cells with the coarse cells (spherical: sin(lat) x lon)."""

    #: (K, P) sparse: area-weighted mean over each coarse cell (rows sum to 1; zero rows for cells
    #: that no fine cell overlaps).
    mean_op: sp.csr_matrix
    #: (P, K) sparse: share of each fine cell in each coarse cell (rows sum to 1; zero rows for fine
    #: cells outside the coarse grid).
    share_op: sp.csr_matrix
    #: (K,) whether a coarse cell has fine cells; (P,) whether a fine cell lies in the coarse grid.
    covered: np.ndarray
    inside: np.ndarray
    coarse_shape: tuple[int, int]
    fine_shape: tuple[int, int]

    @classmethod
    def build(cls, fine_lat: np.ndarray, fine_lon: np.ndarray, coarse_lat: np.ndarray,
              coarse_lon: np.ndarray) -> CellMap:
        lat_ov = _overlap(fine_lat, coarse_lat, lambda x: np.sin(np.deg2rad(np.clip(x, -90, 90))), periodic=False)
        lon_ov = _overlap(fine_lon, coarse_lon, lambda x: x, periodic=True)
        area = sp.kron(sp.csr_matrix(lat_ov), sp.csr_matrix(lon_ov)).tocsr()  # (K, P), row-major grids
        rows = np.asarray(area.sum(axis=1)).ravel()
        cols = np.asarray(area.sum(axis=0)).ravel()
        mean_op = sp.diags(np.where(rows > 0, 1.0 / np.where(rows > 0, rows, 1.0), 0.0)) @ area
        share_op = (area @ sp.diags(np.where(cols > 0, 1.0 / np.where(cols > 0, cols, 1.0), 0.0))).T
        return cls(mean_op=mean_op.tocsr(), share_op=share_op.tocsr(), covered=rows > 0, inside=cols > 0,
                   coarse_shape=(len(coarse_lat), len(coarse_lon)), fine_shape=(len(fine_lat), len(fine_lon)))

    def cell_means(self, fine: np.ndarray) -> np.ndarray:
        """(..., h, w) area-weighted means over each coarse cell of ``fine`` (..., H, W)."""
        lead = fine.shape[:-2]
        x = fine.reshape(-1, fine.shape[-2] * fine.shape[-1]).astype(np.float64)
        return (self.mean_op @ x.T).T.reshape(*lead, *self.coarse_shape)

    def conserve(self, fine: np.ndarray, coarse: np.ndarray, how: str) -> np.ndarray:
        """``fine`` (..., H, W) adjusted so that its cell means equal ``coarse`` (..., h, w; broadcast
        against the leading dimensions of ``fine``, e.g. (time, h, w) for (sample, time, H, W)).

        ``how="*"``: each cell scaled by coarse / sample mean (zeros stay zeros; a cell whose sample is
        dry gets the coarse amount evenly); ``"+"``: shifted by coarse - sample mean. A fine cell
        shared by two coarse cells takes the area-weighted mean of their factors, repeated until
        the means match (:data:`RTOL`). Fine cells outside the coarse grid, and coarse cells whose
        value is missing, are left as they are.
        """
        if how not in ("*", "+"):
            raise ValueError(f"unknown conservation kind {how!r}: use '*' or '+'")
        lead = fine.shape[:-2]
        f = fine.reshape(-1, fine.shape[-2] * fine.shape[-1]).astype(np.float64).T  # (P, N)
        k = self.coarse_shape[0] * self.coarse_shape[1]
        c = np.broadcast_to(np.asarray(coarse, dtype=np.float64), (*lead, *self.coarse_shape)).reshape(-1, k).T
        active = self.covered[:, None] & np.isfinite(c)  # (K, N)
        c = np.where(active, c, 0.0)
        if how == "*":
            # a fine cell that overlaps a coarse cell with no amount must be 0 for that cell to stay
            # at 0; set them first, so the passes only share the amounts of the wet cells
            dry = (self.share_op @ (active & (c <= 0.0)).astype(np.float64)) > 0
            f = np.where(dry, 0.0, f)
        scale = np.maximum(np.abs(c), DRY_MEAN)
        # Each field (column) stops on its own: its result must not depend on which other samples or
        # days share the batch (a re-run of one sample is bit-identical, aid.downscale).
        todo = np.arange(f.shape[1])
        for _ in range(MAX_PASSES):
            ft, ct, at = f[:, todo], c[:, todo], active[:, todo]
            m = self.mean_op @ ft
            gap = np.where(at, ct - m, 0.0)
            left = ~np.all(np.abs(gap) <= RTOL * scale[:, todo], axis=0)
            if not left.any():
                todo = todo[:0]
                break
            todo, ft, ct, at, m, gap = todo[left], ft[:, left], ct[:, left], at[:, left], m[:, left], gap[:, left]
            if how == "+":
                f[:, todo] = ft + self.share_op @ gap
                continue
            wet = at & (m > DRY_MEAN)
            factor = np.where(wet, ct / np.where(wet, m, 1.0), 1.0)
            fill = np.where(at & ~wet, gap, 0.0)
            new = ft * (self.share_op @ factor + (~self.inside)[:, None]) + self.share_op @ fill
            f[:, todo] = np.where(dry[:, todo], 0.0, new)
        if how == "*" and len(todo):
            f[:, todo] = self._close(f[:, todo], c[:, todo], active[:, todo])
        return f.T.reshape(*lead, *fine.shape[-2:])

    def _close(self, f: np.ndarray, c: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Exact multiplicative end for fields the passes did not settle (P, N).

        The passes cannot settle a cell whose sample puts its amount in fine cells it shares with a
        much drier neighbour (the two cells pull the shared values apart). Here the shared fine
        cells keep their values, scaled down where they alone exceed a cell's amount, and each
        cell's own (unshared) fine cells take the rest: scaled when they hold any amount, evenly
        otherwise. Exact for every cell with unshared fine cells; nothing becomes negative.
        """
        share = self.share_op
        own = np.isclose(np.asarray(share.max(axis=1).todense()).ravel(), 1.0) & self.inside  # (P,)
        shared = self.inside & ~own
        m_sh = self.mean_op @ np.where(shared[:, None], f, 0.0)  # (K, N) shared part of each cell mean
        ratio = np.where(active & (m_sh > c), c / np.where(m_sh > 0, m_sh, 1.0), 1.0)
        # each shared fine cell takes the smallest ratio of the cells it lies in
        nnz = np.diff(share.indptr)
        lower = np.ones_like(f)
        rows = np.flatnonzero(nnz > 0)
        lower[rows] = np.minimum.reduceat(ratio[share.indices], share.indptr[rows], axis=0)
        f = np.where(shared[:, None], f * lower, f)
        m_sh = self.mean_op @ np.where(shared[:, None], f, 0.0)
        m_own = self.mean_op @ np.where(own[:, None], f, 0.0)
        w_own = self.mean_op @ own.astype(np.float64)  # (K,) weight of the unshared cells in the mean
        rest = np.where(active, np.maximum(c - m_sh, 0.0), 0.0)
        has = (w_own > 0)[:, None] & active
        wet = has & (m_own > DRY_MEAN)
        scale = np.where(wet, rest / np.where(wet, m_own, 1.0), 1.0)
        even = np.where(has & ~wet, rest / np.where(w_own > 0, w_own, 1.0)[:, None], 0.0)
        return np.where(own[:, None], f * (share @ scale) + share @ even, f)


__all__ = ["CellMap", "DRY_MEAN", "MAX_PASSES", "RTOL", "kind"]
