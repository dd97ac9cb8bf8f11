"""The committed leaderboard: all denoisers, 2D and 3D, and 2D nMAE against dose.

    python benchmarks/leaderboard.py --data nanoedx-standard-0.1.2.h5 --workers 2

Writes into ``--out`` (default ``benchmarks/results``):

* ``leaderboard.{md,json}`` and its figures (``leaderboard_2d.png``, ``leaderboard_3d.png``,
  ``leaderboard_maps.png``, ``leaderboard_orthoslices.png``): the test split at the stored noise
  level (1000 + 100 counts), the paper's Fig. 2 and 3;
* ``leaderboard_run.json``: the main table's wall time and peak resident memory (this process
  and the largest worker, VmHWM sampled every 2 s, and by half-time);
* ``leaderboard_dose.{md,json,png}``: 2D at 10^2, 10^3 and 10^4 counts (background 10 %),
  noise drawn on the fly.

``--quick`` scores the evenly spaced subsets of ``nanoedx benchmark --quick``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from nanoedx_dataset.store.files import atomic_output
from nanoedx_models.evaluation.benchmark import benchmark
from nanoedx_models.evaluation.figures import dose_figure
from peakrss import PeakRSS

RESULTS = Path(__file__).parent / "results"


def dose_table(boards: list[dict]) -> str:
    """Method x dose table of 2D nMAE (mean ± std)."""
    doses = [b["counts"] for b in boards]
    lines = ["| method | " + " | ".join(f"{c:g} counts" for c in doses) + " |",
             "| --- |" + " --- |" * len(doses)]
    for name in [r["method"] for r in boards[0]["rows"]]:
        cells = []
        for b in boards:
            r = next(r for r in b["rows"] if r["method"] == name)
            cells.append(f"{r['nmae2d_mean']:.1f} ± {r['nmae2d_std']:.1f}"
                         if r["status"] == "ok" else "failed")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True, help="release name, file or shard folder")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--doses", default="100,1000,10000", help="signal counts of the dose sweep")
    ap.add_argument("--skip-main", action="store_true", help="only the dose sweep")
    ap.add_argument("--skip-dose", action="store_true", help="only the main leaderboard")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    common = dict(workers=a.workers, quick=a.quick)
    if not a.skip_main:
        t = time.perf_counter()
        with PeakRSS(os.getpid(), every=2.0) as peak:
            benchmark(a.data, out=a.out, figures=True, **common)
        wall = time.perf_counter() - t
        run = {"command": "python benchmarks/leaderboard.py " + " ".join(sys.argv[1:]),
               "seconds": round(wall, 1), "workers": a.workers,
               "peak_rss_parent_mb": round(peak.parent / 1e6),
               "peak_rss_worker_mb": round(peak.workers / 1e6),
               "peak_rss_by_half_time_mb": round(peak.by(wall / 2) / 1e6)}
        with atomic_output(a.out / "leaderboard_run.json") as tmp:
            tmp.write_text(json.dumps(run, indent=1) + "\n")
        print(f"main leaderboard: {wall:.0f} s; peak RSS {run['peak_rss_parent_mb']} MB here, "
              f"{run['peak_rss_worker_mb']} MB in the largest worker")
    if a.skip_dose:
        if not a.skip_main:
            print((a.out / "leaderboard.md").read_text())
        return
    boards = []
    for c in (float(x) for x in a.doses.split(",")):
        t = time.perf_counter()
        boards.append(benchmark(a.data, counts=c, dims=["2d"], **common))
        print(f"dose {c:g}: {time.perf_counter() - t:.0f} s")
    dose_figure(boards, a.out / "leaderboard_dose.png")
    with atomic_output(a.out / "leaderboard_dose.json") as tmp:
        tmp.write_text(json.dumps(boards, indent=1) + "\n")
    head = (f"2D nMAE (%) against signal counts per map, background 10 % of the counts, noise "
            f"drawn on the fly (seed 0); {boards[0]['n_maps_2d']} maps of the "
            f"{boards[0]['split']} split of {Path(boards[0]['data']['source']).name}"
            f"{' (quick subset)' if a.quick else ''}; fitted methods refitted at each dose.\n\n")
    with atomic_output(a.out / "leaderboard_dose.md") as tmp:
        tmp.write_text(head + dose_table(boards))
    print(dose_table(boards))
    if not a.skip_main:
        print((a.out / "leaderboard.md").read_text())


if __name__ == "__main__":
    main()
