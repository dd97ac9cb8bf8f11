"""Score whole pipelines (denoiser + EM reconstruction) on a user's tilt series, without truth.

A tilt left out of a reconstruction is an independent measurement of the object: its counts
were never seen by the denoiser or the reconstruction. So every ``folds``-th tilt (in angle
order) is left out in turn; the pipeline denoises the other tilts, reconstructs them with EM,
and the reconstruction's projection at each left-out angle is scored against that tilt's raw
counts with :func:`.holdout.fit_score`: fitted with a scale and an offset (the reconstruction
has the dose of one tilt only up to that scale, and the denoisers remove the background), its
squared error net of the counts' own Poisson noise. The 2D hold-out's binomial split is not
needed for that independence; ``counts=`` thins every map first (``Binomial(x, C / sum x)``) to
score the pipelines at a lower dose, still against the left-out tilts' full counts.

The figure of merit per left-out tilt is ``nmse``: net mean squared error over the squared mean
count, lower is better (may be < 0 by noise). Methods are compared by paired per-tilt
differences, which cancel what the tilts share; ``noisy`` (EM from the raw maps, the paper's
baseline) is the reference that ``rel`` divides by. A fitted method's parameter is chosen on
the training tilts of each fold by :func:`.holdout.select_parameter` (K-fold cross-validation,
no truth); ``auto`` runs :func:`.auto.auto_denoise` on them.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from nanoedx_dataset.errors import ConfigError

from ..data.counts import check_backgrounds, check_counts
from ..denoisers.registry import Denoiser, apply
from ..reconstruction.em import reconstruct, reproject
from .holdout import fit_score, resolve_methods, select_parameter
from .metrics import standard_error

AUTO = "auto"
BASELINE = "noisy"
FOLDS = 3
SELECT_MAPS = 4  # training maps that choose a fitted method's parameter


def _denoised(method, d, maps, backgrounds, seed) -> tuple[np.ndarray, float | None]:
    """The training maps denoised by one method, and the parameter it used."""
    if method == AUTO:
        from .auto import auto_denoise

        stack, report = auto_denoise(maps, background=backgrounds, seed=seed)
        return stack.astype(np.float64), report.parameter
    p = d.default
    if d.mode == "fitted":
        p = select_parameter(maps, d, seed=seed, background=backgrounds,
                             select_maps=SELECT_MAPS)
    return np.stack([apply(d, m.astype(np.float64), float(b), p, None)[0]
                     for m, b in zip(maps, backgrounds)]), p


def resolve_pipelines(methods) -> list[tuple[str, Denoiser | None]]:
    """``(label, Denoiser)`` per method, ``(AUTO, None)`` for ``auto``; checked before any work
    as :func:`.holdout.resolve_methods` checks (no methods, unknown names, oracles)."""
    methods = list(methods)
    is_auto = [isinstance(m, str) and m == AUTO for m in methods]
    others = [m for m, auto in zip(methods, is_auto) if not auto]
    resolved = iter(resolve_methods(others) if others or not methods else ())  # none: its error
    out = []
    for auto in is_auto:
        d = None if auto else next(resolved)
        out.append((AUTO, None) if auto else (d.name, d))
    return out


def evaluate_pipelines(maps, angles, methods=("noisy", "gaussian-val", "unet"),
                       folds: int = FOLDS, iterations: int = 15, counts: float | None = None,
                       seed: int = 0, background=0.0, progress: bool = False) -> list[dict]:
    """Score denoiser + EM pipelines on one element's tilt series by left-out tilts.

    Parameters
    ----------
    maps : array-like, shape (angle, row, col)
        Raw counts of one element's aligned tilt series (rows along the tilt axis, the axis at
        the centre column).
    angles : sequence of float
        Tilt angles in degrees.
    methods : sequence of str or Denoiser
        Registered non-oracle denoisers, ``unet:PATH``, :class:`Denoiser` objects, or
        ``auto``.
    folds : int
        Every ``folds``-th tilt (in angle order) is left out in turn (2 to the number of tilts).
    iterations : int
        EM iterations.
    counts : float, optional
        Thin every map to about this many counts first (a lower dose); default: as measured.
    seed : int
        Seeds the thinning and the parameter selection.
    background : float or array-like of shape (angle,)
        Background counts of each whole map (as given, before any thinning).
    progress : bool

    Returns
    -------
    list of dict
        One row per method, in the given order: ``method``, ``status``, ``nmse_mean``,
        ``nmse_se`` (over the left-out tilts), ``rel`` (mean net error over that of ``noisy``,
        when scored), ``diff`` / ``diff_se`` (paired difference from the best), per-tilt
        ``nmse``, ``parameter`` (per fold) and ``seconds``.
    """
    x = check_counts(maps)
    a = np.asarray(angles, np.float64).ravel()
    if len(a) != len(x):
        raise ConfigError(f"{len(a)} angles for {len(x)} maps: give one angle per map")
    if not 2 <= folds <= len(a):
        raise ConfigError(f"folds must be between 2 and the {len(a)} tilts, got {folds}")
    if len(a) - int(np.ceil(len(a) / folds)) < 3:
        raise ConfigError(f"{len(a)} tilts leave too few to reconstruct from with {folds} "
                          "folds: give more tilts or more folds")
    pipelines = resolve_pipelines(methods)
    b = check_backgrounds(background, (len(x),))
    inputs = x
    if counts is not None:
        rng = np.random.default_rng(seed)
        q = np.minimum(counts / np.maximum(x.sum(axis=(1, 2)), 1), 1.0)
        inputs, b = rng.binomial(x, q[:, None, None]), b * q
    order = np.argsort(a)
    tests = [np.sort(order[j::folds]) for j in range(folds)]
    rows = []
    for name, d in tqdm(pipelines, desc="3D hold-out", disable=not progress):
        t0 = time.perf_counter()
        per_tilt = np.full(len(a), np.nan)
        mse = np.full(len(a), np.nan)
        params = []
        try:
            for test in tests:
                train = np.setdiff1d(np.arange(len(a)), test)
                den, p = _denoised(name, d, inputs[train], b[train], seed)
                params.append(p)
                vol = reconstruct(np.maximum(den, 0), a[train], iterations=iterations)
                for k, pred in zip(test, reproject(vol, a[test])):
                    f = fit_score(pred, x[k])
                    per_tilt[k], mse[k] = f["nmse"], f["mse_net"]
        except Exception as err:  # noqa: BLE001 -- a failing method fails its row only
            rows.append({"method": name, "status": f"failed: {type(err).__name__}: {err}",
                         "nmse_mean": None, "nmse_se": None, "rel": None, "diff": None,
                         "diff_se": None, "nmse": None, "parameter": None, "seconds": None})
            continue
        rows.append({"method": name, "status": "ok", "nmse_mean": float(per_tilt.mean()),
                     "nmse_se": standard_error(per_tilt), "nmse": per_tilt.tolist(),
                     "mse_net": mse,
                     "parameter": params, "seconds": time.perf_counter() - t0})
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        best = min(ok, key=lambda r: r["nmse_mean"])
        base = next((r for r in ok if r["method"] == BASELINE), None)
        for r in ok:
            diff = np.subtract(r["nmse"], best["nmse"])
            r["diff"], r["diff_se"] = float(diff.mean()), standard_error(diff)
            r["rel"] = (float(r["mse_net"].sum() / base["mse_net"].sum())
                        if base is not None and base["mse_net"].sum() > 0 else None)
    for r in rows:
        r.pop("mse_net", None)
    return rows


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    fmt = lambda v, f="{:.4g}": "–" if v is None else f.format(v)  # noqa: E731
    lines = ["| method | nMSE of left-out tilts (mean ± se) | vs best (± se) | vs noisy | "
             "s | status |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['method']} | {fmt(r['nmse_mean'])} ± {fmt(r['nmse_se'], '{:.2g}')} "
                     f"| {fmt(r['diff'], '{:+.3g}')} ± {fmt(r['diff_se'], '{:.2g}')} | "
                     f"{fmt(r['rel'], '{:.3f}')} | {fmt(r['seconds'], '{:.1f}')} | "
                     f"{r['status']} |")
    return "\n".join(lines) + "\n"


__all__ = ["evaluate_pipelines", "resolve_pipelines", "table"]
