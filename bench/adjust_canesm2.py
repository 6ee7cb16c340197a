"""CanESM2 vs NRCan: per-location, per-season figures of the bias adjustment's promises.

For tasmax and pr at the three locations (Vancouver, Kugluktuk, Amos): the 10/50/90/99 % quantile
errors of the adjusted 1981-2010 against NRCan per season (the window adjusted alone, as the
pipeline adjusts every window, and the delivered series, each year from its own centred window),
with the tolerance of tests/test_adjust_windows.py (derived there from xsdba's own TestQDM
tolerances); and the per-month 10/50/90 % quantile change 2071-2100 vs 1981-2010 of tasmax,
adjusted over raw, per season (worst month of the season), for the 2071-2100 window adjusted alone
and for the delivered series. Output: bench/out/adjust_canesm2.json (also printed).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "gcm-other"
OUT = ROOT / "bench" / "out" / "adjust_canesm2.json"
QS = [0.1, 0.5, 0.9, 0.99]
REF, FUT = (1981, 2010), (2071, 2100)
SEASON_MONTHS = {"DJF": (12, 1, 2), "MAM": (3, 4, 5), "JJA": (6, 7, 8), "SON": (9, 10, 11)}
log = logging.getLogger("bench.adjust_canesm2")


def _years(da, y0, y1):
    y = da["time"].dt.year
    return da.isel(time=((y >= y0) & (y <= y1)).values)


def _tolerance(v, qo):
    if v == "pr":
        return 0.2 + 0.1 * qo
    return 0.2 * (qo.sel(quantile=0.9) - qo.sel(quantile=0.1))


def main() -> dict:
    from aid import adjust
    from aid.config import load_config
    from aid.standardise import convert_units

    cfg = load_config(overrides={"adjust": {"reference_period": list(REF)}})
    sim = xr.open_dataset(DATA / "CanESM2_1950-2100.nc").load()
    obs = xr.open_dataset(DATA / "nrcan_1950-2013.nc").load()

    def alone(trained, s, v, w0, w1):
        one = {**cfg, "adjust": {**cfg["adjust"], "window_years": w1 - w0 + 1, "step_years": w1 - w0 + 1,
                                 "reference_period": [w0, w1]}}
        return adjust.adjust_variable(trained, _years(s, w0, w1), v, one)

    res: dict = {"quantile_errors": {}, "change_ratio_tasmax": {}}
    for v in ("tasmax", "pr"):
        s, o = convert_units(sim[v], v, "CanESM2"), convert_units(obs[v], v, "NRCan")
        r, h, _ = adjust.prepare_pair(o, s, v, cfg, "NRCan", "CanESM2")
        trained = adjust.train_variable(r, h, v, cfg)
        delivered = adjust.adjust_variable(trained, s, v, cfg)
        ref_win = alone(trained, s, v, *REF)
        qo = _years(o, *REF).groupby("time.season").quantile(QS, "time")
        tol = _tolerance(v, qo)
        for name, a in (("window", ref_win), ("delivered", _years(delivered, *REF)), ("raw", _years(s, *REF))):
            err = np.abs(a.groupby("time.season").quantile(QS, "time") - qo)
            for loc in s["location"].values:
                for season in SEASON_MONTHS:
                    e = err.sel(location=loc, season=season)
                    t = tol.sel(location=loc, season=season)
                    res["quantile_errors"].setdefault(v, {}).setdefault(name, {}).setdefault(str(loc), {})[season] = {
                        f"q{round(q * 100)}": [round(float(e.sel(quantile=q)), 3),
                                               round(float(t.sel(quantile=q) if "quantile" in t.dims else t), 3)]
                        for q in QS}
        if v == "pr":  # relative change of the mean per location and season, raw vs delivered
            for loc in s["location"].values:
                for season in ("ANN", *SEASON_MONTHS):
                    def rel(da):
                        f, b = _years(da, *FUT), _years(da, *REF)
                        if season != "ANN":
                            f, b = f.isel(time=(f.time.dt.season == season).values), b.isel(time=(b.time.dt.season == season).values)
                        return round(100 * float(f.sel(location=loc).mean() / b.sel(location=loc).mean() - 1), 1)
                    res.setdefault("pr_mean_change_pct_raw_vs_delivered", {}).setdefault(str(loc), {})[season] = [
                        rel(s), rel(delivered)]
            continue
        q = lambda da: da.groupby("time.month").quantile(QS[:3], "time")  # noqa: E731
        d_raw = q(_years(s, *FUT)) - q(_years(s, *REF))
        for name, fut, ref in (("window", alone(trained, s, v, *FUT), ref_win),
                               ("delivered", _years(delivered, *FUT), _years(delivered, *REF))):
            ratio = (q(fut) - q(ref)) / d_raw
            for loc in s["location"].values:
                for season, months in SEASON_MONTHS.items():
                    rr = ratio.sel(location=loc, month=list(months))
                    res["change_ratio_tasmax"].setdefault(name, {}).setdefault(str(loc), {})[season] = [
                        round(float(rr.min()), 3), round(float(rr.max()), 3)]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps(main(), indent=1))
