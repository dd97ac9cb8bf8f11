"""Score the pretrained U-nets against the per-map oracle Gaussian; write models.md.

    python benchmarks/eval_models.py --data nanoedx-standard-0.1.2.h5

1. The paper's 2D protocol on the standard preset: one map per structure of the val and test
   splits, the stored noise level (1000 counts + 100 background), nMAE per map.
2. Shapes outside the catalogue, made here by hand (torus, dumbbell, star of rods, peanut,
   random blob), projected at 5 angles and noised at 1000 + 100 counts.
3. Dose: the same test maps with fresh noise at 10^2, 10^3 and 10^4 counts (background 10 %).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from nanoedx_dataset import add_noise, project
from nanoedx_dataset.simulate.noise import expected_signal
from nanoedx_dataset.simulate.voxelizers.analytic import occupancy
from nanoedx_models import EDXMaps, denoise, load_pretrained
from nanoedx_models.denoisers.classical import GAUSSIAN_SIGMA, gaussian
from nanoedx_models.denoisers.registry import oracle
from nanoedx_models.evaluation.metrics import nmae
from nanoedx_models.denoisers.pretrained import registry

RESULTS = Path(__file__).parent / "results"


def handmade_shapes(size: int) -> dict[str, np.ndarray]:
    """Occupancy volumes (z, y, x) of particles no family of the catalogue draws."""
    def torus(p):
        q = np.hypot(p[:, 0], p[:, 2]) - 0.25
        return np.hypot(q, p[:, 1]) - 0.09

    def dumbbell(p):
        a = np.linalg.norm(p - [0, 0.2, 0.05], axis=1) - 0.17
        b = np.linalg.norm(p - [0, -0.2, -0.05], axis=1) - 0.13
        t = np.clip(p[:, 1] / 0.4 + 0.5, 0, 1)
        axis = np.stack([0 * t, 0.2 - 0.4 * (1 - t), 0.05 - 0.1 * (1 - t)], 1)
        rod = np.linalg.norm(p - axis, axis=1) - 0.05
        return np.minimum(np.minimum(a, b), rod)

    def star(p):
        out = np.full(len(p), np.inf)
        for d in np.eye(3) * 0.32:
            t = np.clip(p @ d / (d @ d), -1, 1)
            out = np.minimum(out, np.linalg.norm(p - t[:, None] * d, axis=1) - 0.06)
        return out

    def peanut(p):
        a = np.linalg.norm((p - [0.0, 0.12, 0.0]) / [1, 1.2, 1], axis=1) - 0.2
        b = np.linalg.norm((p - [0.0, -0.14, 0.03]) / [1, 1.1, 1], axis=1) - 0.18
        return np.minimum(a, b) * 0.8

    rng = np.random.default_rng(7)
    blob = ndimage.gaussian_filter(rng.normal(size=(size,) * 3), size / 10)
    zz, yy, xx = np.mgrid[:size, :size, :size] / size - 0.5
    blob = (blob / blob.std() - 4 * (zz**2 + yy**2 + xx**2) / 0.1 > 0.3).astype(np.float32)
    vols = {name: occupancy(fn, size) for name, fn in
            (("torus", torus), ("dumbbell", dumbbell), ("star", star), ("peanut", peanut))}
    vols["random_blob"] = ndimage.gaussian_filter(blob, 0.7)
    return vols


def score(models: dict, noisy: np.ndarray, truth: np.ndarray, background: float) -> dict:
    """Per-map nMAE of each model and the oracle Gaussian; maps (N, H, W)."""
    out = {}
    for name, net in models.items():
        t = time.perf_counter()
        pred = denoise(noisy, model=net, device="cpu")
        out[name] = [nmae(p, g) for p, g in zip(pred, truth)]
        out[name + " (s/map)"] = (time.perf_counter() - t) / len(noisy)
    out["gaussian-oracle"] = [nmae(oracle(gaussian, x, g, GAUSSIAN_SIGMA, background)[0], g)
                              for x, g in zip(noisy, truth)]
    out["noisy"] = [nmae(np.maximum(x - background / x.size, 0), g) for x, g in zip(noisy, truth)]
    return out


def figure(noisy: np.ndarray, truth: np.ndarray, names: list[str], model, out: Path) -> None:
    """Noisy, oracle Gaussian, U-net and ground truth of one 0-degree map per shape."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = ["noisy (1000 + 100 counts)", "gaussian-oracle", "unet-small", "ground truth"]
    fig, axes = plt.subplots(len(names), 4, figsize=(9, 2.3 * len(names)), squeeze=False)
    for r, (x, g) in enumerate(zip(noisy, truth)):
        panels = [ndimage.uniform_filter(x, 3), oracle(gaussian, x, g, GAUSSIAN_SIGMA, 100.0)[0],
                  denoise(x, model=model, device="cpu"), g]
        for c, img in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img, cmap="inferno", vmin=0, vmax=g.max())
            ax.set_xticks([])
            ax.set_yticks([])
            if c in (1, 2):
                ax.text(0.02, 0.02, f"nMAE {nmae(img, g):.1f} %", color="w", fontsize=8,
                        transform=ax.transAxes)
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
        axes[r, 0].set_ylabel(names[r], fontsize=9)
    fig.suptitle("Shapes outside the catalogue (noisy shown with a 3x3 mean filter)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def split_maps(data, split: str, **kw) -> tuple[np.ndarray, np.ndarray, float]:
    ds = EDXMaps(data, split, **kw)
    noisy, truth = [], []
    for i in range(len(ds)):
        raw, signal, c, b = ds.raw(i)
        noisy.append(raw)
        truth.append(signal)
    return np.array(noisy), np.array(truth), b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default=str(RESULTS / "models.md"))
    args = ap.parse_args()
    names = [n for n, e in registry().items() if e.get("file")]
    models = {n: load_pretrained(n)[0] for n in names}
    rows = {}

    for split in ("val", "test"):
        noisy, truth, b = split_maps(args.data, split)
        rows[split] = score(models, noisy, truth, b)

    size = 128
    vols = handmade_shapes(size)
    rng = np.random.default_rng(11)
    noisy, truth = [], []
    for vol in vols.values():
        proj = project(vol, [-60.0, -30.0, 0.0, 30.0, 60.0])
        noisy += list(add_noise(proj, 1000, 100, rng).astype(np.float32))
        truth += list(expected_signal(proj, 1000))
    rows["handmade"] = score(models, np.array(noisy), np.array(truth), 100.0)
    zero = slice(2, None, 5)  # the 0-degree map of each shape
    figure(np.array(noisy)[zero], np.array(truth)[zero], list(vols), models["unet-small"],
           Path(args.out).with_name("models_handmade.png"))

    dose = {}
    ds_kw = dict(background_fraction=0.1, seed=5)
    for c in (100.0, 1000.0, 10000.0):
        n, t, b = split_maps(args.data, "test", counts=c, **ds_kw)
        dose[c] = score(models, n, t, b)

    methods = names + ["gaussian-oracle", "noisy"]
    lines = ["# Pretrained models", "",
             f"`python benchmarks/eval_models.py --data {Path(args.data).name}` "
             f"({time.strftime('%Y-%m-%d')}, 2 CPU cores). nMAE in % (mean ± std over maps; "
             "lower is better). The oracle Gaussian sets its width per map by Brent "
             "minimization of the MAE against the ground truth (the paper's best case).", "",
             "## Models", "", "| model | preset | recipe | best epoch | train time |",
             "| --- | --- | --- | --- | --- |"]
    for n in names:
        e = registry()[n]
        lines.append(f"| {n} | {e['preset']} | {e['recipe']} | {e['best_epoch']} | "
                     f"{e['train_seconds'] / 60:.0f} min |")
    for n, e in registry().items():
        if not e.get("file"):
            lines.append(f"| {n} | — | {e.get('status', 'not trained')} | — | — |")
    lines += ["", "## 2D denoising at 1000 + 100 counts", "",
              "| method | val (150 maps) | test (150 maps) | hand-made shapes (25 maps) |",
              "| --- | --- | --- | --- |"]
    for m in methods:
        cells = [f"{np.mean(rows[k][m]):.1f} ± {np.std(rows[k][m]):.1f}"
                 for k in ("val", "test", "handmade")]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "Hand-made shapes (not in the catalogue): " + ", ".join(vols) + ".", "",
              "## Dose (test maps, fresh noise, background 10 % of the counts)", "",
              "| method | " + " | ".join(f"{c:g} counts" for c in dose) + " |",
              "| --- |" + " --- |" * len(dose)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{np.mean(dose[c][m]):.1f}" for c in dose) + " |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    summary = {k: {m: float(np.mean(v[m])) for m in methods} for k, v in rows.items()}
    summary["dose"] = {str(c): {m: float(np.mean(v[m])) for m in methods} for c, v in dose.items()}
    Path(args.out).with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
