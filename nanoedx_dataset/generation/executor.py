"""The one way work is spread in nanoedx: here, over a local process pool, or on a dask cluster.

:class:`Executor` maps a function over tasks in this process (``workers=1``), in a pool of
``workers`` processes, or on a ``dask.distributed`` cluster (``client``: a Client or a
scheduler address). :meth:`Executor.map` yields results in task order and raises the first
error; :meth:`Executor.as_completed` yields ``(args, result)`` as tasks finish, with a failed
task's exception as its result, so the others still finish. Worker processes run with
``threads`` BLAS threads (small matrix products gain nothing from more, and their spinning
takes the cores the other workers need), then the ``initializer``. A worker process dies with
its parent, however the parent ends (a ``kill -9`` included), so no orphan keeps computing or
holds the parent's files (:func:`die_with_parent`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager

from threadpoolctl import threadpool_limits

from ..errors import MissingExtraError, SchedulerError

CONNECT_TIMEOUT = 10.0  # seconds to reach a dask scheduler
RETRIES = 1  # dask reruns a task that raised once (a dead worker is handled by the scheduler)
DISTRIBUTED_FIX = 'pip install "nanoedx[distributed]"'


def connect(address: str, timeout: float | None = None):
    """A ``dask.distributed.Client`` connected to the scheduler at ``address``.

    Raises
    ------
    MissingExtraError
        ``dask.distributed`` is not installed.
    SchedulerError
        No scheduler answers at ``address`` within ``timeout`` seconds.
    """
    try:
        from distributed import Client
    except ImportError as err:
        raise MissingExtraError(f"a dask cluster needs dask.distributed: {DISTRIBUTED_FIX}") \
            from err
    try:
        return Client(address, timeout=timeout or CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as err:
        raise SchedulerError(
            f"cannot reach a dask scheduler at {address!r} ({err}); start one with "
            "`dask scheduler` and workers with `dask worker ADDRESS`, or drop --scheduler to "
            "use local --workers") from err


@contextmanager
def cluster(client):
    """A client as given, or one connected to the address given (closed afterwards)."""
    if not isinstance(client, str):
        yield client
        return
    connected = connect(client)
    try:
        yield connected
    finally:
        connected.close()


_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


def _pdeathsig() -> bool:
    """Ask Linux to SIGKILL this process when its parent ends; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent) -> None:
    parent.join()  # returns when the parent process has ended
    os._exit(1)


def die_with_parent() -> None:
    """Make this (worker) process end when the process that started it ends.

    On Linux the kernel kills it (``PR_SET_PDEATHSIG``); elsewhere a daemon thread waits on
    the parent's sentinel and exits the process.
    """
    parent = multiprocessing.parent_process()
    if _pdeathsig():
        if os.getppid() == 1:  # the parent ended before the request was made
            os._exit(1)
        return
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                         name="nanoedx-parent-watch").start()


def _worker_init(threads, initializer, initargs) -> None:
    die_with_parent()
    if threads is not None:
        threadpool_limits(threads)
    if initializer is not None:
        initializer(*initargs)


class Executor:
    """Map tasks here, over a process pool, or on a dask cluster (a context manager).

    Parameters
    ----------
    workers : int
        Processes; 1 runs every task in this process.
    client : dask.distributed.Client or str, optional
        Run the tasks on this cluster (or the scheduler at this address) instead.
    initializer, initargs
        Called in each worker process (and here, with ``workers=1``) before any task.
    threads : int or None
        BLAS threads of each process (None: leave them be).
    """

    def __init__(self, workers: int = 1, client=None, initializer=None, initargs=(),
                 threads: int | None = 1):
        self.workers, self.client = int(workers), client
        self.initializer, self.initargs, self.threads = initializer, tuple(initargs), threads
        self._stack, self._pool = None, None

    def __enter__(self) -> "Executor":
        self._stack = ExitStack()
        if self.client is not None:
            self.client = self._stack.enter_context(cluster(self.client))
        elif self.workers > 1:
            self._pool = self._stack.enter_context(ProcessPoolExecutor(
                self.workers, initializer=_worker_init,
                initargs=(self.threads, self.initializer, self.initargs)))
        else:
            if self.threads is not None:
                self._stack.enter_context(threadpool_limits(self.threads))
            if self.initializer is not None:
                self.initializer(*self.initargs)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def map(self, fn, *iterables):
        """``fn(*args)`` for each task, in task order; the first error is raised."""
        if self.client is not None:
            futures = self.client.map(fn, *iterables, pure=False, retries=RETRIES)
            for fut in futures:
                yield fut.result()
            return
        if self._pool is not None:
            yield from self._pool.map(fn, *iterables, chunksize=1)
            return
        yield from map(fn, *iterables)

    def as_completed(self, fn, tasks: list[tuple]):
        """Yield ``(args, result)`` of ``fn(*args)`` for each task as it finishes.

        A task that fails yields its exception as the result (a dead pool process or a lost
        dask worker included), so the others still finish.
        """
        if not tasks:
            return
        if self.client is not None:
            from distributed import as_completed as dask_completed

            futures = self.client.map(fn, *zip(*tasks), pure=False, retries=RETRIES)
            by_key = {fut.key: args for fut, args in zip(futures, tasks)}
            pending = dask_completed(futures)
            del futures  # hold each result only until it is read: a worker lost later must not
            for fut in pending:  # make the scheduler recompute tasks that are done
                try:
                    result = fut.result()
                except Exception as err:  # the task's own error, or KilledWorker
                    result = err
                fut.release()
                yield by_key[fut.key], result
            return
        if self._pool is None:
            for args in tasks:
                try:
                    yield args, fn(*args)
                except Exception as err:
                    yield args, err
            return
        futures = {self._pool.submit(fn, *args): args for args in tasks}
        for fut in as_completed(futures):
            try:
                yield futures[fut], fut.result()
            except Exception as err:  # including a pool broken by a dead process
                yield futures[fut], err
