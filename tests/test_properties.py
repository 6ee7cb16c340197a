"""xsdba statistical properties of the evaluation (aid/evaluate/properties.py) on the real-ERA5 case.

The case (aid.evaluate.sample): UK t2m March 2019 as reference, its 2 deg block mean as coarse
input, bicubic interpolation of that as baseline, and members = bicubic + the real fine-scale
residual of another day. The members therefore carry the reference's small-scale variance, which
the bicubic field lacks: their spectral variance must be closer to the reference at the short
wavelengths, and the fraction of bands where they improve on the baseline must be high.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from aid.evaluate import properties as PR
from aid.evaluate.run import _date_coord, load_ensemble, upsample_coarse
from aid.evaluate.sample import build_sample_evaluation
from aid.indices import load_variables

DATA = Path("/work/shared/data")
pytestmark = pytest.mark.skipif(not (DATA / "era5/era5-2mt-2019-03-uk.grib").exists(), reason="shared data missing")


def test_improvement_follows_xscen_rule() -> None:
    """|new| <= |old| counts (ties too, reported apart); ratios are compared by |r - 1|."""
    bias = next(p for p in PR.PROPERTIES if p.measure == "bias")
    ratio = next(p for p in PR.PROPERTIES if p.measure == "ratio")
    old = xr.DataArray([1.0, -2.0, 0.5, 3.0, np.nan])
    new = xr.DataArray([0.5, 2.0, -0.7, 1.0, 1.0])
    frac, tie, n = PR.improvement(bias, new, old)
    assert n == 4 and frac == pytest.approx(3 / 4) and tie == pytest.approx(1 / 4)
    frac, tie, n = PR.improvement(ratio, xr.DataArray([0.9, 1.5]), xr.DataArray([0.5, 1.2]))
    assert (frac, tie, n) == (0.5, 0.0, 2)
    # a sample dimension on the new measure broadcasts against the baseline's
    frac, _, n = PR.improvement(bias, xr.DataArray([[0.1, 5.0], [0.1, 0.1]], dims=("sample", "x")),
                                xr.DataArray([1.0, 1.0], dims="x"))
    assert n == 4 and frac == pytest.approx(3 / 4)


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("props")
    ins = build_sample_evaluation(DATA, root, n_samples=2, with_indices=False)
    ref = _date_coord(load_variables(ins["reference"], "reference")["tas"].astype("float32")).load()
    ens = load_ensemble(ins["downscaled"], "downscaled")["tas"].load()
    bic = load_ensemble(ins["baseline"], "baseline")["tas"].isel(sample=0, drop=True).load()
    co = _date_coord(upsample_coarse(load_variables(ins["coarse"], "coarse")[["tas"]], ref)["tas"]).load()
    return ref, ens, {"bicubic": bic, "coarse": co}


def test_property_table_on_real_case(case) -> None:
    ref, ens, systems = case
    rows = PR.property_table("tas", ref, ens, systems, "K", {"tas"}, names=["q99", "spectral_variance", "decorrelation"])
    by = {r["property"]: r for r in rows}
    assert set(by) == {"q99", "spectral_variance", "decorrelation"}
    json.dumps(rows)  # plain numbers, ready for the CSV / metrics JSON
    sv = by["spectral_variance"]
    # bicubic and the cell-constant coarse field lose fine-scale variance; the members keep the real residual
    assert sv["aid"] < sv["bicubic"] and sv["aid"] < sv["coarse"]
    assert sv["improved_vs_bicubic"] >= 0.8 and sv["improved_vs_coarse"] >= 0.8, sv
    assert sv["n_points"] == 2 * 32  # 2 samples x wavenumber bands 0 < alpha <= 1 on the 32 x 40 grid
    # decorrelation length: one value per cell per sample
    assert by["decorrelation"]["n_points"] == 2 * 32 * 40
    for r in rows:
        for k in ("improved_vs_bicubic", "tied_vs_bicubic", "improved_vs_coarse"):
            assert 0.0 <= r[k] <= 1.0, (r["property"], k, r[k])
    # the 99 % quantile error of the members is in K and small for a bicubic + residual field
    assert 0 <= by["q99"]["aid"] < 2.0


def test_spectral_variance_of_bicubic_is_low_at_small_scales(case) -> None:
    """The property itself: bicubic interpolation keeps < half the reference's variance at the
    shortest resolved wavelengths (alpha > 0.5), the residual-carrying members keep most of it."""
    ref, ens, systems = case
    prop = next(p for p in PR.PROPERTIES if p.name == "spectral_variance")
    pr_ = PR.compute_property(prop, PR.prepare(ref, "K"))
    pb = PR.compute_property(prop, PR.prepare(systems["bicubic"], "K"))
    pa = PR.compute_property(prop, PR.prepare(ens.isel(sample=0, drop=True), "K"))
    small = pr_["alpha"] > 0.5
    rb = float(PR.compute_measure(prop, pb, pr_).where(small).mean())
    ra = float(PR.compute_measure(prop, pa, pr_).where(small).mean())
    assert rb < 0.5 and ra > 0.6, (rb, ra)
