"""Atomic output: a file appears complete under its final name, or not at all.

The one convention of the package for every file it writes: write to ``<name>.partial`` beside
the target (never matched by a ``*.h5`` glob of finished files), make it durable, and move it
onto the target. Writers that would choose a format by the name's extension are given the format
or a file handle instead. Runs that can be resumed keep their ``.partial`` file across runs, with
a journal beside it (``<name>.partial.journal``, :func:`append_record`): one line per durable
step, written only after the step's data is durable, so a resumed run checks what it keeps.
A folder is replaced by building its successor beside it and swapping the two
(:func:`swap_folders`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PARTIAL_SUFFIX = ".partial"
JOURNAL_SUFFIX = ".journal"
OLD_SUFFIX = ".old"  # where a folder's previous contents wait while it is swapped (fallback)
_RENAME_EXCHANGE = 2  # renameat2 flag (Linux >= 3.15)
_AT_FDCWD = -100


def partial_path(path) -> Path:
    """Where ``path`` is written until complete: ``<name>.partial`` beside it."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def fsync_folder(folder) -> None:
    """Make the entries of ``folder`` (a rename into it, a new file) durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # a folder that cannot be opened (some platforms): the rename stands
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace(tmp, final) -> None:
    """Make ``tmp`` durable and move it onto ``final`` (atomic on one file system)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_folder(Path(final).parent)


def journal_path(partial) -> Path:
    """The journal of a resumable ``.partial`` file: ``<name>.partial.journal`` beside it."""
    partial = Path(partial)
    return partial.with_name(partial.name + JOURNAL_SUFFIX)


def start_journal(path, header: dict) -> None:
    """Begin the journal ``path`` anew with a header line (durably)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(header, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    fsync_folder(Path(path).parent)


def append_record(path, record: dict) -> None:
    """Append one line to a journal and make it durable before returning."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_journal(path) -> tuple[dict | None, list[dict]]:
    """A journal's header and records; ``(None, [])`` when it is missing or has no header.

    A line cut short by a kill (the last one) is not a record.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return None, []
    parsed = []
    for line in lines:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            parsed.append(value)
    if not lines or not parsed or json.dumps(parsed[0], sort_keys=True) != lines[0]:
        return None, []
    return parsed[0], parsed[1:]


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2``); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # no libc, or a libc older than glibc 2.28
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                     _RENAME_EXCHANGE) == 0


def swap_folders(new, old) -> Path:
    """Put the folder ``new`` in the place of the folder ``old``; return where ``old``'s
    contents are now (for the caller to delete).

    On Linux the two are exchanged in one step (``new`` then holds the old contents), so a kill
    leaves either the old folder or the new one under ``old``'s name. Elsewhere ``old`` is
    first renamed ``<old>.old``; :func:`restore_folder` puts it back if a kill came between
    the two renames.
    """
    new, old = Path(new), Path(old)
    if _exchange(new, old):
        fsync_folder(old.parent)
        return new
    aside = old.with_name(old.name + OLD_SUFFIX)
    os.rename(old, aside)
    os.rename(new, old)
    fsync_folder(old.parent)
    return aside


def restore_folder(path) -> bool:
    """Undo a folder swap cut between its two renames (see :func:`swap_folders`)."""
    path = Path(path)
    aside = path.with_name(path.name + OLD_SUFFIX)
    if path.exists() or not aside.is_dir():
        return False
    os.rename(aside, path)
    fsync_folder(path.parent)
    return True


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
