"""aid: CMIP6 -> 0.25 deg regional climate fields with a residual EDM diffusion downscaler.

Data flows one way: catalog -> standardise -> regrid/adjust -> downscale -> indices -> evaluate.
Every stage is a plain Python function here; the Snakemake rules in ``workflow/`` only call them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aid")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
