"""Does self-supervised adaptation (``nanoedx adapt``) help on real STEM-EDX maps?

Data: ``qd_stem_edx.h5`` (ZnSe/ZnS quantum dots, Han et al., Nat. Mach. Intell. 3, 267 (2021);
see ``../shared/real/README.md``): a 13-view tilt series and 15 frames of one field, Se, S and Zn,
0/1 counts per pixel. No ground truth; every score is the binomial hold-out of
:mod:`nanoedx_models.evaluation.holdout` (the output of a denoiser fitted to an independent
remainder with a scale and an offset, net of the remainder's Poisson noise), and the adapted
model never sees the counts that score it:

* ``frames``: adapt on the sum of the odd frames (one map per element); score on the sum of the
  even frames, split binomially into a half-count input and its remainder, over ``--repeats``
  splits.
* ``tilts``: adapt on the even-numbered tilts (7 x 3 maps); score the 6 odd-numbered tilts
  (18 maps), each split into a ``--tilt-counts`` input and its remainder.
* ``same maps``: split every tilt map once; adapt on the 39 inputs, denoise those inputs and
  score against their remainders (the user's case: adapt on the maps one denoises).

Methods: a flat map (the mean; the reference every error is divided by), the raw input,
``gaussian-val`` (width chosen on half the remainder), the embedded U-nets ``unet`` (the
default), ``unet-multidose`` and ``unet-fields``, and the adapted model, applied to the full
input (as ``nanoedx denoise`` does) or averaged over 8 binomial halves of it.

Usage::

    python benchmarks/adapt_real.py [--data PATH] [--steps 300] [--out benchmarks/results]

Writes ``adapt_real.md``, ``adapt_real.json`` and ``adapt_real.png``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import matplotlib
import numpy as np
import torch

from nanoedx_dataset.store.files import atomic_output
from nanoedx_models import adapt, denoise, load_model
from nanoedx_models.evaluation.holdout import evaluate_holdout, split_counts
from nanoedx_models.training.adapt import denoise_splits

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# ../shared/real beside the repository (or beside the folder of a worktree)
DATA = next((d / "shared" / "real" / "qd_stem_edx.h5" for d in Path(__file__).resolve().parents[2:4]
             if (d / "shared" / "real" / "qd_stem_edx.h5").is_file()), None)
ELEMENTS = ("Se", "S", "Zn")
FIXED = ("noisy", "gaussian-val", "unet", "unet-multidose", "unet:unet-fields")
SPLITS = 8  # binomial halves averaged by the "adapted, 8 splits" method


def flat(counts):
    """The mean of the input everywhere: what every error is compared with."""
    return np.full(counts.shape, counts.mean())


def methods(model_path: Path):
    """The compared methods: registered names and the adapted model, two ways."""
    net = load_model(model_path)[0]

    def adapted(counts):
        return denoise(counts, model=net, device="cpu")

    def adapted_splits(counts):
        return denoise_splits(counts.astype(np.int64), net, splits=SPLITS, device="cpu")

    adapted_splits.__name__ = f"adapted, {SPLITS} splits"
    return [flat, *FIXED, adapted, adapted_splits]


def name_of(m) -> str:
    return m if isinstance(m, str) else m.__name__


def score(maps, counts: float, seed: int, model_path: Path) -> dict:
    """Per-map hold-out rows of every method on one split: ``{method: {nmse, score, sum}}``."""
    rows = {}
    for m in methods(model_path):
        r = evaluate_holdout(maps, m, counts=counts, seed=seed)
        rows[name_of(m)] = {"nmse": r.nmse, "score": r.score, "parameter": r.parameter,
                            "conservation": r.outputs.sum((1, 2)) / r.input_counts,
                            "outputs": r.outputs, "inputs": r.inputs}
    return rows


def summarize(runs: list[dict]) -> list[dict]:
    """Each method's mean net squared error over maps (and splits) as a fraction of the flat
    map's (a ratio of means: one map's flat error can be ~0 within its noise), with its
    standard error from the per-map differences, and the paired difference to the default
    U-net in the same units."""
    def pooled(m):
        return np.concatenate([r[m]["nmse"] for r in runs])

    norm = abs(float(pooled("flat").mean()))
    se = lambda v: float(np.std(v, ddof=1) / np.sqrt(len(v)) / norm)  # noqa: E731
    out = []
    for m in runs[0]:
        cons = np.concatenate([r[m]["conservation"] for r in runs])
        score_ = np.concatenate([r[m]["score"] for r in runs])
        out.append({"method": m, "rel_nmse": float(pooled(m).mean()) / norm,
                    "rel_nmse_se": se(pooled(m) - pooled("flat")),
                    "minus_unet": float((pooled(m) - pooled("unet")).mean()) / norm,
                    "minus_unet_se": se(pooled(m) - pooled("unet")),
                    "score": float(score_.mean()), "conservation": float(cons.mean()),
                    "parameter": runs[0][m]["parameter"], "n": int(len(cons)),
                    "flat_nmse": norm})
    return out


def single_event_check(tilts, frames, a) -> list[dict]:
    """Why the hold-out needs Poisson counts: on maps of at most one count per pixel with a
    high local rate, the halves of a binomial split are not independent (a pixel counted in
    one half is empty in the other), and the hold-out's noise term (variance = mean) takes
    out the whole structure: the flat map's net error comes out at about -1 (x mean^2)."""
    from scipy import ndimage

    from nanoedx_models.evaluation.holdout import fit_score

    rows = []
    for name, maps, counts in (("tilt maps", tilts.reshape(-1, *tilts.shape[-2:]),
                                a.tilt_counts),
                               ("even frames' sums", frames[:, 0::2].sum(1), None)):
        nmse, peak = [], []
        for i, m in enumerate(maps):
            c = float(m.sum() // 2) if counts is None else counts
            y, r, _ = split_counts(m, c, a.seed + i)
            nmse.append(fit_score(np.full(y[0].shape, 1.0), r[0])["nmse"])
            peak.append(float(ndimage.gaussian_filter(m.astype(float), 4).max()))
        rows.append({"maps": name, "max_count": int(maps.max()), "flat_nmse": float(np.mean(nmse)),
                     "peak_rate": float(np.median(peak))})
    return rows


def adapt_timed(maps, out: Path, a) -> dict:
    t = time.perf_counter()
    adapt(maps, out, steps=a.steps, batch_size=a.batch_size, crop=a.crop, lr=a.lr, seed=a.seed,
          device="cpu", progress=False)
    history = load_model(out)[1]["history"]
    return {"seconds": time.perf_counter() - t, "maps": int(len(maps)),
            "loss_first20": float(np.mean(history[:20])),
            "loss_last20": float(np.mean(history[-20:]))}


def run(a) -> dict:
    with h5py.File(a.data, "r") as f:
        frames = np.stack([f["frames"][e][()] for e in ELEMENTS]).astype(np.int64)
        tilts = np.stack([f["tilt_series"][e][()] for e in ELEMENTS]).astype(np.int64)
    work = Path(tempfile.mkdtemp(prefix="adapt_real_"))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
    report, examples = {"settings": settings}, {}

    odd, even = frames[:, 1::2].sum(1), frames[:, 0::2].sum(1)
  # (element, row, col)
    info = adapt_timed(odd, work / "frames.pt", a)
    runs = []
    for rep in range(a.repeats):
        rows = {}
        for e in range(len(ELEMENTS)):  # half of each even sum as the input
            per = score(even[e:e + 1], float(even[e].sum() // 2), a.seed + rep, work / "frames.pt")
            for m, r in per.items():
                rows.setdefault(m, []).append(r)
        runs.append({m: {k: (np.concatenate([x[k] for x in rs]) if k != "parameter"
                             else rs[0][k]) for k in rs[0]} for m, rs in rows.items()})
    examples["frames"] = runs[0]
    report["frames"] = {"adapt": info, "rows": summarize(runs),
                        "even_counts": even.sum((1, 2)).tolist(),
                        "odd_counts": odd.sum((1, 2)).tolist()}

    report["single-event check"] = single_event_check(tilts, frames, a)
    if "tilts" not in a.parts:
        return report, examples
    train, held = tilts[:, 0::2].reshape(-1, *tilts.shape[-2:]), tilts[:, 1::2]
    held = held.reshape(-1, *tilts.shape[-2:])
    info = adapt_timed(train, work / "tilts.pt", a)
    rows = score(held, a.tilt_counts, a.seed, work / "tilts.pt")
    examples["tilts"] = rows
    report["tilts"] = {"adapt": info, "rows": summarize([rows]),
                       "held_counts": held.sum((1, 2)).tolist()}

    every = tilts.reshape(-1, *tilts.shape[-2:])
    inputs, _, _ = split_counts(every, a.tilt_counts, np.random.default_rng(a.seed))
    info = adapt_timed(inputs, work / "same.pt", a)
    rows = score(every, a.tilt_counts, a.seed, work / "same.pt")  # the same split: seed
    assert np.array_equal(rows["flat"]["inputs"], inputs)
    report["same maps"] = {"adapt": info, "rows": summarize([rows])}
    return report, examples


def markdown(report: dict, a) -> str:
    s = report["settings"]
    lines = [
        "# Self-supervised adaptation on real STEM-EDX maps (quantum dots)",
        "",
        f"`python benchmarks/adapt_real.py --steps {s['steps']} --batch-size {s['batch_size']} "
        f"--crop {s['crop']} --lr {s['lr']} --seed {s['seed']} --repeats {s['repeats']} "
        f"--tilt-counts {s['tilt_counts']:g} --parts {s['parts']}`. Data: `qd_stem_edx.h5` (ZnSe/ZnS quantum dots, "
        "Han et al., Nat. Mach. Intell. 3, 267 (2021)); Se, S, Zn maps of 0/1 counts per pixel, "
        "256 x 256 px. No ground truth: each score is the binomial hold-out "
        "(`nanoedx evaluate`): the output for a low-dose input is fitted to an independent "
        "remainder (scale + offset) and its squared error net of the remainder's Poisson noise "
        "is reported. **rel. error** is that error, summed over maps, as a fraction of a flat "
        "map's (1 = no better than the mean, 0 = perfect) ± the standard error of its "
        "per-map difference to the flat map's; **vs unet** the paired "
        "difference to the default U-net in the same units (negative: better than it); "
        "**counts** the output's total over the input's (the pretrained U-nets remove the "
        "background they learned; the adapted model keeps all counts). The adapted model starts "
        "from the default U-net and never sees the counts that score it.",
        ""]
    titles = {
        "frames": "Frames: adapted on the odd frames' sum, scored on the even frames' sum "
                  f"(half its counts in, half as the reference; {s['repeats']} splits x 3 "
                  "elements; the splits share the same data, so the error bar is optimistic)",
        "tilts": "Tilt series: adapted on the 7 even-numbered tilts, scored on the 6 "
                 f"odd-numbered ones (18 maps, {s['tilt_counts']:g}-count inputs)",
        "same maps": "Tilt series, the user's case: adapted on the low-dose inputs of all 39 "
                     "maps, scored on the same inputs against their remainders"}
    for key, title in titles.items():
        if key not in report:
            continue
        part = report[key]
        ad = part["adapt"]
        lines += [f"## {title}", "",
                  f"Adaptation: {ad['maps']} maps, {ad['seconds']:.0f} s on the CPU; loss per "
                  f"target count {ad['loss_first20']:.4f} (first 20 steps) -> "
                  f"{ad['loss_last20']:.4f} (last 20).", "",
                  "| method | rel. error | vs unet | hold-out score (%) | counts | parameter |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in sorted(part["rows"], key=lambda r: r["rel_nmse"]):
            par = "–" if r["parameter"] is None else f"{r['parameter']:.3g}"
            lines.append(f"| {r['method']} | {r['rel_nmse']:.3f} ± {r['rel_nmse_se']:.3f} | "
                         f"{r['minus_unet']:+.3f} ± {r['minus_unet_se']:.3f} | "
                         f"{r['score']:.1f} | {r['conservation']:.2f} | {par} |")
        lines.append("")
    lines += ["## Single-event check: where the binomial split is valid", "",
              "Adaptation and the hold-out both need the two halves of a split to be "
              "independent, which holds for Poisson counts. A map that records at most one "
              "count per pixel is not Poisson where the local rate is high: a pixel counted in "
              "one half is empty in the other, and the hold-out's noise term (variance = mean) "
              "then removes the whole structure, so that a flat map's net error comes out near "
              "-1 (in units of the mean squared) instead of a clear positive value.", "",
              "| maps | max count per pixel | flat map's net error (nmse) | local rate at the "
              "brightest spot (counts / px, Gaussian sigma 4 px, median over maps) |",
              "| --- | --- | --- | --- |"]
    for r in report["single-event check"]:
        lines.append(f"| {r['maps']} | {r['max_count']} | {r['flat_nmse']:+.2f} | "
                     f"{r['peak_rate']:.3f} |")
    return "\n".join(lines) + "\n"


def figure(examples: dict, report: dict, path: Path) -> None:
    show = ("input", "gaussian-val", "unet", "unet:unet-fields", "adapted")
    panels = [("frames", 2, "even frames, Zn"), ("tilts", 2 * 6 + 3, "held-out tilt, Zn")]
    panels = [p for p in panels if p[0] in examples]
    fig, axes = plt.subplots(len(panels), len(show) + 1, figsize=(3.1 * (len(show) + 1),
                                                                  3.2 * len(panels)),
                             squeeze=False)
    for row, (key, i, label) in enumerate(panels):
        ex = examples[key]
        for col, m in enumerate(show):
            img = ex["flat"]["inputs"][i] if m == "input" else ex[m]["outputs"][i]
            ax = axes[row, col]
            im = ax.imshow(img, cmap="magma")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="counts / px")
            ax.set_title(f"{label}\n{m}" if col == 0 else m, fontsize=9)
            ax.axis("off")
        rows = sorted(report[key]["rows"], key=lambda r: r["rel_nmse"])
        ax = axes[row, -1]
        ax.barh([r["method"] for r in rows], [r["rel_nmse"] for r in rows],
                xerr=[r["rel_nmse_se"] for r in rows], color="tab:blue")
        ax.invert_yaxis()
        ax.set_xlabel("hold-out error / flat map's")
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=5, help="hold-out splits of the frames")
    p.add_argument("--tilt-counts", type=float, default=450.0,
                   help="counts per hold-out input of the tilt maps")
    p.add_argument("--parts", default="frames",
                   help="frames, or frames,tilts to also adapt on and score the tilt series "
                   "(not valid there: see the single-event check)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = p.parse_args()
    if a.data is None:
        p.error("no qd_stem_edx.h5 found in ../shared/real: give --data PATH")
    torch.set_num_threads(1)  # small networks: one thread is faster on a shared 2-core machine
    t = time.perf_counter()
    report, examples = run(a)
    report["seconds"] = time.perf_counter() - t
    a.out.mkdir(parents=True, exist_ok=True)
    with atomic_output(a.out / "adapt_real.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1, default=float) + "\n")
    with atomic_output(a.out / "adapt_real.md") as tmp:
        tmp.write_text(markdown(report, a) + f"\nTotal run time: {report['seconds'] / 60:.1f} "
                       "min on 2 CPU cores (one torch thread).\n")
    figure(examples, report, a.out / "adapt_real.png")
    print((a.out / "adapt_real.md").read_text())


if __name__ == "__main__":
    main()
