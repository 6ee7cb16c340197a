"""Extremes indices on real ERA5 daily series (5 Canadian cities, 1990-1993).

The reference values are computed here independently with numpy/pandas from the raw file, so a
wrong unit conversion (pr is kg m-2 s-1 in the file) or a wrong xclim argument fails the test.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid.errors import ConfigError, DataError
from aid.indices import (
    INDEX_SPECS,
    check_index_names,
    compute_indices,
    compute_reference_indices,
    compute_sample_indices,
    compute_thresholds,
    ensemble_stats,
    open_index_file,
)
from aid.naming import deliverable_name, parse_name, years_range

CITIES = Path("/work/shared/data/era5/daily_surface_cancities_1990-1993.nc")
VARS = ["tas", "tasmax", "tasmin", "pr", "uas", "vas"]

pytestmark = pytest.mark.skipif(not CITIES.exists(), reason="shared ERA5 city data not present")


@pytest.fixture(scope="module")
def cities() -> xr.Dataset:
    """Raw file (pr in kg m-2 s-1), loaded."""
    return xr.open_dataset(CITIES)[VARS].load()


@pytest.fixture(scope="module")
def gridded(cities: xr.Dataset) -> xr.Dataset:
    """Cities as a (time, lat, lon) grid (5 x 1), aid units (pr in mm d-1), times at 12:00."""
    ds = cities.drop_vars(["lat", "lon", "location"]).rename_dims(location="lat")
    ds = ds.assign_coords(lat=np.arange(5.0) + 45.0).expand_dims(lon=[-75.0], axis=-1)
    ds["pr"] = (ds["pr"] * 86400.0).assign_attrs(ds["pr"].attrs, units="mm d-1")
    ds = ds.assign_coords(time=ds["time"] + np.timedelta64(12, "h"))
    return ds.transpose("time", "lat", "lon")


def _cfg(base_period=(1990, 1991), names=None) -> dict:
    return {"indices": {"names": names or list(INDEX_SPECS), "freq": "YS", "base_period": list(base_period)},
            "reference": {"name": "ERA5"}, "domain": {"id": "CITIES"}}


def _write_deliverables(ds: xr.Dataset, root: Path, experiment: str, member: str, sample: int) -> list[Path]:
    paths = []
    for var in VARS:
        for year in np.unique(ds["time"].dt.year.values):
            sub = ds[[var]].sel(time=str(year))
            p = root / deliverable_name(var, "CITIES", "ERA5", experiment, member, "AID", "v1", sample,
                                           years_range(int(year), int(year), None))
            sub.to_netcdf(p)
            paths.append(p)
    return paths


def _max_run(mask: np.ndarray) -> int:
    best = run = 0
    for m in mask:
        run = run + 1 if m else 0
        best = max(best, run)
    return best


def test_indices_match_independent_numpy(cities: xr.Dataset) -> None:
    thr = compute_thresholds(cities, ["tasmax_per90", "tasmin_per10", "pr_per95"], [1990, 1992])
    out = compute_indices(cities, ["TXx", "FD", "RX1day", "CDD", "TX90p"], "YS", thr).transpose("time", "location")
    df_tx = cities["tasmax"].to_pandas().T  # time x location
    df_tn = cities["tasmin"].to_pandas().T
    df_pr = cities["pr"].to_pandas().T * 86400.0  # kg m-2 s-1 -> mm/d
    for i, year in enumerate(range(1990, 1994)):
        sel = df_tx.index.year == year
        np.testing.assert_allclose(out["TXx"].values[i], df_tx[sel].max().values, rtol=1e-6)
        np.testing.assert_array_equal(out["FD"].values[i], (df_tn[sel] < 273.15).sum().values)
        np.testing.assert_allclose(out["RX1day"].values[i], df_pr[sel].max().values, rtol=1e-5)
        cdd = [_max_run(df_pr[sel][c].values < 1.0) for c in df_pr.columns]
        np.testing.assert_array_equal(out["CDD"].values[i], cdd)
    assert out["RX1day"].attrs["units"] in ("mm/d", "mm/day", "mm d-1")
    assert out["TXx"].attrs["standard_name"] == "air_temperature"
    assert out["FD"].attrs["xclim_identifier"] == "frost_days"
    # percentile index in its own base period: each day-of-year threshold is the type-8 90th
    # percentile of n = 5 days x 3 years = 15 values, at order statistic h = (n + 1/3) 0.9 + 1/3
    # = 14.13, so (n - h) / n = 5.8 % of base days exceed it (the in-base effect of Zhang et al.
    # 2005), not 10 %.
    n = 15
    expected = (n - ((n + 1 / 3) * 0.9 + 1 / 3)) / n
    frac_base = float(out["TX90p"].isel(time=slice(0, 3)).mean()) / 365.0
    assert abs(frac_base - expected) < 0.012, (frac_base, expected)
    # the winter-cold cities have more frost days than Victoria (last location)
    assert (out["FD"].values[:, 2] > out["FD"].values[:, 4]).all()


def test_unknown_index_is_config_error() -> None:
    with pytest.raises(ConfigError) as exc:
        check_index_names(["TXx", "TXxx"])
    assert "TXxx" in str(exc.value) and "RX1day" in str(exc.value)


def test_missing_variable_is_skipped(cities: xr.Dataset, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="aid.indices"):
        out = compute_indices(cities[["tasmax"]], ["TXx", "RX1day", "sfcWind_mean"], "YS", {})
    assert list(out.data_vars) == ["TXx"]
    assert "RX1day skipped" in caplog.text and "sfcWind_mean skipped" in caplog.text


def test_sample_indices_scenario_and_ensemble(gridded: xr.Dataset, tmp_path: Path) -> None:
    """Historical 1990-91 + 'scenario' 1992-93 (noleap), two samples; change = difference of means."""
    nl = gridded.convert_calendar("noleap")
    hist, scen = nl.sel(time=slice("1990", "1991")), nl.sel(time=slice("1992", "1993"))
    cfg = _cfg()
    out = {}
    for sample, offset in ((1, 0.0), (2, 1.0)):
        d = tmp_path / f"s{sample}"
        d.mkdir()
        h, s = hist.copy(), scen.copy()
        for ds in (h, s):  # sample 2 is 1 K warmer everywhere: a known answer for the ensemble spread
            for v in ("tas", "tasmax", "tasmin"):
                ds[v] = (ds[v] + offset).assign_attrs(ds[v].attrs)
        hp = _write_deliverables(h, d, "historical", "r1i1p1f1", sample)
        sp = _write_deliverables(s, d, "ssp245", "r1i1p1f1", sample)
        assert parse_name(sp[0])["sample"] == str(sample)
        for exp, run, base in (("historical", hp, []), ("ssp245", sp, hp)):
            p = tmp_path / "indices" / "ERA5" / exp / "r1i1p1f1" / f"r{sample}.nc"
            compute_sample_indices(cfg, run, base, exp, p)
            out[(exp, sample)] = p
    h1 = xr.open_dataset(out[("historical", 1)])
    s1 = xr.open_dataset(out[("ssp245", 1)])
    assert h1.attrs["aid_member"] == "r1i1p1f1" and h1.attrs["aid_sample"] == "1"
    assert set(INDEX_SPECS) <= set(h1.data_vars)
    assert h1["time"].dt.calendar == "noleap"
    np.testing.assert_allclose(s1["TXx"].values[0, :, 0], nl["tasmax"].sel(time="1992").max("time").values[:, 0], rtol=1e-6)
    # sample 2 is uniformly +1 K: TXx +1, DTR unchanged, thresholds shift too so TX90p unchanged
    s2 = xr.open_dataset(out[("ssp245", 2)])
    np.testing.assert_allclose(s2["TXx"].values, s1["TXx"].values + 1.0, rtol=1e-6)
    np.testing.assert_allclose(s2["DTR"].values, s1["DTR"].values, atol=1e-4)
    np.testing.assert_array_equal(s2["TX90p"].values, s1["TX90p"].values)

    runs = [out[("ssp245", s)] for s in (1, 2)]
    bases = [out[("historical", s)] for s in (1, 2)]
    ens_path = tmp_path / "ens.nc"
    ensemble_stats(cfg, runs, bases, "ssp245", ens_path)
    ens = open_index_file(ens_path)
    expected = s1["TXx"].mean("time") - h1["TXx"].mean("time")
    for stat in ("p10", "median", "p90"):  # both realizations have the same change
        np.testing.assert_allclose(ens["TXx_change"].sel(statistic=stat).values, expected.values, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ens["TXx"].sel(statistic="median").values, s1["TXx"].values + 0.5, rtol=1e-6)
    assert "PRCPTOT_change_rel" in ens and ens["PRCPTOT_change_rel"].attrs["units"] == "%"
    assert ens.attrs["aid_stage"] == "ensemble_stats" and ens.attrs["aid_n_realizations"] == "2"
    # historical vs itself over the same years: change is 0
    ensemble_stats(cfg, bases, bases, "historical", tmp_path / "hist.nc")
    hist_ens = open_index_file(tmp_path / "hist.nc")
    np.testing.assert_allclose(hist_ens["TXx_change"].values, 0.0, atol=1e-5)


def test_reference_indices_and_base_period_errors(gridded: xr.Dataset, tmp_path: Path) -> None:
    paths = []
    for v in VARS:
        p = tmp_path / f"{v}.nc"
        gridded[[v]].to_netcdf(p)
        paths.append(p)
    out = tmp_path / "reference.nc"
    compute_reference_indices(_cfg(names=["TXx", "R95pTOT", "TN10p"]), paths, out)
    ref = xr.open_dataset(out)
    assert ref["TXx"].sizes["time"] == 4 and ref.attrs["aid_stage"] == "reference_indices"
    assert float(ref["R95pTOT"].min()) >= 0 and float(ref["R95pTOT"].max()) <= 1
    with pytest.raises(DataError, match="base_period"):
        compute_reference_indices(_cfg(base_period=(2000, 2001), names=["TN10p"]), paths, tmp_path / "x.nc")
    assert not (tmp_path / "x.nc").exists()
