"""The downscaled deliverable files: CF-1.11 NetCDF4, one (variable, sample, year) per file.

Why a hand-rolled netCDF4 writer and not ``xarray.Dataset.to_netcdf``: a downscale job streams day
batches through the sampler and appends each batch to the open files, so memory is bounded by one
batch, not one year. xarray cannot append slices to a NetCDF file, netCDF4-python can. Every file of
a job is written under a hidden temporary name (``.<name>.<random>.nc.part`` in the same directory)
and renamed onto its final name only when *all* files of the job are complete (see
:class:`DeliverableSet`); a killed or failed job leaves nothing a later stage could mistake for
output.

Conventions (CORDEX-CMIP6 archive specifications for dynamical downscaling, adapted):

* file names from :func:`aid.naming.deliverable_name`; global attributes ``project_id``,
  ``activity_id``, ``domain_id``, ``domain``, ``driving_*``, ``institution_id``, ``source_id``,
  ``version_realization`` (``vN-rM``: product version, diffusion sample), ``frequency``,
  ``variable_id``, ``mip_era``, ``product``, ``Conventions``, ``license``, ``contact``,
  ``creation_date``, ``tracking_id``, ``further_info_url``; aid provenance as ``aid_*`` attributes
  (checkpoint sha256, sampler settings, version, calendar, tasmin/tas/tasmax fixes) and the
  ``bias_adjustment*`` attributes of the adjusted input copied verbatim.
* ``tracking_id`` is a uuid5 derived from everything that determines the data (file name,
  checkpoint hash, sampler settings, driving data identity, aid version), so a rerun writes the
  same identifier; only ``creation_date`` differs between reruns. It carries no handle prefix
  unless ``deliverables.tracking_prefix`` gives one the user owns: ``hdl:21.14103/`` is CORDEX's
  ESGF prefix, minted by the ESGF publisher, not by producers.
* float32 data, ``_FillValue`` = ``missing_value`` = 1e20; time in ``days since 1950-01-01`` in the
  driving model's calendar (noleap, 360_day, standard ...) with daily stamps at 12:00 and
  ``time_bnds`` [00:00, next day 00:00]; ``lat``/``lon`` with ``lat_bnds``/``lon_bnds``, CF
  ``standard_name``/``units``/``axis``.

**Units.** As the CORDEX-CMIP6 data request asks: temperatures in K, winds in m s-1, precipitation
as ``precipitation_flux`` in kg m-2 s-1. aid works in mm d-1 (reference, adjusted inputs, model,
evaluation); :meth:`DeliverableSet.write` divides by 86400 at write time (1 mm of water over 1 m2
weighs 1 kg) and :func:`to_internal_units` multiplies back for every reader of the files.
``VariableMeta.valid_range`` is in the internal unit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cftime
import numpy as np

from aid.errors import ConfigError, DataError
from aid.naming import days_range, deliverable_name, parse_name, source_calendar, years_range
from aid.variables import VARIABLES as REGISTRY

log = logging.getLogger(__name__)

#: Fill value of every data variable (CMIP convention).
FILL_VALUE = np.float32(1.0e20)
#: Time encoding of every deliverable.
TIME_UNITS = "days since 1950-01-01 00:00:00"
#: CF version of the files.
CONVENTIONS = "CF-1.11"
#: CORDEX-CMIP6 fixed values.
PROJECT_ID = "CORDEX-CMIP6"
ACTIVITY_ID = "DD"
LICENSE = "https://cordex.org/data-access/cordex-cmip6-data/cordex-cmip6-terms-of-use"
#: Namespace of aid's deterministic tracking ids (uuid5 of the content identity).
TRACKING_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://cordex.org/aid/tracking_id")
#: More files than this are reopened per write instead of being kept open (file-handle limits).
MAX_OPEN_FILES = 128
#: Target size of one HDF5 chunk (bytes): big enough to compress well, small enough for the cache.
CHUNK_BYTES = 4 << 20


@dataclass(frozen=True)
class VariableMeta:
    """CF metadata and physically possible range of one delivered variable.

    ``valid_range`` is what the checks stage calls physically impossible outside (not a climate
    plausibility range), in ``internal_units``: it catches unit mix-ups (mm d-1 vs kg m-2 s-1,
    degC vs K) and blow-ups. ``units`` is the unit in the files; ``internal_units`` (None: the same)
    the one aid computes in.
    """

    standard_name: str
    long_name: str
    units: str
    cell_methods: str
    valid_range: tuple[float, float]
    comment: str | None = None
    internal_units: str | None = None


#: Derived from the registry (:mod:`aid.variables`): the one home of units, bounds and CF names.
VARIABLES: dict[str, VariableMeta] = {
    name: VariableMeta(
        v.cmip_standard_name, v.long_name, v.cmip_units, v.cell_methods, v.bounds,
        v.comment if v.cmip_units == v.units
        else f"daily mean {v.long_name.lower()} flux (liquid and solid); 1 {v.cmip_units} = 86400 {v.units}",
        internal_units=None if v.cmip_units == v.units else v.units)
    for name, v in REGISTRY.items()
}



# ----------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------
def map_outputs(
    config: Mapping[str, Any],
    outputs: Sequence[str | os.PathLike[str]],
    source: str,
    experiment: str,
    member: str,
    year: int,
    model: str,
) -> dict[tuple[str, int], Path]:
    """Map every requested output path to its (variable, sample).

    Why strict: the paths come from Snakemake (``aid.naming.deliverable_patterns``) or the CLI; a
    path whose name does not render back exactly through :func:`aid.naming.deliverable_name` for
    this job (other year, domain, member, model, calendar) would receive the wrong data.
    """
    ds = config["downscale"]
    time_range = years_range(int(year), int(year), source_calendar(config, source))
    out: dict[tuple[str, int], Path] = {}
    for p in outputs:
        facets = parse_name(p)
        expected = None
        if facets is not None:
            expected = deliverable_name(
                facets["variable"], config["domain"]["id"], source, experiment, member,
                ds["institution_id"], ds["product_version"], int(facets["sample"]), time_range, model=model,
            )
        if facets is None or Path(p).name != expected:
            raise ConfigError(
                f"output {p}: not a deliverable name of job {source}/{experiment}/{member}/{year} "
                f"(model {model}, domain {config['domain']['id']}, time range {time_range}).",
                "pass the paths from aid.naming.deliverable_paths for this job.",
            )
        key = (facets["variable"], int(facets["sample"]))
        if key in out:
            raise ConfigError(f"output {p}: (variable, sample) {key} requested twice.", "pass each output once.")
        if key[0] not in VARIABLES:
            raise ConfigError(f"output {p}: unknown variable '{key[0]}'.", f"use one of {', '.join(VARIABLES)}.")
        out[key] = Path(p)
    if not out:
        raise ConfigError(f"job {source}/{experiment}/{member}/{year}: no outputs requested.", "pass the output paths.")
    return out


def check_time_range(targets: Mapping[tuple[str, int], Path], days: Sequence[Any], calendar: str, source: str) -> None:
    """Refuse file names whose ``<start>-<end>`` are not the first and last day of the data.

    Why: names are made before the data exist (the workflow plans them); a 360_day source not
    declared in ``deliverables.calendars`` would otherwise be named as ending on 31 December.
    """
    have = days_range(days[0], days[-1])
    for p in targets.values():
        facets = parse_name(p)
        if facets is None or f"{facets['start']}-{facets['end']}" != have:
            raise ConfigError(
                f"output {p}: the name's time range is not {have}, the first and last day of the data "
                f"({normalise_calendar(calendar)} calendar).",
                f"set config deliverables.calendars: {{{source}: {normalise_calendar(calendar)}}}.",
            )


# ----------------------------------------------------------------------------------------------
# Units
# ----------------------------------------------------------------------------------------------
#: Factor from an internal unit to a file unit (value_in_file = value_internal * factor).
_FILE_FACTOR: dict[tuple[str, str], float] = {("mm d-1", "kg m-2 s-1"): 1.0 / 86400.0}


def _factor(meta: VariableMeta) -> float:
    if meta.internal_units is None or meta.internal_units == meta.units:
        return 1.0
    return _FILE_FACTOR[(meta.internal_units, meta.units)]


def to_file_units(variable: str, values: np.ndarray) -> np.ndarray:
    """Internal values of ``variable`` in the unit its files carry (float32)."""
    f = _factor(VARIABLES[variable])
    values = np.asarray(values, dtype="f4")
    return values if f == 1.0 else (values.astype("f8") * f).astype("f4")


def to_internal_units(da: Any, variable: str | None = None) -> Any:
    """A variable read from a deliverable (xarray DataArray), in aid's internal unit.

    Arrays already in the internal unit (reference files, older deliverables) are returned as they are;
    an unknown unit is left to the caller's own unit check.
    """
    meta = VARIABLES.get(variable or str(da.name))
    if meta is None or meta.internal_units is None or da.attrs.get("units") != meta.units:
        return da
    out = da / _factor(meta)
    out.attrs = {**da.attrs, "units": meta.internal_units}
    out.encoding = dict(da.encoding)
    return out.astype(da.dtype)


# ----------------------------------------------------------------------------------------------
# Time and grid
# ----------------------------------------------------------------------------------------------
def normalise_calendar(calendar: str) -> str:
    """CF calendar name, with the deprecated alias ``gregorian`` spelled ``standard``."""
    cal = str(calendar).lower()
    return "standard" if cal == "gregorian" else cal


def year_days(year: int, calendar: str) -> list[cftime.datetime]:
    """Every day of ``year`` in ``calendar``, stamped at 12:00 (the deliverables' time axis)."""
    cal = normalise_calendar(calendar)
    start = cftime.datetime(int(year), 1, 1, 12, calendar=cal)
    end = cftime.datetime(int(year) + 1, 1, 1, 12, calendar=cal)
    n = (end - start).days
    step = cftime.datetime(int(year), 1, 2, 12, calendar=cal) - start
    return [start + i * step for i in range(n)]


def time_values(days: Sequence[cftime.datetime], calendar: str) -> tuple[np.ndarray, np.ndarray]:
    """Encoded time (12:00) and time bounds ([00:00, next 00:00]) in :data:`TIME_UNITS`."""
    cal = normalise_calendar(calendar)
    t = np.asarray(cftime.date2num(list(days), TIME_UNITS, calendar=cal), dtype="f8")
    start = np.floor(t)
    return t, np.stack([start, start + 1.0], axis=1)


def cell_bounds(centres: np.ndarray) -> np.ndarray:
    """(n, 2) cell edges halfway between centres, the outer ones mirrored (regular grids)."""
    c = np.asarray(centres, dtype="f8")
    if c.size == 1:
        half = 0.125
        return np.array([[c[0] - half, c[0] + half]])
    mid = (c[1:] + c[:-1]) / 2
    edges = np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
    return np.stack([edges[:-1], edges[1:]], axis=1)


# ----------------------------------------------------------------------------------------------
# Attributes
# ----------------------------------------------------------------------------------------------
def tracking_id(prefix: str | None, *identity: Any) -> str:
    """uuid5 of the content identity (identical inputs give identical ids), after the user's ``prefix``."""
    key = "|".join(str(x) for x in identity)
    return (prefix or "") + str(uuid.uuid5(TRACKING_NAMESPACE, key))


def driving_attributes(coarse_attrs: Mapping[str, Any], config: Mapping[str, Any], source: str,
                       experiment: str) -> dict[str, str]:
    """Driving-data identity (institution, tracking id) from the coarse input's attributes.

    Why fall-backs: the adjusted inputs carry what the archive told us; the evaluation run's
    coarsened ERA5 may carry nothing, and CORDEX requires ``driving_institution_id`` always.
    """
    out: dict[str, str] = {}
    inst = coarse_attrs.get("driving_institution_id") or coarse_attrs.get("institution_id")
    if not inst:
        demo = config["demo_archive"]
        if demo["enabled"] and source == demo["source_id"]:
            inst = demo["institution_id"]
        elif source.upper().startswith("ERA5"):
            inst = "ECMWF"
    out["driving_institution_id"] = str(inst or "unknown")
    tid = coarse_attrs.get("driving_tracking_id") or coarse_attrs.get("tracking_id")
    if tid:
        out["driving_tracking_id"] = str(tid)
    for key, value in coarse_attrs.items():
        if str(key).startswith("bias_adjustment") or str(key).startswith("aid_bias_adjustment"):
            out[str(key)] = value if isinstance(value, str) else str(value)
    out["driving_experiment"] = {
        "evaluation": "evaluation run with reanalysis forcing",
        "historical": "all-forcing simulation of the recent past",
    }.get(experiment, f"{experiment} scenario")
    return out


def global_attributes(
    config: Mapping[str, Any],
    *,
    file_name: str,
    variable: str,
    source: str,
    experiment: str,
    member: str,
    sample: int,
    model: str,
    calendar: str,
    lat: np.ndarray,
    lon: np.ndarray,
    driving: Mapping[str, str],
    provenance: Mapping[str, Any],
    identity: Sequence[Any],
) -> dict[str, str]:
    """Every global attribute of one deliverable (see module docstring)."""
    import aid
    from aid.provenance import append_history, provenance_attrs

    ds = config["downscale"]
    inst = ds["institution_id"]
    version = ds["product_version"]
    dom = config["domain"]
    attrs: dict[str, str] = {
        "Conventions": CONVENTIONS,
        "title": f"{variable} downscaled to 0.25 deg by {model} from {source} {experiment} {member}",
        "project_id": PROJECT_ID,
        "activity_id": ACTIVITY_ID,
        "mip_era": "CMIP6",
        "product": "model-output",
        "domain_id": str(dom["id"]),
        "domain": (f"regular 0.25 deg latitude-longitude box, cell centres lat {float(lat.min()):g}..{float(lat.max()):g}"
                   f" N, lon {float(lon.min()):g}..{float(lon.max()):g} E"),
        "driving_source_id": source,
        "driving_experiment_id": experiment,
        "driving_variant_label": member,
        "institution_id": inst,
        "institution": inst,
        "source_id": model,
        "source": (f"{model} {aid.__version__}: "
                   + ("bias-adjusted coarse fields interpolated bicubically to 0.25 deg (baseline)"
                      if model.endswith("bicubic") else
                      "residual EDM diffusion model conditioned on bias-adjusted coarse fields")),
        "version_realization": f"{version}-r{int(sample)}",
        "version_realization_info": (f"{version}: aid product version; r{int(sample)}: diffusion sample "
                                     f"{int(sample)} (a seeded draw of the downscaling ensemble), not a GCM realization"),
        "frequency": "day",
        "variable_id": variable,
        "grid": "regular latitude-longitude grid, 0.25 deg (ERA5 grid)",
        "license": LICENSE,
        "contact": f"{inst} (see further_info_url)",
        "further_info_url": (f"https://furtherinfo.es-doc.org/{PROJECT_ID}.{inst}.{model}.{source}.{experiment}."
                             f"{member}"),
        "tracking_id": tracking_id(config["deliverables"]["tracking_prefix"], file_name, *identity),
    }
    attrs["history"] = append_history({}, f"{model} {source} {experiment} {member} sample {int(sample)} written as "
                                           f"{file_name}")
    attrs.update({k: str(v) for k, v in driving.items()})
    attrs.update(provenance_attrs("downscale" if not model.endswith("bicubic") else "baseline",
                                  calendar=normalise_calendar(calendar), **dict(provenance)))
    return attrs


# ----------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------
def _part_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.nc.part"


def remove_stale(paths: Sequence[Path]) -> None:
    """Delete earlier outputs of this job and temporary files a killed run left behind.

    Why: a job that fails half-way must not leave last run's files next to nothing of this run's;
    Snakemake deletes outputs before a job too, this makes the CLI behave the same.
    """
    for p in paths:
        if p.exists():
            log.info("removing previous output %s", p)
            p.unlink()
        for stale in p.parent.glob(f".{p.name}.*.part"):
            log.info("removing stale temporary file %s", stale)
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


class DeliverableSet:
    """The open temporary files of one job; renamed onto their final names on clean exit.

    Use as a context manager: :meth:`create` once the grid is known, :meth:`write` day batches,
    :meth:`update_attrs` for numbers only known at the end (fix counts). An exception (or SystemExit
    from SIGTERM) inside the ``with`` block removes every temporary file and renames nothing.
    """

    def __init__(self, targets: Mapping[tuple[str, int], Path], days: Sequence[cftime.datetime], calendar: str) -> None:
        self.targets = {k: Path(v) for k, v in targets.items()}
        self.days = list(days)
        self.calendar = normalise_calendar(calendar)
        self.parts = {k: _part_name(p) for k, p in self.targets.items()}
        self.keep_open = len(self.targets) <= MAX_OPEN_FILES
        self._handles: dict[tuple[str, int], Any] = {}
        self._created = False
        self._pending_attrs: dict[tuple[str, int], dict[str, str]] = {}

    # -- context management --------------------------------------------------------------------
    def __enter__(self) -> DeliverableSet:
        for p in self.targets.values():
            p.parent.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self._commit()
        else:
            self._abort()

    # -- file creation -------------------------------------------------------------------------
    def create(self, lat: np.ndarray, lon: np.ndarray, attrs: Mapping[tuple[str, int], Mapping[str, str]]) -> None:
        """Create every temporary file with coordinates, bounds and metadata; data all fill values."""
        import netCDF4

        lat = np.asarray(lat, dtype="f8")
        lon = np.asarray(lon, dtype="f8")
        t, tb = time_values(self.days, self.calendar)
        nt = len(self.days)
        ct = int(max(1, min(nt, CHUNK_BYTES // max(1, lat.size * lon.size * 4))))
        for key, part in self.parts.items():
            var = key[0]
            meta = VARIABLES[var]
            nc = netCDF4.Dataset(part, "w", format="NETCDF4")
            try:
                nc.set_fill_off()  # every value of the data variable is written; fill only unwritten chunks
                nc.createDimension("time", nt)
                nc.createDimension("lat", lat.size)
                nc.createDimension("lon", lon.size)
                nc.createDimension("bnds", 2)
                vt = nc.createVariable("time", "f8", ("time",), fill_value=False)
                vt.setncatts({"standard_name": "time", "long_name": "time", "units": TIME_UNITS,
                              "calendar": self.calendar, "axis": "T", "bounds": "time_bnds"})
                vt[:] = t
                vtb = nc.createVariable("time_bnds", "f8", ("time", "bnds"), fill_value=False)
                vtb[:] = tb
                for name, vals, std, units, axis, long in (
                    ("lat", lat, "latitude", "degrees_north", "Y", "latitude"),
                    ("lon", lon, "longitude", "degrees_east", "X", "longitude"),
                ):
                    v = nc.createVariable(name, "f8", (name,), fill_value=False)
                    v.setncatts({"standard_name": std, "long_name": long, "units": units, "axis": axis,
                                 "bounds": f"{name}_bnds"})
                    v[:] = vals
                    vb = nc.createVariable(f"{name}_bnds", "f8", (name, "bnds"), fill_value=False)
                    vb[:] = cell_bounds(vals)
                vd = nc.createVariable(var, "f4", ("time", "lat", "lon"), fill_value=FILL_VALUE, zlib=True,
                                       complevel=4, shuffle=True, chunksizes=(ct, lat.size, lon.size))
                vattrs = {"standard_name": meta.standard_name, "long_name": meta.long_name, "units": meta.units,
                          "cell_methods": meta.cell_methods, "missing_value": FILL_VALUE}
                if meta.comment:
                    vattrs["comment"] = meta.comment
                if meta.units == "K":  # CF-1.11 §3.1.2: absolute temperatures, not differences
                    vattrs["units_metadata"] = "temperature: on_scale"
                vd.setncatts(vattrs)
                nc.setncatts(dict(attrs[key]))
            except BaseException:
                nc.close()
                raise
            if self.keep_open:
                self._handles[key] = nc
            else:
                nc.close()
        self._created = True

    @contextlib.contextmanager
    def _open(self, key: tuple[str, int]) -> Iterator[Any]:
        if self.keep_open:
            yield self._handles[key]
            return
        import netCDF4

        nc = netCDF4.Dataset(self.parts[key], "a")
        try:
            yield nc
        finally:
            nc.close()

    def write(self, key: tuple[str, int], start: int, values: np.ndarray) -> None:
        """Write ``values`` (days, lat, lon; internal units) at day index ``start`` of file ``key``."""
        if not self._created:
            raise RuntimeError("DeliverableSet.create() must be called before write()")
        values = to_file_units(key[0], values)
        with self._open(key) as nc:
            v = nc.variables[key[0]]
            v.set_auto_maskandscale(False)
            v[start:start + values.shape[0], :, :] = values

    def update_attrs(self, key: tuple[str, int], attrs: Mapping[str, Any]) -> None:
        """Set global attributes known only at the end of the job (written before the rename)."""
        self._pending_attrs.setdefault(key, {}).update({k: str(v) for k, v in attrs.items()})

    # -- commit / abort ------------------------------------------------------------------------
    def _close_all(self) -> None:
        for nc in self._handles.values():
            with contextlib.suppress(Exception):
                nc.close()
        self._handles.clear()

    def _commit(self) -> None:
        if not self._created:
            self._abort()
            raise DataError("downscale job produced no data (no day was written).", "check the coarse input.")
        for key, extra in self._pending_attrs.items():
            with self._open(key) as nc:
                nc.setncatts(extra)
        self._close_all()
        for part in self.parts.values():
            with open(part, "rb") as fh:
                os.fsync(fh.fileno())
        # All complete: only now give them their final names.
        for key, part in self.parts.items():
            os.replace(part, self.targets[key])
        for d in {p.parent for p in self.targets.values()}:
            with contextlib.suppress(OSError):
                fd = os.open(d, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        for p in self.targets.values():
            log.info("wrote %s", p)

    def _abort(self) -> None:
        self._close_all()
        for part in self.parts.values():
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
