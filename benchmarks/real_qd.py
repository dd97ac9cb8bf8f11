"""Denoisers on real STEM-EDX maps of ZnSe/ZnS quantum dots, scored without ground truth.

The data (``qd_stem_edx.h5``: Han et al., "Deep learning STEM-EDX tomography of nanocrystals",
Nature Machine Intelligence 3, 267 (2021), bispl-kaist/Deep-Learning-STEM-EDX-Tomography,
Apache-2.0) hold single-event (0/1) count maps of Se, S and Zn: a 13-view tilt series
(``tilt_series/{Se,S,Zn}``, (13, 256, 256)) and 15 successive frames of one field
(``frames/{Se,S,Zn}`` and ``frames/haadf``, (15, 256, 256)). Two measures, both built on
:func:`nanoedx_models.evaluation.holdout.fit_score` (the output fitted to an independent count map
with a scale and an offset, its squared error net of that map's Poisson noise):

* **binomial hold-out** -- every map split in two (``q = 0.5``: the input holds half of the map's
  counts) with :func:`~nanoedx_models.evaluation.holdout.evaluate_holdout`, one call per map, so
  a fitted method chooses its parameter per map (on one half of the remainder);
* **frames** -- the sum of the even frames is denoised and scored against the sum of the odd
  frames (an independent acquisition of the same field), and vice versa; a fitted method chooses
  its parameter on one binomial half of the reference and is scored on the other.

Every method is scored on the same counts (fixed methods too are scored on the second half of the
remainder), and so is a flat prediction (the remainder's mean), whose net error is the map's own
variance. The figure of merit is ``rel = mse_net(method) / mse_net(flat)``: the fraction of the
flat prediction's error that is left (0 is perfect, 1 is no better than flat; unlike the clipped
``score``, it stays informative where the net error is negative on a sparse map). Noise: the
standard error over maps (tilt series) or a jackknife over 16 x 16-pixel blocks (frames).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from nanoedx_models.denoisers import DENOISERS
from nanoedx_models.denoisers.pretrained import registry as pretrained_models
from nanoedx_models.evaluation.auto import auto_denoise, default_candidates
from nanoedx_models.evaluation.holdout import (
    _select,
    evaluate_holdout,
    fit_score,
    resolve_methods,
    split_counts,
)

ELEMENTS = ("Se", "S", "Zn")
DEFAULT_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "real" / "qd_stem_edx.h5"
BLOCK = 16  # pixels per side of a jackknife block (frames)


def method_spec(name: str) -> str:
    """The registered spelling of a method: a pretrained model's name alone means ``unet:NAME``."""
    if name not in DENOISERS and ":" not in name and name in pretrained_models():
        return f"unet:{name}"
    return name


AUTO = "auto"  # nanoedx denoise --method auto: picks on the inputs alone, scored like the rest


def resolve(names) -> dict:
    """``{label: Denoiser}``, checked (unknown names and missing model files fail here);
    ``auto`` is run by :func:`auto_rows`, not here."""
    names = [n for n in names if n != AUTO]
    return dict(zip(names, resolve_methods([method_spec(n) for n in names])))


def _auto(inputs: np.ndarray, candidates) -> tuple[np.ndarray, dict]:
    """``auto_denoise`` of a stack of input maps: outputs, the pick and its seconds."""
    t = time.perf_counter()
    out, report = auto_denoise(inputs, candidates=candidates, repeats=1 if len(inputs) > 2 else 2)
    return out.astype(np.float64), {"pick": report.method, "parameter": report.parameter,
                                    "seconds": time.perf_counter() - t}


def load_qd(path: Path, views=None) -> dict:
    """Tilt series, frames and HAADF of the file, as int64 arrays (map, row, col)."""
    import h5py

    with h5py.File(path, "r") as f:
        idx = slice(None) if views is None else list(views)
        return {"tilt": {e: f["tilt_series"][e][idx].astype(np.int64) for e in ELEMENTS},
                "angle": f["tilt_series"]["angle"][idx].tolist(),
                "frames": {e: f["frames"][e][:].astype(np.int64) for e in ELEMENTS},
                "haadf": f["frames"]["haadf"][:].astype(np.float64)}


def drift(haadf: np.ndarray) -> dict:
    """Shifts (pixels, (row, col)) by phase cross-correlation of the HAADF images: the odd-frame
    sum against the even-frame sum, and each frame against the first."""
    from skimage.registration import phase_cross_correlation

    def shift(a, b):
        return [float(s) for s in phase_cross_correlation(a, b, upsample_factor=20)[0]]

    per = [shift(haadf[0], h) for h in haadf]
    return {"even_vs_odd": shift(haadf[0::2].sum(0), haadf[1::2].sum(0)), "per_frame": per,
            "max_per_frame": float(np.max(np.abs(per)))}


def _terms(output, ref, fit) -> np.ndarray:
    """Per-pixel terms of ``fit_score``'s ``mse_net`` (leverage neglected: ~2 / n_pixels)."""
    e = ref - fit["scale"] * output - fit["offset"]
    return e**2 - ref


def _blocks(t: np.ndarray) -> np.ndarray:
    n = t.shape[0] // BLOCK
    return t[:n * BLOCK, :n * BLOCK].reshape(n, BLOCK, n, BLOCK).sum(axis=(1, 3)).ravel()


def clipped_term(counts: np.ndarray, frames: int, share: float) -> np.ndarray:
    """Per-pixel ``p**2`` of a binary (0/1 per frame) map, to add back to ``fit_score``'s net MSE.

    ``fit_score`` removes Poisson noise (variance = mean). A detector that records at most one
    event per pixel and frame gives Bernoulli counts, variance ``p - p**2``, so it removes
    ``sum(p**2) / n`` too much -- the same for every method scored on the same counts (their
    differences are unbiased), but enough to make a flat prediction's net error come out near
    zero. ``counts`` is the sum of ``frames`` such frames; the scored map holds ``share`` of its
    events. For ``frames >= 2``, ``S (S - 1) / (frames - 1)`` is unbiased for ``sum_f p_f**2``
    (equal rates over the frames); for a single map it is estimated from a Gaussian smoothing
    (3 px) of the map, less the smoothed noise.
    """
    x = np.asarray(counts, np.float64)
    if frames >= 2:
        return x * (x - 1.0) / (frames - 1) * share**2
    from scipy import ndimage

    sigma = 3.0
    g = ndimage.gaussian_filter(x, sigma)
    noise = ndimage.gaussian_filter(x, sigma / np.sqrt(2)) / (4 * np.pi * sigma**2)
    return (g**2 - noise) * share**2


def jackknife_ratio(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """``sum(num) / sum(den)`` and its jackknife standard error over blocks."""
    k = num.size
    loo = (num.sum() - num) / (den.sum() - den)
    return float(num.sum() / den.sum()), float(np.sqrt((k - 1) / k * ((loo - loo.mean())**2).sum()))


def _bias(output: np.ndarray, inputs: np.ndarray) -> float:
    """Signed difference (%) of the output's total from the input's total counts."""
    return float(100.0 * (output.sum() / inputs.sum() - 1.0))


def holdout_maps(maps: np.ndarray, methods: dict, seed: int, desc: str, frames=1,
                 auto=None) -> dict:
    """Binomial hold-out of each map at ``q = 0.5``, every method scored on the same counts.

    Returns per method the per-map lists ``rel``, ``score`` (holdout.py's clipped relative RMSE,
    %), ``parameter``, ``bias`` (%), ``seconds`` and, for the figure, ``outputs``; and ``flat``
    (net MSE of the flat prediction, counts² per pixel, with :func:`clipped_term` ``clip``
    added to every net MSE), ``input_counts`` and ``inputs``. ``frames``: binary frames summed
    into each map (one number, or one per map). ``auto``: candidates of an ``auto`` row
    (``auto_denoise`` of all the inputs at once, scored on the same halves), or None.
    """
    out = {name: {"rel": [], "nmse": [], "score": [], "parameter": [], "bias": [], "seconds": [],
                  "outputs": []} for name in methods}
    flat, clip, counts, inputs, scoring = [], [], [], [], []
    for k, x in enumerate(tqdm(maps, desc=desc, leave=False)):
        x = x[None]
        total = float(x.sum())
        s = seed * 10_000 + k
        rng = np.random.default_rng(s)  # the split evaluate_holdout draws, then its half
        y, rem, _ = split_counts(x, total / 2, rng)
        score_rem = (rem - rng.binomial(rem, 0.5))[0]
        nf = frames if np.isscalar(frames) else frames[k]
        c = float(clipped_term(x[0], nf, 0.25).mean())  # the scored half: 1/4 of x
        f0 = fit_score(np.ones(score_rem.shape), score_rem)
        m2 = max(float(score_rem.mean()), 1e-12) ** 2
        flat.append((f0["mse_net"] + c) / m2)
        clip.append(c)
        counts.append(int(y.sum()))
        inputs.append(y[0])
        scoring.append((score_rem, f0, c, m2))
        for name, d in methods.items():
            res = evaluate_holdout(x, d, counts=total / 2, seed=s)
            if not np.array_equal(res.inputs, y):
                raise RuntimeError("the reproduced split differs from evaluate_holdout's")
            f = fit_score(res.outputs[0], score_rem)
            if d.mode == "fitted" and not np.isclose(f["mse_net"], res.mse_net[0]):
                raise RuntimeError("the reproduced scoring half differs from evaluate_holdout's")
            o = out[name]
            o["rel"].append((f["mse_net"] + c) / (f0["mse_net"] + c))
            o["nmse"].append((f["mse_net"] + c) / m2)
            o["score"].append(float(res.score[0]))
            o["parameter"].append(res.parameter)
            o["bias"].append(_bias(res.outputs[0], y[0]))
            o["seconds"].append(res.seconds)
            o["outputs"].append(res.outputs[0])
    if auto is not None:  # one pick for all the maps, made on their inputs only
        outputs, info = _auto(np.stack(inputs), auto)
        o = out[AUTO] = {"rel": [], "nmse": [], "score": [], "parameter": [], "bias": [],
                         "seconds": [], "outputs": [], "pick": info["pick"]}
        for k, (score_rem, f0, c, m2) in enumerate(scoring):
            f = fit_score(outputs[k], score_rem)
            o["rel"].append((f["mse_net"] + c) / (f0["mse_net"] + c))
            o["nmse"].append((f["mse_net"] + c) / m2)
            o["score"].append(float(f["score"]))
            o["parameter"].append(info["parameter"])
            o["bias"].append(_bias(outputs[k], inputs[k]))
            o["seconds"].append(info["seconds"] / len(scoring))
            o["outputs"].append(outputs[k])
    return {"methods": out, "flat": flat, "clip": clip, "input_counts": counts,
            "inputs": inputs}


def frames_reference(frames: np.ndarray, methods: dict, seed: int, auto=None,
                     context=None) -> dict:
    """Even-frame sum scored against the odd-frame sum and vice versa, per method.

    A series method (a context U-net) needs ``context``: ``{"maps": (element, frame, row, col),
    "haadf": (frame, row, col), "element": index of ``frames`` among the maps}``; it then sees
    the even (odd) frame sums of every element and of the HAADF images beside its input.

    Returns per direction (``"even->odd"``, ``"odd->even"``) the input and reference counts, the
    flat prediction's net MSE and per method ``rel`` with its block-jackknife SE, ``parameter``,
    ``bias`` (%), ``output`` and the block sums of the net-MSE terms (for paired differences).
    """
    halves = {"even": frames[0::2].sum(0), "odd": frames[1::2].sum(0)}
    n_frames = {"even": len(frames[0::2]), "odd": len(frames[1::2])}
    out = {}
    for i, (a, b) in enumerate((("even", "odd"), ("odd", "even"))):
        x, ref = halves[a], halves[b]
        rng = np.random.default_rng(seed * 10_000 + 9_000 + i)
        select = rng.binomial(ref, 0.5)
        score_ref = (ref - select).astype(np.float64)
        f0 = fit_score(np.ones(x.shape), score_ref)
        clip = clipped_term(ref, n_frames[b], 0.5)  # the scored half of the reference
        t0 = _blocks(_terms(np.ones(x.shape), score_ref, f0) + clip)
        rows = {}
        todo = list(methods.items()) + ([(AUTO, None)] if auto is not None else [])
        for name, d in todo:
            t = time.perf_counter()
            if d is None:  # auto: picks on the input map alone (2 binomial splits of it)
                o, info = _auto(x[None].astype(np.int64), auto)
                o, p = o[0], info["parameter"]
            elif d.scope == "series":
                p, sl = None, slice(0, None, 2) if a == "even" else slice(1, None, 2)
                stack = context["maps"][:, sl].sum(1)[:, None]
                image = context["haadf"][sl].sum(0)[None]
                o = d.series(stack, 0.0, image, [(context["element"], 0)])[0]
            else:
                p = _select(d, [(x[None], [0.0], select[None])]) if d.mode == "fitted" else d.default
                o = d(x, 0.0, p)
            f = fit_score(o, score_ref)
            tb = _blocks(_terms(o, score_ref, f) + clip)
            rel, se = jackknife_ratio(tb, t0)
            rows[name] = {"rel": rel, "se": se, "parameter": p, "bias": _bias(o, x),
                          "mse_net": f["mse_net"], "blocks": tb, "output": o,
                          "seconds": time.perf_counter() - t,
                          **({"pick": info["pick"]} if d is None else {})}
        out[f"{a}->{b}"] = {"input_counts": int(x.sum()), "reference_counts": int(ref.sum()),
                            "flat": f0["mse_net"] + float(clip.mean()), "flat_blocks": t0,
                            "clip": float(clip.mean()), "methods": rows,
                            "input": x, "reference": ref}
    return out


def run_qd(path: Path, names, seed: int = 0, views=None) -> dict:
    """All QD measures for the methods ``names`` (labels as given on the command line)."""
    methods = resolve(names)
    auto = default_candidates() if AUTO in names else None  # as nanoedx denoise --method auto
    data = load_qd(path, views)
    res = {"path": path.name, "angle": data["angle"], "drift": drift(data["haadf"]),
           "tilt": {}, "frames": {}, "frame_holdout": {}}
    for e in ELEMENTS:
        res["tilt"][e] = holdout_maps(data["tilt"][e], methods, seed, f"tilt {e}", auto=auto)
        res["tilt"][e]["totals"] = data["tilt"][e].sum(axis=(1, 2)).tolist()
        fr = data["frames"][e]
        res["frames"][e] = frames_reference(fr, methods, seed, auto=auto)
        res["frame_holdout"][e] = holdout_maps(np.stack([fr[0::2].sum(0), fr[1::2].sum(0)]),
                                               methods, seed + 1, f"frame sums {e}", frames=(8, 7),
                                               auto=auto)
        res["frames"][e]["frame_counts"] = fr.sum(axis=(1, 2)).tolist()
    return res


COMPARED = (AUTO, "unet")  # the default of nanoedx denoise, and the default U-net


def _paired(rows: dict, diff, gaussian: str) -> dict:
    """``{name: {ref: {diff, se}}}``: each of :data:`COMPARED` against the Gaussian and the
    best, by ``diff(name, ref) -> (mean, se)``."""
    best = min(rows, key=lambda n: rows[n]["rel"])
    return {n: {ref: dict(zip(("diff", "se"), diff(n, ref))) for ref in dict.fromkeys(
        (gaussian, best)) if ref in rows and ref != n} for n in COMPARED if n in rows}


def summarize(res: dict, names, gaussian: str = "gaussian-val") -> dict:
    """Per data set: mean ``rel`` and its SE per method (overall and per element), the bias per
    element, the best method, and the paired differences of ``auto`` and the default U-net from
    the Gaussian and from the best (``minus``)."""
    out = {}
    for key in ("tilt", "frame_holdout"):
        sets = res[key]

        def rel(n, els=ELEMENTS, minus=None, sets=sets):
            num = np.concatenate([np.asarray(sets[e]["methods"][n]["nmse"])
                                  - (np.asarray(sets[e]["methods"][minus]["nmse"]) if minus
                                     else 0.0) for e in els])
            return jackknife_ratio(num, np.concatenate([sets[e]["flat"] for e in els]))

        rows = {}
        for n in names:
            m = {e: sets[e]["methods"][n] for e in ELEMENTS}
            rows[n] = dict(zip(("rel", "se"), rel(n)))
            rows[n]["score"] = float(np.mean(np.concatenate([m[e]["score"] for e in ELEMENTS])))
            rows[n]["per_element"] = {
                e: dict(zip(("rel", "se"), rel(n, (e,))), bias=float(np.mean(m[e]["bias"])),
                        parameter=_median(m[e]["parameter"])) for e in ELEMENTS}
        out[key] = {"rows": rows, "minus": _paired(rows, lambda n, ref, rel=rel: rel(
            n, minus=ref), gaussian)}
    sets = {(e, d): r for e in ELEMENTS for d, r in res["frames"][e].items() if "->" in d}
    rows = {}
    for n in names:
        rows[n] = dict(zip(("rel", "se"), frames_rel(sets.values(), n)))
        rows[n]["per_element"] = {}
        for e in ELEMENTS:
            mine = [r for (el, _), r in sets.items() if el == e]
            pe = dict(zip(("rel", "se"), frames_rel(mine, n)))
            pe["bias"] = float(np.mean([r["methods"][n]["bias"] for r in mine]))
            pe["parameter"] = _median([r["methods"][n]["parameter"] for r in mine])
            rows[n]["per_element"][e] = pe
    out["frames"] = {"rows": rows, "minus": _paired(
        rows, lambda n, ref: frames_rel(sets.values(), n, ref), gaussian)}
    return out


def frames_rel(sets, name: str, minus: str | None = None) -> tuple[float, float]:
    """Mean ``rel`` of a method over frame comparisons (each weighted by its flat error), or its
    paired difference from method ``minus``, with a jackknife SE over the same blocks of all."""
    sets = list(sets)
    num = sum((r["methods"][name]["blocks"]
               - (r["methods"][minus]["blocks"] if minus else 0.0)) / r["flat"] for r in sets)
    den = sum(r["flat_blocks"] / r["flat"] for r in sets)
    return jackknife_ratio(num, den)


def _median(values):
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


def verdict(diff: float, se: float) -> str:
    """Ahead / level / behind, at two standard errors."""
    if diff < -2 * se:
        return "ahead of"
    return "behind" if diff > 2 * se else "level with (within 2 SE)"


SETS = (("tilt", "tilt series, binomial hold-out (q = 0.5, per map)"),
        ("frames", "frames, even-frame sum against odd-frame sum and vice versa"),
        ("frame_holdout", "frame sums, binomial hold-out (q = 0.5)"))


WHO = {AUTO: "`nanoedx denoise`'s default, `auto`,", "unet": "the default U-net `unet`"}


def reading(summ: dict, gaussian: str = "gaussian-val") -> list[str]:
    """One sentence per data set: the best method, and ``auto`` and the U-net against the
    Gaussian."""
    out = []
    for key, label in SETS:
        rows = summ[key]["rows"]
        best = min(rows, key=lambda n: rows[n]["rel"])
        line = (f"- **{label}**: best `{best}`, {rows[best]['rel']:.2f} ± {rows[best]['se']:.2f} "
                "of the flat prediction's error")
        for n, refs in summ[key]["minus"].items():
            d = refs.get(gaussian)
            if d is not None:
                line += (f"; {WHO.get(n, f'`{n}`')} ({rows[n]['rel']:.2f}) is "
                         f"{verdict(d['diff'], d['se'])} `{gaussian}` "
                         f"({rows[gaussian]['rel']:.2f}): difference {d['diff']:+.3f} ± "
                         f"{d['se']:.3f}")
        out.append(line + ".")
    return out


def auto_picks(qd: dict) -> list[str]:
    """What ``auto`` picked, per data set and element (empty without an ``auto`` row)."""
    picks = []
    for key, label in SETS:
        got = []
        for e in ELEMENTS:
            sets = qd[key][e]
            rows = ([sets["methods"].get(AUTO)] if key != "frames" else
                    [r["methods"].get(AUTO) for d, r in sets.items() if "->" in d])
            got += [f"{e} `{r['pick']}`" for r in rows if r is not None]
        if got:
            picks.append(f"- `auto` on the {label}: " + ", ".join(got) + ".")
    return picks


def markdown_head(raw: dict, summ: dict) -> str:
    a = raw["args"]
    cmd = "python benchmarks/real_data.py"
    if a["seed"]:
        cmd += f" --seed {a['seed']}"
    return "\n".join([
        "# Denoisers on real EDX maps", "",
        f"`{cmd}` (the quantum-dot file at `../shared/real/qd_stem_edx.h5` beside the "
        "repository, or `--qd PATH`; methods by name with `--methods` for the Bruker maps and "
        "`--qd-methods` for the quantum dots, e.g. `unet:model.pt`). Wall time "
        f"{raw['seconds'] / 60:.0f} min on 2 CPU cores ({raw['bruker_seconds'] / 60:.0f} min of "
        "it for the Bruker maps).", "",
        "## Reading", "",
        "Quantum dots (fraction of a flat prediction's error that is left, lower is better; "
        "± one standard error):", "", *reading(summ), *auto_picks(raw["qd"]), ""])


def _cell(r) -> str:
    return f"{r['rel']:.2f} ± {r['se']:.2f}"


def markdown(raw: dict, summ: dict) -> str:
    qd, names = raw["qd"], raw["args"]["qd_methods"]
    d = qd["drift"]
    tot = {e: qd["tilt"][e]["totals"] for e in ELEMENTS}
    fc = {e: qd["frames"][e]["frame_counts"] for e in ELEMENTS}
    lines = [
        "## Quantum dots: STEM-EDX of ZnSe/ZnS (Han et al., Nat. Mach. Intell. 3, 267, 2021)", "",
        f"`{qd['path']}`: Se, S and Zn single-event maps, 256×256: a tilt series of "
        f"{len(qd['angle'])} views ({min(map(min, tot.values()))}–{max(map(max, tot.values()))} "
        "counts per map) and 15 frames of one field "
        f"({min(map(min, fc.values()))}–{max(map(max, fc.values()))} counts per frame). "
        "Three measures, each the output's squared error against an independent count map "
        "(fitted with a scale and an offset, net of that map's noise: `fit_score` of "
        "`nanoedx_models.evaluation.holdout`), given as the fraction of a flat prediction's error "
        "on the same counts that is left (0 is perfect, 1 no better than flat; the paired "
        "differences use the same counts for every method):", "",
        "* **tilt hold-out**: each map split binomially in half (`evaluate_holdout`, one call per "
        "map: a fitted method chooses its parameter per map on one half of the remainder; every "
        "method is scored on the other half); SE: jackknife over the maps;",
        "* **frames**: the sum of the 8 even frames denoised and scored against the sum of the 7 "
        "odd frames, and vice versa (parameters chosen on one binomial half of the reference, "
        "scores on the other half); SE: jackknife over 16×16-pixel blocks;",
        "* **frame-sum hold-out**: the binomial hold-out on each of the two frame sums.", "",
        "The maps hold at most one event per pixel and frame (none of the 39 tilt maps has a "
        "pixel with 2 counts, where Poisson counts at these rates would give tens to hundreds), "
        "so their noise is Bernoulli (variance p − p²), not Poisson: `fit_score`'s Poisson "
        "correction removes Σp²/n too much, the same for every method on the same counts, enough "
        "to make the flat prediction's net error about −mean². It is added back: exactly (in "
        "expectation) for sums of frames, S(S − 1)/(F − 1) per pixel, and for single tilt maps from "
        "a 3-px Gaussian smoothing of the map (a normalizer only: it does not change the ranking "
        "or the differences). On single binary maps the binomial split also leaves the input and "
        "the remainder disjoint (a pixel's one event goes to one or the other), which penalizes "
        "outputs that keep single events (the raw map), and barely smooth ones.", "",
        f"Drift: phase cross-correlation of the HAADF images gives a shift of "
        f"({d['even_vs_odd'][0]:.2f}, {d['even_vs_odd'][1]:.2f}) px (row, col) between the "
        f"even- and odd-frame sums and at most {d['max_per_frame']:.1f} px between any frame and "
        "the first: no drift to correct. Tilt series: the counts per map rise from the middle "
        "views to both ends (Zn: " + ", ".join(str(t) for t in tot["Zn"]) + "), as a thicker "
        "projected path at high tilt would give, so the stored order looks like the angle "
        "order; reprojection confirms it ([qd_pipeline.md](qd_pipeline.md): reconstructions "
        "from two thirds of the tilts predict the rest better in the stored order than in any "
        "of 20 random ones). The tilt series is scored here as stored, not aligned.", "",
        "| method | tilt hold-out | frames (even ↔ odd) | frame-sum hold-out | tilt `score` (%, "
        "clipped) | s per tilt map |", "| --- | --- | --- | --- | --- | --- |"]
    order = sorted(names, key=lambda n: summ["frames"]["rows"][n]["rel"])
    for n in order:
        secs = np.mean(np.concatenate([qd["tilt"][e]["methods"][n]["seconds"] for e in ELEMENTS]))
        lines.append(f"| {n} | {_cell(summ['tilt']['rows'][n])} | "
                     f"{_cell(summ['frames']['rows'][n])} | "
                     f"{_cell(summ['frame_holdout']['rows'][n])} | "
                     f"{summ['tilt']['rows'][n]['score']:.0f} | {secs:.2f} |")
    lines += ["", "Per element (fraction of the flat error left, ± SE; median parameter of the "
              "fitted methods):", "",
              "| method | " + " | ".join(f"tilt {e} | frames {e}" for e in ELEMENTS)
              + " | parameter, tilt (Se/S/Zn) | parameter, frames (Se/S/Zn) |",
              "| --- " * (3 + 2 * len(ELEMENTS)) + "|"]
    for n in order:
        t, f = summ["tilt"]["rows"][n]["per_element"], summ["frames"]["rows"][n]["per_element"]
        par = ["/".join("–" if x[e]["parameter"] is None else f"{x[e]['parameter']:.3g}"
                        for e in ELEMENTS) for x in (t, f)]
        lines.append(f"| {n} | " + " | ".join(f"{_cell(t[e])} | {_cell(f[e])}" for e in ELEMENTS)
                     + f" | {par[0]} | {par[1]} |")
    lines += ["", "Counts conservation: the output's total against the input's total counts "
              "(signed, %; mean over the tilt maps' hold-out inputs, and over the two frame "
              "sums). The methods are given no background here (0), so a method that conserves "
              "counts shows 0:", "",
              "| method | " + " | ".join(f"tilt {e} | frames {e}" for e in ELEMENTS) + " |",
              "| --- " * (1 + 2 * len(ELEMENTS)) + "|"]
    for n in order:
        t, f = summ["tilt"]["rows"][n]["per_element"], summ["frames"]["rows"][n]["per_element"]
        lines.append(f"| {n} | " + " | ".join(f"{t[e]['bias']:+.1f} | {f[e]['bias']:+.1f}"
                                              for e in ELEMENTS) + " |")
    lines += ["", "Paired differences of `auto` (the default of `nanoedx denoise`) and of the "
              "default U-net (fraction of the flat error; negative: better than the reference "
              "method):", "", "| data set | method | against | difference | verdict |",
              "| --- | --- | --- | --- | --- |"]
    for key, label in SETS:
        for n, refs in summ[key]["minus"].items():
            for ref, v in refs.items():
                lines.append(f"| {label} | {n} | {ref} | {v['diff']:+.3f} ± {v['se']:.3f} | "
                             f"{verdict(v['diff'], v['se'])} |")
    return "\n".join(lines) + "\n"


def record(qd: dict, summ: dict) -> dict:
    """The JSON record: summaries and per-map numbers, no pixels."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()
                    if k not in ("outputs", "inputs", "output", "input", "reference", "blocks",
                                 "flat_blocks")}
        return x
    return {"path": qd["path"], "angle": qd["angle"], "drift": qd["drift"], "summary": summ,
            "tilt": strip(qd["tilt"]), "frames": strip(qd["frames"]),
            "frame_holdout": strip(qd["frame_holdout"])}


FIGURE_METHODS = ("gaussian-val", "anscombe-bm3d-val", "unet", "auto")


def figure(qd: dict, names, path: Path, full: dict) -> None:
    """Per element: the even-frame sum, a few methods' outputs and the odd-frame sum; and the
    middle tilt view's hold-out input and outputs beside the full map (``full``: the tilt
    series per element, as :func:`load_qd` reads it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nanoedx_dataset.store.files import atomic_output

    shown = [n for n in FIGURE_METHODS if n in names] or list(names)[:4]
    mid = len(qd["angle"]) // 2
    cols = 2 + len(shown)
    fig, axes = plt.subplots(6, cols, figsize=(2.3 * cols, 2.15 * 6), squeeze=False)
    for i, e in enumerate(ELEMENTS):
        r = qd["frames"][e]["even->odd"]
        t = qd["tilt"][e]
        panels = ([(f"even-frame sum (input)\n{r['input_counts']} counts", r["input"])]
                  + [(f"{n}\nleft {r['methods'][n]['rel']:.2f} of flat",
                      r["methods"][n]["output"]) for n in shown]
                  + [(f"odd-frame sum (reference)\n{r['reference_counts']} counts",
                      r["reference"])])
        tpan = ([(f"{qd['angle'][mid]:+.0f}° view, hold-out input\n{t['input_counts'][mid]} "
                  "counts", t["inputs"][mid])]
                + [(f"{n}\nleft {t['methods'][n]['rel'][mid]:.2f} of flat",
                    t["methods"][n]["outputs"][mid]) for n in shown]
                + [(f"full map\n{t['totals'][mid]} counts", full[e][mid])])
        for row, pans, tag in ((2 * i, panels, "frames"), (2 * i + 1, tpan, "tilt")):
            for ax, (title, img) in zip(axes[row], pans):
                im = ax.imshow(img, cmap="inferno", vmin=0,
                               vmax=max(float(np.percentile(img, 99.8)), 1e-9))
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=5)
                ax.set_title(title, fontsize=6)
                ax.set_xticks([])
                ax.set_yticks([])
            axes[row][0].set_ylabel(f"{e}, {tag}", fontsize=8)
    fig.suptitle("ZnSe/ZnS quantum dots, STEM-EDX: counts per pixel (inputs, references) and "
                 "expected counts (outputs); 'left': fraction of a flat prediction's error",
                 fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
