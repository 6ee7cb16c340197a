"""Bias adjustment with xsdba on real data: CanESM2 vs NRCan observations, and the file stages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid.config import load_config
from aid.errors import ConfigError, DataError

Q = [0.05, 0.25, 0.5, 0.75, 0.95]


@pytest.fixture(scope="module")
def canesm(shared_data: Path):
    """QDM trained on 1981-2010 (NRCan reference) and applied to the whole 1950-2100 CanESM2 run."""
    from aid import adjust
    from aid.standardise import convert_units

    cfg = load_config(overrides={"adjust": {"reference_period": [1981, 2010]}})
    sim = xr.open_dataset(shared_data / "gcm-other" / "CanESM2_1950-2100.nc").load()
    obs = xr.open_dataset(shared_data / "gcm-other" / "nrcan_1950-2013.nc").load()
    out = {}
    for v in ("tasmax", "pr"):
        s = convert_units(sim[v], v, "CanESM2")  # pr kg m-2 s-1 -> mm d-1
        o = convert_units(obs[v], v, "NRCan")  # pr mm s-1 -> mm d-1
        r, h, info = adjust.prepare_pair(o, s, v, cfg, "NRCan", "CanESM2")
        trained = adjust.train_variable(r, h, v, cfg)
        out[v] = (s, o, adjust.adjust_variable(trained, s, v, cfg), info)
    return out


def _hist(da):
    return da.sel(time=slice("1981", "2010"))


def test_qdm_tasmax_quantiles_match_nrcan(canesm):
    s, o, a, info = canesm["tasmax"]
    assert info["model_calendar_conversion"] == "noleap (unchanged)"
    raw = np.abs(_hist(s).quantile(Q, "time") - _hist(o).quantile(Q, "time"))
    adj = np.abs(_hist(a).quantile(Q, "time") - _hist(o).quantile(Q, "time"))
    assert float(adj.max()) < 0.5, adj.values  # measured 0.27 K
    # before adjustment every location has a quantile off by more than 0.5 K (up to 32 K)
    assert bool((raw.max("quantile") > 0.5).all()), raw.values
    assert float(raw.max()) > 20


def test_qdm_pr_wet_day_frequency_matches_nrcan(canesm):
    s, o, a, _ = canesm["pr"]
    wet = {k: (_hist(d) >= 1.0).mean("time") for k, d in (("obs", o), ("raw", s), ("adj", a))}
    rel_adj = np.abs(wet["adj"] / wet["obs"] - 1)
    rel_raw = np.abs(wet["raw"] / wet["obs"] - 1)
    assert float(rel_adj.max()) < 0.05, rel_adj.values  # measured 1.1 %
    assert float(rel_raw.max()) > 0.05, rel_raw.values  # Kugluktuk: 219 % too many wet days
    assert float(a.min()) >= 0.0


def test_qdm_preserves_the_climate_change_signal(canesm):
    """The mean change of the delivered 1950-2100 series (every year adjusted from its own centred
    window). QDM's per-quantile promise holds per window and is checked window by window in
    tests/test_adjust_windows.py: a 30-year period assembled from thirty windows is ranked in thirty
    slightly different climates, so its own per-month quantile change departs from the raw one where
    the correction depends steeply on the quantile (bench/adjust_canesm2.py measures by how much)."""
    s, _, a, _ = canesm["tasmax"]
    fut = lambda d: d.sel(time=slice("2071", "2100"))  # noqa: E731
    d_raw = fut(s).mean("time") - _hist(s).mean("time")
    d_adj = fut(a).mean("time") - _hist(a).mean("time")
    rel = np.abs(d_adj / d_raw - 1)
    assert float(rel.max()) < 0.10, (d_raw.values, d_adj.values)
    assert float(d_raw.min()) > 1.0  # a real warming signal at every location, not a trivial pass


# ----------------------------------------------------------------------------- file stages
@pytest.fixture(scope="module")
def demo_files(demo_archive: Path, tmp_path_factory):
    """Coarse reference (real ERA5-derived, standard calendar) and a biased 'model' in noleap."""
    from aid.io import write_netcdf
    from aid.regrid import coarsen

    cfg = load_config()
    d = tmp_path_factory.mktemp("adjust")
    bias = {"tas": (2.0, "+"), "tasmax": (1.0, "+"), "tasmin": (3.0, "+"), "pr": (1.5, "*")}
    ref_paths, hist_paths = [], []
    for v, (b, kind) in bias.items():
        f = sorted((demo_archive / "reference").glob(f"{v}_day_*.nc"))[0]
        ref = coarsen(xr.open_dataset(f)[[v]].load(), cfg)
        ref[v].attrs["units"] = "K" if v != "pr" else "mm d-1"
        rp = write_netcdf(ref, d / "ref" / f"{v}.nc")
        hist = ref.convert_calendar("noleap", use_cftime=True)
        hist[v] = (hist[v] + b if kind == "+" else hist[v] * b).assign_attrs(ref[v].attrs)
        hp = write_netcdf(hist, d / "hist" / f"{v}.nc")
        ref_paths.append(rp)
        hist_paths.append(hp)
    return cfg, ref_paths, hist_paths, d


def test_train_and_apply_files(demo_files):
    from aid.adjust import adjust_files, train_adjustment_files

    cfg, refs, hists, d = demo_files
    trained = train_adjustment_files(hists, refs, cfg, d / "factors.nc")
    out = adjust_files(hists, trained, cfg, d / "adjusted.nc")
    with xr.open_dataset(out, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as a, \
            xr.open_dataset(refs[0]) as r:
        assert a.time.dt.calendar == "noleap" and a.sizes["time"] == 1095
        assert set(a.data_vars) == {"tas", "tasmax", "tasmin", "pr"}
        assert a.tas.dims == ("time", "lat", "lon")
        # the +2 K bias is gone (raw mean was ref + 2)
        assert abs(float(a.tas.mean()) - float(r.tas.mean())) < 0.05
        assert bool((a.tasmin <= a.tas).all()) and bool((a.tas <= a.tasmax).all()) and float(a.pr.min()) >= 0
        ba = json.loads(a.tas.attrs["bias_adjustment"])
        assert ba["method"] == "QDM" and ba["kind"] == "+" and ba["period"] == "2012-2014"
        assert "standard -> noleap" in ba["calendar_conversion"]
        fixes = json.loads(a.attrs["aid_consistency_fixes"])
        assert set(fixes) >= {"tasmin_gt_tas", "tas_gt_tasmax"}
        assert json.loads(a.pr.attrs["bias_adjustment"])["kind"] == "*"


def _bad(tmp_path, name, ds):
    from aid.io import write_netcdf

    return write_netcdf(ds, tmp_path / name)


def test_bad_inputs_fail_clearly_and_write_nothing(demo_files, tmp_path):
    from aid.adjust import train_adjustment_files

    cfg, refs, hists, _ = demo_files
    out = tmp_path / "f.nc"
    # 1. no overlap in time
    late = dict(cfg, adjust={**cfg["adjust"], "reference_period": [1990, 1995]})
    with pytest.raises(DataError, match=r"reference and model not overlapping in time"):
        train_adjustment_files(hists[:1], refs[:1], late, out)
    # 2. reference on another grid
    ref = xr.open_dataset(refs[0]).load()
    shifted = _bad(tmp_path, "ref_shift.nc", ref.assign_coords(lat=ref.lat + 1.0))
    with pytest.raises(DataError, match=r"the reference is on a different grid than the model data"):
        train_adjustment_files(hists[:1], [shifted], cfg, out)
    # 3. method not configured
    nomethod = dict(cfg, adjust={**cfg["adjust"], "methods": {k: v for k, v in cfg["adjust"]["methods"].items() if k != "tas"}})
    with pytest.raises(ConfigError, match=r"variable 'tas' has no bias-adjustment method in 'adjust.methods'"):
        train_adjustment_files(hists[:1], refs[:1], nomethod, out)
    # 4. negative precipitation
    hpr = xr.open_dataset(hists[3], decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)).load()
    hpr["pr"][5, 1, 1] = -0.5
    neg = _bad(tmp_path, "pr_neg.nc", hpr)
    with pytest.raises(DataError, match=r"pr_neg.nc: 1 negative precipitation values"):
        train_adjustment_files([neg], [refs[3]], cfg, out)
    # 5. all-NaN reference cells
    ref_nan = ref.copy(deep=True)
    ref_nan["tas"][:, 0, 0] = np.nan
    nanf = _bad(tmp_path, "ref_nan.nc", ref_nan)
    with pytest.raises(DataError, match=r"ref_nan.nc: 1 grid cells of 'tas' are NaN at every time step"):
        train_adjustment_files(hists[:1], [nanf], cfg, out)
    assert not out.exists()


def test_mbcn_multivariate_option(demo_files, tmp_path):
    from aid.adjust import adjust_files, train_adjustment_files

    cfg, refs, hists, _ = demo_files
    # xsdba's MBCn groups by a day-of-year window (time.month is refused: test_mbcn_refuses_monthly_groups)
    mcfg = dict(cfg, adjust={**cfg["adjust"], "multivariate": "MBCn", "group": "window"})
    small_r, small_h = [], []
    for i in (0, 3):  # tas, pr on two coarse cells (MBCn is slow)
        for src, dst in ((refs[i], small_r), (hists[i], small_h)):
            ds = xr.open_dataset(src, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)).load()
            dst.append(_bad(tmp_path, f"{len(dst)}_{Path(src).parent.name}_{Path(src).name}", ds.isel(lat=[1], lon=[1, 2])))
    trained = train_adjustment_files(small_h, small_r, mcfg, tmp_path / "f.nc")
    out = adjust_files(small_h, trained, mcfg, tmp_path / "a.nc")
    with xr.open_dataset(out) as a, xr.open_dataset(small_r[0]) as r:
        assert "MBCn" in a.tas.attrs["bias_adjustment"]
        assert int(a.tas.isnull().sum()) == 0 and float(a.pr.min()) >= 0
        assert abs(float(a.tas.mean()) - float(r.tas.mean())) < 0.2


def test_temperature_order_holds_by_construction(demo_files, tmp_path):
    """adjust.temperatures: range adjusts tasmax, dtr and tas's position in the range: the output is
    ordered with zero fixes and each biased variable is corrected; factors trained one way are refused
    by the other, and the old path (independent) still ends ordered (after its repairs)."""
    from aid.adjust import adjust_files, train_adjustment_files

    cfg, refs, hists, _ = demo_files
    assert cfg["adjust"]["temperatures"] == "range"
    trained = train_adjustment_files(hists, refs, cfg, tmp_path / "f.nc")
    out = adjust_files(hists, trained, cfg, tmp_path / "a.nc")
    with xr.open_dataset(out) as a:
        fixes = json.loads(a.attrs["aid_consistency_fixes"])
        # the model's tasmin (+3 K) lies above its tasmax (+1 K) wherever the true range is under 2 K:
        # those input days are counted and get a zero range; the output needs no fix
        with xr.open_dataset(hists[1]) as tx, xr.open_dataset(hists[2]) as tn:
            inverted = int((tn.tasmin > tx.tasmax).sum())
        assert inverted > 0
        assert fixes == {"tasmin_gt_tas": 0, "tas_gt_tasmax": 0, "tasmin_gt_tasmax": 0, "pr_negative": 0,
                         "inverted_input_days": inverted}, fixes
        assert bool((a.tasmin <= a.tas).all()) and bool((a.tas <= a.tasmax).all())
        for v in ("tas", "tasmax", "tasmin"):
            with xr.open_dataset(refs[("tas", "tasmax", "tasmin").index(v)]) as r:
                # hist = ref + 2/1/3 K: every bias gone (tasmin via tasmax - dtr, tas via its position)
                assert abs(float(a[v].mean()) - float(r[v].mean())) < 0.05, v
        assert json.loads(a.tasmin.attrs["bias_adjustment"])["adjusted_variable"] == "dtr"
        assert json.loads(a.tas.attrs["bias_adjustment"])["adjusted_variable"] == "tas_position"
    old = dict(cfg, adjust={**cfg["adjust"], "temperatures": "independent"})
    trained_old = train_adjustment_files(hists, refs, old, tmp_path / "f_old.nc")
    with pytest.raises(ConfigError, match=r"trained with adjust.temperatures independent"):
        adjust_files(hists, trained_old, cfg, tmp_path / "x.nc")
    out_old = adjust_files(hists, trained_old, old, tmp_path / "a_old.nc")
    with xr.open_dataset(out_old) as a:
        fixes = json.loads(a.attrs["aid_consistency_fixes"])
        assert bool((a.tasmin <= a.tas).all()) and bool((a.tas <= a.tasmax).all())


def test_mbcn_refuses_monthly_groups(demo_files, tmp_path):
    from aid.adjust import train_adjustment_files

    cfg, refs, hists, _ = demo_files
    with pytest.raises(ConfigError, match=r"'adjust.group' is time.month, which 'adjust.multivariate: MBCn' cannot honour"):
        load_config(overrides={"adjust": {"multivariate": "MBCn"}})
    mcfg = dict(cfg, adjust={**cfg["adjust"], "multivariate": "MBCn", "group": "time.month"})
    with pytest.raises(ConfigError, match=r"set adjust.group: window"):
        train_adjustment_files(hists[:1], refs[:1], mcfg, tmp_path / "f.nc")
    assert not (tmp_path / "f.nc").exists()
