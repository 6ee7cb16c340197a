"""Multi-model ensemble weights on real CMIP6 output: ACCESS-ESM1-5 historical (members r1, r2) and
ACCESS-ESM1-5 hist-GHG (member r1) stand in for two GCMs on one grid (the downscaled outputs of
several GCMs share the 0.25 deg grid). The "index" is each year's mean surface temperature ts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid.config import deep_update, load_config
from aid.ensembles import multi_model_stats

CMIP6 = "cmip6/CMIP6"


def _index_file(shared_data: Path, rel: str, member: str, out: Path) -> Path:
    src = next((shared_data / CMIP6 / rel / member / "Amon/ts").rglob("*.nc"))
    with xr.open_dataset(src, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)) as ds:
        ann = ds["ts"].sel(time=slice("2000", "2014")).resample(time="YS").mean().rename("TG")
    ann.attrs = {"units": "K", "long_name": "annual mean surface temperature"}
    out.parent.mkdir(parents=True, exist_ok=True)
    ann.to_dataset().assign_attrs(aid_member=member, aid_sample=1).to_netcdf(out)
    return out


def test_every_source_weighs_equally(shared_data: Path, tmp_path: Path) -> None:
    a = [_index_file(shared_data, "CMIP/CSIRO/ACCESS-ESM1-5/historical", m, tmp_path / "A" / m / "r1.nc")
         for m in ("r1i1p1f1", "r2i1p1f1")]
    b = [_index_file(shared_data, "DAMIP/CSIRO/ACCESS-ESM1-5/hist-GHG", "r1i1p1f1", tmp_path / "B" / "r1i1p1f1" / "r1.nc")]
    cfg = deep_update(load_config(), {"indices": {"base_period": [2000, 2009]}})
    runs = {"ACCESS-ESM1-5": a, "ACCESS-ESM1-5-histGHG": b}
    out = multi_model_stats(cfg, runs, runs, "historical", tmp_path / "mm.nc")
    ds = xr.open_dataset(out, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    np.testing.assert_allclose(ds["weights"].values, [0.25, 0.25, 0.5])
    ta = [xr.open_dataset(p)["TG"].values for p in a]
    tb = xr.open_dataset(b[0])["TG"].values
    want = 0.5 * (ta[0] + ta[1]) / 2 + 0.5 * tb  # not the plain mean of three realizations
    np.testing.assert_allclose(ds["TG"].sel(statistic="mean").values, want, rtol=1e-6)
    assert np.abs(want - (ta[0] + ta[1] + tb) / 3).max() > 0.01  # the weighting matters on these data
    chg = [t[:].mean(0) - t[:10].mean(0) for t in (*ta, tb)]
    np.testing.assert_allclose(ds["TG_change"].sel(statistic="mean").values,
                               0.25 * chg[0] + 0.25 * chg[1] + 0.5 * chg[2], rtol=1e-5, atol=1e-5)
    med = ds["TG"].sel(statistic="median").values
    lo = np.minimum(np.minimum(ta[0], ta[1]), tb)
    hi = np.maximum(np.maximum(ta[0], ta[1]), tb)
    assert ((med >= lo - 1e-4) & (med <= hi + 1e-4)).all()
    assert ds.sizes["time"] == 15 and 250 < float(ds["TG"].sel(statistic="mean").mean()) < 300
    with pytest.raises(Exception, match="need at least two sources"):
        multi_model_stats(cfg, {"ACCESS-ESM1-5": a}, {"ACCESS-ESM1-5": a}, "historical", tmp_path / "x.nc")


def test_index_bias_table_per_model(shared_data: Path, tmp_path: Path) -> None:
    """historical r1 plays the reference; r2 (model A) and hist-GHG r1 (model B) the downscaled GCMs."""
    from aid.evaluate import metrics as M
    from aid.evaluate.run import index_bias, index_bias_by_source

    ref = _index_file(shared_data, "CMIP/CSIRO/ACCESS-ESM1-5/historical", "r1i1p1f1", tmp_path / "ref.nc")
    a = _index_file(shared_data, "CMIP/CSIRO/ACCESS-ESM1-5/historical", "r2i1p1f1",
                    tmp_path / "indices/MODEL-A/historical/r2i1p1f1/r1.nc")
    b = _index_file(shared_data, "DAMIP/CSIRO/ACCESS-ESM1-5/hist-GHG", "r1i1p1f1",
                    tmp_path / "indices/MODEL-B/historical/r1i1p1f1/r1.nc")
    tables = index_bias_by_source(ref, [a, b], [2000, 2014])
    assert sorted(tables) == ["MODEL-A", "MODEL-B"]
    r = xr.open_dataset(ref)["TG"].mean("time")
    for name, path in (("MODEL-A", a), ("MODEL-B", b)):
        row = tables[name].set_index("index").loc["TG"]
        want = float(M.weighted_mean(xr.open_dataset(path)["TG"].mean("time") - r))
        assert row["bias"] == pytest.approx(want, rel=1e-6) and row["source"] == name and row["n_realizations"] == 1
    assert tables["MODEL-A"].loc[0, "bias"] != pytest.approx(tables["MODEL-B"].loc[0, "bias"], abs=1e-3)
    pooled, _ = index_bias(ref, [a, b], [2000, 2014])
    assert int(pooled.loc[0, "n_realizations"]) == 2
