"""Benchmark: the diffusion model on one CUDA GPU (training throughput, global member-day, CPU match).

    python bench/gpu.py                  # on a CUDA machine: paper-size network, bf16, compiled (< 8 min)
    python bench/gpu.py --smoke          # tiny network, small sizes, any device (checks the script runs)

Measures, on the first CUDA device (CPU in ``--smoke`` without one):

* training samples/s of the ``paper`` network (128 x 128 windows, bf16 autocast, torch.compile,
  AdamW step included), for each of ``--train-batches``; peak GPU memory;
* seconds per global 0.25 deg member-day (721 x 1440, 128-cell tiles blended with overlap 32,
  periodic longitude) at ``--steps`` Heun steps (2 steps - 1 network evaluations; the tuned
  sampler's range), for ``--members`` members per batch swept; peak GPU memory. Conditioning:
  the real ERA5 global t2m field (2022-10-01T00) and the real static z/lsm, normalised;
* CUDA against CPU in distribution: the fair CRPS of an ensemble drawn with the same per-member
  seeds on a real 64 x 64 window (UK) against the real field, CUDA bf16 compiled vs CPU float32
  eager; must agree within 2 %.

The network's weights are random (seeded) unless ``--checkpoint`` gives a trained one: speed does
not depend on them, and the CPU/CUDA comparison checks the numerics, not the skill. Writes
``bench/out/gpu.json`` (``gpu_smoke.json`` with ``--smoke``) and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ERA5 = ROOT.parent / "shared" / "data" / "era5"
if not ERA5.exists():
    ERA5 = Path("/work/shared/data/era5")
log = logging.getLogger("bench.gpu")
N_VARS = 6  # the default run's variables


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_mb(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def global_conditioning(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cond (N_VARS, h, w), static (N_STATIC, h, w), lat) from the real global t2m and static files.

    Every variable channel holds the normalised real t2m (what the channels hold does not change
    the cost); ``h`` x ``w`` < 721 x 1440 takes the field's top-left block (smoke mode).
    """
    import xarray as xr

    from aid.model.data import static_channels, static_fields

    ds = xr.open_dataset(ERA5 / "era5-2t-global-2022-10-01T00.grib", engine="cfgrib", backend_kwargs={"indexpath": ""})
    t2m = ds["t2m"].squeeze(drop=True).transpose("latitude", "longitude").values.astype(np.float64)[:h, :w]
    lat = ds["latitude"].values[:h].astype(float)
    lon = ds["longitude"].values[:w].astype(float)
    lon = ((lon + 180) % 360) - 180
    oro, lsm = static_fields(ERA5 / "era5-static-z-lsm-global.nc", lat, lon)
    z = (t2m - t2m.mean()) / t2m.std()
    return np.repeat(z[None], N_VARS, 0).astype(np.float32), static_channels(oro, lsm, lat, lon), lat


def build(size: str, device: str, checkpoint: str | None, n_static: int):  # noqa: ANN201
    import torch

    from aid.model.precond import EDMDenoiser
    from aid.model.unet import build_unet

    torch.manual_seed(0)
    net, kwargs = build_unet(size, N_VARS, N_VARS + n_static, None, True)
    sd = torch.full((N_VARS,), 0.5)
    if checkpoint:
        from aid.model.api import Downscaler

        dl = Downscaler.load(checkpoint, device="cpu")
        return dl.den.to(device).eval(), int(dl.patch)
    return EDMDenoiser(net, sd).to(device), int(kwargs["patch"])


def train_throughput(size: str, device: str, batches: list[int], steps: int, compile_: bool) -> list[dict]:
    import torch

    from aid.config import fill_defaults
    from aid.model.data import N_STATIC
    from aid.model.precond import edm_loss, sample_sigma

    tcfg = fill_defaults({})["model"]["train"]  # the default run's training noise distribution

    out = []
    for b in batches:
        den, patch = build(size, device, None, N_STATIC)
        patch = min(patch, 128)
        den.train()
        fwd = den
        if compile_:
            with contextlib.suppress(Exception):
                fwd = torch.compile(den)
        opt = torch.optim.AdamW(den.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        y = torch.randn(b, N_VARS, patch, patch, generator=g).to(device) * 0.5
        c = torch.randn(b, N_VARS + N_STATIC, patch, patch, generator=g).to(device)
        tf = torch.zeros(b, 4, device=device)
        cuda = device.startswith("cuda")
        _reset_peak(device)

        def one() -> None:
            sig = sample_sigma(b, g, p_mean=tcfg["p_mean"], p_std=tcfg["p_std"]).to(device)
            noise = torch.randn(y.shape, generator=g).to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
                loss = edm_loss(fwd, y, c, tf, sig, noise, sigma_data=den.sigma_data)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t = time.perf_counter()
        for _ in range(2):  # warm-up (compilation)
            one()
        _sync(device)
        warm = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(steps):
            one()
        _sync(device)
        dt = time.perf_counter() - t
        row = {"batch": b, "patch": patch, "samples_per_s": round(b * steps / dt, 2), "warmup_s": round(warm, 2),
               "peak_gpu_mb": _peak_mb(device)}
        log.info("train %s batch %d: %s", size, b, row)
        out.append(row)
        del den, opt, fwd
        if cuda:
            torch.cuda.empty_cache()
    return out


def member_day(size: str, device: str, members: list[int], steps: int, h: int, w: int, compile_: bool,
               checkpoint: str | None) -> list[dict]:
    import torch

    from aid.model.sampler import heun_sample, member_seed
    from aid.model.tiling import tiled_apply

    cond, static, _ = global_conditioning(h, w)
    den, patch = build(size, device, checkpoint, static.shape[0])
    den.eval()
    net = torch.compile(den, dynamic=False) if compile_ else den
    periodic = abs(w * 0.25 - 360.0) < 1e-6
    cuda = device.startswith("cuda")
    cfull = torch.from_numpy(np.concatenate([cond, static])[None]).to(device)
    out = []
    for m in members:
        cb = cfull.expand(m, -1, -1, -1)
        tb = torch.zeros(m, 4, device=device)

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            def fn(xt, ct, rs, ci):  # noqa: ANN001, ANN202
                return net(xt, sigma, ct, tb)

            return tiled_apply(fn, x, cb, (patch, patch), max(2, patch // 4), periodic)

        def run() -> None:
            gens = [torch.Generator().manual_seed(member_seed(0, "bench", s, "2022100100")) for s in range(m)]
            with torch.inference_mode(), (torch.autocast("cuda", dtype=torch.bfloat16) if cuda
                                          else contextlib.nullcontext()):
                heun_sample(denoise, gens, (N_VARS, h, w), steps, 0.002, 80.0, 7.0, 0.0, device=device)

        _reset_peak(device)
        t = time.perf_counter()
        run()  # warm-up (compilation of the tile shape)
        _sync(device)
        warm = time.perf_counter() - t
        t = time.perf_counter()
        run()
        _sync(device)
        dt = time.perf_counter() - t
        row = {"members_per_batch": m, "grid": [h, w], "network_evaluations": 2 * steps - 1, "tile": patch,
               "s_per_member_day": round(dt / m, 4), "warmup_s": round(warm, 2), "peak_gpu_mb": _peak_mb(device)}
        log.info("member-day %s: %s", size, row)
        out.append(row)
    return out


def crps_match(size: str, device: str, members: int, steps: int, checkpoint: str | None) -> dict:
    """Fair CRPS of same-seed ensembles on a real UK window: ``device`` (bf16, compiled) vs CPU fp32."""
    import torch

    from aid.model.sampler import heun_sample, member_seed
    from aid.model.tune import fair_crps

    cond, static, lat = global_conditioning(721, 1440)
    r0 = int(np.argmin(np.abs(lat - 58.0)))
    c0 = 1440 - 40  # 10 W
    cols = (c0 + np.arange(64)) % 1440
    cwin = np.concatenate([cond, static])[:, r0 : r0 + 64][:, :, cols]
    target = cond[:, r0 : r0 + 64][:, :, cols].astype(np.float64) * 0.1  # a real field as the scored target
    res = {}
    for dev in ["cpu", device] if device != "cpu" else ["cpu"]:
        den, _ = build(size, dev, checkpoint, static.shape[0])
        den.eval()
        cuda = dev.startswith("cuda")
        net = torch.compile(den, dynamic=False) if cuda else den
        cb = torch.from_numpy(cwin[None]).to(dev).expand(members, -1, -1, -1)
        tb = torch.zeros(members, 4, device=dev)
        gens = [torch.Generator().manual_seed(member_seed(0, "bench", s, "2022100100")) for s in range(members)]
        with torch.inference_mode(), (torch.autocast("cuda", dtype=torch.bfloat16) if cuda
                                      else contextlib.nullcontext()):
            ens = heun_sample(lambda x, s: net(x, s, cb, tb), gens, (N_VARS, 64, 64), steps, 0.002, 80.0, 7.0, 0.0,
                              device=dev).float().cpu().numpy()
        res[dev] = float(fair_crps(ens.astype(np.float64), target).mean())
    out = {"members": members, "crps_fair": res}
    if len(res) == 2:
        ratio = res[device] / res["cpu"]
        out.update(ratio=round(ratio, 4), within_2_percent=bool(abs(ratio - 1) <= 0.02))
    log.info("CPU/CUDA CRPS: %s", out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny network and sizes; runs on CPU")
    ap.add_argument("--size", default=None, help="network size (default: paper; tiny with --smoke)")
    ap.add_argument("--steps", type=int, default=5, help="Heun steps (2*steps-1 evaluations; default 5 -> 9)")
    ap.add_argument("--train-batches", type=int, nargs="+", default=None)
    ap.add_argument("--members", type=int, nargs="+", default=None, help="members per sampler batch, swept")
    ap.add_argument("--checkpoint", default=None, help="a trained checkpoint instead of random weights")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    if not cuda and not args.smoke:
        raise SystemExit("bench/gpu.py: torch sees no CUDA device; run with --smoke to check the script on CPU.")
    size = args.size or ("tiny" if args.smoke else "paper")
    if args.smoke:
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    h, w = (64, 96) if args.smoke else (721, 1440)
    t0 = time.perf_counter()
    result = {
        "what": "diffusion model on one GPU: training samples/s, s per global 0.25 deg member-day (tiled), "
                "CPU/CUDA CRPS match; bench/gpu.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "smoke": bool(args.smoke),
        "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "size": size,
        "weights": args.checkpoint or "random (seeded): speed and numerics only",
        "train": train_throughput(size, device, args.train_batches or ([2] if args.smoke else [8, 32, 64]),
                                  2 if args.smoke else 10, cuda),
        "member_day": member_day(size, device, args.members or ([1, 2] if args.smoke else [1, 4, 8]),
                                 2 if args.smoke else args.steps, h, w, cuda, args.checkpoint),
        "crps_cpu_vs_device": crps_match(size, device, 3 if args.smoke else 8, 2 if args.smoke else args.steps,
                                         args.checkpoint),
    }
    result["total_s"] = round(time.perf_counter() - t0, 1)
    best = min(r["s_per_member_day"] for r in result["member_day"])
    result["best_s_per_member_day"] = best
    out = ROOT / "bench" / "out" / ("gpu_smoke.json" if args.smoke else "gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
