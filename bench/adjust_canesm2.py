"""CanESM2 vs NRCan: per-location, per-season figures of the bias adjustment's promises.

For tasmax and pr at the three locations (Vancouver, Kugluktuk, Amos): the 10/50/90/99 % quantile
errors of the adjusted 1981-2010 against NRCan per season (the window adjusted alone, as the
pipeline adjusts every window, and the delivered series, each year from its own centred window),
with the tolerance of tests/test_adjust_windows.py (derived there from xsdba's own TestQDM
tolerances); and the per-month 10/50/90 % quantile change 2071-2100 vs 1981-2010 of tasmax,
adjusted over raw, per season (worst month of the season), for the 2071-2100 window adjusted alone
and for the delivered series. Output: bench/out/adjust_canesm2.json (also printed).

pr (multiplicative QDM with dry days jittered under 0.1 mm/d and zeroed after) promises the
relative change of every quantile of all days, wet or dry. ``change_ratio_pr``: the per-month
90/95/99 % quantiles of all days (above every month's dry fraction in NRCan and the model, so wet
amounts), adjusted relative change over raw relative change, per season (all its months and the
three quantiles) as [min, max], over the month/quantile cells whose raw change is at least
``min_raw_change`` (a ratio of two changes near zero says nothing).

The mean change is not promised, and ``pr_mean_change_pct_implied_by_quantile_changes`` says
where it comes from. Per month, pairing the days of two windows by rank, the adjusted value of the
day of rank i is the raw value times the factor of rank i, the same in every window, so the
adjusted mean change is the raw per-rank relative changes weighted by the adjusted reference
amounts at those ranks (NRCan's amounts, by QDM's reference match), where the raw mean change
weights them by the model's own amounts. Per location and season:

- ``raw``: the raw mean change (%);
- ``raw_on_ranks_wet_in_adjusted_reference``: the raw change over only the ranks the adjusted
  reference rains on (the model's extra light-rain days left out);
- ``window``: the 2071-2100 window adjusted alone against the 1981-2010 window adjusted alone,
  [actual, implied, implied + threshold crossings] (%): implied sums, over ranks, the adjusted
  reference value x the raw per-rank change; the crossings are the amounts of ranks dry in the
  adjusted reference and wet in the adjusted future, less those of the reverse (values the change
  moves across the 0.1 mm/d threshold), which the implied sum cannot see. What is left is the
  ranks dry in the raw model (either window) but wet after adjustment: their factor acts on jitter
  noise, which the raw per-rank change (of unjittered values) does not carry;
- ``delivered``: the same three for the delivered series, each day of 1981-2010 and 2071-2100
  taken at its rank in its own year's window.
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
#: pr quantiles of all days whose relative change is compared (above every dry fraction: wet amounts)
QS_PR = [0.9, 0.95, 0.99]
#: raw relative changes smaller than this are left out of change_ratio_pr
MIN_RAW_CHANGE = 0.1
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


def _implied(raw_ref_sorted, adj_ref_by_rank, window_raw, days):
    """Per day of ``days`` (indices into ``window_raw``, one month of one window): the adjusted
    reference value at the day's rank in its window times the day's raw value over the raw
    reference value at that rank (the raw per-rank relative change); 0 where the reference rank is
    dry in the adjusted reference."""
    rank = np.empty(window_raw.size, dtype=int)
    rank[np.argsort(window_raw, kind="stable")] = np.arange(window_raw.size)
    r = raw_ref_sorted[rank[days]]
    change = np.where(r > 0, window_raw[days] / np.where(r > 0, r, 1.0), 1.0)
    return adj_ref_by_rank[rank[days]] * change, adj_ref_by_rank[rank[days]] > 0


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
            _pr_changes(res, s, delivered, ref_win, alone(trained, s, v, *FUT), cfg)
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


def _pr_changes(res: dict, s, delivered, ref_win, fut_win, cfg) -> None:
    """``change_ratio_pr`` and ``pr_mean_change_pct_implied_by_quantile_changes`` (module docstring)."""
    from aid.adjust import moving_windows

    q = lambda da: da.groupby("time.month").quantile(QS_PR, "time")  # noqa: E731
    raw_change = q(_years(s, *FUT)) / q(_years(s, *REF)) - 1
    ratios: dict = {"quantiles": QS_PR, "min_raw_change": MIN_RAW_CHANGE}
    for name, fut, ref in (("window", fut_win, ref_win), ("delivered", _years(delivered, *FUT), _years(delivered, *REF))):
        ratio = ((q(fut) / q(ref) - 1) / raw_change).where(np.abs(raw_change) >= MIN_RAW_CHANGE)
        for loc in s["location"].values:
            for season, months in SEASON_MONTHS.items():
                rr = ratio.sel(location=loc, month=list(months))
                ratios.setdefault(name, {}).setdefault(str(loc), {})[season] = (
                    [round(float(rr.min()), 3), round(float(rr.max()), 3)] if int(rr.notnull().sum()) else None)
    res["change_ratio_pr"] = ratios

    wins = dict(moving_windows(np.unique(s["time"].dt.year), REF[0], int(cfg["adjust"]["step_years"]),
                               int(cfg["adjust"]["window_years"])))
    years, month_of = s["time"].dt.year.values, s["time"].dt.month.values
    locs = [str(x) for x in s["location"].values]
    # per location and month: summed amounts (keys below), per period where it applies
    sums: dict = {}
    for j, loc in enumerate(locs):
        x, dl = s.values[:, j], delivered.transpose("time", "location").values[:, j]
        rw, fw = ref_win.transpose("time", "location").values[:, j], fut_win.transpose("time", "location").values[:, j]
        rw_m, fw_m = ref_win["time"].dt.month.values, fut_win["time"].dt.month.values
        for m in range(1, 13):
            sel = lambda y0, y1: (years >= y0) & (years <= y1) & (month_of == m)  # noqa: E731
            raw_ref = x[sel(*REF)]
            order = np.argsort(raw_ref, kind="stable")
            r_sorted, a_rank = raw_ref[order], rw[rw_m == m][order]
            raw_fut = np.sort(x[sel(*FUT)])
            wet = a_rank > 0
            imp, wet_ref = _implied(r_sorted, a_rank, x[sel(*FUT)], np.arange(raw_fut.size))
            act = fw[fw_m == m]
            acc = {"raw_ref": r_sorted.sum(), "raw_fut": raw_fut.sum(), "raw_ref_wet": r_sorted[wet].sum(),
                   "raw_fut_wet": raw_fut[wet].sum(), "window_ref": a_rank.sum(), "window_fut": act.sum(),
                   "window_fut_implied": imp.sum(),
                   "window_fut_crossings": act[~wet_ref & (act > 0)].sum() - imp[wet_ref & (act == 0)].sum()}
            for tag, (p0, p1) in (("ref", REF), ("fut", FUT)):  # each target year ranked in its own window
                for y in range(p0, p1 + 1):
                    w = wins[(y, y)]
                    in_w = sel(*w)
                    days = np.flatnonzero(years[in_w] == y)
                    imp, wet_ref = _implied(r_sorted, a_rank, x[in_w], days)
                    act = dl[sel(y, y)]
                    for k, val in ((f"delivered_{tag}", act.sum()), (f"delivered_{tag}_implied", imp.sum()),
                                   (f"delivered_{tag}_crossings",
                                    act[~wet_ref & (act > 0)].sum() - imp[wet_ref & (act == 0)].sum())):
                        acc[k] = acc.get(k, 0.0) + float(val)
            sums[(loc, m)] = acc
    out: dict = {}
    for loc in locs:
        for season, months in (("ANN", tuple(range(1, 13))), *SEASON_MONTHS.items()):
            tot = {k: sum(float(sums[(loc, m)][k]) for m in months) for k in sums[(loc, 1)]}
            pct = lambda a, b: round(100 * (a / b - 1), 1)  # noqa: E731
            out.setdefault(loc, {})[season] = {
                "raw": pct(tot["raw_fut"], tot["raw_ref"]),
                "raw_on_ranks_wet_in_adjusted_reference": pct(tot["raw_fut_wet"], tot["raw_ref_wet"]),
                "window": [pct(tot["window_fut"], tot["window_ref"]), pct(tot["window_fut_implied"], tot["window_ref"]),
                           pct(tot["window_fut_implied"] + tot["window_fut_crossings"], tot["window_ref"])],
                "delivered": [pct(tot["delivered_fut"], tot["delivered_ref"]),
                              pct(tot["delivered_fut_implied"], tot["delivered_ref_implied"]),
                              pct(tot["delivered_fut_implied"] + tot["delivered_fut_crossings"],
                                  tot["delivered_ref_implied"] + tot["delivered_ref_crossings"])],
            }
    res["pr_mean_change_pct_implied_by_quantile_changes"] = out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(json.dumps(main(), indent=1))
