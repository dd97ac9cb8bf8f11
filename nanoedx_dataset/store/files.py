"""Atomic output: a file appears complete under its final name, or not at all.

The one convention of the package for every file it writes: write to ``<name>.partial`` beside
the target (never matched by a ``*.h5`` glob of finished files), make it durable, and move it
onto the target. Writers that would choose a format by the name's extension are given the format
or a file handle instead. Runs that can be resumed keep their ``.partial`` file across runs.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PARTIAL_SUFFIX = ".partial"


def partial_path(path) -> Path:
    """Where ``path`` is written until complete: ``<name>.partial`` beside it."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def replace(tmp, final) -> None:
    """Make ``tmp`` durable and move it onto ``final`` (atomic on one file system)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    try:
        fd = os.open(Path(final).parent, os.O_RDONLY)
    except OSError:  # a folder that cannot be opened (some platforms): the rename stands
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only if the block succeeds.

    On an error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = partial_path(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    replace(tmp, path)


def sha256(path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
