"""Day-to-day coherence measures (aid.evaluate.coherence) on real ERA5 daily fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid.evaluate import coherence as co
from aid.regrid import normalise_coords


@pytest.fixture(scope="module")
def march(shared_data: Path) -> dict:
    """ERA5 UK t2m, March 2019, daily means on the default 32 x 40 domain (50-57.75 N, 10 W-0.25 W)."""
    ds = xr.open_dataset(shared_data / "era5" / "era5-2mt-2019-03-uk.grib", engine="cfgrib",
                         backend_kwargs={"indexpath": ""})
    ds = normalise_coords(ds[["t2m"]].drop_vars(["valid_time", "number", "step", "surface"], errors="ignore"))
    daily = ds.t2m.sel(lat=slice(50.0, 57.75), lon=slice(-10.0, -0.25)).resample(time="1D").mean().load()
    assert daily.shape == (31, 32, 40)
    return {"t": daily.values.astype(np.float64), "lat": daily.lat.values, "lon": daily.lon.values}


def test_spell_lengths_and_residual_definition() -> None:
    m = np.array([1, 1, 0, 1, 0, 0, 1, 1, 1], dtype=bool)[:, None, None]
    assert co.mean_spell_length(m) == pytest.approx(6 / 3)
    assert co.mean_spell_length(~m) == pytest.approx(3 / 2)
    lat, lon = np.arange(50.0, 54.0, 0.25), np.arange(-4.0, 0.0, 0.25)
    labels = co.cell_labels(lat, lon, 2.0)
    assert len(np.unique(labels)) == 4 and (labels[:8, :8] == labels[0, 0]).all()
    cellwise = np.kron(np.array([[1.0, 2.0], [3.0, 4.0]]), np.ones((8, 8)))[None]
    np.testing.assert_allclose(co.fine_residual(cellwise, labels), 0.0, atol=1e-12)


def test_shuffled_days_lose_their_coherence(march: dict) -> None:
    """The real residual is persistent from day to day; members built from the same residuals in a
    random day order (what independent daily noise does to the detail) lose it, members built from
    the true order keep it."""
    t = march["t"]
    labels = co.cell_labels(march["lat"], march["lon"], 2.0)
    res = co.fine_residual(t, labels)
    cell_mean = t - res
    # the residual has zero mean in every coarse cell
    for lab in np.unique(labels)[:5]:
        assert abs(res[:, labels == lab].mean()) < 1e-9
    rng = np.random.default_rng(0)
    shuffled = np.stack([cell_mean + res[rng.permutation(len(t))] for _ in range(4)])
    ref = {"tas": t}
    out = co.coherence({"tas": shuffled}, ref, march["lat"], march["lon"], 2.0)["tas"]
    r_ref = out["lag1_autocorrelation_fine_residual"]["reference"]
    assert r_ref > 0.3  # real fine-scale detail persists (synoptic regimes last days)
    assert abs(out["lag1_autocorrelation_fine_residual"]["ensemble"]) < 0.15
    assert out["lag1_autocorrelation_fine_residual"]["relative_difference"] < -0.5
    same = co.coherence({"tas": t[None]}, ref, march["lat"], march["lon"], 2.0)["tas"]
    assert same["lag1_autocorrelation_fine_residual"]["relative_difference"] == pytest.approx(0.0)
    assert same["warm_spell_mean_days"]["relative_difference"] == pytest.approx(0.0)
