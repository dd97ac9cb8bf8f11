"""A leaderboard's rows, its Markdown table and its files (``leaderboard.md``, ``.json``,
the example outputs and figures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nanoedx_dataset.store.files import atomic_output

DIMS = ("2d", "3d")  # a leaderboard's columns: maps (2D) and EM reconstructions (3D)


def _stats(values) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values))


def leaderboard(names, params, failed, tasks, results) -> dict:
    """The rows of every method from the scored tasks, best first, failed rows last."""
    rows = []
    for name in names:
        per = {"2d": [], "3d": []}
        seconds, n_maps, errors = 0.0, 0, [failed[name]] if name in failed else []
        for t, r in zip(tasks, results):
            if name in r["errors"]:
                errors.append(r["errors"][name])
            elif name in r["scores"]:
                per[t.dim].append(r["scores"][name])
                seconds += r["seconds"][name]
                n_maps += 1 if t.dim == "2d" else r["maps"]
        m2, s2 = _stats(per["2d"])
        m3, s3 = _stats(per["3d"])
        ok = not errors
        rows.append({"method": name, "status": "ok" if ok else f"failed: {errors[0]}",
                     "parameter": params.get(name), "nmae2d_mean": m2 if ok else None,
                     "nmae2d_std": s2 if ok else None, "nmae3d_mean": m3 if ok else None,
                     "nmae3d_std": s3 if ok else None,
                     "seconds_per_map": seconds / n_maps if ok and n_maps else None,
                     "nmae2d": per["2d"] if ok else [], "nmae3d": per["3d"] if ok else []})
    key = lambda r: (r["status"] != "ok", r["nmae2d_mean"] if r["nmae2d_mean"] is not None
                     else r["nmae3d_mean"] or 0.0)
    return {"rows": sorted(rows, key=key)}


def _fmt(mean, std) -> str:
    return "–" if mean is None else f"{mean:.1f} ± {std:.1f}"


def markdown(board: dict) -> str:
    """The leaderboard as a Markdown table, best 2D nMAE first, failed rows last."""
    data = board["data"]
    head = (f"Data: {Path(data['source']).name} ({data['dataset_version']}), split "
            f"{board['split']}, {board['counts']:g} signal + {board['background']:g} background "
            f"counts per map ({board['noise']}), seed {board['seed']}"
            f"{', quick subset' if board['quick'] else ''}; {board['n_maps_2d']} maps (2D), "
            f"{board['n_structures_3d']} structures (3D, EM {board['iterations']} iterations); "
            f"fitted methods on {board['fit_maps']} validation maps; nanoedx "
            f"{board['package_version']}. nMAE in %, mean ± std; lower is better.")
    lines = [head, "", "| rank | method | 2D nMAE | 3D nMAE | parameter | s / map | status |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for i, r in enumerate(board["rows"], 1):
        p = "–" if r["parameter"] is None else f"{r['parameter']:.3g}"
        s = "–" if r["seconds_per_map"] is None else f"{r['seconds_per_map']:.3f}"
        lines.append(f"| {i if r['status'] == 'ok' else '–'} | {r['method']} | "
                     f"{_fmt(r['nmae2d_mean'], r['nmae2d_std'])} | "
                     f"{_fmt(r['nmae3d_mean'], r['nmae3d_std'])} | {p} | {s} | {r['status']} |")
    return "\n".join(lines) + "\n"


def write(board: dict, out, examples: dict | None = None, figures: bool = False) -> None:
    """Write ``leaderboard.{md,json}`` (and the examples, figures) into the folder ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / "leaderboard.json") as tmp:
        tmp.write_text(json.dumps(board, indent=1) + "\n")
    with atomic_output(out / "leaderboard.md") as tmp:
        tmp.write_text(markdown(board))
    if examples:
        with atomic_output(out / "leaderboard_examples.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **examples)
    if figures:
        from .figures import leaderboard_figures

        leaderboard_figures(board, examples or {}, out)
