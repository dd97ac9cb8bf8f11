"""Look at a database: ``info`` summarizes it, ``verify`` checks schema and consistency."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from . import schema
from .errors import SchemaError


def info(path) -> dict:
    """Summary of a database.

    Parameters
    ----------
    path : path-like
        A complete nanoedx database.

    Returns
    -------
    dict
        ``samples``, ``size``, ``angles`` (degrees), ``elements``, counts of each ``family``,
        ``kind`` and ``split``, ``noise_levels`` (tag -> counts, background, seed), the
        versions, ``config`` and the file size in bytes.
    """
    path = Path(path)
    with schema.open_database(path) as f:
        return {
            "path": str(path),
            "samples": int(f["volume"].shape[0]),
            "first_sample": schema.first_sample(f),
            "size": int(f["volume"].shape[-1]),
            "angles": [float(a) for a in f["angle"][:]],
            "elements": schema.strings(f["element"]),
            "family": dict(Counter(schema.strings(f["family"]))),
            "kind": dict(Counter(schema.strings(f["kind"]))),
            "split": dict(Counter(schema.strings(f["split"]))),
            "noise_levels": schema.noise_levels(f),
            "dataset_version": str(f.attrs["dataset_version"]),
            "generator_version": str(f.attrs["generator_version"]),
            "format_version": str(f.attrs["format_version"]),
            "created": str(f.attrs["created"]),
            "config": schema.config(f),
            "bytes": path.stat().st_size,
        }


def verify(path) -> dict:
    """Check a database's schema and internal consistency.

    Checks every variable's presence, dtype and shape, that every sample was written, that the
    catalogue holds known families, kinds and splits and matches each sample's spec, that every
    projection conserves its volume's mass (0.5 %), and each noise level's attributes and shape.

    Returns
    -------
    dict
        :func:`info` of the file when it passes.

    Raises
    ------
    SchemaError
        Listing every problem found.
    """
    with schema.open_database(path) as f:
        found = schema.problems(f)
    if found:
        raise SchemaError(f"{path} failed verification:\n- " + "\n- ".join(found))
    return info(path)
