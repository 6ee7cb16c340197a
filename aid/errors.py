"""One exception type for every user-facing failure.

Why one type: the CLI and the Snakemake scripts catch ``AidError`` and print its message alone
(no traceback), so every message must say *what* is wrong, *which file or key*, and *the fix*.
"""

from __future__ import annotations


class AidError(Exception):
    """A problem with input data or configuration that the user can fix.

    Parameters
    ----------
    message
        What is wrong, naming the file/dataset/key.
    fix
        What the user should do about it (appended as ``Fix: ...``).
    """

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message if fix is None else f"{message}\nFix: {fix}")


class ConfigError(AidError):
    """Invalid configuration (schema violation, inconsistent values, unsafe paths)."""


class DataError(AidError):
    """Invalid input data (units, calendars, NaNs, coverage, corrupt files)."""


class CheckpointError(AidError):
    """A model checkpoint that is missing, tampered with or incompatible."""
