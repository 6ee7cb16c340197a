"""The diffusion downscale job end to end: a tiny checkpoint trained on derived-from-ERA5 pairs,
one year of N samples streamed to CF deliverables, reproducibility, failures leave nothing.

The data are the derived case of tests/test_deliverables.py (real ERA5 fields repeated over a
year). The checkpoint is trained for a few steps only: these tests check the job's plumbing and
guarantees (names, metadata, calendar, physics fixes, determinism, atomicity), not skill.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from aid import naming
from aid.errors import CheckpointError, DataError
from test_deliverables import (  # noqa: F401  (fixtures)
    CORDEX, EXP, MEMBER, SOURCE, YEAR, baseline_files, case, derived_fine, write_coarse,
)

CF = xr.coders.CFDatetimeCoder(use_cftime=True)


@pytest.fixture(scope="session")
def checkpoint(case) -> Path:  # noqa: F811
    """A tiny model trained for a few steps on (fine, coarsened) derived ERA5 pairs of one year."""
    from aid.model.train import train_from_config

    root = case["root"] / "train"
    cfg = copy.deepcopy(case["cfg"])
    cfg["model"]["train"].update(steps=4, batch_size=4, warmup_steps=0, years=[YEAR, YEAR])
    fine = derived_fine(cfg, [YEAR], calendar="standard")
    (root / "fine").mkdir(parents=True)
    enc = {"time": {"units": "days since 1950-01-01", "calendar": "standard"}}
    fine_paths = []
    for v in fine.data_vars:
        fine[[v]].to_netcdf(root / "fine" / f"{v}.nc", encoding=enc)
        fine_paths.append(str(root / "fine" / f"{v}.nc"))
    coarse_paths = write_coarse(cfg, fine, root / "coarse", per_variable=True)
    out = root / "checkpoint.pt"
    train_from_config(config=cfg, fine_paths=fine_paths, coarse_paths=coarse_paths,
                      static_path=cfg["reference"]["static"], checkpoint_out=str(out), threads=2)
    return out


@pytest.fixture(scope="session")
def downscaled(case, checkpoint) -> dict:  # noqa: F811
    from aid.downscale import downscale_year

    cfg = case["cfg"]
    paths = naming.deliverable_paths(cfg, SOURCE, EXP, MEMBER, YEAR)
    downscale_year(cfg, case["adjusted"], checkpoint, SOURCE, EXP, MEMBER, YEAR, [str(p) for p in paths.values()])
    return paths


def test_deliverables_of_the_diffusion_job(case, checkpoint, downscaled, baseline_files) -> None:  # noqa: F811
    cfg = case["cfg"]
    n = cfg["downscale"]["n_samples"]
    assert len(downscaled) == len(cfg["search"]["variables"]) * n
    assert sorted(p.name for p in downscaled[("tas", 1)].parent.iterdir()) == sorted(p.name for p in downscaled.values())
    assert {int(CORDEX.match(p.name)["sample"]) for p in downscaled.values()} == set(range(1, n + 1))
    from aid.model.checkpoint import load_checkpoint

    content, sha = load_checkpoint(checkpoint)  # sha: the checkpoint's verified content hash
    tuned = content["sampler"]  # chosen on validation fields at the end of training
    ids = set()
    for (var, s), p in downscaled.items():
        m = CORDEX.match(p.name)
        assert m and m["model"] == "aid" and m["var"] == var and int(m["sample"]) == s
        ds = xr.open_dataset(p, decode_times=CF)
        assert ds[var].dims == ("time", "lat", "lon") and ds[var].dtype == np.float32
        assert ds.sizes["time"] == 365 and ds.time.dt.calendar == "noleap"  # noleap in -> noleap out
        assert (ds.sizes["lat"], ds.sizes["lon"]) == (16, 20)
        assert "time_bnds" in ds and ds[var].encoding["_FillValue"] == np.float32(1e20)
        a = ds.attrs
        assert a["source_id"] == "aid" and a["version_realization"] == f"v1-r{s}" and a["aid_sample"] == str(s)
        assert a["aid_checkpoint_sha256"] == sha
        assert (a["aid_sampler_seed"], a["aid_sampler_steps"], a["aid_sampler_churn"], a["aid_sampler_rho"]) == (
            str(cfg["downscale"]["seed"]), "1", str(tuned["churn"]), str(tuned["rho"]))  # steps set in config
        assert a["aid_device"] == "cpu" and "QDM" in a["bias_adjustment"]
        # the region the checkpoint learnt on, and no warning: this job is inside it
        dom = cfg["domain"]
        assert a["aid_training_domain"].startswith(f"lat {dom['lat'][0]:g}..{dom['lat'][1]:g}, lon {dom['lon'][0]:g}")
        assert "WARNING" not in a["aid_training_domain"]
        ids.add(a["tracking_id"])
    assert len(ids) == len(downscaled)  # one identifier per file
    for s in range(1, n + 1):
        tn, tg, tx = (xr.open_dataset(downscaled[(v, s)])[v].values for v in ("tasmin", "tas", "tasmax"))
        assert np.all(tn <= tg) and np.all(tg <= tx)
        assert float(xr.open_dataset(downscaled[("pr", s)])["pr"].min()) >= 0
        assert 220 < float(tg.min()) and float(tg.max()) < 330 and np.isfinite(tg).all()
    # two different samples: an ensemble with spread
    a1, a2 = (xr.open_dataset(downscaled[("tas", s)])["tas"].values for s in (1, 2))
    assert not np.array_equal(a1, a2)
    # the residual model adds detail to the bicubic field it is conditioned on, keeping its large scale
    base = xr.open_dataset(baseline_files[("tas", 1)])["tas"].values
    assert abs(float(a1.mean()) - float(base.mean())) < 0.5


def test_rerun_one_sample_is_bit_identical(case, checkpoint, downscaled, tmp_path) -> None:  # noqa: F811
    """Sample 2 alone, other batch size, other directory (via the CLI): same values bit for bit."""
    from aid.cli import main

    cfg = copy.deepcopy(case["cfg"])
    cfg["output_dir"] = str(tmp_path / "results")
    cfg["downscale"]["batch_days"] = 73
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    rc = main(["downscale", "--config", str(cfg_path), "--checkpoint", str(checkpoint), "--coarse", *case["adjusted"],
               "--source", SOURCE, "--experiment", EXP, "--member", MEMBER, "--year", str(YEAR), "--sample", "2"])
    assert rc == 0
    again = naming.deliverable_paths(cfg, SOURCE, EXP, MEMBER, YEAR)
    for var in cfg["search"]["variables"]:
        assert not again[(var, 1)].exists()
        np.testing.assert_array_equal(xr.open_dataset(again[(var, 2)])[var].values,
                                      xr.open_dataset(downscaled[(var, 2)])[var].values)
        assert (xr.open_dataset(again[(var, 2)]).attrs["tracking_id"]
                == xr.open_dataset(downscaled[(var, 2)]).attrs["tracking_id"])


def test_checks_pass_on_the_job(case, downscaled, baseline_files, tmp_path) -> None:  # noqa: F811
    from aid.checks import check_job

    report = check_job(case["cfg"], [str(p) for p in downscaled.values()], [str(p) for p in baseline_files.values()],
                       tmp_path / "check.json")
    assert report["n_files"] == 2 * 6 + 6
    assert set(report["fixes"]) == {"aid r1", "aid r2", "aid-bicubic r1"}


def test_checkpoint_must_cover_the_variables(case, checkpoint, tmp_path) -> None:  # noqa: F811
    from aid.downscale import downscale_year

    cfg = copy.deepcopy(case["cfg"])
    cfg["output_dir"] = str(tmp_path / "results")
    cfg["search"]["variables"] = [*cfg["search"]["variables"], "sfcWind"]
    paths = naming.deliverable_paths(cfg, SOURCE, EXP, MEMBER, YEAR)
    with pytest.raises(CheckpointError, match=r"checkpoint was trained on .*; config search.variables also asks for sfcWind"):
        downscale_year(cfg, case["adjusted"], checkpoint, SOURCE, EXP, MEMBER, YEAR, [str(p) for p in paths.values()])
    assert not any(p.exists() for p in paths.values())


def test_failure_mid_job_leaves_nothing(case, checkpoint, tmp_path, caplog) -> None:  # noqa: F811
    """A NaN in day 150 of the input: batch 0-99 was written, then the job fails."""
    from aid.downscale import downscale_year

    cfg = copy.deepcopy(case["cfg"])
    cfg["output_dir"] = str(tmp_path / "results")
    cfg["downscale"]["n_samples"] = 1
    bad = xr.open_dataset(case["adjusted"][0], decode_times=CF).load()
    bad["tas"][150, 0, 0] = np.nan
    src = tmp_path / "bad.nc"
    bad.to_netcdf(src, encoding={"time": {"units": "days since 1950-01-01", "calendar": "noleap"}})
    paths = naming.deliverable_paths(cfg, SOURCE, EXP, MEMBER, YEAR)
    caplog.set_level(logging.INFO, logger="aid")
    with pytest.raises(DataError, match=r"bad\.nc: variable 'tas' has 1 NaN/inf value\(s\) in days 2013-04-11\.\.2013-07-19 \(first on 2013-05-31\)"):
        downscale_year(cfg, [str(src)], checkpoint, SOURCE, EXP, MEMBER, YEAR, [str(p) for p in paths.values()])
    assert "downscale device: cpu" in caplog.text
    outdir = next(iter(paths.values())).parent
    assert list(outdir.iterdir()) == []  # no deliverable, no temporary file
