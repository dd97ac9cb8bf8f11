"""Cost of ``auto`` (:func:`nanoedx_models.evaluation.auto.auto_series`) on a user-sized series.

A core-shell particle (core ``Au``, shell ``Ag``) and a support-like film (``C``, uniform with a
gradient) are projected at 13 tilts (-60..60 degrees in 10 degree steps) on 128 x 128 pixels,
upsampled to 256 x 256, and drawn at ``--counts`` counts per map (Poisson, plus a uniform
background of 10 %): 3 elements x 13 x 256 x 256 raw count maps, mostly 0 and 1 at the default
2000 counts. ``auto`` scores the default candidates on each element's maps (binomial hold-out,
one split) and applies the best; the script times the whole call and reports each element's pick.

Usage::

    python benchmarks/perf_auto.py [--counts 2000] [--repeats 1] [--out benchmarks/results]

Writes ``perf_auto.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from nanoedx_dataset import draw_spec, project, voxelize
from nanoedx_models.data.tiltio import Series
from nanoedx_models.evaluation.auto import auto_series, default_candidates

ANGLES = np.arange(-60.0, 61.0, 10.0)


def series(counts: float, seed: int = 0) -> Series:
    """3 elements x 13 tilts x 256 x 256 raw counts (core, shell, film)."""
    vol = voxelize(draw_spec(11, 0, family="cube", kind="core_shell"), 128)
    proj = project(vol, ANGLES)  # (element, angle, 128, 128)
    film = np.broadcast_to(np.linspace(0.5, 1.5, 128)[None, None, :], (1, len(ANGLES), 128, 128))
    clean = ndimage.zoom(np.concatenate([proj, film]), (1, 1, 2, 2), order=1)
    clean = np.maximum(clean, 0) / np.maximum(clean, 0).sum(axis=(2, 3), keepdims=True)
    lam = counts * clean + 0.1 * counts / clean[0, 0].size
    data = np.random.default_rng(seed).poisson(lam).astype(np.uint16)
    return Series(data, ["Au", "Ag", "C"], ANGLES)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", type=float, default=2000.0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = p.parse_args()
    s = series(a.counts)
    background = 0.1 * a.counts
    t = time.perf_counter()
    _, reports = auto_series(s, counts=None, background=background, repeats=a.repeats)
    seconds = time.perf_counter() - t
    lines = [f"# Cost of `auto`: {s.data.shape[0]} elements x {s.data.shape[1]} maps x "
             f"{s.data.shape[2]} x {s.data.shape[3]} pixels", "",
             f"`python benchmarks/perf_auto.py --counts {a.counts:g} --repeats {a.repeats}` on "
             f"{os.cpu_count()} CPU cores (shared), no GPU: **{seconds:.0f} s** in all "
             f"({seconds / s.data.shape[0]:.0f} s per element), {a.counts:g} counts per map "
             f"({a.counts / s.data[0, 0].size:.3f} per pixel) + 10 % background, candidates "
             f"{', '.join(default_candidates())}, {a.repeats} split(s), fitted parameters chosen "
             "on 4 maps.", "",
             "| element | picked | parameter | s / map of each candidate (hold-out input) |",
             "| --- | --- | --- | --- |"]
    for name, r in reports.items():
        per = ", ".join(f"{row['method']} {row['seconds_per_map']:.2f}" for row in r.rows
                        if row["seconds_per_map"] is not None and row["method"] != "flat")
        par = "–" if r.parameter is None else f"{r.parameter:.3g}"
        lines.append(f"| {name} | {r.method} | {par} | {per} |")
    lines += ["", "Score tables (nMSE: the hold-out's unclipped relative squared error):", ""]
    for name, r in reports.items():
        lines += [f"**{name}**: {r.table()}"]
    text = "\n".join(lines) + "\n"
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "perf_auto.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
