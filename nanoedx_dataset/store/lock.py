"""One run per output at a time: a lock file beside the output, naming its owner.

:func:`output_lock` holds ``<name>.lock`` beside the output (a database file, a folder of
shards, a model file) for as long as a run writes it. The lock is the operating system's
(``flock``): it is released when its owner exits, however it exits (a kill included), so a lock
file left by a dead run is stale and the next run takes it over. The file records the owner's
process id, host, start time and command, which a second run on the same output names in its
:class:`~nanoedx_dataset.errors.OutputExistsError`. Where ``flock`` is missing or refused
(Windows, some network file systems) the owner recorded in the file decides: a live process on
this host, or any process on another host, holds the lock.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..errors import ConfigError, OutputExistsError

try:
    import fcntl
except ImportError:  # Windows: the owner recorded in the file decides
    fcntl = None

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".lock"
OWNER_WAIT = 0.5  # seconds a second run waits for a new lock's owner to record itself


def lock_path(path) -> Path:
    """The lock file of an output: ``<name>.lock`` beside it."""
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""}


def _read_owner(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace")
        owner = json.loads(text)
    except (OSError, ValueError):
        return None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return None
    return owner


def describe(owner: dict | None) -> str:
    """An owner record as a person reads it: ``pid 123 on host (since ..., nanoedx ...)``."""
    if not owner:
        return "a run that has not recorded itself yet"
    extra = ", ".join(str(owner[k]) for k in ("started", "command") if owner.get(k))
    return f"pid {owner['pid']} on {owner.get('host', '?')}" + (f" ({extra})" if extra else "")


def _alive(owner: dict | None) -> bool:
    """Whether a recorded owner may still run (a process on another host is assumed to)."""
    if not owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True
    if owner["pid"] == os.getpid():
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _flock(fd: int) -> bool | None:
    """Try the OS lock: True (taken), False (held by another process), None (unsupported)."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as err:
        if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise
    return True


def _held_by_other(path: Path, fd: int, what: str) -> OutputExistsError:
    owner = _read_owner(fd)
    deadline = time.monotonic() + OWNER_WAIT
    while owner is None and time.monotonic() < deadline:  # it has just taken the lock
        time.sleep(0.02)
        owner = _read_owner(fd)
    return OutputExistsError(
        f"{what} is being written by another run: {describe(owner)}; wait for it to finish "
        f"or stop it (its lock is {path.name})")


def _acquire(path: Path, what: str) -> int:
    """Open and lock ``path``; return its descriptor, or raise naming the owner."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            taken = _flock(fd)
            if taken is False:
                raise _held_by_other(path, fd, what)
            if taken is None and _alive(_read_owner(fd)):
                raise _held_by_other(path, fd, what)
            try:  # the file we locked must still be the one at ``path`` (not one just removed)
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)


@contextmanager
def output_lock(output, what: str | None = None) -> Iterator[Path]:
    """Hold the lock of ``output`` for the block: one run per output at a time.

    Parameters
    ----------
    output : path-like
        The file or folder the run writes (its folder must exist); the lock is
        ``<output>.lock`` beside it and is removed when the block ends.
    what : str, optional
        How the error names the output (default: its path).

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    OutputExistsError
        Another live run holds the lock; the message names it (pid, host, start, command).
    ConfigError
        The output's folder does not exist.
    """
    path = lock_path(output)
    if not path.parent.is_dir():
        raise ConfigError(f"the output folder {path.parent} does not exist; create it first")
    fd = _acquire(path, what or str(output))
    try:
        stale = _read_owner(fd)
        if stale:
            log.info("taking over %s from %s, which has stopped", path, describe(stale))
        me = json.dumps(_me()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, me, 0)
        os.fsync(fd)
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)  # removed while still held: no one locks a removed file
        finally:
            os.close(fd)
