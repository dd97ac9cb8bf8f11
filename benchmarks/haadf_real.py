"""Context U-nets on real data: the QD frames with the HAADF image recorded with every frame.

    python benchmarks/haadf_real.py [--data ../shared/real/qd_stem_edx.h5] [--out benchmarks/results]

The 15 frames of ``frames/`` (Se, S, Zn single-event maps and ``frames/haadf``) are split into
even and odd frames: the sum of the even frames of one element (with the even-frame sums of the
other elements and of the HAADF images beside it, for a context U-net) is denoised and scored
against the odd frames' sum, and vice versa (:func:`real_qd.frames_reference`: scale + offset
fitted on one binomial half of the reference, net squared error on the other, as a fraction of
a flat prediction's; block-jackknife SE). The frames are one field, not a tilt series: the
``tilts`` context does not apply (``unet-joint`` and ``unet-context`` need a tilt series), so
the rows are the single-map U-nets and ``unet-haadf`` beside the tuned Gaussian. Writes ``haadf_real.md`` / ``.json`` and a figure.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import real_qd
from nanoedx_dataset.inspect.plotting import pyplot, save_png

METHODS = ("gaussian-val", "unet", "unet-small", "unet-haadf")


def run(path: Path, names, seed: int = 0) -> dict:
    methods = real_qd.resolve(names)
    data = real_qd.load_qd(path)
    maps = np.stack([data["frames"][e] for e in real_qd.ELEMENTS])
    res = {}
    for k, e in enumerate(real_qd.ELEMENTS):
        context = {"maps": maps, "haadf": data["haadf"], "element": k}
        res[e] = real_qd.frames_reference(maps[k], methods, seed, context=context)
    return {"frames": res, "drift": real_qd.drift(data["haadf"]),
            "haadf_even_sum": data["haadf"][0::2].sum(0)}


def summarize(res: dict, names) -> dict:
    sets = {(e, d): r for e, per in res["frames"].items() for d, r in per.items()}
    rows = {}
    for n in names:
        rows[n] = dict(zip(("rel", "se"), real_qd.frames_rel(sets.values(), n)))
        for ref in ("gaussian-val", "unet-small"):
            if ref in names and ref != n:
                rows[n][f"minus_{ref}"] = dict(zip(("diff", "se"),
                                                   real_qd.frames_rel(sets.values(), n, ref)))
        rows[n]["per_element"] = {e: dict(zip(("rel", "se"), real_qd.frames_rel(
            [r for (el, _), r in sets.items() if el == e], n))) for e in res["frames"]}
    return rows


def markdown(rows: dict, seconds: float) -> str:
    lines = ["# Context U-nets on the real QD frames (HAADF recorded with every frame)", "",
             "Even-frame sums denoised (with the other elements' and the HAADF images' even-frame "
             "sums beside them for a context U-net) and scored against the odd-frame sums, and "
             "vice versa: the fraction of a flat prediction's error left (net of the reference's "
             "Poisson noise; lower is better) ± block-jackknife SE, over Se, S and Zn and both "
             "directions. `python benchmarks/haadf_real.py`, "
             f"{seconds / 60:.1f} min on 2 CPU cores.", "",
             "| method | rel ± SE | − gaussian-val | − unet-small | Se | S | Zn |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for n, r in sorted(rows.items(), key=lambda kv: kv[1]["rel"]):
        def diff(ref, r=r):
            d = r.get(f"minus_{ref}")
            return "–" if d is None else f"{d['diff']:+.3f} ± {d['se']:.3f}"
        per = " | ".join(f"{r['per_element'][e]['rel']:.3f}" for e in real_qd.ELEMENTS)
        lines.append(f"| {n} | {r['rel']:.3f} ± {r['se']:.3f} | {diff('gaussian-val')} | "
                     f"{diff('unet-small')} | {per} |")
    return "\n".join(lines) + "\n"


def figure(res: dict, names, out: Path) -> Path:
    plt = pyplot()
    e = "Se"
    direction = res["frames"][e]["even->odd"]
    panels = [("input (even frames)", direction["input"]),
              ("HAADF (even frames)", res["haadf_even_sum"]),
              *[(n, direction["methods"][n]["output"]) for n in names],
              ("reference (odd frames)", direction["reference"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0))
    for ax, (title, img) in zip(axes, panels):
        im = ax.imshow(img, cmap="gray" if "HAADF" in title else "magma")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    fig.suptitle(f"{e}, even-frame sum: denoised outputs (counts per pixel)", fontsize=9)
    return save_png(fig, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=real_qd.DEFAULT_PATH)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = args.methods.split(",")
    t0 = time.time()
    res = run(args.data, names)
    rows = summarize(res, names)
    seconds = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "haadf_real.md").write_text(markdown(rows, seconds))
    (args.out / "haadf_real.json").write_text(json.dumps(
        {"rows": rows, "drift": res["drift"], "seconds": seconds}, indent=2, default=float) + "\n")
    figure(res, names, args.out / "haadf_real.png")
    print(markdown(rows, seconds))


if __name__ == "__main__":
    main()
