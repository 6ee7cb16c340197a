"""Glue for the thin Snakemake scripts in ``workflow/scripts``.

Why: every script needs the same three things: log to the rule's log file, turn an
:class:`~aid.errors.AidError` into one clear log line (no traceback wall) and a non-zero exit,
and read the validated config. Keeping it here keeps each script to one call.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aid.errors import AidError


def run(snakemake: Any, func: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Call ``func(**kwargs)`` with logging routed to ``snakemake.log[0]``."""
    return run_each(snakemake, func, [kwargs])[0]


def run_each(snakemake: Any, func: Callable[..., Any], calls: Iterable[Mapping[str, Any]], /) -> list[Any]:
    """Call ``func(**kw)`` for each ``kw`` in one job, logging to ``snakemake.log[0]``.

    Why: a job per variable pays Python + xarray start-up per variable; rules whose work per
    variable is small (fetch, regrid, reference of a regional box) do all variables of a dataset in
    one job and still write one file per variable. The first failure stops the job (Snakemake then
    removes every output of the job, so no variable is left half-done).
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if len(snakemake.log):
        handlers.append(logging.FileHandler(snakemake.log[0], mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    log = logging.getLogger(f"aid.rule.{snakemake.rule}")
    log.info("rule %s wildcards %s", snakemake.rule, dict(snakemake.wildcards))
    try:
        return [func(**kw) for kw in calls]
    except AidError as exc:
        log.error("rule %s failed: %s", snakemake.rule, exc)
        sys.exit(1)


def stage_config(snakemake: Any) -> Any:
    """The rule's config slice (``params.config``, see :mod:`aid.config_slice`), the only config a
    script reads, with the rule's execution settings (``params.execution``: dotted keys that change
    how a job runs but not its numbers, so they are deliberately not re-run triggers) filled in."""
    from aid.config_slice import ConfigSlice

    cfg = snakemake.params.config
    for dotted, value in dict(getattr(snakemake.params, "execution", None) or {}).items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for part in parents:
            if part not in node:
                dict.__setitem__(node, part, ConfigSlice(path=part))
            node = node[part]
        dict.__setitem__(node, leaf, value)
    return cfg
