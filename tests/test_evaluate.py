"""The evaluation stage end to end on a small case derived from real ERA5 (aid.evaluate.sample)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aid.evaluate.run import evaluate
from aid.evaluate.sample import build_sample_evaluation

DATA = Path("/work/shared/data")
pytestmark = pytest.mark.skipif(not (DATA / "era5/era5-2mt-2019-03-uk.grib").exists(), reason="shared data missing")


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("eval")
    inputs = build_sample_evaluation(DATA, root / "case", n_samples=4)
    cfg = {"evaluation": {"period": [2019, 2019], "seasons": ["DJF", "MAM", "JJA", "SON"], "properties": []},
           "indices": {"base_period": [1990, 1992]}, "reference": {"name": "ERA5"}}
    out = root / "evaluation"
    headline = evaluate(cfg, **inputs, metrics_out=out / "metrics.json", tables_dir=out / "tables",
                        figures_dir=out / "figures")
    return headline, out


def test_outputs_written(result: tuple[dict, Path]) -> None:
    _, out = result
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    for kind in ("bias-map", "mae-map", "spectrum", "tail", "rank-histogram", "scores"):
        assert f"tas_{kind}.png" in figs
    assert "indices_bias.png" in figs and "TXx_bias-map.png" in figs and "sfcWind-mean_bias-map.png" in figs
    assert all(name.count("_") == 1 for name in figs), figs  # report pattern {variable}_{kind}.png
    assert not list((out / "figures").glob(".*part"))
    for p in (out / "figures").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    tables = {p.name for p in (out / "tables").glob("*.csv")}
    assert {"all_scores.csv", "all_tails.csv", "all_rank-histogram.csv", "tas_spectrum.csv", "indices_bias.csv"} <= tables
    json.loads((out / "metrics.json").read_text())


def test_scores_are_physically_sensible(result: tuple[dict, Path]) -> None:
    headline, out = result
    scores = pd.read_csv(out / "tables" / "all_scores.csv")
    ann = scores[scores.season == "ANN"].set_index("system")
    # only March: MAM holds all days, other seasons absent
    assert set(scores.season) == {"ANN", "MAM"}
    assert (ann.loc[:, "n_days"] == 31).all()
    # the interpolating baseline beats the cell-constant coarse field (README: 0.69 vs ~0.9 K on
    # hourly fields of this month)
    assert ann.loc["bicubic", "mae"] < ann.loc["coarse", "mae"]
    assert 0.2 < ann.loc["bicubic", "mae"] < 1.2
    # ensemble members = bicubic + another day's real residual (largely a fixed orographic
    # pattern): the fair CRPS is below a member's MAE, the ensemble mean beats a member, spread ~ skill
    assert ann.loc["aid", "crps"] < ann.loc["aid", "mae"]
    assert ann.loc["aid-ensmean", "rmse"] < ann.loc["aid", "rmse"]
    assert 0.7 < ann.loc["aid", "spread_skill"] < 1.4
    assert abs(ann.loc["aid", "bias"]) < 0.2
    # spectra: bicubic loses small-scale power, the residual ensemble keeps it
    spec = headline["variables"]["tas"]
    assert spec["bicubic"]["small_scale_power_ratio"] < 0.5
    assert 0.6 < spec["aid"]["small_scale_power_ratio"] < 1.6
    # rank histogram: 4 samples -> 5 ranks, every rank used
    rh = pd.read_csv(out / "tables" / "all_rank-histogram.csv")
    assert len(rh) == 5 and (rh["frequency"] > 0.08).all()


def test_index_bias_known_answer(result: tuple[dict, Path]) -> None:
    """GCM 'members' are the real series +0.8/1.0/1.2 K and x1.05/1.10/1.15 precipitation."""
    _, out = result
    df = pd.read_csv(out / "tables" / "indices_bias.csv").set_index("index")
    assert df.loc["TXx", "bias"] == pytest.approx(1.0, abs=1e-4)
    assert df.loc["TXx", "bias_p10"] == pytest.approx(0.84, abs=1e-3)
    assert df.loc["PRCPTOT", "bias_rel_percent"] == pytest.approx(10.0, rel=1e-3)
    assert df.loc["RX1day", "bias_rel_percent"] == pytest.approx(10.0, rel=1e-3)
    assert df.loc["FD", "bias"] <= 0  # warmer nights -> fewer frost days
    assert np.isfinite(df["mae"]).all()
