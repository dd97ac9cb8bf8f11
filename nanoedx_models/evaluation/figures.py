"""Figures: a leaderboard's (like the paper's Fig. 2 and 3, plus nMAE against dose) and the
central orthoslices of volumes (one element per row, a colour composite of several)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nanoedx_dataset.inspect.plotting import composite, pyplot, save_png

ORTHO = ("z (xy plane)", "y (xz plane)", "x (yz plane)")


def _ok(board: dict, key: str) -> list[dict]:
    return [r for r in board["rows"] if r["status"] == "ok" and r[key] is not None]


def _subtitle(board: dict) -> str:
    return (f"{Path(board['data']['source']).name} {board['split']}, {board['counts']:g} + "
            f"{board['background']:g} counts{' (quick)' if board['quick'] else ''}")


def bar_chart(board: dict, dim: str, path: Path) -> None:
    """nMAE per method as bars with ±1 std error bars (Fig. 2b for 2d, Fig. 3b for 3d)."""
    plt = pyplot()
    rows = sorted(_ok(board, f"nmae{dim}_mean"), key=lambda r: r[f"nmae{dim}_mean"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.2))
    y = np.arange(len(rows))
    ax.barh(y, [r[f"nmae{dim}_mean"] for r in rows], xerr=[r[f"nmae{dim}_std"] for r in rows],
            color=["C3" if r["method"].startswith("unet") else "C0" for r in rows], capsize=3)
    ax.set_yticks(y, [r["method"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"{dim.upper()} nMAE (%), mean ± std, lower is better")
    n = board["n_maps_2d"] if dim == "2d" else board["n_structures_3d"]
    ax.set_title(f"{dim.upper()}: {n} {'maps' if dim == '2d' else 'structures'}, "
                 f"{_subtitle(board)}", fontsize=9)
    save_png(fig, path)


def example_maps(board: dict, examples: dict, path: Path) -> None:
    """Noisy map, each method's output and the ground truth of one test map (Fig. 2a)."""
    plt = pyplot()
    names = [r["method"] for r in _ok(board, "nmae2d_mean") if f"2d/{r['method']}" in examples]
    panels = [("noisy counts", examples["2d/_noisy"])] + [
        (n, examples[f"2d/{n}"]) for n in names] + [("ground truth", examples["2d/_truth"])]
    cols = min(len(panels), 5)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols + 1.0, 2.5 * rows),
                             squeeze=False, layout="constrained")
    vmax = float(examples["2d/_truth"].max())
    shown = {}
    for ax, (title, img) in zip(axes.flat, panels):
        shown[title] = ax.imshow(img, cmap="inferno", vmin=0,
                                 vmax=vmax if title != "noisy counts" else None)
        ax.set_title(title, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.colorbar(shown["noisy counts"], ax=axes.flat[0], label="counts", shrink=0.8)
    fig.colorbar(shown["ground truth"], ax=axes[:, -1], label="expected counts (outputs, truth)",
                 shrink=0.8)
    fig.suptitle(f"One test map, {_subtitle(board)}", fontsize=9)
    save_png(fig, path)


def example_orthoslices(board: dict, examples: dict, path: Path) -> None:
    """Central orthoslices of one structure's EM reconstruction per method (Fig. 3a)."""
    plt = pyplot()
    names = [r["method"] for r in _ok(board, "nmae3d_mean") if f"3d/{r['method']}" in examples]
    panels = [(n, examples[f"3d/{n}"]) for n in names] + [("reference", examples["3d/_truth"])]
    fig, axes = plt.subplots(3, len(panels), figsize=(1.9 * len(panels) + 1.0, 6),
                             squeeze=False, layout="constrained")
    vmax = float(examples["3d/_truth"].max())
    for j, (title, slices) in enumerate(panels):
        for i in range(3):
            im = axes[i, j].imshow(slices[i], cmap="inferno", vmin=0, vmax=vmax)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
        axes[0, j].set_title(title, fontsize=7)
    fig.colorbar(im, ax=axes[:, -1], label="counts per voxel", shrink=0.6)
    for i, label in enumerate(ORTHO):
        axes[i, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(f"EM ({board['iterations']} it.) of one test structure, {_subtitle(board)}",
                 fontsize=9)
    save_png(fig, path)


def dose_figure(boards: list[dict], path: Path, dim: str = "2d") -> None:
    """nMAE against signal counts per map, one line per method, from leaderboards at doses."""
    plt = pyplot()
    boards = sorted(boards, key=lambda b: b["counts"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    methods = [r["method"] for r in boards[0]["rows"]]
    for k, name in enumerate(methods):
        pts = [(b["counts"], r[f"nmae{dim}_mean"], r[f"nmae{dim}_std"]) for b in boards
               for r in b["rows"] if r["method"] == name and r["status"] == "ok"]
        if not pts:
            continue
        c, m, s = map(np.array, zip(*pts))
        ax.errorbar(c, m, yerr=s, marker="o", capsize=3, label=name, color=f"C{k % 10}",
                    linestyle="-" if name.startswith("unet") else "--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("signal counts per map (background 10 %)")
    ax.set_ylabel(f"{dim.upper()} nMAE (%), lower is better")
    ax.set_title(f"{dim.upper()} nMAE against dose, {Path(boards[0]['data']['source']).name} "
                 f"{boards[0]['split']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    save_png(fig, path)


def leaderboard_figures(board: dict, examples: dict, out) -> list[Path]:
    """All figures of one leaderboard into ``out``; returns the paths written."""
    out = Path(out)
    written = []
    for dim in ("2d", "3d"):
        if _ok(board, f"nmae{dim}_mean"):
            bar_chart(board, dim, out / f"leaderboard_{dim}.png")
            written.append(out / f"leaderboard_{dim}.png")
    if "2d/_truth" in examples:
        example_maps(board, examples, out / "leaderboard_maps.png")
        written.append(out / "leaderboard_maps.png")
    if "3d/_truth" in examples:
        example_orthoslices(board, examples, out / "leaderboard_orthoslices.png")
        written.append(out / "leaderboard_orthoslices.png")
    return written


def orthoslices(volume: np.ndarray) -> np.ndarray:
    """The three central slices (z, y, x planes) of a cubic volume, shape (3, n, n)."""
    v = np.asarray(volume, np.float32)
    n = v.shape[0] // 2
    return np.stack([v[n], v[:, n], v[:, :, n]])


def volume_figure(volume: np.ndarray, elements: list[str], path, title: str = "") -> Path:
    """PNG of the central orthoslices of (element, z, y, x): one row per element with its colour
    bar (scaled to the 99.9th percentile, so that a few bright voxels of a sparse
    reconstruction do not hide the rest), plus a colour composite row when there are several
    elements (like the paper's Fig. 3a / 4b)."""
    plt = pyplot()
    slices = np.stack([orthoslices(v) for v in volume])  # (element, plane, n, n)
    rows = len(elements) + (len(elements) > 1)
    fig, axes = plt.subplots(rows, 3, figsize=(8.5, 2.5 * rows + 0.4), squeeze=False,
                             layout="constrained")
    for e, name in enumerate(elements):
        for p in range(3):
            im = axes[e, p].imshow(slices[e, p], cmap="inferno", vmin=0, vmax=float(
                np.percentile(slices[e], 99.9)) or float(slices[e].max()) or 1.0)
        axes[e, 0].set_ylabel(name)
        fig.colorbar(im, ax=axes[e, -1], label="counts per voxel", shrink=0.9)
    if len(elements) > 1:
        for p in range(3):
            axes[-1, p].imshow(composite(slices[:, p]))
        axes[-1, 0].set_ylabel(" + ".join(elements))
    for p, label in enumerate(ORTHO):
        axes[0, p].set_title(label, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path)


def alignment_figure(before: np.ndarray, after: np.ndarray, angles, alignment, path,
                     title: str = "") -> Path:
    """PNG of an alignment: the shifts against the tilt angle, and the column profiles of every
    tilt (each image summed over its rows, tilts sorted by angle) as given and aligned."""
    plt = pyplot()
    a = np.asarray(angles, float)
    order = np.argsort(a)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    ax = axes[0]
    for k, label in enumerate(("row shift", "column shift")):
        ax.plot(a[order], np.asarray(alignment.shifts)[order, k], "o-", label=label)
    ax.axhline(0, color="0.6", lw=0.5)
    ax.set_xlabel("tilt angle (deg)")
    ax.set_ylabel("shift applied (pixels)")
    ax.legend(fontsize=8)
    ax.set_title(f"axis at column {alignment.axis_column:.1f}, rotation "
                 f"{alignment.rotation:+.2f} deg", fontsize=9)
    for ax, imgs, name, misfit in ((axes[1], before, "as given", alignment.misfit_before),
                                   (axes[2], after, "aligned", alignment.misfit_after)):
        prof = np.asarray(imgs, float).sum(axis=1)[order]
        im = ax.imshow(prof, aspect="auto", cmap="inferno", interpolation="nearest",
                       extent=(-0.5, prof.shape[1] - 0.5, len(a) - 0.5, -0.5))
        ax.axvline((prof.shape[1] - 1) / 2, color="c", lw=0.8, ls="--", label="centre column")
        ax.set_yticks(np.arange(len(a)), [f"{v:g}" for v in a[order]], fontsize=6)
        ax.set_xlabel("column")
        ax.set_ylabel("tilt angle (deg)" if name == "as given" else "")
        ax.set_title(f"column profiles, {name}: held-out misfit {misfit:.3f}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        fig.colorbar(im, ax=ax, label="counts per column")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path)
