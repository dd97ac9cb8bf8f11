"""Peak resident memory of a process and of its worker processes, sampled while a job runs.

    with PeakRSS(os.getpid()) as peak:
        ...  # the job, with worker processes
    peak.parent, peak.workers  # bytes: VmHWM of the process, the largest of its children's

Linux only (``/proc``); elsewhere both stay 0. ``peak.trace`` holds ``(seconds, parent,
workers)`` samples, to show whether memory grew during the run.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path


def vm_hwm(pid: int) -> int:
    """Peak resident memory (VmHWM, bytes) of a process; 0 if it is gone or unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def children(pid: int) -> list[int]:
    """The direct children of a process (its worker processes)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


class PeakRSS:
    """Sample the peak memory of ``pid`` and of its children every ``every`` seconds."""

    def __init__(self, pid: int, every: float = 0.5):
        self.pid, self.every = pid, every
        self.parent = self.workers = 0
        self.trace: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.parent = max(self.parent, vm_hwm(self.pid))
        self.workers = max([self.workers] + [vm_hwm(c) for c in children(self.pid)])
        self.trace.append((time.perf_counter() - self._t0, self.parent, self.workers))

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> "PeakRSS":
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def by(self, seconds: float) -> int:
        """The largest of either peak sampled up to ``seconds`` into the run."""
        return max((max(p, w) for t, p, w in self.trace if t <= seconds), default=0)
