"""Training the residual EDM downscaler.

Why residual: the upsampled coarse field already holds the large scales; the network only has to
generate what the coarse grid cannot see (orographic and coastal detail, fronts), a field with a
std of a few tenths of the fine field's, which the diffusion model learns far faster than the
full field. Output at inference = upsampled coarse + sampled residual.

Resumable: a ``<checkpoint>.last`` file is written atomically every few hundred steps (and when
a time limit stops the run); a restarted job picks it up if it matches the configuration.
Multi-GPU: started with ``torchrun``, ``WORLD_SIZE > 1`` turns on DDP (each rank draws its own
shard of the sample stream, :class:`aid.model.data.WindowStream`; only rank 0 logs and writes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from aid.errors import CheckpointError, ConfigError
from aid.model.checkpoint import load_checkpoint, save_checkpoint
from aid.model.data import Unit, WindowStream, step_loader, tile_starts_cover
from aid.model.prepare import Prepared, prepare_training
from aid.model.precond import EDMDenoiser, edm_loss, loss_weight, sample_sigma
from aid.model.unet import SIZES, build_unet, count_params

log = logging.getLogger(__name__)

SIGMA_MIN = 0.002
#: Sampling starts at sigma_max (normalised residual units; see train_model).
SIGMA_MAX = 80.0
#: Validation noise levels (fixed so the validation loss is comparable between runs).
VAL_SIGMAS = (0.02, 0.1, 0.3, 1.0, 3.0)
#: Validation fields scored when choosing the checkpoint's sampler settings (aid.model.tune).
TUNE_FIELDS = 16


def train_from_config(
    config: Mapping[str, Any],
    fine_paths: Sequence[str | os.PathLike[str]],
    coarse_paths: Sequence[str | os.PathLike[str]],
    static_path: str | os.PathLike[str],
    checkpoint_out: str | os.PathLike[str],
    threads: int = 2,
    time_limit_s: float | None = None,
    val_fraction: float | None = None,
) -> Path:
    """Train on the reference (fine, coarse) pairs of ``model.train.years``; write the checkpoint.

    The pairs are read lazily (:func:`aid.model.prepare.prepare_training`); ``time_limit_s`` stops
    training early (the cosine schedule is stretched to end at the limit); ``val_fraction``
    overrides ``model.train.val_fraction``.
    """
    cfg = dict(config)
    prep = prepare_training(cfg, fine_paths, coarse_paths, static_path, val_fraction)
    return train_model(prep, cfg, checkpoint_out, threads=threads, time_limit_s=time_limit_s,
                       static_path=static_path)


def _lr_at(step: int, progress: float, tcfg: Mapping[str, Any]) -> float:
    """Linear warm-up, then cosine (to 2 % of the peak) or constant."""
    lr = float(tcfg["lr"])
    warm = int(tcfg["warmup_steps"])
    if step < warm:
        return lr * (step + 1) / warm
    if tcfg["lr_schedule"] == "constant":
        return lr
    return lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _content(prep: Prepared, cfg: Mapping[str, Any], size: str, kwargs: Mapping[str, Any], net: torch.nn.Module,
             ema: torch.nn.Module, opt: torch.optim.Optimizer, step: int, elapsed: float, sigma_max: float,
             history: list[float], best: Mapping[str, Any] | None = None,
             static_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Checkpoint content: only tensors / dicts / lists / str / numbers (weights_only loads)."""
    return {
        "variables": list(prep.variables),
        "config_json": json.dumps(cfg, sort_keys=True, default=str),
        "size": size,
        "model_kwargs_json": json.dumps(dict(kwargs), sort_keys=True),
        "model": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "ema": {k: v.detach().cpu().clone() for k, v in ema.state_dict().items()},
        "optimizer": opt.state_dict(),
        "norm_mean": torch.tensor(prep.mean, dtype=torch.float64),
        "norm_std": torch.tensor(prep.std, dtype=torch.float64),
        # temperatures conditioned as anomalies from their domain mean (aid.model.transforms)
        "level_free": prep.level_free_variables,
        "sigma_data": torch.tensor(prep.sigma_data, dtype=torch.float32),
        "res_scale": torch.tensor(prep.res_scale, dtype=torch.float64),
        "sigma_min": float(SIGMA_MIN),
        "sigma_max": float(sigma_max),
        "pr_transform": prep.pr_transform,
        "upsample": str(cfg["model"]["upsample"]),
        "lat_weighting": bool(cfg["model"]["lat_weighting"]),
        "fine_lat": torch.tensor(prep.lat, dtype=torch.float64),
        "fine_lon": torch.tensor(prep.lon, dtype=torch.float64),
        "static": torch.tensor(prep.static),
        "orography": torch.tensor(prep.orography, dtype=torch.float32),
        "land_sea_mask": torch.tensor(prep.lsm, dtype=torch.float32),
        "patch": int(kwargs["patch"]),
        "step": int(step),
        "elapsed_s": float(elapsed),
        "loss_history": [float(v) for v in history],
        # EMA weights with the lowest validation loss (early stopping against memorisation of the
        # training fields; the conditioning identifies each training field, so an over-trained
        # denoiser ignores its noisy input and the ensemble collapses). Empty without validation.
        "best_ema": dict(best["ema"]) if best else {},
        "best_step": int(best["step"]) if best else -1,
        "best_val": float(best["val"]) if best else float("nan"),
        "prior": prep.prior.to_content() if prep.prior is not None else {},
        # where and when the model learnt: inference elsewhere is allowed, but flagged
        "training_domain_json": json.dumps(training_domain(prep, cfg), sort_keys=True),
        "static_path": str(static_path) if static_path is not None else "",
    }


def training_domain(prep: Prepared, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The region (cell centres) and period the checkpoint was trained on."""
    t = prep.archive.times
    return {"lat": [float(prep.lat[0]), float(prep.lat[-1])], "lon": [float(prep.lon[0]), float(prep.lon[-1])],
            "domain_id": str(cfg["domain"]["id"]),
            "period": [str(np.datetime_as_string(t[0], "D")) if np.issubdtype(np.asarray(t).dtype, np.datetime64)
                       else str(t[0]), str(np.datetime_as_string(t[-1], "D"))
                       if np.issubdtype(np.asarray(t).dtype, np.datetime64) else str(t[-1])]}


def tuning_fields(val: dict[str, Any], res_scale: np.ndarray) -> dict[str, Any]:
    """The (up to :data:`TUNE_FIELDS`) validation fields the sampler is tuned on, as the tuner's
    keyword arguments (cond, tfeat, keys, target, static; :func:`aid.model.tune.tune_sampler`)."""
    n = len(val["t"])
    idx = np.unique(np.linspace(0, n - 1, min(n, TUNE_FIELDS)).round().astype(int))
    # scored in normalised units (sample_normalised undoes res_scale), as without sigma_relative
    return {"cond": val["cond"][idx], "tfeat": val["tfeat"][idx], "keys": [f"validation{i}" for i in val["t"][idx]],
            "target": val["y"][idx] * res_scale[None, :, None, None], "static": val["static"]}


def _tune(content: dict[str, Any], val: dict[str, Any], out: Path, noise_scale: bool) -> dict[str, Any]:
    """Choose the checkpoint's default sampler settings on (up to 16 of) the validation fields
    (and its per-variable noise factors when ``noise_scale``)."""
    from aid.model.api import Downscaler
    from aid.model.tune import NOISE_FACTORS, tune_sampler

    dl = Downscaler(content, "(tuning)", out, device="cpu")
    return tune_sampler(dl, **tuning_fields(val, dl.res_scale), noise_factors=NOISE_FACTORS if noise_scale else ())


def _resume_mismatch(content: Mapping[str, Any], cfg: Mapping[str, Any], prep: Prepared) -> str:
    """What differs between a resume file and this run ('' when it may be resumed).

    ``model.train.steps`` may change (train longer); anything else in ``model``, the domain or the
    fine grid would continue a run on other data or settings, so the resume file is not used then.
    """
    def model_cfg(c: Mapping[str, Any]) -> dict[str, Any]:
        m = json.loads(json.dumps(dict(c.get("model", {})), default=str))
        m.pop("checkpoint", None)
        m.get("train", {}).pop("steps", None)
        return m

    try:
        old = json.loads(content["config_json"])
    except (KeyError, ValueError):
        return "configuration (none stored)"
    new = json.loads(json.dumps(dict(cfg), default=str))
    om, nm = model_cfg(old), model_cfg(new)
    for key in sorted(set(om) | set(nm)):
        if om.get(key) != nm.get(key):
            if key == "train":
                diff = [k for k in sorted(set(om[key]) | set(nm.get(key, {}))) if om[key].get(k) != nm.get(key, {}).get(k)]
                return ", ".join(f"model.train.{k} ({om[key].get(k)} -> {nm.get(key, {}).get(k)})" for k in diff)
            return f"model.{key} ({om.get(key)} -> {nm.get(key)})"
    if old.get("search", {}).get("variables") != new.get("search", {}).get("variables"):
        return "search.variables"
    if list(content.get("level_free") or []) != prep.level_free_variables:
        return f"level-free conditioning ({list(content.get('level_free') or [])} -> {prep.level_free_variables})"
    lat, lon = content["fine_lat"].numpy(), content["fine_lon"].numpy()
    if lat.shape != prep.lat.shape or lon.shape != prep.lon.shape or not (
            np.allclose(lat, prep.lat) and np.allclose(lon, prep.lon)):
        return "fine grid (domain)"
    return ""


def _setup_distributed() -> tuple[int, int, str]:
    """(rank, world_size, device); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        rank = dist.get_rank()
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count())))
            torch.cuda.set_device(local)
            return rank, world, f"cuda:{local}"
        return rank, world, "cpu"
    return 0, 1, "cuda" if torch.cuda.is_available() else "cpu"


#: Validation fields held in memory (spread evenly over the validation blocks).
VAL_FIELDS = 128
#: Validation fields per network call (bounds validation's activation memory).
VAL_BATCH = 16
#: Training steps per cache unit (consecutive training fields read together).
UNIT_STEPS = 32
#: Spatial tile of a cache unit on large domains, fine cells (at least the training window).
UNIT_TILE = 256


def _validation_set(prep: Prepared, patch: int) -> dict[str, Any]:
    """Validation fields in model units, one window per field (the domain's centre window).

    The same window for every field, so sampler tuning sees one static field; for domains up to
    the training patch (the default run) it is the whole domain.
    """
    h, w = prep.archive.shape
    vh, vw = min(h, patch), min(w, patch)
    r0, c0 = (h - vh) // 2, (w - vw) // 2
    va = prep.val_idx
    t = va[np.unique(np.linspace(0, len(va) - 1, min(len(va), VAL_FIELDS)).round().astype(int))] if len(va) else va
    cols = np.arange(c0, c0 + vw)
    ys, cs = [], []
    for run in _runs(t):
        y, c = prep.piece(run, slice(r0, r0 + vh), cols)
        ys.append(y)
        cs.append(c)
    c = len(prep.variables)
    return {"t": t, "y": np.concatenate(ys) if ys else np.zeros((0, c, vh, vw), np.float32),
            "cond": np.concatenate(cs) if cs else np.zeros((0, prep.n_cond, vh, vw), np.float32),
            "tfeat": prep.tfeat[t], "static": prep.static[:, r0 : r0 + vh, c0 : c0 + vw]}


#: Consecutive-day pairs of training fields read to estimate the day-to-day correlation.
DAY_PAIRS = 96
#: Fewer pairs than this: no estimate (independent days).
MIN_DAY_PAIRS = 8
#: Upper bound of the estimated day correlation (aid.model.sampler.day_weights needs < 1).
MAX_DAY_CORRELATION = 0.95


def _day_correlation(prep: Prepared, patch: int) -> dict[str, Any]:
    """Lag-1-day correlation of the training residual, the checkpoint's default noise correlation.

    Why: the sampler's noise sets the fine-scale detail the network adds, and real detail persists
    from one day to the next (a front, a sea breeze, a snow line), which the spell-based indices
    (WSDI, CDD, CWD) see. The persistence that the coarse input explains reaches the ensemble through
    the conditioning; the noise has to carry only the rest. So the estimate is taken on the
    training residual (fine minus upsampled coarse, model units) minus the residual prior's
    cross-fitted prediction (the diffusion target itself in prior mode "offset"), at the same hour
    of consecutive days, centre window as the validation fields: per channel the Pearson
    correlation of each cell's anomalies, averaged over cells; the mean over channels,
    clipped to [0, :data:`MAX_DAY_CORRELATION`], becomes ``downscale.day_correlation`` when that
    key is null. An archive whose days are not in sequence (the demo archive shuffles real days)
    gives about 0: independent noise, as its truth has no day-to-day persistence either.
    """
    from aid.evaluate.coherence import cell_correlation
    from aid.model.data import lagged_date_keys

    times = prep.archive.times
    train = np.sort(np.asarray(prep.train_idx))
    keys = lagged_date_keys(times[train], 1)
    where = {k[0]: i for k, i in zip(keys, train)}
    pairs = [(where[k[1]], i) for k, i in zip(keys, train) if k[1] in where]
    out: dict[str, Any] = {"pairs": len(pairs), "per_channel": {}, "value": 0.0}
    if len(pairs) < MIN_DAY_PAIRS:
        log.info("day correlation: %d consecutive-day training pairs (< %d): independent days", len(pairs), MIN_DAY_PAIRS)
        return out
    pick = np.unique(np.linspace(0, len(pairs) - 1, min(len(pairs), DAY_PAIRS)).round().astype(int))
    a_idx = np.array([pairs[k][0] for k in pick])
    b_idx = np.array([pairs[k][1] for k in pick])
    h, w = prep.archive.shape
    vh, vw = min(h, patch), min(w, patch)
    r0, c0 = (h - vh) // 2, (w - vw) // 2
    t = np.unique(np.concatenate([a_idx, b_idx]))
    parts = [prep.piece(run, slice(r0, r0 + vh), np.arange(c0, c0 + vw)) for run in _runs(t)]
    y = np.concatenate([p[0] for p in parts])
    if prep.prior is not None and prep.prior.mode == "condition":
        # the part the noise has to supply: the residual minus the prior's (cross-fitted) prediction,
        # which the network is given and which carries the coarse input's own persistence
        c = len(prep.variables)
        y = y * prep.res_scale[None, :, None, None] - np.concatenate([p[1] for p in parts])[:, c : 2 * c]
    pos = {int(i): k for k, i in enumerate(t)}
    r = cell_correlation(y[[pos[int(i)] for i in a_idx]], y[[pos[int(i)] for i in b_idx]])  # (C, vh, vw)
    per = {v: float(np.nanmean(r[i])) for i, v in enumerate(prep.variables)}
    out["per_channel"] = per
    out["value"] = float(np.clip(np.nanmean(list(per.values())), 0.0, MAX_DAY_CORRELATION))
    log.info("day correlation of the training residual (%d pairs): %s -> %.3f", len(pick),
             ", ".join(f"{v} {x:.3f}" for v, x in per.items()), out["value"])
    return out


def _runs(t: np.ndarray) -> list[np.ndarray]:
    """Sorted indices grouped so each group spans at most UNIT_STEPS archive steps (one read each)."""
    out: list[np.ndarray] = []
    for i in t:
        if out and i - out[-1][0] < UNIT_STEPS:
            out[-1] = np.append(out[-1], i)
        else:
            out.append(np.array([i]))
    return out


def training_stream(prep: Prepared, window: tuple[int, int], batch: int, seed: int, rank: int, world: int,
                    cache_mb: float) -> WindowStream:
    """The bounded-cache sample stream over the training fields (see :class:`WindowStream`)."""
    h, w = prep.archive.shape
    ph, pw = window
    th, tw = min(h, max(ph, UNIT_TILE)), min(w, max(pw, UNIT_TILE))
    periodic = prep.archive.periodic and tw < w
    rows = tile_starts_cover(h, th, ph)
    cols = tile_starts_cover(w, tw, pw, periodic)
    tr = prep.train_idx
    blocks = [tr[i : i + UNIT_STEPS] for i in range(0, len(tr), UNIT_STEPS)]
    units = [Unit(b, slice(r, r + th), (c + np.arange(tw)) % w) for b in blocks for r in rows for c in cols]
    per_unit = UNIT_STEPS * (len(prep.variables) + prep.n_cond) * th * tw * 4

    def make(u: Unit) -> tuple[np.ndarray, np.ndarray]:
        return prep.piece(u.times, u.rows, u.cols)

    stream = WindowStream(units, make, (ph, pw), batch, seed, rank, world, per_unit, cache_mb)
    if rank == 0:
        log.info("training stream: %d units (%d steps x %d x %d cells, %.1f MiB each), %d cached%s", len(units),
                 UNIT_STEPS, th, tw, per_unit / 2**20, stream.active, " (the whole archive)" if stream.full else "")
    return stream


def train_model(
    prep: Prepared,
    cfg: Mapping[str, Any],
    checkpoint_out: str | os.PathLike[str],
    threads: int = 2,
    time_limit_s: float | None = None,
    progress: bool = True,
    static_path: str | os.PathLike[str] | None = None,
) -> Path:
    """The training loop (AdamW, grad clipping, EMA, warm-up + cosine LR, EDM loss).

    Batches come from :func:`training_stream` (``model.train.cache_mb`` bounds its memory,
    ``model.train.workers`` DataLoader processes prepare them); validation fields are spread over
    the period (:func:`aid.model.data.validation_split`).
    """
    out = Path(checkpoint_out)
    last = out.with_name(out.name + ".last")
    mcfg, tcfg = cfg["model"], cfg["model"]["train"]
    size = mcfg["size"]
    if size not in SIZES:
        raise ConfigError(f"config model.size {size!r} is unknown.", f"use one of {', '.join(SIZES)}.")
    torch.set_num_threads(max(1, int(threads)))
    rank, world, device = _setup_distributed()
    seed = int(tcfg["seed"])
    torch.manual_seed(seed + rank)
    steps = int(tcfg["steps"])
    batch = int(tcfg["batch_size"])
    c = len(prep.variables)

    dropout = tcfg.get("dropout")
    use_doy = bool(tcfg["use_doy"])
    n_cond = prep.n_cond + prep.static.shape[0]
    net, kwargs = build_unet(size, c, n_cond, dropout, use_doy)
    patch = int(kwargs["patch"])
    val = _validation_set(prep, patch)
    n_val = len(val["t"])
    day_rho = _day_correlation(prep, patch)
    # sigma_max: EDM's 80 (normalised units); measured against smaller starts in bench/sampler_settings.py
    sigma_max = float(SIGMA_MAX)
    den = EDMDenoiser(net, torch.tensor(prep.sigma_data, dtype=torch.float32)).to(device)
    ema = EDMDenoiser(build_unet(size, c, n_cond, dropout, use_doy)[0], den.sigma_data.cpu()).to(device)
    ema.load_state_dict(den.state_dict())
    ema.requires_grad_(False)
    ema.eval()  # never trained; validation must see it as inference does (no dropout)
    opt = torch.optim.AdamW(den.parameters(), lr=float(tcfg["lr"]), betas=(0.9, 0.99),
                            weight_decay=float(tcfg["weight_decay"]))

    start, elapsed0, history = 0, 0.0, []
    best: dict[str, Any] | None = None
    if rank == 0:
        # Temporary files of a killed run (SIGKILL skips atomic_path's clean-up); never outputs.
        for stale in out.parent.glob(f".{out.name}.*.part"):
            log.info("removing stale temporary file %s", stale)
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
    if last.exists():
        try:
            content, digest = load_checkpoint(last, expect_variables=prep.variables)
        except CheckpointError as exc:
            log.warning("ignoring resume file %s: %s", last, exc)
        else:
            changed = _resume_mismatch(content, cfg, prep)
            if content["size"] != size or json.loads(content["model_kwargs_json"]) != json.loads(json.dumps(kwargs)):
                log.warning("ignoring resume file %s: trained with model size %s", last, content["size"])
            elif changed:
                log.warning("ignoring resume file %s: it was trained with a different %s; starting from step 0",
                            last, changed)
            else:
                net.load_state_dict(content["model"])
                ema.net.load_state_dict(content["ema"])
                opt.load_state_dict(content["optimizer"])
                start, elapsed0 = int(content["step"]), float(content["elapsed_s"])
                history = list(content["loss_history"])
                if content.get("best_ema"):
                    best = {"ema": content["best_ema"], "step": content["best_step"], "val": content["best_val"]}
                log.info("resuming from %s at step %d (sha256 %s)", last, start, digest[:12])

    model: torch.nn.Module = den
    fwd_net = net
    cuda = str(device).startswith("cuda")
    if cuda:
        with contextlib.suppress(Exception):
            fwd_net = torch.compile(net)  # type: ignore[assignment]
            den.net = fwd_net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(den, device_ids=[torch.device(device).index] if cuda else None)

    static = torch.from_numpy(prep.static)
    h, w = prep.archive.shape
    # Training crops (augmentation: random translations of the window with the matching static
    # fields; no flips, which would break the orography/coast alignment of the residual).
    crop = int(tcfg["crop"]) or patch
    ph, pw = min(h, crop), min(w, crop)
    stream = training_stream(prep, (ph, pw), batch, seed, rank, world, float(tcfg["cache_mb"]))
    cond_noise = float(tcfg["cond_noise"])
    p_mean = float(tcfg["p_mean"])
    p_std = float(tcfg["p_std"])
    latw = torch.from_numpy(np.cos(np.deg2rad(prep.lat)).astype(np.float32))
    use_latw = bool(mcfg["lat_weighting"])
    ema_decay = float(tcfg["ema_decay"])
    clip = float(tcfg["grad_clip"])
    gen = torch.Generator()
    rr, cc_ = torch.arange(ph), torch.arange(pw)

    def batch_tensors(item: tuple[torch.Tensor, ...], step: int) -> tuple[torch.Tensor | None, ...]:
        yb, cb, ti, r0, c0 = item
        gen.manual_seed(seed * 1_000_003 + 7 * step + 104729 * rank)
        ri = r0[:, None] + rr[None]  # (B, ph)
        ci = (c0[:, None] + cc_[None]) % w  # (B, pw); wraps on a global grid
        st = static[:, ri[:, :, None], ci[:, None, :]].permute(1, 0, 2, 3)  # (B, N_STATIC, ph, pw)
        cb = torch.cat([cb, st], dim=1)
        pix = None
        if use_latw:
            lw = latw[ri]  # (B, ph)
            pix = (lw / lw.mean(1, keepdim=True))[:, None, :, None].expand(-1, 1, ph, pw)
        if cond_noise > 0:  # noise augmentation of the coarse conditioning (not the static fields)
            cb = torch.cat([cb[:, :c] + cond_noise * torch.randn(cb[:, :c].shape, generator=gen), cb[:, c:]], dim=1)
        sig = sample_sigma(len(yb), gen, p_mean=p_mean, p_std=p_std)
        noise = torch.randn(yb.shape, generator=gen)
        tb = torch.from_numpy(prep.tfeat[ti.numpy()])
        out = (yb, cb, tb, sig, noise)
        return tuple(t.to(device) for t in out) + ((pix.to(device) if pix is not None else None),)

    y_val = torch.from_numpy(val["y"])
    c_val = torch.cat([torch.from_numpy(val["cond"]),
                       torch.from_numpy(np.ascontiguousarray(val["static"]))[None].expand(n_val, -1, -1, -1)], 1)
    t_val = torch.from_numpy(val["tfeat"])

    def validate() -> float:
        if n_val == 0:
            return float("nan")
        g = torch.Generator().manual_seed(12345)
        tot, cnt = 0.0, 0
        with torch.no_grad():
            for i0 in range(0, n_val, VAL_BATCH):
                sl = slice(i0, i0 + VAL_BATCH)
                yb, cb, tb = y_val[sl].to(device), c_val[sl].to(device), t_val[sl].to(device)
                for s in VAL_SIGMAS:
                    sig = torch.full((len(yb),), s)
                    noise = torch.randn(yb.shape, generator=g).to(device)
                    tot += float(edm_loss(ema, yb, cb, tb, sig.to(device), noise)) * len(yb)
                    cnt += len(yb)
        return tot / max(cnt, 1)

    n_par = count_params(net)
    if rank == 0:
        log.info("model size %s: %.2f M parameters, patch %d, %d training / %d validation fields, %d steps x batch %d "
                 "on %s (sigma_max %.1f)", size, n_par / 1e6, patch, len(prep.train_idx), n_val, steps, batch, device,
                 sigma_max)
    t0 = time.monotonic()
    save_every = max(50, min(500, steps // 5))
    val_every = max(25, min(250, steps // 20))
    last_save = time.monotonic()
    running = float("nan")
    bar = tqdm(range(start, steps), desc="train", disable=(rank != 0 or not progress), initial=start, total=steps)
    step = start
    stopped_early = False
    first_step_s: float | None = None
    step_s = 0.0  # time in training steps (batch, forward, backward, update), without validation/saving
    batches = iter(step_loader(stream, start, steps, int(tcfg["workers"])))
    den.train()
    for step in bar:
        ts = time.monotonic()
        elapsed = elapsed0 + ts - t0
        if time_limit_s is not None and elapsed > time_limit_s:
            stopped_early = True
            log.info("time limit %.0f s reached at step %d", time_limit_s, step)
            break
        progress_frac = max(step / steps, elapsed / time_limit_s if time_limit_s else 0.0)
        lr = _lr_at(step, progress_frac, tcfg)
        for g_ in opt.param_groups:
            g_["lr"] = lr
        # Dropout draws from the global generator: seed it from the step, so a resumed run draws
        # exactly what the uninterrupted run would have drawn (like the batches and noise below).
        torch.manual_seed(seed * 1_000_003 + 7 * step + 104729 * rank + 1)
        yb, cb, tb, sig, noise, pix = batch_tensors(next(batches), step)
        with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext():
            loss = edm_loss(model, yb, cb, tb, sig, noise, pix, sigma_data=den.sigma_data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(den.parameters(), clip)
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), den.parameters()):
                pe.lerp_(pm.detach(), 1 - decay)
        lv = loss.item()
        step_s += time.monotonic() - ts
        if first_step_s is None:
            first_step_s = time.monotonic() - t0
            if rank == 0:
                log.info("first training step after %.2f s", first_step_s)
        running = lv if math.isnan(running) else 0.98 * running + 0.02 * lv
        history.append(lv)
        if rank == 0:
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{lr:.2e}")
            if n_val and (step + 1) % val_every == 0:
                vl = validate()
                if best is None or vl < best["val"]:
                    best = {"ema": {k: v.detach().cpu().clone() for k, v in ema.net.state_dict().items()},
                            "step": step + 1, "val": vl}
                log.info("step %d/%d loss %.4f (smoothed %.4f) val %.4f (best %.4f at %d) lr %.2e", step + 1, steps,
                         lv, running, vl, best["val"], best["step"], lr)
            if (step + 1) % save_every == 0 or time.monotonic() - last_save > 600:
                if not n_val:
                    log.info("step %d/%d loss %.4f (smoothed %.4f) lr %.2e", step + 1, steps, lv, running, lr)
                den.net = net
                save_checkpoint(_content(prep, cfg, size, kwargs, net, ema.net, opt, step + 1,
                                         elapsed0 + time.monotonic() - t0, sigma_max, history, best, static_path), last)
                den.net = fwd_net
                last_save = time.monotonic()
    else:
        step = steps
    del batches
    if rank == 0 and step_s > 0:
        log.info("training steps: %d in %.3f s (first %.3f s), without validation and checkpoint writes",
                 step - start if stopped_early else steps - start, step_s, first_step_s or 0.0)
    den.net = net
    final_step = step if stopped_early else steps
    if rank == 0:
        vl = validate()
        if n_val and (best is None or vl < best["val"]):
            best = {"ema": {k: v.detach().cpu().clone() for k, v in ema.net.state_dict().items()},
                    "step": final_step, "val": vl}
        log.info("training done: %d steps in %.0f s, final smoothed loss %.4f, validation %.4f%s",
                 final_step, elapsed0 + time.monotonic() - t0, running, vl,
                 f"; inference uses the best-validation EMA weights of step {best['step']} (val {best['val']:.4f})"
                 if best else "")
        content = _content(prep, cfg, size, kwargs, net, ema.net, opt, final_step,
                           elapsed0 + time.monotonic() - t0, sigma_max, history, best, static_path)
        content["day_correlation"] = day_rho
        if n_val and bool(mcfg["tune_sampler"]):
            content["sampler"] = _tune(content, val, out, bool(mcfg["tune_noise_scale"]))
        save_checkpoint(content, out)
        with contextlib.suppress(FileNotFoundError):
            last.unlink()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return out


# Exposed for tests: the per-sample loss weight (documents lambda(sigma) in one place).
__all__ = ["train_from_config", "train_model", "prepare_training", "Prepared", "loss_weight"]
