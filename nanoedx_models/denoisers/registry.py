"""The denoisers of the benchmark, registered by name.

A denoiser maps one raw count map (row, col) to expected signal counts, background removed. A
``volume``-scope method (:data:`SCOPES`) instead maps one element's whole raw tilt series to its
reconstructed volume (:meth:`Denoiser.reconstruct`): it denoises in the reconstruction domain and
has a 3D score only. A method has at most one parameter, set in one of three ways:

* ``fixed`` -- no parameter, or a default (the U-nets, ``noisy``);
* ``oracle`` -- per map, by Brent minimization of the MAE against the ground truth (the paper's
  "best case"; needs the truth, so only on simulated data);
* ``fitted`` -- once, by Brent minimization of the mean MAE over validation maps (what a user can
  really do); a volume method's, of the mean 3D nMAE over validation structures.

A ``series`` denoiser (``scope="series"``: the context U-nets) sees more than one map: it is
``fn(series, parameter, background, haadf, which)`` with the particle's raw tilt series of every
element (element, angle, row, col), the HAADF images (angle, row, col) or None, and the maps
to return (``which``: (element, angle) pairs, or None for all); :meth:`Denoiser.series` calls
it.

Every output is rescaled to conserve counts (:func:`conserve`): its total is the input's total
minus the background, because elemental ratios are quantified from these sums. The scale is
applied after the method, inside :meth:`Denoiser.__call__`, so the benchmark, the hold-out
score and a user's denoising all see it; an oracle's and a fitted method's parameter are chosen
on the conserved output (the MAE they minimize is that of what the method returns). A volume
method's reconstruction is rescaled the same way to the mean total of its maps less the
background (:meth:`Denoiser.reconstruct`).

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
# what ``fn`` takes: one count map (row, col); the particle's whole tilt series of every element,
# returning maps (:meth:`Denoiser.series`); or one element's tilt series (angle, row, col) with
# its angles, reconstructed to a volume (z, y, x) -- :meth:`Denoiser.reconstruct`
SCOPES = ("map", "series", "volume")


def fit_parameter(loss: Callable[[float], float], bounds: tuple[float, float]) -> float:
    """The parameter in ``bounds`` that minimizes ``loss(p)``: Brent's bounded method on
    ``log(p)`` to :data:`FIT_XATOL` (how every ``fitted`` method is fitted)."""
    res = minimize_scalar(lambda logp: loss(float(np.exp(logp))), bounds=np.log(bounds),
                          method="bounded", options={"xatol": FIT_XATOL})
    return float(np.exp(res.x))


@dataclass(frozen=True)
class Denoiser:
    """A registered denoiser: ``fn(counts, parameter, background) -> expected counts``.

    With ``scope="volume"``: ``fn(series, angles, parameter, background, iterations, threads)
    -> volume`` (:meth:`reconstruct`).
    """

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

        def loss(p: float) -> float:
            jobs = [(self.name, x, g, p, background) for x, g in zip(noisy, truth)]
            return float(np.mean(list(mapper(_mae, jobs))))

        return fit_parameter(loss, self.bounds)

    def __call__(self, counts: np.ndarray, background: float, parameter: float | None = None,
                 truth: np.ndarray | None = None) -> np.ndarray:
        """Denoise one map; ``truth`` is required for an oracle, ``parameter`` for fitted.

        The output conserves counts (:func:`conserve`): its total is ``sum(counts) -
        background``, clipped at zero.
        """
        if self.scope == "volume":
            raise ConfigError(f"{self.name} reconstructs a whole tilt series, not one map: call "
                              f"its .reconstruct(series, angles, background, parameter), or "
                              f"choose a map denoiser")
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
        if self.scope == "volume":
            raise ConfigError(f"{self.name} reconstructs a tilt series: call .reconstruct()")
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

    def reconstruct(self, series: np.ndarray, angles, background: float,
                    parameter: float | None = None, iterations: int = 15,
                    threads: int | None = None) -> np.ndarray:
        """The volume of one element's tilt series by a ``volume``-scope method.

        Parameters
        ----------
        series : ndarray, shape (angle, row, col)
            Raw counts of one element's maps, background included.
        angles : sequence of float
            Tilt angles in degrees, one per map.
        background : float
            Background counts of one map (not per pixel).
        parameter : float, optional
            Required for a ``fitted`` method; the default otherwise.
        iterations : int
            EM iterations of the method's reconstructions.
        threads : int, optional
            Threads of the reconstruction; the volume does not depend on them.

        Returns
        -------
        ndarray, shape (col, row, col), float64
            The volume (z, y, x) in the units of :func:`~nanoedx_models.reconstruction.em.
            reconstruct` (counts per voxel), rescaled so that its total is the mean total of
            the maps less the background, ``sum(series) / n_angles - background`` (clipped at
            zero): parallel projection conserves mass, so every map's expected signal and the
            volume have one total, of which this is the estimate from all maps; it is
            :func:`conserve` of the mean map.
        """
        if self.scope != "volume":
            raise ConfigError(f"{self.name} denoises one map at a time: call it on each map "
                              "and reconstruct the denoised series")
        if self.mode == "fitted" and parameter is None:
            raise ConfigError(f"{self.name} needs its parameter: pass parameter= (`nanoedx "
                              "benchmark` fits it on validation structures and reports it in "
                              "the method's row)")
        x = np.asarray(series, np.float64)
        p = parameter if parameter is not None else self.default
        out = self.fn(x, angles, p, background, iterations, threads)
        return conserve(out, x.mean(axis=0), background)


DENOISERS: dict[str, Denoiser] = {}


def _mae(job) -> float:
    """Mean absolute error of one denoised validation map (a picklable unit of ``fit``)."""
    name, x, g, p, background = job
    x = np.asarray(x, np.float64)
    return float(np.abs(conserve(DENOISERS[name].fn(x, p, background), x, background) - g).mean())


def register(name: str, *, mode: str = "fixed", bounds=None, default=None, scope: str = "map"):
    """Register ``fn(counts, parameter, background)`` under ``name`` (for ``scope="series"``,
    ``fn(series, parameter, background, haadf, which)``; for ``scope="volume"``,
    ``fn(series, angles, parameter, background, iterations, threads)``)."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {SCOPES}, got {scope!r}")
    if scope == "series" and mode != "fixed":
        raise ConfigError(f"a {scope} denoiser has no parameter to fit: mode 'fixed'")
    if scope == "volume" and mode == "oracle":
        raise ConfigError(f"{name}: a volume method cannot be an oracle; register it as "
                          "'fitted' (its parameter fitted on validation structures) or 'fixed'")

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


def apply_volume(d: Denoiser, series, angles, background: float, param, iterations: int,
                 threads: int | None = None) -> tuple[np.ndarray, float]:
    """Reconstruct one element's tilt series by a volume method, checked; returns the volume
    and the seconds it took.

    Raises :class:`DenoiserFailed` for a volume that is not (col, row, col) or holds NaN / inf.
    """
    t = time.perf_counter()
    out = np.asarray(d.reconstruct(series, angles, background, param, iterations, threads))
    seconds = time.perf_counter() - t
    n_angles, rows, cols = np.shape(series)
    if out.shape != (cols, rows, cols):
        raise DenoiserFailed(f"returned shape {out.shape} for maps of {rows} x {cols} pixels "
                             f"(a volume must be {(cols, rows, cols)})")
    if not np.all(np.isfinite(out)):
        raise DenoiserFailed("returned NaN or infinite values")
    return out, seconds
