"""Score denoisers on a user's own count maps, without ground truth (binomial hold-out).

A measured map ``x`` (Poisson, expected counts ``lam`` per pixel) is split binomially:
``y ~ Binomial(x, q)`` with ``q = counts / sum(x)`` and ``r = x - y``. Then ``y`` and ``r`` are
independent Poisson maps with means ``q * lam`` and ``(1 - q) * lam`` (Poisson thinning), so
``y`` is a genuine low-dose acquisition of ``counts`` counts and ``r`` an independent look at
the same object. The denoiser sees ``y`` only; its output ``d`` is fitted to ``r`` by least
squares with a scale and an offset, ``r ~ a * d + b``, and the squared residual is corrected for
the remainder's own Poisson noise, which the remainder estimates itself (variance = mean).

The metric, and why
-------------------
With ``mu = (1 - q) * lam``, ``A = [d, 1]`` and the hat matrix ``H = A A^+`` (fixed given ``y``,
since ``d`` depends on ``y`` alone), the residual is ``e = (I - H) r`` and, exactly,
``E|e|^2 = |(I - H) mu|^2 + sum_j (1 - H_jj) mu_j``. ``sum_j (1 - H_jj) r_j`` is an unbiased
estimate of the second term (it is ``sum(r)`` less the two degrees of freedom of the fit), so

    mse_net = (|e|^2 - sum_j (1 - H_jj) r_j) / n_pixels

is an unbiased estimate of ``|(I - H) mu|^2 / n``: the mean squared error, against the true
expected map, of the denoised map after its best scale and offset. It is reported as a relative
RMSE, ``score = 100 * sqrt(max(mse_net, 0)) / mean(r)`` in % of the mean expected count (lower
is better; 0 for a perfect denoiser, up to statistical noise). The scale and offset make the
score blind to a wrong overall intensity and to a uniform background left in or taken out, so it
ranks how well a method recovers the *shape* of the map, which is what a reconstruction and a
quantification that normalizes per element need. An L1 error (the nMAE of the benchmark) cannot
be de-noised like this: ``E|r - f|`` for a Poisson ``r`` is not ``|mu - f|`` plus a term
independent of ``f``, so no statistic of ``r`` alone removes the noise floor; the squared error
is the one whose noise term is known (the Poisson variance is the mean).

Parameters of the methods: ``fixed`` methods run as they are; ``oracle`` methods need the truth
and are refused (use the ``-val`` variant); a ``fitted`` method uses ``parameter=`` if given,
otherwise its parameter is chosen without ground truth by minimizing this same hold-out score,
on one binomial half of the remainder, and is scored on the other half, so selection and
scoring never see the same counts (the half-remainder score estimates the same relative error,
with a little more noise).

A parameter chosen at the hold-out's dose suits maps of that dose: a Gaussian filter's best
width grows as the counts fall. To denoise the full maps, :func:`select_parameter` chooses it
near their own dose by K-fold cross-validation: the counts of each map are split multinomially
into ``folds`` independent Poisson parts; each part in turn is the remainder that scores the
method run on the other ``folds - 1`` parts (a fraction ``1 - 1/folds`` of the dose), with the
same fit and noise correction, and the parameter minimizes the mean over the folds and maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar
from tqdm.auto import tqdm

from nanoedx_dataset.errors import ConfigError
from nanoedx_dataset.simulate.noise import check_dose

from ..data.counts import check_backgrounds, check_counts
from ..denoisers import DENOISERS, Denoiser, denoiser
from ..denoisers.registry import FIT_XATOL, apply

MIN_REMAINDER = 1.0  # the remainder must hold at least as many counts as the input


@dataclass
class HoldoutResult:
    """Hold-out scores of one method on a stack of maps (per-map arrays have shape (map,)).

    Attributes
    ----------
    method : str
    counts : float
        Requested counts per input map.
    score : ndarray
        Relative RMSE in % of the mean expected remainder count, net of Poisson noise, after the
        fit ``r ~ scale * d + offset`` (clipped at 0 before the square root).
    nmse : ndarray
        ``mse_net / mean(r)**2``: the unclipped, unbiased relative squared error (may be < 0).
    mse_net, noise : ndarray
        Net mean squared error and the Poisson noise term removed (counts² per pixel).
    scale, offset : ndarray
        The least-squares fit of the remainder to the output (offset in counts per pixel).
    q : ndarray
        Fraction of each map's counts given to the denoiser.
    input_counts, remainder_counts : ndarray
        Counts of the input and of the remainder that scored it.
    parameter : float or None
        The method's parameter (given, chosen on the hold-out, or its default).
    seconds : float
        Denoising time of the scored run.
    inputs, outputs : ndarray, shape (map, row, col)
        The low-dose inputs (counts) and the denoised outputs (expected counts of the input).
    """

    method: str
    counts: float
    score: np.ndarray
    nmse: np.ndarray
    mse_net: np.ndarray
    noise: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    q: np.ndarray
    input_counts: np.ndarray
    remainder_counts: np.ndarray
    parameter: float | None
    seconds: float
    inputs: np.ndarray = field(repr=False)
    outputs: np.ndarray = field(repr=False)

    @property
    def score_mean(self) -> float:
        """Mean relative RMSE (%) over the maps."""
        return float(np.mean(self.score))

    def row(self) -> dict:
        """JSON-ready summary (no arrays of pixels)."""
        return {"method": self.method, "status": "ok", "parameter": self.parameter,
                "score_mean": self.score_mean, "score_std": float(np.std(self.score)),
                "score_median": float(np.median(self.score)),
                "nmse_mean": float(np.mean(self.nmse)), "score": self.score.tolist(),
                "nmse": self.nmse.tolist(),
                "scale": self.scale.tolist(), "offset": self.offset.tolist(),
                "input_counts": self.input_counts.tolist(),
                "remainder_counts": self.remainder_counts.tolist(),
                "seconds_per_map": self.seconds / len(self.score)}


SINGLE_EVENT_NOTE = (
    "note: these maps hold at most one count per pixel (single-event maps): their noise is "
    "Bernoulli, variance p - p^2, so the Poisson noise removed (p) is too much by sum(p^2) / n, "
    "the same for every method scored on the same counts. The errors can come out negative; "
    "rank and compare by the differences between methods, which stay unbiased.")


def single_event(maps) -> bool:
    """True for count maps with no pixel above 1 (see :data:`SINGLE_EVENT_NOTE`)."""
    x = np.asarray(maps)
    return bool(x.size and x.max() <= 1)


def split_counts(maps, counts: float = 1000.0, seed=0):
    """Split count maps binomially into a low-dose input and an independent remainder.

    Parameters
    ----------
    maps : array-like, shape (row, col) or (map, row, col)
        Raw counts (whole numbers, non-negative).
    counts : float
        Counts per input map on average (``q = counts / sum(x)`` per map).
    seed : int, numpy.random.Generator or None

    Returns
    -------
    inputs, remainder : ndarray, shape (map, row, col), int64
        ``y ~ Binomial(x, q)`` and ``x - y``.
    q : ndarray, shape (map,)
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    x = check_counts(maps)
    counts, _ = check_dose(counts, 0.0)
    totals = x.sum(axis=(1, 2))
    short = np.flatnonzero(totals < (1 + MIN_REMAINDER) * counts)
    if short.size:
        raise ConfigError(
            f"map {short[0]} holds {totals[short[0]]} counts: the hold-out needs at least "
            f"{(1 + MIN_REMAINDER) * counts:g} (twice counts={counts:g}) so that the remainder "
            "can score the input; lower counts= or use a longer acquisition")
    q = counts / totals
    y = rng.binomial(x, q[:, None, None])
    return y, x - y, q


def fit_score(output: np.ndarray, remainder: np.ndarray) -> dict:
    """Fit ``remainder ~ scale * output + offset`` and its noise-corrected squared error.

    Returns ``mse_net`` (unbiased for the mean squared error of the fitted output against the
    expected remainder), ``noise`` (the Poisson term removed, with the fit's two degrees of
    freedom taken out), ``nmse``, ``score`` (%), ``scale`` and ``offset``. See the module
    docstring for the derivation.
    """
    r = np.asarray(remainder, np.float64).ravel()
    design = np.stack([np.asarray(output, np.float64).ravel(), np.ones_like(r)], axis=1)
    pinv = np.linalg.pinv(design)  # also right for a constant output (rank 1)
    coef = pinv @ r
    leverage = np.einsum("jk,kj->j", design, pinv)
    resid = r - design @ coef
    noise = float(((1.0 - leverage) * r).sum() / r.size)
    mse_net = float(resid @ resid / r.size) - noise
    mean = max(float(r.mean()), 1e-12)
    return {"mse_net": mse_net, "noise": noise, "nmse": mse_net / mean**2,
            "score": 100.0 * np.sqrt(max(mse_net, 0.0)) / mean,
            "scale": float(coef[0]), "offset": float(coef[1])}


def _as_denoiser(method) -> Denoiser:
    """A registered name, a :class:`Denoiser` or a plain ``f(counts) -> expected counts``."""
    if isinstance(method, Denoiser):
        d = method
    elif isinstance(method, str):
        d = denoiser(method)
    elif callable(method):
        return Denoiser(getattr(method, "__name__", "callable"), lambda c, p, b: method(c),
                        "fixed")
    else:
        raise ConfigError(f"denoiser must be a registered name, a Denoiser or a callable "
                          f"f(counts) -> expected counts, got {type(method).__name__}")
    if d.mode == "oracle":
        val = d.name.replace("-oracle", "-val")
        hint = f" use {val!r}" if val in DENOISERS else " use a fitted (-val) method"
        raise ConfigError(f"{d.name} is an oracle: it needs the ground truth, which real data "
                          f"lacks;{hint} (its parameter is then chosen on the hold-out) or pass "
                          "parameter=")
    return d


def resolve_methods(methods, oracles: bool = False) -> list[Denoiser]:
    """The denoisers of a list of methods, checked before any work.

    Unknown names raise :class:`ConfigError` listing the registered ones, a name given twice
    is refused, ``unet:PATH`` loads its model file now (a missing or damaged file is an error
    here, not a failed row later), and oracles are refused unless ``oracles`` (the benchmark,
    on simulated data, may use them).
    """
    methods = list(methods)
    if not methods:
        raise ConfigError("no methods given; name at least one denoiser, e.g. noisy,gaussian-val")
    names = [m for m in methods if isinstance(m, str)]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"methods listed twice: {', '.join(twice)}")
    out = []
    for m in methods:
        d = denoiser(m) if oracles and isinstance(m, str) else _as_denoiser(m)
        if isinstance(m, str) and m.startswith("unet:"):
            from ..denoisers.pretrained import load_pretrained

            load_pretrained(m.partition(":")[2])
        out.append(d)
    return out


def _run(d: Denoiser, inputs, backgrounds, parameter) -> tuple[np.ndarray, float]:
    outs, seconds = [], 0.0
    for y, b in zip(inputs, backgrounds):
        out, s = apply(d, y.astype(np.float64), float(b), parameter, None)
        outs.append(out)
        seconds += s
    return np.stack(outs), seconds


def _select(d: Denoiser, sets, bounds=None) -> float:
    """The fitted method's parameter (within ``bounds``, default its own) minimizing the mean
    ``nmse`` of :func:`fit_score` over every map of ``sets``: ``(inputs, backgrounds,
    references)`` triples, each input scored against its reference."""
    def loss(logp: float) -> float:
        return float(np.mean([fit_score(o, r)["nmse"] for inputs, backgrounds, refs in sets
                              for o, r in zip(_run(d, inputs, backgrounds,
                                                   float(np.exp(logp)))[0], refs)]))

    res = minimize_scalar(loss, bounds=np.log(d.bounds if bounds is None else bounds),
                          method="bounded", options={"xatol": FIT_XATOL})
    return float(np.exp(res.x))


def _backgrounds(background, n_maps: int, q: np.ndarray) -> np.ndarray:
    """Background counts per input map: ``q * B`` (0 for None)."""
    if background is None:
        return np.zeros(n_maps)
    return check_backgrounds(background, (n_maps,)) * q


def _evenly(n: int, k: int | None) -> np.ndarray:
    """``k`` evenly spaced indices of ``range(n)`` (all of them for None or k >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    if k < 1:
        raise ConfigError(f"select_maps must be >= 1, got {k}")
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def split_folds(maps, folds: int = 5, seed=0) -> np.ndarray:
    """Split count maps multinomially into ``folds`` independent Poisson parts.

    Returns an int64 array of shape ``(folds, map, row, col)`` that sums to the maps over its
    first axis; part ``k`` has the expected counts ``lam / folds`` and is independent of the
    others (Poisson thinning).
    """
    if int(folds) != folds or folds < 2:
        raise ConfigError(f"folds must be a whole number >= 2, got {folds}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    x = check_counts(maps)
    parts = rng.multinomial(x, np.full(int(folds), 1.0 / folds))
    return np.moveaxis(parts, -1, 0).astype(np.int64)


def select_parameter(maps, denoiser, folds: int = 5, seed=0, background=None,
                     select_maps: int | None = None, bounds=None) -> float:
    """A fitted method's parameter for the full maps, by K-fold cross-validation (no truth).

    Parameters
    ----------
    maps : array-like, shape (row, col) or (map, row, col)
        Raw counts of the maps the method will denoise.
    denoiser : str or Denoiser
        A ``fitted`` method.
    folds : int
        Parts per map; each fold's input holds ``1 - 1/folds`` of the counts, so the parameter
        suits nearly the full dose (module docstring).
    seed : int or numpy.random.Generator
    background : float or array-like of shape (map,), optional
        Background counts per whole map; each fold's input gets its share.
    select_maps : int, optional
        Cross-validate on this many evenly spaced maps only (default: all).
    bounds : (low, high), optional
        Search range (default: the method's own); e.g. around a hold-out's choice, to save time.

    Returns
    -------
    float
        The parameter minimizing the mean ``nmse`` of :func:`fit_score` over folds and maps.
    """
    d = _as_denoiser(denoiser)
    if d.mode != "fitted":
        raise ConfigError(f"{d.name} has no parameter to choose (mode {d.mode}); give a fitted "
                          "method such as gaussian-val")
    x = check_counts(maps)
    k = _evenly(len(x), select_maps)
    parts = split_folds(x[k], folds, seed)
    inputs = x[k][None] - parts
    b = _backgrounds(background, len(x), np.full(len(x), 1.0 - 1.0 / folds))[k]
    lo, hi = d.bounds if bounds is None else bounds
    lo, hi = max(lo, d.bounds[0]), min(hi, d.bounds[1])
    if not lo < hi:
        raise ConfigError(f"bounds {bounds} leave nothing of {d.name}'s range {d.bounds}")

    return _select(d, [(fold, b, ref) for fold, ref in zip(inputs, parts)], (lo, hi))


def evaluate_holdout(maps, denoiser, counts: float = 1000.0, seed=0, background=None,
                     parameter: float | None = None,
                     select_maps: int | None = None) -> HoldoutResult:
    """Score a denoiser on measured count maps without ground truth (binomial hold-out).

    Parameters
    ----------
    maps : array-like, shape (row, col) or (map, row, col)
        Raw detector counts of the user's maps (whole numbers, non-negative), each holding at
        least ``2 * counts`` counts.
    denoiser : str, Denoiser or callable
        A registered name (``"gaussian-val"``, ``"unet"``, ``"unet:PATH"``), a
        :class:`~nanoedx_models.denoisers.Denoiser`, or ``f(counts) -> expected counts``.
        Oracle methods are refused (they need the truth).
    counts : float
        Counts per low-dose input map on average (background included: what a short
        acquisition of the same object would record).
    seed : int, numpy.random.Generator or None
        Seeds the split (the same seed gives every method the same inputs).
    background : float or array-like of shape (map,), optional
        Background counts per map *of the given maps*; each input gets its share ``q * B``,
        which the registered methods subtract (as ``B / n_pixels`` per pixel). Default None
        means 0: the methods then only smooth, and the fitted offset absorbs a uniform
        background, so the score does not need it. The U-nets ignore it (they remove the
        background they learned).
    parameter : float, optional
        Parameter of a ``fitted`` method; None chooses it on one half of the remainder (module
        docstring) and scores on the other half.
    select_maps : int, optional
        Choose that parameter on this many evenly spaced maps only (default: all), to save
        time with a slow method; every map is still scored.

    Returns
    -------
    HoldoutResult
        Per-map scores (relative RMSE %, lower is better), fit, counts, inputs and outputs.

    Examples
    --------
    A square of 50 counts per pixel on a background of 5, two long acquisitions; the
    Gaussian filter, its width chosen on the hold-out, beats the raw low-dose map:

    >>> lam = np.full((64, 64), 5.0)
    >>> lam[16:48, 16:48] += 50.0
    >>> maps = np.random.default_rng(0).poisson(lam, (2, 64, 64))
    >>> raw = evaluate_holdout(maps, "noisy", counts=1000, seed=0)
    >>> smooth = evaluate_holdout(maps, "gaussian-val", counts=1000, seed=0)
    >>> bool(smooth.score_mean < raw.score_mean / 2)
    True
    """
    d = _as_denoiser(denoiser)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    inputs, remainder, q = split_counts(maps, counts, rng)
    backgrounds = _backgrounds(background, len(inputs), q)
    if d.mode == "fitted" and parameter is None:
        half = rng.binomial(remainder, 0.5)
        k = _evenly(len(inputs), select_maps)
        parameter = _select(d, [(inputs[k], backgrounds[k], half[k])])
        remainder = remainder - half
    elif parameter is None:
        parameter = d.default
    outputs, seconds = _run(d, inputs, backgrounds, parameter)
    fits = [fit_score(o, r) for o, r in zip(outputs, remainder)]
    per = {k: np.array([f[k] for f in fits]) for k in fits[0]}
    return HoldoutResult(d.name, float(counts), parameter=parameter, seconds=seconds,
                         q=q, input_counts=inputs.sum(axis=(1, 2)),
                         remainder_counts=remainder.sum(axis=(1, 2)), inputs=inputs,
                         outputs=outputs, **per)


def evaluate_methods(maps, methods, counts: float = 1000.0, seed=0, background=None,
                     progress: bool = True, select_maps: int | None = None) -> list[dict]:
    """Rank several denoisers on the same hold-out split of the user's maps.

    Parameters
    ----------
    maps, counts, seed, background, select_maps
        As :func:`evaluate_holdout`; every method gets the same inputs (the same seed).
    methods : sequence of str, Denoiser or callable
    progress : bool
        A tqdm bar over the methods.

    Returns
    -------
    list of dict
        One row per method, best ``score_mean`` first, failed rows last: ``method``,
        ``status`` (``"ok"`` or ``"failed: ..."``), ``parameter``, ``score_mean``,
        ``score_std``, ``score_median`` (robust to a few badly denoised maps), ``nmse_mean``,
        per-map ``score``, ``nmse`` (unclipped, may be < 0: what to rank on with few counts), ``scale``, ``offset``, ``input_counts``, ``remainder_counts`` and
        ``seconds_per_map``.
    """
    if isinstance(seed, np.random.Generator):
        raise ConfigError("evaluate_methods needs an int seed, so that every method gets the "
                          "same split")
    methods = list(methods)
    resolve_methods(methods)  # unknown names, oracles: one error before any work
    split_counts(maps, counts, seed)  # bad maps or too few counts: one error before any work
    rows = []
    for m in tqdm(list(methods), desc="hold-out", disable=not progress):
        name = m if isinstance(m, str) else getattr(m, "name", getattr(m, "__name__", "?"))
        try:
            rows.append(evaluate_holdout(maps, m, counts, seed, background,
                                         select_maps=select_maps).row())
        except Exception as err:  # noqa: BLE001 -- a failing method fails its row only
            rows.append({"method": name, "status": f"failed: {type(err).__name__}: {err}",
                         "parameter": None, "score_mean": None, "score_std": None,
                         "score_median": None})
    return sorted(rows, key=lambda r: (r["status"] != "ok", r["score_mean"] or 0.0))


__all__ = ["SINGLE_EVENT_NOTE", "HoldoutResult", "evaluate_holdout", "evaluate_methods",
           "fit_score", "resolve_methods", "select_parameter", "single_event", "split_counts",
           "split_folds"]
