"""Radially averaged power spectra of 2-D fields.

Why spectra: pixel scores (MAE, RMSE) reward smooth fields; a downscaler must also put the right
amount of variance at small scales. The bicubic baseline loses power below the coarse grid
spacing; a good generative model restores it to the reference level without adding noise.

Method: remove the field mean, taper with a 2-D Hann window (a non-periodic limited-area field
otherwise leaks edge discontinuities into every wavenumber), 2-D FFT, |F|^2 normalised by the
window energy, then *average* over annuli of the radial wavenumber. With that normalisation
white noise has a flat spectrum at its variance, and a sinusoid with k cycles across a square
domain peaks in bin k.
"""

from __future__ import annotations

import numpy as np

from aid.errors import DataError

#: Approximate length of 0.25 deg of latitude in km (for wavelength axes).
KM_PER_DEG = 111.2


def _window(ny: int, nx: int, kind: str) -> np.ndarray:
    if kind == "hann":
        return np.outer(np.hanning(ny), np.hanning(nx))
    if kind == "tukey":
        from scipy.signal.windows import tukey

        return np.outer(tukey(ny, 0.25), tukey(nx, 0.25))
    if kind in ("none", "boxcar"):
        return np.ones((ny, nx))
    raise ValueError(f"unknown window {kind!r}; use hann, tukey or none")


def radial_power_spectrum(field: np.ndarray, window: str = "hann") -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of ``field`` (..., ny, nx), averaged over leading axes.

    Returns ``(k, power)``: ``k`` = 1..N//2 in cycles per domain length N = min(ny, nx) (divide by
    N * grid spacing for a physical wavenumber), ``power`` the mean normalised power per bin.
    Raises :class:`DataError` when the field holds NaN (an FFT would spread them everywhere).
    """
    f = np.asarray(field, dtype=float)
    if f.ndim < 2:
        raise ValueError("field must have at least 2 dimensions (..., ny, nx)")
    if not np.all(np.isfinite(f)):
        raise DataError("power spectrum: field contains NaN/inf.", "mask-free (land+sea) fields are needed for spectra.")
    ny, nx = f.shape[-2:]
    f = f.reshape(-1, ny, nx)
    f = f - f.mean(axis=(-2, -1), keepdims=True)
    w = _window(ny, nx, window)
    spec = np.abs(np.fft.fft2(f * w)) ** 2 / (w**2).sum()
    spec = spec.mean(axis=0)
    n = min(ny, nx)
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.fftfreq(nx)[None, :]
    kbin = np.rint(np.sqrt(fy**2 + fx**2) * n).astype(int)
    kmax = n // 2
    sums = np.bincount(kbin.ravel(), weights=spec.ravel(), minlength=kmax + 1)
    cnts = np.bincount(kbin.ravel(), minlength=kmax + 1)
    k = np.arange(1, kmax + 1)
    return k, sums[1 : kmax + 1] / np.maximum(cnts[1 : kmax + 1], 1)


def wavelength_km(k: np.ndarray, n: int, dx_deg: float = 0.25, lat0: float = 0.0) -> np.ndarray:
    """Wavelength in km of bin ``k`` (cycles per n cells of ``dx_deg``).

    Uses the geometric-mean cell size at latitude ``lat0`` (zonal spacing shrinks by cos lat).
    """
    dx_km = dx_deg * KM_PER_DEG * np.sqrt(np.cos(np.deg2rad(lat0)))
    return n * dx_km / np.asarray(k, dtype=float)


__all__ = ["radial_power_spectrum", "wavelength_km"]
