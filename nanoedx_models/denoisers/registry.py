"""The denoisers of the benchmark, registered by name.

A denoiser maps one raw count map (row, col) to expected signal counts, background removed. It
has at most one parameter, set in one of three ways:

* ``fixed`` -- no parameter, or a default (the U-nets, ``noisy``);
* ``oracle`` -- per map, by Brent minimization of the MAE against the ground truth (the paper's
  "best case"; needs the truth, so only on simulated data);
* ``fitted`` -- once, by Brent minimization of the mean MAE over validation maps (what a user can
  really do).

A ``series`` denoiser (``scope="series"``: the context U-nets) sees more than one map: it is
``fn(series, parameter, background, haadf, which)`` with the particle's raw tilt series of every
element (element, angle, row, col), the HAADF images (angle, row, col) or None, and the maps
to return (``which``: (element, angle) pairs, or None for all); :meth:`Denoiser.series` calls
it.

Every output is rescaled to conserve counts (:func:`conserve`): its total is the input's total
minus the background, because elemental ratios are quantified from these sums. The scale is
applied after the method, inside :meth:`Denoiser.__call__`, so the benchmark, the hold-out
score and a user's denoising all see it; an oracle's and a fitted method's parameter are chosen
on the conserved output (the MAE they minimize is that of what the method returns).

Adding one is one decorated function::

    @register("median-val", mode="fitted", bounds=(1, 9))
    def median(counts, p, background):
        return remove_background(ndimage.median_filter(counts, int(p)), background)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize_scalar

from nanoedx_dataset.errors import ConfigError

def conserve(output: np.ndarray, counts: np.ndarray, background: float = 0.0) -> np.ndarray:
    """Rescale a denoised map so that its total is the input's expected signal.

    Parameters
    ----------
    output : ndarray, shape (row, col)
        Expected signal counts from a denoiser (non-negative where it was).
    counts : ndarray, shape (row, col)
        The raw counts it was computed from (background included).
    background : float
        Background counts of the whole map (the registry's ``background``, not per pixel).

    Returns
    -------
    ndarray, shape (row, col), float64
        ``output * max(sum(counts) - background, 0) / sum(output)``: one non-negative factor,
        so zeros stay zero and no sign changes. An output that sums to zero (or less) cannot be
        rescaled and is returned as it is.
    """
    out = np.asarray(output, np.float64)
    total = float(out.sum())
    if not np.isfinite(total) or total <= 0.0:
        return out
    target = max(float(np.asarray(counts, np.float64).sum()) - float(background), 0.0)
    return out * (target / total)


def oracle(method, counts: np.ndarray, truth: np.ndarray, bounds: tuple[float, float],
           background: float = 0.0, xatol: float = 1e-3) -> tuple[np.ndarray, float]:
    """Best-case output of ``method(counts, p, background)`` over its parameter ``p``.

    Minimizes the mean absolute error of the conserved output (:func:`conserve`) against
    ``truth`` with Brent's bounded method on ``log(p)``; returns that output and the parameter.
    """
    def run(p: float) -> np.ndarray:
        return conserve(method(counts, p, background), counts, background)

    def mae(logp: float) -> float:
        return float(np.abs(run(np.exp(logp)) - truth).mean())

    res = minimize_scalar(mae, bounds=np.log(bounds), method="bounded",
                          options={"xatol": xatol})
    p = float(np.exp(res.x))
    return run(p), p


class DenoiserFailed(RuntimeError):
    """A denoiser's output is unusable (wrong shape, NaN or infinite values)."""


Fn = Callable[[np.ndarray, float, float], np.ndarray]
FIT_XATOL = 0.03  # Brent's tolerance on log(parameter) for fitted methods: 3 % of the value
MODES = ("fixed", "oracle", "fitted")
SCOPES = ("map", "series")  # what fn sees: one map, or the particle's whole tilt series


@dataclass(frozen=True)
class Denoiser:
    """A registered denoiser: ``fn(counts, parameter, background) -> expected counts``."""

    name: str
    fn: Fn
    mode: str
    bounds: tuple[float, float] | None = None
    default: float | None = None
    scope: str = "map"

    def fit(self, noisy, truth, background: float, mapper=map) -> float | None:
        """The parameter of a ``fitted`` denoiser from validation maps (None otherwise).

        ``mapper`` evaluates the maps of one Brent step, e.g. a process pool's ``map``; worker
        processes find the denoiser by its registered name.
        """
        if self.mode != "fitted":
            return self.default

        def loss(logp: float) -> float:
            p = float(np.exp(logp))
            jobs = [(self.name, x, g, p, background) for x, g in zip(noisy, truth)]
            return float(np.mean(list(mapper(_mae, jobs))))

        res = minimize_scalar(loss, bounds=np.log(self.bounds), method="bounded",
                              options={"xatol": FIT_XATOL})
        return float(np.exp(res.x))

    def __call__(self, counts: np.ndarray, background: float, parameter: float | None = None,
                 truth: np.ndarray | None = None) -> np.ndarray:
        """Denoise one map; ``truth`` is required for an oracle, ``parameter`` for fitted.

        The output conserves counts (:func:`conserve`): its total is ``sum(counts) -
        background``, clipped at zero.
        """
        x = np.asarray(counts, np.float64)
        if self.mode == "oracle":
            if truth is None:
                raise ConfigError(f"{self.name} is an oracle: it needs the ground truth")
            return oracle(self.fn, x, truth, self.bounds, background, xatol=1e-2)[0]
        if self.mode == "fitted" and parameter is None:
            raise ConfigError(f"{self.name} needs its parameter: call .fit() on validation maps")
        if self.scope != "map":
            raise ConfigError(f"{self.name} denoises a whole tilt series: call .series()")
        p = parameter if parameter is not None else self.default
        return conserve(self.fn(x, p, background), x, background)

    def series(self, series: np.ndarray, background: float, haadf=None, which=None,
               parameter: float | None = None) -> np.ndarray:
        """Denoise maps of a particle's tilt series (element, angle, row, col) with what it
        sees beside them; ``which`` picks (element, angle) maps (default: all). A map-scope
        denoiser denoises each map alone. Every output conserves counts (:func:`conserve`).
        """
        x = np.asarray(series, np.float64)
        todo = ([(e, a) for e in range(x.shape[0]) for a in range(x.shape[1])]
                if which is None else [tuple(w) for w in which])
        p = parameter if parameter is not None else self.default
        if self.scope == "map":
            out = np.stack([self(x[e, a], background, p) for e, a in todo])
        else:
            out = np.asarray(self.fn(x, p, background, haadf, todo), np.float64)
            if out.shape != (len(todo),) + x.shape[-2:]:
                raise DenoiserFailed(f"returned shape {out.shape} for {len(todo)} maps")
            out = np.stack([conserve(o, x[e, a], background) for o, (e, a) in zip(out, todo)])
        return out if which is not None else out.reshape(x.shape)


DENOISERS: dict[str, Denoiser] = {}


def _mae(job) -> float:
    """Mean absolute error of one denoised validation map (a picklable unit of ``fit``)."""
    name, x, g, p, background = job
    x = np.asarray(x, np.float64)
    return float(np.abs(conserve(DENOISERS[name].fn(x, p, background), x, background) - g).mean())


def register(name: str, *, mode: str = "fixed", bounds=None, default=None,
             scope: str = "map"):
    """Register ``fn(counts, parameter, background)`` under ``name`` (a ``series`` scope:
    ``fn(series, parameter, background, haadf, which)``)."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {SCOPES}, got {scope!r}")
    if scope != "map" and mode != "fixed":
        raise ConfigError(f"a {scope} denoiser has no parameter to fit: mode 'fixed'")

    def deco(fn: Fn) -> Fn:
        DENOISERS[name] = Denoiser(name, fn, mode, bounds, default, scope)
        return fn

    return deco


# "prefix:" -> factory(name, rest) of denoisers named by a prefix and an argument
FACTORIES: dict[str, Callable[[str, str], "Denoiser"]] = {}


def register_factory(prefix: str, factory: Callable[[str, str], "Denoiser"]) -> None:
    """Make ``denoiser("PREFIX:ARG")`` return ``factory(name, ARG)`` (e.g. ``unet:MODEL.pt``)."""
    FACTORIES[prefix] = factory


def denoiser(name: str) -> Denoiser:
    """Look a denoiser up by name, or ``PREFIX:ARG`` of a factory (``unet:PATH`` is a U-net
    from a model file). Errors list the names."""
    prefix, sep, rest = name.partition(":")
    if sep and prefix + ":" in FACTORIES:
        return FACTORIES[prefix + ":"](name, rest)
    if name not in DENOISERS:
        known = ", ".join([*DENOISERS, *(f"{p}ARG" for p in FACTORIES)])
        raise ConfigError(f"unknown denoiser {name!r}; choose one of: {known}")
    return DENOISERS[name]


def apply(d: Denoiser, x, background: float, param, truth,
          series: dict | None = None) -> tuple[np.ndarray, float]:
    """Denoise one map, checked; returns the output and the seconds it took.

    A series denoiser needs ``series`` (:meth:`~nanoedx_models.data.datasets.EDXMaps.series`:
    the particle's maps around ``x``, its position and HAADF images). Raises
    :class:`DenoiserFailed` for an output of the wrong shape or with NaN / inf values.
    """
    t = time.perf_counter()
    if d.scope == "series":
        if series is None:
            raise ConfigError(f"{d.name} denoises a map with its tilt series: give series=")
        which = [(series["element"], series["angle"])]
        out = d.series(series["noisy"], background, series["haadf"], which, param)[0]
    else:
        out = np.asarray(d(x, background, param, truth=truth))
    seconds = time.perf_counter() - t
    if out.shape != x.shape:
        raise DenoiserFailed(f"returned shape {out.shape} for a map of shape {x.shape}")
    if not np.all(np.isfinite(out)):
        raise DenoiserFailed("returned NaN or infinite values")
    return out, seconds
