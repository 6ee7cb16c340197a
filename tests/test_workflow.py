"""The real workflow end to end on a slice of the default data (tests/data/tiny.yaml).

One Snakemake run (session fixture) feeds every test here: it goes through demo archive ->
intake-esm catalog -> fetch -> regrid -> xsdba -> train -> downscale -> checks -> indices ->
evaluation, exactly as `bash scripts/demo.sh` does, only smaller.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import xarray as xr

from aid import naming
from aid.indices import open_index_file
from workflow_run import copy_upstream, snakemake, tiny_config  # the `pipeline` fixture is in conftest.py

# The full tiny pipeline (minutes): every test here and in test_faults.py shares one run (the
# `pipeline` fixture in conftest.py runs it once, across xdist workers too).
pytestmark = pytest.mark.pipeline

CORDEX = re.compile(
    r"^(?P<var>[a-zA-Z]+)_(?P<domain>[A-Za-z0-9-]+)_(?P<source>[A-Za-z0-9-]+)_(?P<exp>[A-Za-z0-9-]+)_"
    r"(?P<member>r\d+i\d+p\d+f\d+)_(?P<inst>[A-Za-z0-9-]+)_(?P<model>aid|aid-bicubic)_(?P<ver>v\d+)-r(?P<sample>\d+)_day_"
    r"(?P<start>\d{8})-(?P<end>\d{8})\.nc$"
)


def test_deliverables_names_dims_attrs(pipeline) -> None:
    out, cfg = pipeline
    files = sorted((out / "downscale").rglob("*.nc"))
    jobs = naming.downscale_jobs(cfg)
    nvars = len(cfg["search"]["variables"])
    assert len(files) == len(jobs) * nvars * cfg["downscale"]["n_samples"]
    samples = set()
    for f in files:
        m = CORDEX.match(f.name)
        assert m, f.name
        samples.add(int(m["sample"]))
    assert samples == set(range(1, cfg["downscale"]["n_samples"] + 1))

    f = next(p for p in files if p.name.startswith("tas_") and "_ssp245_" in p.name)
    ds = xr.open_dataset(f, use_cftime=True)
    assert ds["tas"].dims == ("time", "lat", "lon")
    assert ds["tas"].dtype == np.float32
    assert ds["tas"].attrs["units"] == "K"
    assert ds.time.dt.calendar == "noleap"
    assert ds.sizes["time"] == 365
    assert ds.sizes["lat"] == 32 and ds.sizes["lon"] == 40
    assert "time_bnds" in ds or "time_bounds" in ds
    assert ds.attrs["Conventions"].startswith("CF-1.11")
    for key in ("driving_source_id", "driving_experiment_id", "driving_variant_label", "domain_id"):
        assert key in ds.attrs, key
    text = json.dumps(ds.attrs)
    assert "sha256" in text.lower()
    assert "QDM" in text  # bias-adjustment provenance travels to the deliverable
    enc = xr.open_dataset(f, decode_times=False)
    assert enc.time.attrs["units"].startswith("days since 1950-01-01")
    # Physically plausible UK temperatures.
    assert 240 < float(ds["tas"].min()) and float(ds["tas"].max()) < 320


def test_checks_and_physics(pipeline) -> None:
    out, cfg = pipeline
    reports = sorted((out / "checks").rglob("*.json"))
    assert len(reports) == len(naming.downscale_jobs(cfg))
    for job in naming.downscale_jobs(cfg)[:2]:
        paths = naming.deliverable_paths(cfg, job["source"], job["experiment"], job["member"], job["year"])
        pr = xr.open_dataset(paths[("pr", 1)])["pr"]
        assert float(pr.min()) >= 0
        tn = xr.open_dataset(paths[("tasmin", 1)])["tasmin"].values
        tx = xr.open_dataset(paths[("tasmax", 1)])["tasmax"].values
        tg = xr.open_dataset(paths[("tas", 1)])["tas"].values
        assert np.all(tn <= tg + 1e-4) and np.all(tg <= tx + 1e-4)


def test_indices_evaluation_outputs(pipeline) -> None:
    out, cfg = pipeline
    ens = open_index_file(out / "indices" / "ensemble" / f"{cfg['search']['sources'][0]}_ssp245.nc")
    assert "TXx" in ens and "statistic" in ens["TXx"].dims
    assert list(ens["statistic"].values) == ["p10", "median", "p90"]
    assert np.all(ens["TXx"].sel(statistic="p10") <= ens["TXx"].sel(statistic="p90"))
    txx = ens["TXx"].sel(statistic="median")
    # UK annual maximum of daily max temperature: warm-summer values, in K (xclim keeps the input units).
    assert 290 < float(txx.min()) and float(txx.max()) < 315, (float(txx.min()), float(txx.max()))
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    for var in cfg["search"]["variables"]:
        scores = metrics["variables"][var]
        assert {"aid", "bicubic", "coarse"} <= set(scores), var
        assert np.isfinite(scores["aid"]["crps"]) and scores["aid"]["crps"] >= 0, var
    # Bicubic upsampling of the coarse field beats the blocky coarse field itself on the 0.25 deg grid.
    assert metrics["variables"]["tas"]["bicubic"]["mae"] < metrics["variables"]["tas"]["coarse"]["mae"]
    figures = {p.name for p in (out / "evaluation" / "figures").glob("*.png")}
    for var in ("tas", "pr"):
        for kind in ("spectrum", "rank-histogram", "bias-map", "tail"):
            assert f"{var}_{kind}.png" in figures, (var, kind)


def test_rerun_one_job_is_bit_identical(pipeline, tmp_path) -> None:
    """One downscale job forced again, locally, gives the shared run's values bit for bit (on CI the
    shared run's jobs ran through SLURM). It runs in a copy of the run's upstream: a forced job in
    the shared run would leave every job downstream of it out of date (newer input) for the tests
    that read the run."""
    out, cfg = pipeline
    copy = tmp_path / "results"
    copy_upstream(out, copy)
    job = next(j for j in naming.downscale_jobs(cfg) if j["experiment"] == "ssp245")
    args = (job["source"], job["experiment"], job["member"], job["year"])
    paths = naming.deliverable_paths(cfg, *args)
    again = naming.deliverable_paths(tiny_config(copy), *args)
    assert not any(p.exists() for p in again.values())  # so the files compared below are the re-run's
    snakemake(copy, "--force", str(again[("tas", 1)]))
    for k, p in paths.items():
        with xr.open_dataset(p) as before, xr.open_dataset(again[k]) as after:
            np.testing.assert_array_equal(before[k[0]].values, after[k[0]].values)


def test_runs_sharing_dates_have_independent_noise(pipeline) -> None:
    """The historical GCM member and the evaluation run downscale the same dates: the sampled noise
    of each (the difference of its two samples, where the conditional mean cancels) is uncorrelated
    across runs. Seeded by (seed, sample, date) alone it was the same noise in both (r ~ 0.9)."""
    out, cfg = pipeline
    year = cfg["evaluation"]["period"][0]
    hist = naming.deliverable_paths(cfg, cfg["search"]["sources"][0], "historical", cfg["search"]["members"][0], year)
    ev = naming.deliverable_paths(cfg, cfg["reference"]["name"], naming.EVALUATION_EXPERIMENT,
                                  naming.EVALUATION_MEMBER, year)
    for var in ("tas", "pr"):
        def noise(paths: dict) -> np.ndarray:
            a, b = (xr.open_dataset(paths[(var, s)])[var].values.astype(np.float64) for s in (1, 2))
            return (a - b).ravel()

        n_hist, n_eval = noise(hist), noise(ev)
        assert n_hist.std() > 0 and n_eval.std() > 0, var
        r = float(np.corrcoef(n_hist, n_eval)[0, 1])
        assert abs(r) < 0.05, (var, r)
    assert xr.open_dataset(hist[("tas", 1)]).attrs["aid_sampler_noise_stream"].endswith("|historical|r1i1p1f1")
