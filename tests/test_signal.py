"""The change-signal table and figure (rule signal) on real data: CanESM2 at three Canadian
locations, raw and QDM-adjusted (NRCan reference), 2071-2100 against 1981-2010."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from aid.config import load_config

REF, FUT = (1981, 2010), (2071, 2100)


def _grid(da: xr.DataArray) -> xr.DataArray:
    """(time, location) -> (time, lat, lon=1): the three locations as three grid rows at their own
    latitudes (the signal averages cells with cos(latitude) weights)."""
    lat = da["lat"].values if "lat" in da.coords else np.arange(da.sizes["location"])
    out = xr.DataArray(da.transpose("time", "location").values[:, :, None], dims=("time", "lat", "lon"),
                       coords={"time": da.time.values, "lat": lat, "lon": [0.0]}, attrs=da.attrs, name=da.name)
    return out.sortby("lat")


@pytest.fixture(scope="module")
def files(shared_data: Path, tmp_path_factory):
    from aid import adjust
    from aid.io import write_netcdf
    from aid.standardise import convert_units

    cfg = load_config(overrides={"adjust": {"reference_period": list(REF)}})
    sim = xr.open_dataset(shared_data / "gcm-other" / "CanESM2_1950-2100.nc").load()
    obs = xr.open_dataset(shared_data / "gcm-other" / "nrcan_1950-2013.nc").load()
    d = tmp_path_factory.mktemp("signal")
    raw, adj = {}, {}
    for v in ("tasmax", "pr"):
        s = convert_units(sim[v], v, "CanESM2")
        o = convert_units(obs[v], v, "NRCan")
        r, h, _ = adjust.prepare_pair(o, s, v, cfg, "NRCan", "CanESM2")
        a = adjust.adjust_variable(adjust.train_variable(r, h, v, cfg), s, v, cfg)
        raw[v], adj[v] = _grid(s), _grid(a)
    paths = {}
    for exp, (y0, y1) in (("historical", REF), ("rcp85", FUT)):
        sl = slice(str(y0), str(y1))
        paths[("raw", exp)] = [write_netcdf(raw[v].sel(time=sl).to_dataset(), d / "regrid" / exp / "r1i1p1" / f"{v}.nc")
                               for v in raw]
        paths[("adjusted", exp)] = [write_netcdf(xr.Dataset({v: adj[v].sel(time=sl) for v in adj}),
                                                 d / "adjusted" / exp / "r1i1p1.nc")]
    return cfg, paths, raw, adj, d


def test_signal_table_and_figure(files):
    from aid.signal import signal_files

    cfg, p, raw, adj, d = files
    cfg = {**cfg, "search": {**cfg["search"], "variables": ["tasmax", "pr"]}}
    csv, png = signal_files(p[("raw", "historical")], p[("raw", "rcp85")], p[("adjusted", "historical")],
                            p[("adjusted", "rcp85")], [], [], cfg, "CanESM2", "rcp85", "historical",
                            d / "out" / "CanESM2_rcp85.csv", d / "out" / "CanESM2_rcp85.png")
    df = pd.read_csv(csv)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert set(df.statistic) == {"mean", "q50", "q90", "q99"} and set(df.season) == {"ANN", "DJF", "MAM", "JJA", "SON"}
    assert len(df) == 2 * 5 * 4 and not list(d.glob("out/.*part"))
    # the raw change of the mean, computed independently (area weights cos(lat))
    w = np.cos(np.deg2rad(raw["tasmax"].lat))
    fut = raw["tasmax"].sel(time=slice("2071", "2100"))
    ref = raw["tasmax"].sel(time=slice("1981", "2010"))
    jja = lambda da: da.sel(time=da.time.dt.season == "JJA").mean("time")  # noqa: E731
    expect = float(((jja(fut) - jja(ref)) * w).sum() / (w.sum() * raw["tasmax"].sizes["lon"]))
    row = df[(df.variable == "tasmax") & (df.season == "JJA") & (df.statistic == "mean")].iloc[0]
    assert row["raw"] == pytest.approx(expect, rel=1e-3) and expect > 3  # RCP8.5: several K of warming
    assert row["change"] == "additive (K)"
    pr = df[(df.variable == "pr") & (df.statistic == "mean")]
    assert (pr["change"] == "relative (%)").all()
    # QDM keeps the raw model's change: adjusted vs raw, mean and quantiles, tasmax (K) and pr (%)
    t = df[df.variable == "tasmax"]
    assert float(np.abs(t.adjusted - t.raw).max()) < 0.1 * float(np.abs(t.raw).max()), t
    # pr: the relative change of the domain-mean statistic, recomputed for both systems. QDM keeps
    # each month's and location's relative quantile change, not that of a domain-mean annual
    # statistic (the adjustment reweights months and locations), so the table shows, not asserts,
    # their agreement
    for system, da in (("raw", raw["pr"]), ("adjusted", adj["pr"])):
        wp = np.cos(np.deg2rad(da.lat))
        dm = lambda x: float((x.quantile(0.9, "time") * wp).sum() / (wp.sum() * da.sizes["lon"]))  # noqa: E731
        expect = 100 * (dm(da.sel(time=slice("2071", "2100"))) / dm(da.sel(time=slice("1981", "2010"))) - 1)
        row = df[(df.variable == "pr") & (df.season == "ANN") & (df.statistic == "q90")].iloc[0]
        assert row[system] == pytest.approx(expect, abs=0.01), (system, row[system], expect)
