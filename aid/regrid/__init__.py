"""Regridding: conservative to the model grid, and back up to 0.25 deg.

Why one package: the coarse field the diffusion model is trained on and the coarse field it is
given at inference must come from the same code path (:func:`coarsen` / :func:`regrid`), and the
upsampled conditioning the model sees must be the one the bicubic baseline delivers
(:func:`upsample`). xarray-regrid is the default backend; xESMF is used only when ESMF imports.

One module per concept: :mod:`~aid.regrid.grid` (grids, longitude windows, edges),
:mod:`~aid.regrid.weights` (conservative weights from xarray-regrid), :mod:`~aid.regrid.banded`
(applying them), :mod:`~aid.regrid.remap` (regridding datasets and files),
:mod:`~aid.regrid.upsample` (coarse -> fine).
"""

from aid.regrid.grid import _target_coords, align_longitudes, normalise_coords
from aid.regrid.remap import METHODS, _conservative, coarsen, regrid, regrid_file
from aid.regrid.upsample import upsample

__all__ = ["METHODS", "align_longitudes", "coarsen", "normalise_coords", "regrid", "regrid_file", "upsample",
           "_conservative", "_target_coords"]
