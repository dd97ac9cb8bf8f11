"""Time database generation per sample, stage by stage, and write perf_generate.md.

Stages: voxelize (spec -> occupancy, analytic backend), project (ASTRA sparse matrix, 16
angles, both elements: the floor every stage is compared with), noise (Poisson maps), compress
(the chunks, in the worker) and write (their bytes, in the parent process). Samples cycle
through every family, so the means are over the catalogue's mix. ``--presets`` also times whole
presets (wall, CPU, peak memory of the writer and the workers).

    python benchmarks/perf_generate.py [--samples 24] [--sizes 64,128,256] [--presets standard,paper]

``--scaling`` instead times whole runs at one size (default 128^3): one file with 1 and 2 local
workers, shards with 1 and 2 local workers, and shards on a local dask.distributed cluster of 2
worker processes, and writes scaling.md with an estimate for 10^5 samples at 256^3.

    python benchmarks/perf_generate.py --scaling [--samples 32] [--size 128] [--shard-size 8]
"""

from __future__ import annotations

import argparse
import os
from contextlib import ExitStack, contextmanager
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import dask
import h5py
import numpy as np
from tqdm import tqdm

from nanoedx_dataset import __version__, generate
from nanoedx_dataset.generation.config import PRESETS, GenerationConfig
from nanoedx_dataset.generation.sample import encode, make_sample, write_encoded
from nanoedx_dataset.store import schema, writer
from nanoedx_dataset.store.schema import ELEMENTS, noise_tag
from peakrss import PeakRSS

RESULTS = Path(__file__).parent / "results"
BACKENDS_HEADING = "## Analytic vs Blender backends"  # compare_backends.py's section


def time_size(size: int, samples: int) -> tuple[dict, dict]:
    """Seconds of each stage per sample at ``size``^3 in this process, and voxelization seconds
    by family: a worker's stages (voxelize, project, noise, compress) and the writer's."""
    cfg = GenerationConfig(n=samples, size=size).validate()
    stages, by_family = defaultdict(list), defaultdict(list)
    make_sample(cfg, 0)  # build the projection matrix outside the timing
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "perf.h5"
        writer.create(path, cfg.n, size, np.array(cfg.angles), ELEMENTS, {"config": "{}"})
        tag = noise_tag(cfg.counts, cfg.background)
        writer.create_noise_group(path, tag, {"counts": 1.0, "background": 1.0, "seed": 0})
        with h5py.File(path, "r+") as f:
            counts_ds = f[schema.counts_path(tag)]
            for i in tqdm(range(samples), desc=f"{size}^3", unit="sample"):
                s = make_sample(cfg, i)
                t = time.perf_counter()
                e = encode(s)
                s.seconds["compress"] = time.perf_counter() - t
                t = time.perf_counter()
                write_encoded(f, counts_ds, e)
                s.seconds["write"] = time.perf_counter() - t
                for k, v in s.seconds.items():
                    stages[k].append(v)
                by_family[s.family].append(s.seconds["voxelize"])
        stages["MB per sample"] = [path.stat().st_size / samples / 1e6]
    return stages, by_family


def time_preset(spec: str, workers: int) -> dict:
    """Wall time, CPU time, peak resident memory (the writer and each worker, sampled every
    0.5 s) and SHA-256 of ``nanoedx generate --preset NAME [--dataset-version V]`` in a child
    process, for ``spec`` ``NAME`` or ``NAME@V``; with a version, whether the file is the
    registered release's (the registry's SHA-256)."""
    import subprocess
    import sys

    from nanoedx_dataset.release.registry import releases
    from nanoedx_dataset.store.files import sha256

    name, _, version = spec.partition("@")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"nanoedx-{name}-{version or 'x'}.h5"
        cmd = [sys.executable, "-c", "import sys; from nanoedx_models.cli import main; "
               "sys.exit(main())", "generate", "--preset", name, "--workers", str(workers),
               "--out", str(out)] + (["--dataset-version", version] if version else [])
        env = {**os.environ, "SOURCE_DATE_EPOCH": "1795737600"}
        t0, c0 = time.perf_counter(), os.times()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        with PeakRSS(proc.pid) as peak:
            proc.wait()
        wall, c1 = time.perf_counter() - t0, os.times()
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode})")
        cfg = PRESETS[name]
        digest = sha256(out)
        registered = (releases().get(name, {}).get(version, {}).get("files", {})
                      .get(out.name, "")) if version else ""
        return {"preset": spec, "n": cfg.n, "size": cfg.size, "workers": workers,
                "sha256": digest, "registered": registered.endswith(digest) if registered else None,
                "wall": wall, "cpu": (c1.children_user + c1.children_system
                                      - c0.children_user - c0.children_system),
                "rss_parent": peak.parent, "rss_worker": peak.workers,
                "rss_half": peak.by(wall / 2),
                "bytes": out.stat().st_size}


# Seconds per sample at 256^3 in one process (compute + write), from perf_generate.md.
COST_256 = 2.089 + 0.412
TARGET = 100_000


def _times(children: bool = False) -> np.ndarray:
    """User and system CPU seconds of this process (and its finished children: a closed pool)."""
    t = os.times()
    return np.array([t.user + children * t.children_user,
                     t.system + children * t.children_system])


def time_run(size: int, samples: int, **kw) -> tuple[float, np.ndarray]:
    """Wall seconds and [user, system] CPU seconds (all processes) of one ``generate`` call."""
    client = kw.get("client")

    def cpu():
        workers = sum(client.run(_times).values()) if client else 0
        return _times(children=True) + workers

    with tempfile.TemporaryDirectory() as tmp:
        c0, t = cpu(), time.perf_counter()
        generate(Path(tmp) / "out", None, n=samples, size=size, progress=False, **kw)
        wall = time.perf_counter() - t
        return wall, cpu() - c0


TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


@contextmanager
def _cluster(warm: GenerationConfig):
    """A 2-worker LocalCluster on 127.0.0.1 whose workers have computed one sample."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.run(make_sample, warm, 0)  # imports, projection matrix
        yield client


def scaling(args) -> None:
    import distributed  # noqa: F401  (its config defaults must exist before dask.config.set)

    size, n, shard = args.size, args.samples, args.shard_size
    warm = GenerationConfig(n=1, size=size).validate()
    make_sample(warm, 0)  # warm this process (imports, projection matrix)
    with ExitStack() as stack:
        # a nanny also puts its workers' variables into this process's environment, which
        # later workers inherit: start the cluster without MALLOC_TRIM_THRESHOLD_ first
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        with dask.config.set({TRIM: None}):
            untrimmed = stack.enter_context(_cluster(warm))
        client = stack.enter_context(_cluster(warm))  # dask's default sets it in every worker
        runs = [("one file", "local process", 1, {"workers": 1}),
                ("one file", "local pool", 2, {"workers": 2}),
                (f"shards of {shard}", "local process", 1, {"workers": 1, "shard_size": shard}),
                (f"shards of {shard}", "local pool", 2, {"workers": 2, "shard_size": shard}),
                (f"shards of {shard}", "dask LocalCluster", 2,
                 {"shard_size": shard, "client": client}),
                (f"shards of {shard}", "dask LocalCluster, no MALLOC_TRIM_THRESHOLD_", 2,
                 {"shard_size": shard, "client": untrimmed})]
        load, best = [os.getloadavg()[0]], {}
        # the runs take turns, `repeat` rounds; each keeps its best wall and CPU time
        for _ in tqdm(range(args.repeat), desc="scaling rounds"):
            for layout, engine, _, kw in runs:
                wall, cpu = time_run(size, n, **kw)
                w0, c0 = best.get((layout, engine), (wall, cpu))
                best[(layout, engine)] = (min(w0, wall), c0 if c0.sum() < cpu.sum() else cpu)
        load.append(os.getloadavg()[0])
    rows = [(layout, engine, workers, *best[(layout, engine)])
            for layout, engine, workers, _ in runs]
    base, base_cpu = n / rows[0][3], rows[0][4].sum() / n
    lines = [
        "# Generation scaling",
        "",
        f"`python benchmarks/perf_generate.py --scaling --samples {n} --size {size} "
        f"--shard-size {shard} --repeat {args.repeat}` on {platform.machine()}, "
        f"{os.cpu_count()} cores, nanoedx "
        f"{__version__}, {time.strftime('%Y-%m-%d %H:%M')}. All rows from one run (the "
        f"configurations take turns, {args.repeat} rounds, best of each kept), on a "
        f"machine shared with other jobs (load average {load[0]:.1f} before, {load[1]:.1f} "
        "after, on 2 cores), so the wall-clock ratios understate what 2 free cores give; the "
        "CPU seconds per sample (all processes: parent, pool or dask workers) are little "
        f"affected by the load. One `generate` call of {n} samples at {size}³ (16 angles, one "
        "noise level). This process and the cluster's workers were warmed by one sample "
        "(imports, projection matrix); a local pool's processes start fresh in each call and "
        "pay that in the table.",
        "",
        "| layout | engine | workers | wall s | samples/s | × one process | CPU s/sample "
        "(of which system) | CPU × one process |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for layout, engine, workers, wall, cpu in rows:
        lines.append(f"| {layout} | {engine} | {workers} | {wall:.1f} | {n / wall:.2f} | "
                     f"{n / wall / base:.2f} | {cpu.sum() / n:.3f} ({cpu[1] / n:.3f}) | "
                     f"{cpu.sum() / n / base_cpu:.2f} |")
    overhead = rows[-2][4].sum() / n / base_cpu  # dask as it comes
    lean = rows[-1][4].sum() / n / base_cpu
    core_h = TARGET * COST_256 * overhead / 3600
    lean_h = TARGET * COST_256 * lean / 3600
    lines += [
        "",
        "Dask's nanny starts every worker with `MALLOC_TRIM_THRESHOLD_=65536` (its config "
        "`distributed.nanny.pre-spawn-environ`). Setting it switches off glibc's adaptive "
        "mmap threshold, so each of a sample's large arrays is mapped afresh and page-faulted: "
        "the extra CPU of the dask row is mostly system time. The last row unsets it; do "
        "the same on a real cluster with a dask config file on the workers, e.g. "
        "`~/.config/dask/nanoedx.yaml` holding "
        "`distributed: {nanny: {pre-spawn-environ: {MALLOC_TRIM_THRESHOLD_: null}}}`.",
        "",
        f"**Estimate for {TARGET:,} samples at 256³.** One process spends {COST_256:.2f} s per "
        f"sample at 256³ (2.09 s compute + 0.41 s write, `perf_generate.md`). Dask workers "
        f"spent {overhead:.2f}× that CPU per sample as they come and {lean:.2f}× with "
        f"`MALLOC_TRIM_THRESHOLD_` unset, so the run is about {TARGET:,} × {COST_256:.2f} s × "
        f"{lean:.2f} = {lean_h:.0f} core-hours ({core_h:.0f} with dask's default). Each shard "
        "is computed and written by its own worker (no central writer) and shards are "
        "independent, so on dedicated single-threaded workers the time divides by their "
        f"number: 64 workers (e.g. 4 nodes × 16 cores) ≈ {lean_h / 64:.1f} h "
        f"({core_h / 64:.1f} h), 256 workers ≈ {lean_h / 256 * 60:.0f} min "
        f"({core_h / 256 * 60:.0f} min). This is a projection from CPU cost: 2 workers "
        f"here reached at best {max(n / r[3] for r in rows if r[2] == 2) / base:.2f}× one "
        "process in wall time, not 2×, because the 2 cores were shared with other jobs. "
        f"Shards of 100 samples make {TARGET // 100:,} tasks of "
        f"~{100 * COST_256 / 60:.0f} min each (enough to balance the load; a killed worker "
        "loses at most one shard) and files of ~115 MB; the database is ~115 GB (1.15 MB per "
        f"sample), written at ~{115e3 / (lean_h / 64 * 3600):.0f} MB/s in aggregate by 64 "
        "workers, well within a shared file system's bandwidth. Memory per worker is one "
        "sample's arrays plus ASTRA's projection matrix (not measured here).",
    ]
    out = Path(args.out if args.out != str(RESULTS / "perf_generate.md")
               else RESULTS / "scaling.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=24)
    ap.add_argument("--sizes", default="64,128,256")
    ap.add_argument("--out", default=str(RESULTS / "perf_generate.md"))
    ap.add_argument("--scaling", action="store_true",
                    help="time whole runs on local workers and a dask cluster (scaling.md)")
    ap.add_argument("--size", type=int, default=128, help="size of the --scaling runs")
    ap.add_argument("--shard-size", type=int, default=8, help="shard size of --scaling runs")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of --scaling runs (best kept)")
    ap.add_argument("--presets", default="",
                    help="also time whole presets, NAME or NAME@VERSION (a registered release "
                         "to check the file against), e.g. standard@0.1.2,paper@0.1.1")
    ap.add_argument("--workers", type=int, default=2, help="workers of the --presets runs")
    args = ap.parse_args()
    if args.scaling:
        scaling(args)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, families = [], {}
    for size in sizes:
        n = args.samples if size <= 128 else max(12, args.samples // 2)
        stages, fam = time_size(size, n)
        mean = {k: float(np.mean(v)) for k, v in stages.items()}
        work = mean["voxelize"] + mean["project"] + mean["noise"] + mean["compress"]
        rows.append((size, n, mean, work, float(np.max(stages["voxelize"]))))
        families[size] = fam
    presets = [time_preset(name, args.workers) for name in args.presets.split(",") if name]

    lines = [
        "# Generation speed",
        "",
        f"`python benchmarks/perf_generate.py --samples {args.samples} --sizes {args.sizes} "
        f"--presets {args.presets}` on {platform.machine()}, {os.cpu_count()} cores, nanoedx "
        f"{__version__}, {time.strftime('%Y-%m-%d')}, all numbers from this one run. The floor "
        "of a sample is its projection (ASTRA's sparse matrix, 16 angles, both elements): each "
        "stage is given in seconds per sample (one process, mean over samples that cycle "
        "through all 12 families, solid, core-shell and hollow mixed as in the presets) and as "
        "a multiple of the projection (×). A worker voxelizes, projects, draws the counts and "
        "compresses the sample's chunks; the writer (the parent process) only writes their "
        "bytes.",
        "",
        "| size | samples | voxelize | project (floor) | noise | compress | worker total "
        "| write (parent) | slowest voxelize | MB/sample |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for size, n, m, work, worst in rows:
        x = lambda v: f"{v:.3f} s ({v / m['project']:.1f}×)"  # noqa: E731
        lines.append(f"| {size}³ | {n} | {x(m['voxelize'])} | {m['project']:.3f} s | "
                     f"{x(m['noise'])} | {x(m['compress'])} | {x(work)} | {x(m['write'])} | "
                     f"{worst:.2f} s | {m['MB per sample']:.2f} |")
    if presets:
        lines += ["", f"Whole presets, `nanoedx generate --preset NAME --workers {args.workers}` "
                  "(SOURCE_DATE_EPOCH set, as the releases): wall and CPU time of all processes, "
                  "peak resident memory (VmHWM, sampled every 0.5 s) of the writer and of the "
                  "largest worker, and the largest of either by half-time (memory that grew "
                  "with the samples written would show as a later peak):", "",
                  "| preset | samples × size | wall | CPU | peak RSS writer | peak RSS worker "
                  "| peak by half-time | file | SHA-256 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in presets:
            same = {True: " (the registered release's)", False: " (not the registered "
                    "release's)", None: ""}[r["registered"]]
            lines.append(f"| {r['preset']} | {r['n']} × {r['size']}³ | "
                         f"{r['wall'] // 60:.0f} min {r['wall'] % 60:04.1f} s | "
                         f"{r['cpu']:.0f} s | {r['rss_parent'] / 1e6:.0f} MB | "
                         f"{r['rss_worker'] / 1e6:.0f} MB | {r['rss_half'] / 1e6:.0f} MB | "
                         f"{r['bytes'] / 1e6:.0f} MB | `{r['sha256'][:12]}…`{same} |")
        lines += ["", "A release whose registry entry names an earlier generator (`paper` 0.1.1: "
                  "nanoedx 0.1.0) is not rebuilt byte for byte by this one (README, Releases); "
                  "the others are."]
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
