"""``aid era5-daily``: ERA5 as users download it (hourly CDS NetCDF/GRIB, ARCO Zarr, CDS daily
statistics) -> one daily CF NetCDF of tas, tasmax, tasmin, pr, uas, vas for ``reference.files``."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from aid.era5_daily import write_era5_daily

    print(write_era5_daily(args.files, args.out, variables=args.variables, statistic=args.statistic,
                           start=args.start, end=args.end, lat=args.lat, lon=args.lon))
    return 0


#: The statistics of the CDS daily product (aid.era5_daily.STATISTICS; repeated so ``aid --help`` needs no xarray).
STATISTICS = ("mean", "max", "min", "sum")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "era5-daily",
        help="daily tas/tasmax/tasmin/pr/uas/vas from hourly ERA5 (CDS NetCDF or GRIB, Zarr) or the CDS daily statistics",
        description=(
            "Aggregate hourly ERA5 single levels to days: tas = mean of the 24 hourly t2m, tasmax/tasmin from "
            "mx2t/mn2t (else max/min of t2m), pr = daily total of tp (values stamped 01:00 of the day to 00:00 "
            "of the next, in mm d-1), uas/vas = means of u10/v10. Incomplete days are dropped (and logged). "
            "Already-daily files (the CDS daily statistics product) need --statistic."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="ERA5 NetCDF, GRIB or Zarr (folder .zarr or URL); any order, several variables or months")
    p.add_argument("--out", required=True, help="output NetCDF")
    p.add_argument("--variables", nargs="+", default=None, metavar="VAR",
                   help="daily variables to write (default: every one the inputs give)")
    p.add_argument("--statistic", choices=STATISTICS, default=None,
                   help="for daily inputs (CDS daily statistics): the statistic the files hold")
    p.add_argument("--start", default=None, metavar="YYYY-MM-DD", help="first day to write (default: the first complete day)")
    p.add_argument("--end", default=None, metavar="YYYY-MM-DD", help="last day to write (default: the last complete day)")
    p.add_argument("--lat", nargs=2, type=float, default=None, metavar=("SOUTH", "NORTH"), help="keep this latitude band")
    p.add_argument("--lon", nargs=2, type=float, default=None, metavar=("WEST", "EAST"),
                   help="keep this longitude band (degrees east, -180..180 or 0..360; may cross 0)")
    p.set_defaults(func=_run)
