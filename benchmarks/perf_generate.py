"""Time database generation per sample, stage by stage, and write perf_generate.md.

Stages: voxelize (spec -> occupancy, analytic backend), project (ASTRA sparse matrix, 16
angles, both elements), noise (Poisson maps) and write (gzip-compressed HDF5, in the parent
process). Samples cycle through every family, so the means are over the catalogue's mix.

    python benchmarks/perf_generate.py [--samples 24] [--sizes 64,128,256]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from nanoedx_dataset import __version__, schema
from nanoedx_dataset.config import PRESETS, GenerationConfig
from nanoedx_dataset.generator import make_sample, write_sample
from nanoedx_dataset.noise import noise_tag
from nanoedx_dataset.specs import ELEMENTS

RESULTS = Path(__file__).parent / "results"
BACKENDS_HEADING = "## Analytic vs Blender backends"  # compare_backends.py's section


def time_size(size: int, samples: int) -> tuple[dict, dict]:
    cfg = GenerationConfig(n=samples, size=size).validate()
    stages, by_family = defaultdict(list), defaultdict(list)
    make_sample(cfg, 0)  # build the projection matrix outside the timing
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "perf.h5"
        schema.create(path, cfg.n, size, np.array(cfg.angles), ELEMENTS, {"config": "{}"})
        tag = noise_tag(cfg.counts, cfg.background)
        schema.create_noise_group(path, tag, {"counts": 1.0, "background": 1.0, "seed": 0})
        with h5py.File(path, "r+") as f:
            counts_ds = f[schema.noisy_path(tag)][schema.NOISY_FIELD.name]
            for i in tqdm(range(samples), desc=f"{size}^3", unit="sample"):
                s = make_sample(cfg, i)
                t = time.perf_counter()
                write_sample(f, counts_ds, s)
                s.seconds["write"] = time.perf_counter() - t
                for k, v in s.seconds.items():
                    stages[k].append(v)
                by_family[s.family].append(s.seconds["voxelize"])
        stages["MB per sample"] = [path.stat().st_size / samples / 1e6]
    return stages, by_family


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--out", default=str(RESULTS / "perf_generate.md"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, families = [], {}
    for size in sizes:
        n = args.samples if size <= 128 else max(12, args.samples // 2)
        stages, fam = time_size(size, n)
        mean = {k: float(np.mean(v)) for k, v in stages.items()}
        compute = mean["voxelize"] + mean["project"] + mean["noise"]
        rows.append((size, n, mean, compute, float(np.max(stages["voxelize"]))))
        families[size] = fam

    lines = [
        "# Generation speed",
        "",
        f"`python benchmarks/perf_generate.py --samples {args.samples} --sizes {args.sizes}` "
        f"on {platform.machine()}, {os.cpu_count()} cores, nanoedx {__version__}, "
        f"{time.strftime('%Y-%m-%d')}. Seconds per sample, one process, mean over samples that "
        "cycle through all 12 families (solid, core-shell and hollow mixed as in the presets).",
        "",
        "| size | samples | voxelize | project | noise | write | compute total | slowest voxelize"
        " | MB/sample |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, n, m, compute, worst in rows:
        lines.append(f"| {size}³ | {n} | {m['voxelize']:.3f} | {m['project']:.3f} | "
                     f"{m['noise']:.3f} | {m['write']:.3f} | {compute:.3f} | {worst:.2f} | "
                     f"{m['MB per sample']:.2f} |")
    lines += ["", "Projected preset times with `--workers 2`: two workers compute and the parent "
              "writes, all on the same 2 cores, so the best case is all CPU work / 2 (measured "
              "wall times, which add process start-up and pickling, are in "
              "`standard_preset.md` and `paper_preset.md`):", "",
              "| preset | samples × size | CPU: compute | CPU: write | projected wall (÷ 2) |",
              "| --- | --- | --- | --- | --- |"]
    by_size = {size: (m, compute) for size, _, m, compute, _ in rows}
    for name, cfg in PRESETS.items():
        if cfg.size in by_size:
            m, compute = by_size[cfg.size]
            cpu, write = cfg.n * compute, cfg.n * m["write"]
            lines.append(f"| {name} | {cfg.n} × {cfg.size}³ | {cpu / 60:.1f} min | "
                         f"{write / 60:.1f} min | {(cpu + write) / 120:.1f} min |")
    size = 128 if 128 in families else sizes[0]
    lines += ["", f"Voxelization time per family at {size}³ (s, mean over the samples drawn):", "",
              "| family | samples | voxelize |", "| --- | --- | --- |"]
    for fam, ts in sorted(families[size].items(), key=lambda kv: -np.mean(kv[1])):
        lines.append(f"| {fam} | {len(ts)} | {np.mean(ts):.3f} |")
    out = Path(args.out)
    # Keep the section compare_backends.py writes (the mesh backend's agreement and speed).
    kept = out.read_text().partition(BACKENDS_HEADING)[1:] if out.exists() else ("", "")
    tail = "".join(kept)
    out.write_text("\n".join(lines) + "\n" + ("\n" + tail if tail else ""))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
