"""Does the ground-truth-free hold-out score rank denoisers as the ground truth does?

Simulated maps of the embedded ``mini`` release (val and test splits), drawn at a high dose
(1e5 signal + 1e4 background counts), play the part of a user's long acquisition. Each is split
binomially into a 1000-count input and a remainder
(:func:`nanoedx_models.evaluation.holdout.evaluate_holdout`); every method denoises the same inputs and
gets three numbers:

* the hold-out score (no ground truth);
* what the hold-out score estimates, from the ground truth: the relative RMSE of the output,
  fitted with a scale and an offset, against the expected remainder ``(1 - q) * lambda``;
* the benchmark's nMAE against the expected signal at the input's dose.

Usage::

    python benchmarks/holdout_agreement.py [--seed 0] [--out benchmarks/results]

Writes ``holdout_agreement.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from nanoedx_dataset.store.files import atomic_output
from nanoedx_models import EDXMaps
from nanoedx_models.denoisers.classical import gaussian
from nanoedx_models.denoisers import Denoiser
from nanoedx_models.evaluation.holdout import evaluate_holdout
from nanoedx_models.evaluation.metrics import nmae

COUNTS, HIGH, BACKGROUND = 1000.0, 1e5, 1e4
METHODS = ("noisy", Denoiser("gaussian-0.7", gaussian, "fixed", default=0.7),
           Denoiser("gaussian-5", gaussian, "fixed", default=5.0), "gaussian-val", "tv-val",
           "anscombe-nlm-val", "anscombe-bm3d-val", "unet", "unet-multidose")


def true_rmse(output: np.ndarray, expected: np.ndarray) -> float:
    """Relative RMSE (%) of ``output`` after its best scale and offset against ``expected``."""
    mu = expected.ravel()
    design = np.stack([output.ravel(), np.ones_like(mu)], axis=1)
    resid = mu - design @ np.linalg.lstsq(design, mu, rcond=None)[0]
    return float(100 * np.sqrt(resid @ resid / mu.size) / mu.mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    pairs = [ds.raw(i) for split in ("val", "test")
             for ds in [EDXMaps("mini", split, counts=HIGH, background=BACKGROUND,
                                seed=args.seed)] for i in range(len(ds))]
    x = np.stack([p[0] for p in pairs]).astype(np.int64)
    signal = np.stack([p[1] for p in pairs]).astype(np.float64)
    lam = signal + BACKGROUND / signal[0].size
    rows = []
    for m in tqdm(METHODS, desc="methods"):
        res = evaluate_holdout(x, m, COUNTS, args.seed, background=BACKGROUND)
        rows.append({
            "method": res.method, "parameter": res.parameter, "holdout": res.score_mean,
            "holdout_std": float(np.std(res.score)),
            "true_rmse": float(np.mean([true_rmse(o, (1 - q) * g)
                                        for o, g, q in zip(res.outputs, lam, res.q)])),
            "nmae": float(np.mean([nmae(o, g * q)
                                   for o, g, q in zip(res.outputs, signal, res.q)]))})
    rows.sort(key=lambda r: r["holdout"])
    col = {k: [r[k] for r in rows] for k in ("holdout", "true_rmse", "nmae")}
    rho_rmse = spearmanr(col["holdout"], col["true_rmse"]).statistic
    rho_nmae = spearmanr(col["holdout"], col["nmae"]).statistic
    lines = [
        "# Hold-out score vs ground truth (simulated maps)", "",
        f"`python benchmarks/holdout_agreement.py --seed {args.seed}`: {len(x)} maps (val + test "
        f"of the embedded `mini` release, 64×64) at {HIGH:g} + {BACKGROUND:g} counts, each split "
        f"into a {COUNTS:g}-count input and a remainder. Means over the maps, lower is better. "
        "*hold-out*: the score without ground truth; *true*: what it estimates (relative RMSE of "
        "the output after its best scale and offset against the expected remainder); *nMAE*: "
        "against the expected signal at the input's dose. Fitted methods chose their parameter "
        "on half of the remainder.", "",
        "| method | hold-out (%) | true (%) | nMAE (%) | parameter |",
        "| --- | --- | --- | --- | --- |"]
    for r in rows:
        p = "–" if r["parameter"] is None else f"{r['parameter']:.3g}"
        lines.append(f"| {r['method']} | {r['holdout']:.1f} ± {r['holdout_std']:.1f} | "
                     f"{r['true_rmse']:.1f} | {r['nmae']:.1f} | {p} |")
    lines += ["", f"Spearman correlation over the {len(rows)} methods: hold-out vs true "
              f"{rho_rmse:.2f}, hold-out vs nMAE {rho_nmae:.2f}."]
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.out / "holdout_agreement.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    with atomic_output(args.out / "holdout_agreement.json") as tmp:
        tmp.write_text(json.dumps({"seed": args.seed, "n_maps": len(x), "rows": rows,
                                   "spearman_true": rho_rmse, "spearman_nmae": rho_nmae},
                                  indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
