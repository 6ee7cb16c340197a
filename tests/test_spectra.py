"""Radially averaged power spectra: fields with known spectra, and real ERA5 orography."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from aid.errors import DataError
from aid.evaluate.spectra import radial_power_spectrum, wavelength_km

STATIC = Path("/work/shared/data/era5/era5-static-z-lsm-global.nc")


@pytest.mark.parametrize("k0", [3, 7, 12])
@pytest.mark.parametrize("direction", ["x", "y", "diag"])
def test_sinusoid_peaks_in_its_bin(k0: int, direction: str) -> None:
    n = 64
    y, x = np.mgrid[0:n, 0:n]
    phase = {"x": k0 * x, "y": k0 * y, "diag": k0 * (x + y) / np.sqrt(2)}[direction]
    field = np.sin(2 * np.pi * phase / n) + 10.0  # offset: the mean is removed
    k, p = radial_power_spectrum(field)
    assert k[np.argmax(p)] == round(k0) if direction != "diag" else abs(k[np.argmax(p)] - k0) <= 1


def test_non_square_domain_sinusoid() -> None:
    """32 x 40 cells (the default UK domain): 5 cycles across the 32-cell side peak in bin 5."""
    y, _ = np.mgrid[0:32, 0:40]
    k, p = radial_power_spectrum(np.cos(2 * np.pi * 5 * y / 32))
    assert k[np.argmax(p)] == 5


def test_white_noise_is_flat() -> None:
    rng = np.random.default_rng(0)
    field = rng.normal(scale=2.0, size=(200, 48, 48))
    k, p = radial_power_spectrum(field)
    # normalised by the window energy: flat at the variance (4), within sampling error
    assert np.all(np.abs(p[2:] / 4.0 - 1.0) < 0.15), p / 4.0
    slope = np.polyfit(np.log(k[2:]), np.log(p[2:]), 1)[0]
    assert abs(slope) < 0.05


def test_smoothing_removes_small_scale_power() -> None:
    rng = np.random.default_rng(1)
    field = rng.normal(size=(50, 64, 64))
    smooth = ndimage.gaussian_filter(field, sigma=(0, 2, 2))
    k, p = radial_power_spectrum(smooth)
    assert np.all(np.diff(p[3:]) < 0)  # monotone decay
    assert p[-1] < 1e-3 * p[1]
    # a Gaussian filter of sigma s has transfer exp(-2 pi^2 s^2 f^2): check one bin
    f = k[8] / 64
    _, p_raw = radial_power_spectrum(field)
    assert p[8] / p_raw[8] == pytest.approx(np.exp(-4 * np.pi**2 * 4 * f**2), rel=0.25)


def test_real_orography_red_spectrum() -> None:
    """ERA5 orography over the UK box: power falls with wavenumber (a red spectrum)."""
    if not STATIC.exists():
        pytest.skip("shared ERA5 static file not present")
    import xarray as xr

    z = xr.open_dataset(STATIC)["z"].squeeze(drop=True).sortby("latitude")
    lon = ((z.longitude + 180) % 360) - 180
    z = z.assign_coords(longitude=lon).sortby("longitude")
    box = z.sel(latitude=slice(50.0, 57.75), longitude=slice(-10.0, -0.25)).values / 9.81
    assert box.shape == (32, 40)
    k, p = radial_power_spectrum(box)
    slope = np.polyfit(np.log(k), np.log(p), 1)[0]
    assert slope < -1.0, slope
    wl = wavelength_km(k, 32, 0.25, 54.0)
    assert wl[0] == pytest.approx(32 * 0.25 * 111.2 * np.sqrt(np.cos(np.deg2rad(54.0))))
    assert np.all(np.diff(wl) < 0)


def test_nan_field_is_data_error() -> None:
    f = np.ones((8, 8))
    f[2, 2] = np.nan
    with pytest.raises(DataError):
        radial_power_spectrum(f)
