"""Time 15 EM iterations per volume size and backend; write perf_reconstruct.md.

    python benchmarks/perf_reconstruct.py [--sizes 64,128,256] [--repeats 3]

Backends: SciPy sparse products (the default, ``device=None``), torch sparse CSR on the CPU, and
on CUDA when a GPU is present. 16 tilts (-75..75 deg), Poisson data; the system matrix is built
once per size before timing (it is cached between calls), the median of the repeats is kept.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from nanoedx_dataset import __version__
from nanoedx_dataset.store.files import atomic_output
from nanoedx_dataset.simulate.project import DEFAULT_ANGLES
from nanoedx_models import reconstruct

RESULTS = Path(__file__).parent / "results"


def seconds(series, device, repeats: int, threads: int | None = None) -> float:
    reconstruct(series, DEFAULT_ANGLES, device=device)  # warm-up: builds the operators
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        reconstruct(series, DEFAULT_ANGLES, device=device, threads=threads)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "perf_reconstruct.md")
    a = ap.parse_args()
    warnings.filterwarnings("ignore", message="Sparse")
    devices = [None, "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for n in (int(s) for s in a.sizes.split(",")):
        series = np.random.default_rng(0).poisson(2.0, (len(DEFAULT_ANGLES), n, n)).astype(float)
        for dev in devices:
            s = seconds(series, dev, a.repeats)
            rows.append(f"| {n}³ | {'scipy' if dev is None else 'torch ' + dev} | "
                        f"{torch.get_num_threads() if dev != 'cuda' else '–'} | {s:.2f} |")
            print(rows[-1], flush=True)
        s = seconds(series, None, a.repeats, threads=1)  # as in a benchmark worker process
        rows.append(f"| {n}³ | scipy | 1 | {s:.2f} |")
        print(rows[-1], flush=True)
    load = os.getloadavg()[0]
    text = (f"# EM reconstruction speed\n\n`python benchmarks/perf_reconstruct.py` on "
            f"{platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), nanoedx {__version__}, "
            f"{time.strftime('%Y-%m-%d')}; load average {load:.1f} at the end (the machine was "
            "shared). 15 MLEM iterations, 16 tilts, median of "
            f"{a.repeats}. The SciPy path runs blocks of y-slices on the threads "
            "(`reconstruct(threads=)`), torch on its own threads; a leaderboard worker process "
            "runs the SciPy path on one thread. Targets on 2 CPU threads: 128³ in at most "
            "0.4 s, 256³ in at most 2 s"
            + ("" if torch.cuda.is_available() else " (no GPU on this machine: no CUDA rows)")
            + ".\n\n| volume | backend | threads | seconds |\n"
            "| --- | --- | --- | --- |\n"
            + "\n".join(rows) + "\n")
    with atomic_output(a.out) as tmp:
        tmp.write_text(text)


if __name__ == "__main__":
    main()
