"""Residual EDM diffusion downscaler (IPSL-AID method, Karras et al. 2022 preconditioning).

Modules: :mod:`~aid.model.unet` (network F), :mod:`~aid.model.precond` (c_skip, c_out, c_in,
c_noise, loss), :mod:`~aid.model.sampler` (Heun sampler, per-member seeded noise),
:mod:`~aid.model.tiling` (overlapping tiles), :mod:`~aid.model.transforms` (pr transform,
normalisation), :mod:`~aid.model.data` (pairs and conditioning), :mod:`~aid.model.checkpoint`
(hashed, weights-only checkpoints), :mod:`~aid.model.train` (``train_from_config``) and
:mod:`~aid.model.api` (``Downscaler``, the downscale stage's entry point). torch is imported only
by these submodules, never by ``import aid.model``.
"""
