"""``info``: a summary of a database."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import SchemaError
from ..store import reader, schema


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
    with reader.open_database(path) as f:
        try:
            return _summary(f, path)
        except (OSError, KeyError, ValueError, TypeError) as err:  # damaged metadata
            raise SchemaError(f"{path} is damaged: its catalogue or attributes cannot be read "
                              f"({type(err).__name__}: {err}); check it with `nanoedx verify "
                              f"{path}` and regenerate or download it again") from err


def _summary(f, path: Path) -> dict:
    return {
        "path": str(path),
        "samples": int(f[schema.VOLUME].shape[0]),
        "first_sample": reader.first_sample(f),
        "size": int(f[schema.VOLUME].shape[-1]),
        "angles": [float(a) for a in f[schema.ANGLE][:]],
        "elements": reader.strings(f[schema.ELEMENT]),
        **{c: dict(Counter(reader.strings(f[c])))
           for c in (schema.FAMILY, schema.KIND, schema.SPLIT)},
        "noise_levels": reader.noise_levels(f),
        **{a: str(f.attrs[a]) for a in (schema.ATTR_DATASET_VERSION,
                                        schema.ATTR_GENERATOR_VERSION,
                                        schema.ATTR_FORMAT_VERSION, schema.ATTR_CREATED)},
        "config": reader.config(f),
        "bytes": path.stat().st_size,
    }
