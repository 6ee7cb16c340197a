"""One downscaling job: a year of one (source, experiment, member) -> CF deliverables at 0.25 deg.

Why stream day batches: a year of N samples of six variables at 0.25 deg does not need to sit in
memory. The coarse input is opened lazily; ``downscale.batch_days`` days at a time are loaded,
sampled (all requested samples), made physically consistent and appended to the open output files
(:class:`aid.deliverables.DeliverableSet`), so peak memory is one batch whatever the length of the
input or the year.

Physical consistency enforced on every sample before writing (and recorded in the files):

* ``tasmin <= tas <= tasmax`` by the policy of :mod:`aid.physics` (the checks stage verifies the
  same rule). The number of corrected (day, cell) values is written to
  ``aid_temperature_order_fixes`` of every file of that sample.
* ``pr >= 0``: negative values are set to 0 (``aid_pr_negative_fixes``).

Reproducibility and independence: the sampler's noise for (sample s, day d) of a job is seeded
from (seed, source, experiment, member, s, d) only, with ``downscale.day_correlation`` > 0 mixed
with the noise of the days before d, still a function of dates only (see
``aid.model.api.Downscaler.sample`` and ``aid.model.sampler.noise_stream``), so re-running one sample, or a different batch size, gives
bit-identical values on CPU, while two members, two scenarios or the evaluation run never share
their sampled detail on a common date. The job writes exactly the ``outputs`` it is given: passing only the
files of sample 2 re-creates sample 2 alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from aid.deliverables import (
    DeliverableSet,
    check_time_range,
    driving_attributes,
    global_attributes,
    map_outputs,
    normalise_calendar,
    remove_stale,
    year_days,
)
from aid.errors import CheckpointError, ConfigError, DataError
from aid.io import open_dataset
from aid.naming import BASELINE_ID, MODEL_ID
from aid.physics import TEMPERATURE_FIX_METHOD, enforce_non_negative_precipitation, enforce_temperature_order
from aid.variables import VARIABLES

log = logging.getLogger(__name__)



# ----------------------------------------------------------------------------------------------
# Coarse input
# ----------------------------------------------------------------------------------------------
@dataclass
class CoarseYear:
    """One year of the merged coarse input, still lazy; ``batch`` loads a slice of days.

    ``days`` are the year's days at 12:00 in ``calendar`` (the deliverables' time axis); the
    input's own time stamps (00:00 or 12:00) are replaced by them.
    """

    data: xr.Dataset
    calendar: str
    days: list[Any]
    attrs: dict[str, Any]
    files: list[str]
    variables: list[str] = field(default_factory=list)

    def batch(self, start: int, stop: int) -> xr.Dataset:
        """Days ``start:stop`` loaded into memory; non-finite values raise :class:`DataError`."""
        ds = self.data.isel(time=slice(start, stop)).load()
        for v in self.variables:
            vals = ds[v].values
            bad = ~np.isfinite(vals)
            if bad.any():
                t = int(np.argwhere(bad)[0][0])
                raise DataError(
                    f"{', '.join(self.files)}: variable '{v}' has {int(bad.sum())} NaN/inf value(s) in days "
                    f"{self.days[start].strftime('%Y-%m-%d')}..{self.days[min(stop, len(self.days)) - 1].strftime('%Y-%m-%d')}"
                    f" (first on {self.days[start + t].strftime('%Y-%m-%d')}).",
                    "fill or mask the gap upstream (adjust stage); the sampler needs complete fields.",
                )
        return ds


def _decode_cftime() -> Any:
    return xr.coders.CFDatetimeCoder(use_cftime=True)


def open_coarse(paths: Sequence[str | os.PathLike[str]], variables: Sequence[str], year: int) -> CoarseYear:
    """Merge the coarse input files, select ``year`` lazily and validate it.

    Accepts one adjusted file holding all variables (model calendar) or one file per variable
    (the evaluation run's coarsened reference). Errors name the file(s): a missing variable, a
    variable in non-canonical units, a year absent from the input, missing or duplicated days.
    """
    files = [str(p) for p in paths]
    if not files:
        raise ConfigError("downscale: no coarse input files given.", "pass the adjusted (or coarse reference) files.")
    parts = []
    for p in files:
        ds = open_dataset(p, decode_times=_decode_cftime())
        for dim in ("time", "lat", "lon"):
            if dim not in ds.dims:
                raise DataError(f"{p}: no '{dim}' dimension (dims: {', '.join(map(str, ds.dims))}).",
                                "pass coarse files with dims (time, lat, lon) as written by the adjust stage.")
        parts.append(ds)
    attrs: dict[str, Any] = {}
    for ds in parts:
        for k, v in ds.attrs.items():
            attrs.setdefault(k, v)
    merged = xr.merge(parts, join="inner", compat="override", combine_attrs="drop_conflicts") if len(parts) > 1 else parts[0]
    where = ", ".join(files)
    missing = [v for v in variables if v not in merged.data_vars]
    if missing:
        raise DataError(f"{where}: variable(s) {', '.join(missing)} missing from the coarse input "
                        f"(found: {', '.join(map(str, merged.data_vars))}).",
                        "re-run the adjust stage with these variables in search.variables.")
    for v in variables:
        units = merged[v].attrs.get("units")
        meta = VARIABLES.get(v)
        if meta is None:
            continue
        if units is None:
            log.warning("%s: variable '%s' has no units attribute; assuming %s", where, v, meta.units)
        elif str(units).strip() not in (meta.units, *meta.unit_spellings):
            raise DataError(f"{where}: variable '{v}' is in '{units}', expected aid's canonical '{meta.units}'.",
                            "convert it in the fetch/adjust stage (docs/CONTRACTS.md: K, mm d-1, m s-1).")
    times = merged.indexes["time"]
    if len(times) == 0:
        raise DataError(f"{where}: the coarse input has no time steps.", "regenerate the input.")
    t0 = times[0]
    if not hasattr(t0, "calendar"):
        raise DataError(f"{where}: time axis could not be decoded to dates.", "write CF time units and calendar.")
    calendar = normalise_calendar(t0.calendar)
    years = np.array([t.year for t in times])
    idx = np.flatnonzero(years == int(year))
    if idx.size == 0:
        raise DataError(f"{where}: year {year} is not in the coarse input (it covers {years.min()}-{years.max()}).",
                        "request a year inside the input's period, or extend the input.")
    sel = merged[list(variables)].isel(time=idx).transpose("time", "lat", "lon")
    days = year_days(int(year), calendar)
    have = [(t.year, t.month, t.day) for t in sel.indexes["time"]]
    if len(set(have)) != len(have):
        raise DataError(f"{where}: year {year} has duplicated days in the coarse input.", "remove the duplicates upstream.")
    want = [(d.year, d.month, d.day) for d in days]
    if have != want:
        gone = sorted(set(want) - set(have))
        first = "%04d-%02d-%02d" % gone[0] if gone else "out of order"
        raise DataError(f"{where}: year {year} has {len(have)} of {len(want)} days ({calendar} calendar; first missing: "
                        f"{first}).", "provide complete years; the deliverables hold whole years.")
    sel = sel.assign_coords(time=("time", days))
    for v in variables:
        sel[v] = sel[v].astype("float32")
    return CoarseYear(sel, calendar, days, attrs, files, list(variables))


# ----------------------------------------------------------------------------------------------
# Physics
# ----------------------------------------------------------------------------------------------
def enforce_physics(fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Make ``fields`` (arrays shaped (sample, day, lat, lon)) physically consistent in place.

    The policies live in :mod:`aid.physics` (shared with the checks stage). Returns per-sample
    counts: ``temperature_order`` and ``pr_negative``.
    """
    counts: dict[str, np.ndarray] = {}
    axes = (1, 2, 3)
    order = enforce_temperature_order(fields, axes)
    if order is not None:
        counts["temperature_order"] = order
    if "pr" in fields:
        counts["pr_negative"] = enforce_non_negative_precipitation(fields["pr"], axes)
    return counts


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def resolve_device(setting: str) -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu; ``cuda`` without a GPU is an error."""
    import torch

    setting = str(setting or "auto")
    if setting == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config 'downscale.device' is cuda but torch sees no CUDA device.",
                          "set downscale.device to auto or cpu, or run on a GPU node.")
    else:
        device = setting
    log.info("downscale device: %s (config downscale.device=%s)", device, setting)
    return device


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Turn SIGTERM (Snakemake/SLURM cancelling a job) into SystemExit so temporary files are removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _file_sha256(paths: Sequence[str]) -> list[str]:
    from aid.provenance import sha256_file

    return [sha256_file(p) for p in paths]


def _check_grid(lat: np.ndarray, lon: np.ndarray, config: Mapping[str, Any], what: str) -> None:
    """The produced grid must be the config's domain (file names promise ``domain.id``)."""
    lat0, lat1 = (float(x) for x in config["domain"]["lat"])
    lon0, lon1 = (float(x) for x in config["domain"]["lon"])
    ok = (lat.size > 0 and lon.size > 0 and abs(float(lat.min()) - lat0) < 1e-3 and abs(float(lat.max()) - lat1) < 1e-3
          and abs(float(lon.min()) - lon0) < 1e-3 and abs(float(lon.max()) - lon1) < 1e-3)
    if not ok:
        raise CheckpointError(
            f"{what}: produces lat {float(lat.min()):g}..{float(lat.max()):g}, lon {float(lon.min()):g}..{float(lon.max()):g}"
            f" but config domain '{config['domain']['id']}' is lat {lat0:g}..{lat1:g}, lon {lon0:g}..{lon1:g}.",
            "use a checkpoint trained on this domain (or retrain), or set domain to the checkpoint's box.",
        )


def _stream(
    config: Mapping[str, Any],
    coarse: CoarseYear,
    targets: Mapping[tuple[str, int], Path],
    samples: list[int],
    produce: Callable[[xr.Dataset], tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]],
    *,
    model: str,
    source: str,
    experiment: str,
    member: str,
    provenance: Mapping[str, Any],
    identity: Sequence[Any],
    what: str,
) -> list[Path]:
    """Run ``produce`` over day batches and append to the deliverables; rename all at the end."""
    batch_days = int(config["downscale"]["batch_days"])
    nd = len(coarse.days)
    driving = driving_attributes(coarse.attrs, config, source, experiment)
    totals: dict[str, np.ndarray] = {}
    starts = list(range(0, nd, batch_days))
    with _terminate_as_exit(), DeliverableSet(targets, coarse.days, coarse.calendar) as out:
        grid: tuple[np.ndarray, np.ndarray] | None = None
        for b0 in tqdm(starts, desc=what, unit="batch", disable=None):
            b1 = min(nd, b0 + batch_days)
            fields, lat, lon = produce(coarse.batch(b0, b1))
            for (var, _s) in targets:
                if var not in fields:
                    raise CheckpointError(f"{what}: produced no '{var}'.", "use a checkpoint trained with this variable.")
            for var, arr in fields.items():
                if arr.shape[:2] != (len(samples), b1 - b0):
                    raise CheckpointError(f"{what}: '{var}' has shape {arr.shape}, expected ({len(samples)}, {b1 - b0}, ...).",
                                          "check the checkpoint / sampler version.")
                if not np.isfinite(arr).all():
                    raise CheckpointError(
                        f"{what}: '{var}' has {int((~np.isfinite(arr)).sum())} NaN/inf value(s) in days "
                        f"{coarse.days[b0].strftime('%Y-%m-%d')}..{coarse.days[b1 - 1].strftime('%Y-%m-%d')}.",
                        "the model diverged on this input: check the coarse input range and the checkpoint.",
                    )
            if grid is None:
                _check_grid(lat, lon, config, what)
                grid = (lat, lon)
                attrs = {
                    (var, s): global_attributes(
                        config, file_name=p.name, variable=var, source=source, experiment=experiment, member=member,
                        sample=s, model=model, calendar=coarse.calendar, lat=lat, lon=lon, driving=driving,
                        provenance={**provenance, "sample": s}, identity=identity,
                    )
                    for (var, s), p in targets.items()
                }
                out.create(lat, lon, attrs)
            elif not (np.array_equal(grid[0], lat) and np.array_equal(grid[1], lon)):
                raise CheckpointError(f"{what}: the output grid changed between day batches.", "report this as a bug.")
            counts = enforce_physics(fields)
            for key, c in counts.items():
                totals[key] = totals.get(key, 0) + c
            for (var, s) in targets:
                out.write((var, s), b0, fields[var][samples.index(s)])
            del fields
        for (var, s) in targets:
            i = samples.index(s)
            extra: dict[str, Any] = {}
            if "temperature_order" in totals:
                extra["aid_temperature_order_fixes"] = int(totals["temperature_order"][i])
                extra["aid_temperature_order_fix_method"] = TEMPERATURE_FIX_METHOD
            if "pr_negative" in totals:
                extra["aid_pr_negative_fixes"] = int(totals["pr_negative"][i])
                extra["aid_pr_negative_fix_method"] = "pr < 0 set to 0"
            out.update_attrs((var, s), extra)
    for key, c in totals.items():
        log.info("%s: %s fixes per sample %s", what, key, dict(zip(samples, (int(x) for x in c), strict=True)))
    return [targets[k] for k in sorted(targets)]


# ----------------------------------------------------------------------------------------------
# Jobs
# ----------------------------------------------------------------------------------------------
def sampler_settings(dcfg: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Heun sampler settings: steps, churn, rho, sigma_max, noise_scale.

    Config ``downscale`` keys that are set win; null ones (the schema's default) take the checkpoint's
    ``defaults`` (:attr:`aid.model.api.Downscaler.sampler_defaults`: the settings chosen on
    validation fields at the end of training, see :mod:`aid.model.tune`). ``noise_scale`` is a
    {variable: factor} mapping: the variables config names override the checkpoint's factors, the
    others keep them. One function so the downscale jobs and the benchmarks read the same settings.
    """
    def pick(key: str) -> Any:
        v = dcfg[key]
        return defaults[key] if v is None else v

    scale = {str(k): float(v) for k, v in {**(defaults.get("noise_scale") or {}),
                                           **(dcfg["noise_scale"] or {})}.items()}
    return {"steps": int(pick("steps")), "churn": float(pick("churn")), "rho": float(pick("rho")),
            "sigma_max": float(pick("sigma_max")), "noise_scale": scale}


def downscale_year(
    config: Mapping[str, Any],
    coarse_paths: Sequence[str | os.PathLike[str]],
    checkpoint: str | os.PathLike[str],
    source: str,
    experiment: str,
    member: str,
    year: int,
    outputs: Sequence[str | os.PathLike[str]],
    threads: int = 2,
    static_path: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Diffusion-downscale one year; write the (variable, sample) files named in ``outputs``.

    Samples are the sample indices found in ``outputs`` (normally 1..downscale.n_samples);
    seed/steps/churn/rho come from config ``downscale``. Returns the written paths. The config's
    ``domain`` may differ from the checkpoint's training domain: the model is then moved to that
    grid (:meth:`aid.model.api.Downscaler.for_grid`, static fields from ``static_path``, default
    the checkpoint's), sampled in tiles, and a domain outside the training region is logged and
    recorded in the deliverables' ``aid_training_domain`` attribute.
    """
    from aid.grids import fine_grid

    import torch

    from aid.model.api import Downscaler
    from aid.model.sampler import noise_stream
    from aid.provenance import relpath_or_name

    year = int(year)
    dcfg = config["downscale"]
    targets = map_outputs(config, outputs, source, experiment, member, year, MODEL_ID)
    remove_stale(list(targets.values()))
    torch.set_num_threads(max(1, int(threads)))
    device = resolve_device(dcfg["device"])
    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise CheckpointError(f"{ckpt}: checkpoint does not exist.", "run the train rule or set model.checkpoint.")
    dl = Downscaler.load(ckpt, device=device)
    wanted = list(config["search"]["variables"])
    missing = [v for v in wanted if v not in dl.variables]
    if missing:
        raise CheckpointError(
            f"{ckpt}: checkpoint was trained on {', '.join(dl.variables)}; config search.variables also asks for "
            f"{', '.join(missing)}.",
            "retrain the model with these variables or drop them from search.variables.",
        )
    grid = fine_grid(config)
    dl = dl.for_grid(grid.lat.values, grid.lon.values, static_path)
    coarse = open_coarse(coarse_paths, list(dl.variables), year)
    check_time_range(targets, coarse.days, coarse.calendar, source)
    samples = sorted({s for _, s in targets})
    seed = int(dcfg["seed"])
    settings = sampler_settings(dcfg, dl.sampler_defaults)
    steps, churn, rho, sigma_max = (settings[k] for k in ("steps", "churn", "rho", "sigma_max"))
    noise_scale = dl.noise_factors(settings["noise_scale"])
    stream = noise_stream(source, experiment, member)
    conserve = [v for v in dcfg["conserve"] if v in dl.variables]
    day_rho = float(dl.sampler_defaults["day_correlation"] if dcfg["day_correlation"] is None else dcfg["day_correlation"])
    scale_text = dl.noise_scale_text(noise_scale)
    log.info("downscaling %s/%s/%s/%d: samples %s, seed %d, steps %d, churn %g, rho %g, sigma_max %g, noise factors "
             "%s, day correlation %g, conserved %s, %d days in batches of %d", source, experiment, member, year, samples,
             seed, steps, churn, rho, sigma_max, scale_text, day_rho, conserve or "none",
             len(coarse.days),
             int(dcfg["batch_days"]))

    def produce(batch: xr.Dataset) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        out = dl.sample(batch, samples=samples, seed=seed, steps=steps, churn=churn, rho=rho, sigma_max=sigma_max,
                        stream=stream, conserve=conserve, day_correlation=day_rho, noise_scale=settings["noise_scale"])
        if "sample" in out.coords:
            out = out.sel(sample=samples)
        fields = {v: np.array(out[v].transpose("sample", "time", "lat", "lon").values, dtype="f4") for v in out.data_vars
                  if v in dl.variables}
        return fields, np.asarray(out["lat"].values), np.asarray(out["lon"].values)

    provenance = {
        "checkpoint_sha256": dl.checkpoint_sha256,
        "checkpoint": relpath_or_name(ckpt),
        "sampler_seed": seed,
        "sampler_noise_stream": stream,
        "sampler_steps": steps,
        "sampler_churn": churn,
        "sampler_rho": rho,
        "sampler_sigma_max": sigma_max,
        "sampler_noise_scale": scale_text,
        "coarse_cell_conservation": ", ".join(conserve) or "none",
        "sampler_day_correlation": day_rho,
        "n_samples": int(dcfg["n_samples"]),
        "device": device,
        "coarse_input": ", ".join(relpath_or_name(p) for p in coarse.files),
        "training_domain": dl.training_domain_attr(),
    }
    identity = [dl.checkpoint_sha256, seed, stream, steps, churn, rho, sigma_max, noise_scale, device, conserve, day_rho,
                *_file_sha256(coarse.files)]
    return _stream(config, coarse, targets, samples, produce, model=MODEL_ID, source=source, experiment=experiment,
                   member=member, provenance=provenance, identity=identity,
                   what=f"downscale {source}/{experiment}/{member}/{year}")


def baseline_year(
    config: Mapping[str, Any],
    coarse_paths: Sequence[str | os.PathLike[str]],
    source: str,
    experiment: str,
    member: str,
    year: int,
    outputs: Sequence[str | os.PathLike[str]],
) -> list[Path]:
    """The bicubic baseline deliverable: bias-adjusted coarse fields upsampled to the fine grid.

    Same files, metadata and physical fixes as :func:`downscale_year`, model id ``aid-bicubic``,
    sample r1 only. Uses ``aid.regrid.upsample(..., "bicubic")``, the model's conditioning path.
    """
    from aid.grids import fine_grid
    from aid.provenance import relpath_or_name
    from aid.regrid import upsample

    year = int(year)
    targets = map_outputs(config, outputs, source, experiment, member, year, BASELINE_ID)
    bad = sorted({s for _, s in targets if s != 1})
    if bad:
        raise ConfigError(f"baseline: samples {bad} requested; the bicubic baseline has sample r1 only.",
                          "pass the paths from aid.naming.deliverable_paths(..., baseline=True).")
    remove_stale(list(targets.values()))
    # All configured variables are upsampled (cheap) even when only some are written, so the
    # tasmin/tas/tasmax fix, and hence every written value, does not depend on the output subset.
    variables = list(dict.fromkeys([*config["search"]["variables"], *(v for v, _ in targets)]))
    coarse = open_coarse(coarse_paths, variables, year)
    check_time_range(targets, coarse.days, coarse.calendar, source)
    fine = fine_grid(config)

    def produce(batch: xr.Dataset) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        up = upsample(batch[variables], fine, "bicubic")
        fields = {v: np.array(up[v].transpose("time", "lat", "lon").values, dtype="f4")[None] for v in variables}
        return fields, np.asarray(up["lat"].values), np.asarray(up["lon"].values)

    provenance = {"method": "bicubic interpolation of the bias-adjusted coarse fields (aid.regrid.upsample)",
                  "coarse_input": ", ".join(relpath_or_name(p) for p in coarse.files)}
    identity = ["bicubic", *_file_sha256(coarse.files)]
    return _stream(config, coarse, targets, [1], produce, model=BASELINE_ID, source=source, experiment=experiment,
                   member=member, provenance=provenance, identity=identity,
                   what=f"baseline {source}/{experiment}/{member}/{year}")
