"""Fault test: `aid train` killed with SIGKILL resumes from its last checkpoint and ends where an
uninterrupted run ends, bit for bit on CPU.

Data: real ERA5 2 m temperature over the UK (March 2019, first 96 hours, 32 x 32 cells at 0.25 deg,
lat 50..57.75, lon -10..-2.25) and its x8 conservative coarsening by the pipeline's own `coarsen`.
Model: the `tiny` preset, 120 steps; `train_model` writes `<checkpoint>.last` every 50 steps.

Why bit-identical is expected on CPU: the batch of step k, its crop, noise levels and noise are drawn
from generators seeded by (seed, k); the global generator (dropout) is re-seeded from (seed, k) at
every step; model, EMA, optimizer state, loss history and best-validation weights are all in the
resume file; one torch thread in both runs, so reductions run in the same order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import xarray as xr
import yaml

from aid.config import DEFAULT_CONFIG, load_config
from aid.grids import fine_grid
from aid.io import write_netcdf
from aid.model.checkpoint import load_checkpoint
from aid.model.train import train_from_config
from aid.regrid import coarsen, normalise_coords

ROOT = Path(__file__).resolve().parents[1]
STEPS = 120
SAVE_EVERY = 50  # train_model: max(50, min(500, steps // 5)) for 120 steps


@pytest.fixture(scope="module")
def setup(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("resume")
    era5 = shared_data / "era5"
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["output_dir"] = str(d / "results")
    raw["search"]["variables"] = ["tas"]
    raw["domain"].update(lat=[50.0, 57.75], lon=[-10.0, -2.25])
    raw["model"]["size"] = "tiny"
    raw["model"]["train"].update(years=[2019, 2019], steps=STEPS, batch_size=8, warmup_steps=5, ema_decay=0.9, seed=3)
    cfg_file = d / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    cfg = load_config(cfg_file)

    ds = xr.open_dataset(era5 / "era5-2mt-2019-03-uk.grib", engine="cfgrib", backend_kwargs={"indexpath": ""})
    ds = normalise_coords(ds[["t2m"]].drop_vars(["valid_time", "number", "step", "surface"], errors="ignore"))
    fg = fine_grid(cfg)
    fine = ds.rename(t2m="tas").sel(lat=fg.lat.values, lon=fg.lon.values).isel(time=slice(0, 96)).load()
    assert dict(fine.sizes) == {"time": 96, "lat": 32, "lon": 32}
    write_netcdf(fine, d / "fine_tas.nc")
    write_netcdf(coarsen(fine, cfg).load(), d / "coarse_tas.nc")
    args = ["--fine", str(d / "fine_tas.nc"), "--coarse", str(d / "coarse_tas.nc"),
            "--static", str(era5 / "era5-static-z-lsm-global.nc"), "--threads", "1"]
    return {"dir": d, "cfg": cfg, "cfg_file": cfg_file, "args": args, "static": era5 / "era5-static-z-lsm-global.nc"}


def _train_cmd(setup: dict) -> list[str]:
    return [sys.executable, "-m", "aid.cli", "train", "--config", str(setup["cfg_file"]), *setup["args"]]


def test_sigkilled_training_resumes_to_the_uninterrupted_result(setup: dict) -> None:
    d = setup["dir"]
    ckpt = Path(setup["cfg"]["output_dir"]) / "model" / "checkpoint.pt"
    last = ckpt.with_name("checkpoint.pt.last")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    # 1. Start `aid train`, SIGKILL it as soon as its first resume file exists.
    with open(d / "killed.log", "w") as log_fh:
        proc = subprocess.Popen(_train_cmd(setup), cwd=ROOT, env=env, stdout=log_fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.monotonic() + 240
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    killed_log = (d / "killed.log").read_text()
    assert rc == -signal.SIGKILL, f"`aid train` ended on its own (rc {rc}) before it could be killed:\n{killed_log[-3000:]}"
    assert last.exists(), f"no resume file was written before the kill:\n{killed_log[-3000:]}"
    assert not ckpt.exists(), "the final checkpoint exists although training was killed"
    saved, _ = load_checkpoint(last, expect_variables=["tas"])
    saved_step = int(saved["step"])
    assert saved_step > 0 and saved_step % SAVE_EVERY == 0 and saved_step < STEPS
    assert len(saved["loss_history"]) == saved_step

    # 2. Re-run the very same command: it must continue from saved_step, not from 0.
    res = subprocess.run(_train_cmd(setup), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from {last} at step {saved_step} (sha256 " in res.stderr, res.stderr[-3000:]
    assert f"training done: {STEPS} steps in" in res.stderr
    assert "ignoring resume file" not in res.stderr
    resumed, _ = load_checkpoint(ckpt, expect_variables=["tas"])
    assert resumed["step"] == STEPS and len(resumed["loss_history"]) == STEPS
    # The resume file is consumed; no temporary file of the killed run is left beside the checkpoint.
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["checkpoint.pt"]

    # 3. An uninterrupted run of the same configuration (same process settings: one thread).
    ref_path = train_from_config(setup["cfg"], [d / "fine_tas.nc"], [d / "coarse_tas.nc"], setup["static"],
                                 d / "uninterrupted" / "checkpoint.pt", threads=1)
    ref, _ = load_checkpoint(ref_path)
    assert ref["step"] == STEPS
    # The history before the kill is the saved one, and the whole history equals the uninterrupted run's.
    assert resumed["loss_history"][:saved_step] == saved["loss_history"]
    assert resumed["loss_history"] == ref["loss_history"]
    assert resumed["best_step"] == ref["best_step"] and resumed["best_val"] == ref["best_val"]
    for part in ("model", "ema", "best_ema"):
        assert resumed[part].keys() == ref[part].keys()
        for k in ref[part]:
            assert torch.equal(resumed[part][k], ref[part][k]), f"{part}.{k} differs after resume"
    for k, state in ref["optimizer"]["state"].items():
        for name, t in state.items():
            assert torch.equal(torch.as_tensor(resumed["optimizer"]["state"][k][name]), torch.as_tensor(t)), (k, name)


def test_resume_file_of_another_configuration_is_not_used(setup: dict, tmp_path: Path, caplog) -> None:
    """A resume file trained with other settings (here the learning rate) is ignored, by name."""
    import copy
    import logging

    from aid.model.prepare import prepare_training
    from aid.model.train import train_model

    d = setup["dir"]
    cfg = copy.deepcopy(setup["cfg"])
    cfg["model"]["train"]["steps"] = 3
    prep = prepare_training(cfg, [d / "fine_tas.nc"], [d / "coarse_tas.nc"], setup["static"])
    first = train_model(prep, cfg, tmp_path / "a.pt", threads=1, progress=False)
    (tmp_path / "b.pt.last").write_bytes(first.read_bytes())
    cfg["model"]["train"]["lr"] = 0.001
    cfg["model"]["train"]["steps"] = 4
    with caplog.at_level(logging.INFO, logger="aid.model.train"):
        second = train_model(prep, cfg, tmp_path / "b.pt", threads=1, progress=False)
    assert (f"ignoring resume file {tmp_path / 'b.pt.last'}: it was trained with a different "
            "model.train.lr (0.0004 -> 0.001); starting from step 0") in caplog.text
    assert "resuming from" not in caplog.text
    content, _ = load_checkpoint(second)
    assert content["step"] == 4 and len(content["loss_history"]) == 4
