"""Exceptions of nanoedx.

One base class, :class:`NanoEDXError`; each specific error also inherits the builtin a caller
would catch for that problem, so ``except FileNotFoundError`` keeps working.
"""

from __future__ import annotations


class NanoEDXError(Exception):
    """Base class of every error nanoedx raises on purpose."""


class ConfigError(NanoEDXError, ValueError):
    """A generation or noise parameter is out of range (the message names the valid range)."""


class SchemaError(NanoEDXError, ValueError):
    """A file is not a (complete, consistent) nanoedx database."""


class DatasetNotFoundError(NanoEDXError, FileNotFoundError):
    """A database file or release could not be found."""


class OutputExistsError(NanoEDXError, FileExistsError):
    """The output path exists and overwriting was not asked for."""


class MissingExtraError(NanoEDXError, ImportError):
    """An optional dependency (a ``pip install "nanoedx[extra]"``) is missing."""


class GenerationError(NanoEDXError, RuntimeError):
    """Some shards of a sharded run failed; the finished ones are kept (rerun to finish)."""


class SchedulerError(NanoEDXError, ConnectionError):
    """The dask scheduler given could not be reached."""
