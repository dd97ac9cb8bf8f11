"""A leaderboard's rows, its Markdown table and its files (``leaderboard.md``, ``.json``,
the example outputs and figures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nanoedx_dataset.store.files import atomic_output

from .metrics import MEASURES

DIMS = ("2d", "3d")  # a leaderboard's columns: maps (2D) and EM reconstructions (3D)


def _stats(values) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values))


def leaderboard(names, params, failed, tasks, results) -> dict:
    """The rows of every method from the scored tasks, best 2D nMAE first, then the rows with
    a 3D score only (volume methods, or a 3D-only run) by their 3D nMAE, failed rows last.

    Each row holds, per dimension, the nMAE (lower is better) and the signed bias of the total
    (best at 0; :data:`.metrics.MEASURES` says which): ``nmae2d_mean``/``_std``, per-map
    ``nmae2d``, and the same for ``bias`` and ``3d``.
    """
    rows = []
    for name in names:
        per = {(m, dim): [] for m in MEASURES for dim in DIMS}
        seconds, n_maps, errors = 0.0, 0, [failed[name]] if name in failed else []
        for t, r in zip(tasks, results):
            if name in r["errors"]:
                errors.append(r["errors"][name])
            elif name in r["scores"]:
                per["nmae", t.dim].append(r["scores"][name])
                per["bias", t.dim].append(r["bias"][name])
                seconds += r["seconds"][name]
                n_maps += 1 if t.dim == "2d" else r["maps"]
        ok = not errors
        row = {"method": name, "status": "ok" if ok else f"failed: {errors[0]}",
               "parameter": params.get(name)}
        for (m, dim), values in per.items():
            mean, std = _stats(values) if ok else (None, None)
            row |= {f"{m}{dim}_mean": mean, f"{m}{dim}_std": std}
        row["seconds_per_map"] = seconds / n_maps if ok and n_maps else None
        row |= {f"{m}{dim}": values if ok else [] for (m, dim), values in per.items()}
        rows.append(row)
    nmae = MEASURES["nmae"].key
    key = lambda r: (r["status"] != "ok", r["nmae2d_mean"] is None,
                     nmae(r["nmae2d_mean"]) if r["nmae2d_mean"] is not None
                     else nmae(r["nmae3d_mean"]) if r["nmae3d_mean"] is not None else 0.0)
    return {"rows": sorted(rows, key=key)}


def _fmt(mean, std, signed: bool = False) -> str:
    if mean is None or not np.isfinite(mean):
        return "–"
    return f"{mean:+.1f} ± {std:.1f}" if signed else f"{mean:.1f} ± {std:.1f}"


def _structures(n) -> str:
    return "" if n is None else f" (volume methods: 3D nMAE of {n} validation structures)"


def markdown(board: dict) -> str:
    """The leaderboard as a Markdown table in the order of :func:`leaderboard`; a score a
    method does not have (a volume method's 2D) is "–"."""
    data = board["data"]
    head = (f"Data: {Path(data['source']).name} ({data['dataset_version']}), split "
            f"{board['split']}, {board['counts']:g} signal + {board['background']:g} background "
            f"counts per map ({board['noise']}), seed {board['seed']}"
            f"{', quick subset' if board['quick'] else ''}; {board['n_maps_2d']} maps (2D), "
            f"{board['n_structures_3d']} structures (3D, EM {board['iterations']} iterations); "
            f"fitted methods on {board['fit_maps']} validation maps"
            f"{_structures(board.get('fit_structures'))}; nanoedx "
            f"{board['package_version']}. nMAE in %, mean ± std; lower is better. Bias: the "
            "signed error of the total in % (output vs expected signal in 2D, reconstruction "
            "vs reference volume in 3D), mean ± std; best at 0.")
    lines = [head, "", "| rank | method | 2D nMAE | 3D nMAE | 2D bias | 3D bias | parameter | "
             "s / map | status |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, r in enumerate(board["rows"], 1):
        p = "–" if r["parameter"] is None else f"{r['parameter']:.3g}"
        s = "–" if r["seconds_per_map"] is None else f"{r['seconds_per_map']:.3f}"
        lines.append(f"| {i if r['status'] == 'ok' else '–'} | {r['method']} | "
                     f"{_fmt(r['nmae2d_mean'], r['nmae2d_std'])} | "
                     f"{_fmt(r['nmae3d_mean'], r['nmae3d_std'])} | "
                     f"{_fmt(r.get('bias2d_mean'), r.get('bias2d_std'), signed=True)} | "
                     f"{_fmt(r.get('bias3d_mean'), r.get('bias3d_std'), signed=True)} | "
                     f"{p} | {s} | {r['status']} |")
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
