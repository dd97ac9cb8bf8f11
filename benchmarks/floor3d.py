"""The 3D floor of every map denoiser: EM of the expected (noise-free) maps; writes floor3d.md.

    python benchmarks/floor3d.py --data nanoedx-standard-0.2.0.h5 [--iterations 15,50]

A denoiser that returned each map's expected signal exactly would still be scored against the
reference volume after EM from 16 tilts (the missing wedge, the finite iterations): this is
what perfect denoising scores on the leaderboard's denoise-then-EM path, beside the rows' own
(benchmarks/results/leaderboard.md). Test split, every structure, a structure's
score the mean over its elements, as the benchmark scores them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nanoedx_dataset import __version__
from nanoedx_dataset.store.files import atomic_output
from nanoedx_models.data.datasets import TiltSeries
from nanoedx_models.evaluation.benchmark import _group
from nanoedx_models.evaluation.metrics import nmae, standard_error
from nanoedx_models.reconstruction.em import reconstruct

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--iterations", default="15,50")
    ap.add_argument("--out", type=Path, default=RESULTS / "floor3d.md")
    a = ap.parse_args()
    series = TiltSeries(a.data, a.split)
    groups = _group(series)
    its = [int(i) for i in a.iterations.split(",")]
    rows = []
    for n_it in its:
        t = time.perf_counter()
        per = [float(np.mean([nmae(reconstruct(series[k]["target"].astype(np.float64),
                                               series[k]["angles"], n_it),
                                   series[k]["reference"]) for k in g]))
               for g in tqdm(groups, desc=f"EM {n_it} it.", unit="structure")]
        rows.append(f"| {n_it} | {np.mean(per):.1f} ± {np.std(per):.1f} | "
                    f"{standard_error(per):.2f} | {time.perf_counter() - t:.0f} s |")
    text = "\n".join([
        "# The 3D floor of the denoise-then-EM path", "",
        f"`python benchmarks/floor3d.py --data {Path(a.data).name} --iterations {a.iterations}` "
        f"(nanoedx {__version__}, {time.strftime('%Y-%m-%d')}): EM of every {a.split} "
        f"structure's expected (noise-free) maps, scored against its reference volume as the "
        f"benchmark scores a row ({len(groups)} structures; nMAE in %, mean ± std over "
        "structures, and the standard error of the mean). The 15-iteration line is what perfect "
        "denoising of every map scores; a row below it would need maps that suit 15 EM "
        "iterations better than the true expected maps do.", "",
        "| EM iterations | 3D nMAE | ± SE | time |", "| --- | --- | --- | --- |", *rows, ""])
    with atomic_output(a.out) as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
