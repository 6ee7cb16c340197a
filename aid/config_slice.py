"""The part of the configuration one workflow rule uses, handed to it as ``params:``.

Why: Snakemake re-runs a job when its ``params`` change, so a rule that receives exactly the config
keys it reads is re-run by exactly the config changes that affect it (and by no others). A script
that read ``snakemake.config`` instead would see every change and re-run on none of them. The
slice is strict: reading a key the rule did not declare raises instead of falling back to a code
default, so a slice that is too narrow fails loudly rather than computing with a wrong value.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

_MISSING = object()


class SliceKeyError(KeyError):
    """A rule read a config key that is not in its ``params`` slice."""

    def __str__(self) -> str:
        return str(self.args[0])


class ConfigSlice(dict):
    """A config mapping of which only some keys were selected; any other key raises.

    Fully selected sub-sections are plain dicts (every key of the user's config). The ``repr`` is
    the plain dict's, which is what Snakemake records for its params re-run trigger.
    """

    def __init__(self, data: Mapping[str, Any] = (), path: str = "") -> None:
        super().__init__(data)
        self._path = path

    def _missing(self, key: Any) -> SliceKeyError:
        where = f"{self._path}.{key}" if self._path else str(key)
        return SliceKeyError(
            f"config key '{where}' is not in this rule's params slice: add it to the rule's "
            f"config_slice(...) in workflow/rules/ so Snakemake re-runs the rule when it changes."
        )

    def __missing__(self, key: Any) -> Any:
        raise self._missing(key)

    def get(self, key: Any, default: Any = None) -> Any:  # noqa: D102 - dict API
        if key in self:
            return self[key]
        raise self._missing(key)

    def __reduce__(self) -> tuple[Any, ...]:  # pickled into the Snakemake script preamble
        return (ConfigSlice, (dict(self), self._path))


def config_slice(config: Mapping[str, Any], *paths: str) -> ConfigSlice:
    """The keys ``paths`` (dotted, e.g. ``"model.train"``, ``"search.variables"``) of ``config``.

    A path that the config lacks is an error here, at planning time, naming the path.
    """
    out = ConfigSlice()
    for path in paths:
        parts = path.split(".")
        src: Any = config
        dst = out
        for i, part in enumerate(parts):
            if not isinstance(src, Mapping) or part not in src:
                raise KeyError(f"config_slice: the config has no key '{'.'.join(parts[: i + 1])}'.")
            src = src[part]
            if i == len(parts) - 1:
                dst[part] = copy.deepcopy(src)
            else:
                nxt = dict.get(dst, part, _MISSING)
                if nxt is _MISSING:
                    nxt = ConfigSlice(path=".".join(parts[: i + 1]))
                    dst[part] = nxt
                elif not isinstance(nxt, ConfigSlice):  # an enclosing section was selected whole
                    break
                dst = nxt
    return out
