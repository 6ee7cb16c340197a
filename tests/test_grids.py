"""Target grids: exact sizes, centres and bounds (the contract in docs/CONTRACTS.md)."""

from __future__ import annotations

import numpy as np
import pytest

from aid.config import load_config
from aid.errors import ConfigError
from aid.grids import coarse_grid, era5_global_grid, fine_grid, global_grid


@pytest.fixture(scope="module")
def cfg():
    return load_config()


def test_fine_grid_default(cfg):
    g = fine_grid(cfg)
    assert (g.sizes["lat"], g.sizes["lon"]) == (32, 40)
    assert g.lat.values[[0, -1]].tolist() == [50.0, 57.75]
    assert g.lon.values[[0, -1]].tolist() == [-10.0, -0.25]
    np.testing.assert_allclose(np.diff(g.lat.values), 0.25)
    assert g.lat_bnds.values[0].tolist() == [49.875, 50.125]
    assert g.lon_bnds.values[-1].tolist() == [-0.375, -0.125]


def test_coarse_grid_default(cfg):
    g = coarse_grid(cfg)
    assert g.lat.values.tolist() == [51.0, 53.0, 55.0, 57.0]
    assert g.lon.values.tolist() == [-9.0, -7.0, -5.0, -3.0, -1.0]
    # edges at multiples of the resolution
    assert g.lat_bnds.values[0].tolist() == [50.0, 52.0]
    assert g.lon_bnds.values[-1].tolist() == [-2.0, 0.0]


def test_coarse_grid_other_resolution(cfg):
    c = dict(cfg, grid={"coarse_resolution": 1.0, "fine_resolution": 0.25})
    g = coarse_grid(c)
    assert g.lat.values.tolist() == [50.5 + i for i in range(8)]
    assert g.lon.values[[0, -1]].tolist() == [-9.5, -0.5]


def test_global_grid_2deg():
    g = global_grid(2.0)
    assert (g.sizes["lat"], g.sizes["lon"]) == (90, 180)
    assert g.lat.values[[0, -1]].tolist() == [-89.0, 89.0]
    assert g.lon.values[[0, -1]].tolist() == [-179.0, 179.0]
    assert g.lat_bnds.values[[0, -1]].tolist() == [[-90.0, -88.0], [88.0, 90.0]]


def test_era5_global_grid_has_no_duplicate_longitude():
    g = era5_global_grid()
    assert (g.sizes["lat"], g.sizes["lon"]) == (721, 1440)
    assert g.lat.values[[0, -1]].tolist() == [-90.0, 90.0]
    assert g.lon.values[[0, -1]].tolist() == [-180.0, 179.75]
    # polar cells are clipped at the pole
    assert g.lat_bnds.values[0].tolist() == [-90.0, -89.875]


def test_domain_across_antimeridian(cfg):
    c = dict(cfg, domain={**cfg["domain"], "lat": [-20.0, -15.0], "lon": [175.0, -175.0]})
    f = fine_grid(c)
    assert f.lon.values[[0, -1]].tolist() == [175.0, 185.0]
    assert np.all(np.diff(f.lon.values) > 0)
    g = coarse_grid(c)
    assert g.lon.values.tolist() == [175.0, 177.0, 179.0, 181.0, 183.0, 185.0]


def test_domain_off_lattice_is_a_config_error(cfg):
    c = dict(cfg, domain={**cfg["domain"], "lat": [50.1, 57.75]})
    with pytest.raises(ConfigError, match=r"domain edge 50.1 is not on the 0.25 deg reference lattice"):
        fine_grid(c)
