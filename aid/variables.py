"""The variable registry: every fact about a variable that more than one stage needs, in one place.

Why one registry (in the spirit of xclim's variable definitions): fetch checks physical bounds,
standardise converts to canonical units and writes the standard name, the downscale job accepts
input units, the checks stage flags impossible values, the deliverables carry CF metadata, the
model transforms precipitation, bias adjustment chooses additive or multiplicative factors. With
one definition a value cannot pass one gate and fail the next, and a unit written by one stage is
the unit the next one expects. Every stage reads :data:`VARIABLES`.

Units. ``units`` is aid's internal (canonical) unit and the unit of its intermediate files:
temperatures in K, winds in m s-1, precipitation in mm d-1 as ``lwe_precipitation_rate`` (a rate
whose canonical CF unit m s-1 is dimensionally compatible with mm d-1). ``cmip_units`` and
``cmip_standard_name`` are what the CMIP6 tables (and so the driving model's files) use; they
differ only for precipitation (``precipitation_flux`` in kg m-2 s-1; 1 kg m-2 s-1 = 86400 mm d-1).
The deliverables follow the CORDEX-CMIP6 data request and so carry the CMIP unit and standard name
(:mod:`aid.deliverables` converts at write time and back on read).

Bounds (inclusive, canonical units) are *physical possibility*, not climate plausibility: they
catch unit mix-ups (degC read as K) and numerical blow-ups, so they sit beyond the recorded world
extremes with a margin that no real daily field reaches:

* temperatures 170..345 K: the lowest recorded near-surface air temperature is -89.2 degC
  (184 K, Vostok), the highest 56.7 degC (330 K, Death Valley); about 14 K of margin on either
  side, and a daily maximum can exceed a daily mean, so one range serves tas, tasmin and tasmax.
  A temperature in degC (-60..50) lies below 170 and is flagged.
* precipitation 0..2000 mm d-1: the largest recorded one-day total is 1825 mm (La Reunion);
  negative precipitation is impossible.
* wind components -100..100 m s-1, wind speed 0..100 m s-1: the strongest recorded surface gust
  is 113 m s-1, and a *daily mean* 10 m wind stays far below a gust.

Transforms. ``adjust_kinds`` lists the bias-adjustment kinds that make physical sense: additive
("+") for temperatures and wind components (interval-scale quantities, winds change sign),
multiplicative ("*") for precipitation (ratio-scale, bounded at 0, so a factor keeps dry days dry
and never goes negative). ``model_transforms`` lists the value transforms the network may use
(``identity`` for Gaussian-like fields; ``log1p``/``power`` for skewed, non-negative
precipitation), see :mod:`aid.model.transforms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Variable:
    """CF metadata, physical bounds and valid transforms of one daily variable."""

    name: str
    standard_name: str
    long_name: str
    units: str
    cell_methods: str
    bounds: tuple[float, float]
    adjust_kinds: tuple[str, ...]
    model_transforms: tuple[str, ...]
    #: Other spellings of ``units`` accepted as already canonical (no conversion).
    unit_spellings: tuple[str, ...]
    #: Other names the same quantity goes by in input files (ERA5 short names, GRIB names).
    aliases: tuple[str, ...]
    comment: str
    cmip_standard_name: str
    cmip_units: str
    #: Height of the quantity above the surface (m); None for a surface flux.
    height: float | None
    #: True where the variable is computed from others (not sampled by the model).
    derived: bool = False

    def out_of_bounds(self, values: Any) -> tuple[Any, Any]:
        """Masks (below, above) of values outside :attr:`bounds` (inclusive bounds; NaN is neither).

        ``values`` may be a numpy array or a (lazy) xarray DataArray; the masks are of the same kind.
        """
        lo, hi = self.bounds
        v = values if hasattr(values, "dims") else np.asarray(values)
        return v < lo, v > hi

    def cf_attrs(self) -> dict[str, str]:
        """The CF attributes aid writes on this variable."""
        return {"standard_name": self.standard_name, "long_name": self.long_name, "units": self.units,
                "cell_methods": self.cell_methods}

    def cmip_attrs(self) -> dict[str, str]:
        """The attributes the CMIP6 tables give this variable (as a driving model's file has them)."""
        return {"standard_name": self.cmip_standard_name, "long_name": self.long_name, "units": self.cmip_units,
                "cell_methods": self.cell_methods}


_TEMPERATURE = dict(units="K", bounds=(170.0, 345.0), adjust_kinds=("+",), model_transforms=("identity",),
                    unit_spellings=("kelvin", "Kelvin"), cmip_units="K", height=2.0)
_WIND = dict(units="m s-1", adjust_kinds=("+",), model_transforms=("identity",),
             unit_spellings=("m/s", "m s^-1"), cmip_units="m s-1", height=10.0)

VARIABLES: dict[str, Variable] = {
    "tas": Variable("tas", "air_temperature", "Near-Surface Air Temperature", cell_methods="area: time: mean",
                    aliases=("t2m", "2t", "air_temperature", "tg"), comment="daily mean air temperature at 2 m",
                    cmip_standard_name="air_temperature", **_TEMPERATURE),
    "tasmax": Variable("tasmax", "air_temperature", "Daily Maximum Near-Surface Air Temperature",
                       cell_methods="area: mean time: maximum", aliases=("mx2t", "tx"),
                       comment="daily maximum air temperature at 2 m", cmip_standard_name="air_temperature",
                       **_TEMPERATURE),
    "tasmin": Variable("tasmin", "air_temperature", "Daily Minimum Near-Surface Air Temperature",
                       cell_methods="area: mean time: minimum", aliases=("mn2t", "tn"),
                       comment="daily minimum air temperature at 2 m", cmip_standard_name="air_temperature",
                       **_TEMPERATURE),
    "pr": Variable("pr", "lwe_precipitation_rate", "Precipitation", units="mm d-1", cell_methods="area: time: mean",
                   bounds=(0.0, 2000.0), adjust_kinds=("*",), model_transforms=("log1p", "power"),
                   unit_spellings=("mm/d", "mm/day", "mm day-1", "mm d^-1", "kg m-2 d-1"),
                   aliases=("tp", "precip", "prcp", "rr"),
                   comment="liquid-water-equivalent precipitation rate in mm d-1 (= kg m-2 d-1); "
                           "divide by 86400 for the CORDEX unit kg m-2 s-1",
                   cmip_standard_name="precipitation_flux", cmip_units="kg m-2 s-1", height=None),
    "uas": Variable("uas", "eastward_wind", "Eastward Near-Surface Wind", cell_methods="area: time: mean",
                    bounds=(-100.0, 100.0), aliases=("u10", "10u"), comment="daily mean eastward wind at 10 m",
                    cmip_standard_name="eastward_wind", **_WIND),
    "vas": Variable("vas", "northward_wind", "Northward Near-Surface Wind", cell_methods="area: time: mean",
                    bounds=(-100.0, 100.0), aliases=("v10", "10v"), comment="daily mean northward wind at 10 m",
                    cmip_standard_name="northward_wind", **_WIND),
    "sfcWind": Variable("sfcWind", "wind_speed", "Near-Surface Wind Speed", cell_methods="area: time: mean",
                        bounds=(0.0, 100.0), aliases=("si10", "wind", "ws10"), comment="daily mean wind speed at 10 m",
                        cmip_standard_name="wind_speed", derived=True, **_WIND),
}

#: The variables the model samples and every stage carries (channel order of a default run).
MODEL_VARIABLES: tuple[str, ...] = tuple(v for v, m in VARIABLES.items() if not m.derived)
#: The temperature triple whose order (tasmin <= tas <= tasmax) aid enforces (see :mod:`aid.physics`).
TEMPERATURES: tuple[str, ...] = ("tasmin", "tas", "tasmax")


def get(name: str) -> Variable:
    """The registry entry of ``name``; KeyError naming the known variables otherwise."""
    try:
        return VARIABLES[name]
    except KeyError:
        raise KeyError(f"unknown variable '{name}': aid knows {', '.join(VARIABLES)} (aid/variables.py)") from None


def units(name: str) -> str:
    """Canonical (internal and written) units of ``name``."""
    return get(name).units
