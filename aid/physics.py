"""Physical-consistency fixes of sampled fields, and the check that they hold: one policy each.

Why one module: the downscale job fixes the fields it writes and the checks stage verifies the
files; both call this module, so what is checked is exactly what was enforced, and a change of
policy cannot reach one without the other.

Temperature order (``tasmin <= tas <= tasmax``) policy:

* with tas: an offending bound is moved onto tas (``tasmin := tas`` where ``tasmin > tas``,
  ``tasmax := tas`` where ``tasmax < tas``). tas is the best-constrained field (it is the one
  every source has and the one the evaluation scores), and moving only the offending bound is the
  smallest change that restores the order.
* without tas: where ``tasmin > tasmax`` the two are swapped. A swap keeps both the pair's mean
  and its absolute range, so the diurnal temperature range of the corrected cells is not
  collapsed to zero (a mid-point would bias DTR-based indices low); it is also what bias
  adjustment does in the same situation.

Precipitation: negative values are set to 0 (the registry's lower bound).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from aid.variables import VARIABLES

#: The policy as recorded in the deliverables' ``aid_temperature_order_fix_method`` attribute.
TEMPERATURE_FIX_METHOD = (
    "where tasmin > tas, tasmin := tas; where tasmax < tas, tasmax := tas (tas unchanged); "
    "without tas, tasmin and tasmax swapped where tasmin > tasmax; "
    "count = (day, cell) values changed in this sample"
)


def order_pairs(present: set[str] | frozenset[str]) -> list[tuple[str, str]]:
    """The (lower, upper) temperature pairs that must be ordered among the ``present`` variables."""
    if "tas" in present:
        return [(lo, hi) for lo, hi in (("tasmin", "tas"), ("tas", "tasmax")) if lo in present and hi in present]
    return [("tasmin", "tasmax")] if {"tasmin", "tasmax"} <= present else []


def order_violations(fields: Mapping[str, np.ndarray]) -> dict[tuple[str, str], np.ndarray]:
    """Masks of the values where a temperature pair is out of order (zero tolerance), per pair."""
    return {(lo, hi): np.asarray(fields[lo]) > np.asarray(fields[hi]) for lo, hi in order_pairs(set(fields))}


def enforce_temperature_order(fields: dict[str, np.ndarray], axes: tuple[int, ...]) -> np.ndarray | None:
    """Apply the temperature-order policy to ``fields`` in place; count of changed values summed over ``axes``.

    None when fewer than two of tasmin/tas/tasmax are present (nothing to order).
    """
    pairs = order_pairs(set(fields))
    if not pairs:
        return None
    if "tas" in fields:
        tas = fields["tas"]
        changed = np.zeros(tas.shape, dtype=bool)
        if "tasmin" in fields:
            bad = fields["tasmin"] > tas
            fields["tasmin"][bad] = tas[bad]
            changed |= bad
        if "tasmax" in fields:
            bad = fields["tasmax"] < tas
            fields["tasmax"][bad] = tas[bad]
            changed |= bad
        return changed.sum(axis=axes)
    bad = fields["tasmin"] > fields["tasmax"]
    lo = fields["tasmax"][bad]
    fields["tasmax"][bad] = fields["tasmin"][bad]
    fields["tasmin"][bad] = lo
    return bad.sum(axis=axes)


def enforce_non_negative_precipitation(pr: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Set pr below the registry's lower bound (0) to it, in place; count of changed values over ``axes``."""
    lo = VARIABLES["pr"].bounds[0]
    bad = pr < lo
    pr[bad] = lo
    return bad.sum(axis=axes)
