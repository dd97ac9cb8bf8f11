"""The denoisers of the benchmark, registered by name.

A denoiser maps one raw count map (row, col) to expected signal counts, background removed. It
has at most one parameter, set in one of three ways:

* ``fixed`` -- no parameter, or a default (the U-nets, ``noisy``);
* ``oracle`` -- per map, by Brent minimization of the MAE against the ground truth (the paper's
  "best case"; needs the truth, so only on simulated data);
* ``fitted`` -- once, by Brent minimization of the mean MAE over validation maps (what a user can
  really do).

Adding one is one decorated function::

    @register("median-val", mode="fitted", bounds=(1, 9))
    def median(counts, p, background):
        return remove_background(ndimage.median_filter(counts, int(p)), background)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize_scalar

from nanoedx_dataset.errors import ConfigError, MissingExtraError

from .classical import GAUSSIAN_SIGMA, gaussian, oracle, remove_background

Fn = Callable[[np.ndarray, float, float], np.ndarray]
MODES = ("fixed", "oracle", "fitted")


@dataclass(frozen=True)
class Denoiser:
    """A registered denoiser: ``fn(counts, parameter, background) -> expected counts``."""

    name: str
    fn: Fn
    mode: str
    bounds: tuple[float, float] | None = None
    default: float | None = None

    def fit(self, noisy, truth, background: float) -> float | None:
        """The parameter of a ``fitted`` denoiser from validation maps (None otherwise)."""
        if self.mode != "fitted":
            return self.default

        def loss(logp: float) -> float:
            return float(np.mean([np.abs(self.fn(x, np.exp(logp), background) - g).mean()
                                  for x, g in zip(noisy, truth)]))

        res = minimize_scalar(loss, bounds=np.log(self.bounds), method="bounded",
                              options={"xatol": 1e-2})
        return float(np.exp(res.x))

    def __call__(self, counts: np.ndarray, background: float, parameter: float | None = None,
                 truth: np.ndarray | None = None) -> np.ndarray:
        """Denoise one map; ``truth`` is required for an oracle, ``parameter`` for fitted."""
        x = np.asarray(counts, np.float64)
        if self.mode == "oracle":
            if truth is None:
                raise ConfigError(f"{self.name} is an oracle: it needs the ground truth")
            return oracle(self.fn, x, truth, self.bounds, background, xatol=1e-2)[0]
        if self.mode == "fitted" and parameter is None:
            raise ConfigError(f"{self.name} needs its parameter: call .fit() on validation maps")
        return self.fn(x, parameter if parameter is not None else self.default, background)


DENOISERS: dict[str, Denoiser] = {}


def register(name: str, *, mode: str = "fixed", bounds=None, default=None):
    """Register ``fn(counts, parameter, background)`` under ``name``."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")

    def deco(fn: Fn) -> Fn:
        DENOISERS[name] = Denoiser(name, fn, mode, bounds, default)
        return fn

    return deco


def denoiser(name: str) -> Denoiser:
    """Look a denoiser up; the error lists the registered ones."""
    if name not in DENOISERS:
        raise ConfigError(f"unknown denoiser {name!r}; choose one of: {', '.join(DENOISERS)}")
    return DENOISERS[name]


def anscombe(x: np.ndarray) -> np.ndarray:
    """Variance-stabilizing transform of Poisson counts (unit variance)."""
    return 2.0 * np.sqrt(np.maximum(x, 0) + 3.0 / 8.0)


def inverse_anscombe(y: np.ndarray) -> np.ndarray:
    """Closed-form unbiased inverse (Makitalo and Foi, 2011)."""
    y = np.maximum(y, 1e-6)
    return np.maximum(y**2 / 4 + np.sqrt(1.5) / (4 * y) - 11 / (8 * y**2)
                      + 5 * np.sqrt(1.5) / (8 * y**3) - 1 / 8, 0.0)


@register("noisy")
def _noisy(counts, p, background):
    return remove_background(counts, background)


def _tv(counts, weight, background):
    from skimage.restoration import denoise_tv_bregman

    return remove_background(denoise_tv_bregman(counts, weight=weight), background)


def _nlm(counts, h, background):
    from skimage.restoration import denoise_nl_means

    y = denoise_nl_means(anscombe(counts), h=h, sigma=1.0, patch_size=5, patch_distance=6,
                         fast_mode=True)
    return remove_background(inverse_anscombe(y), background)


def _bm3d(counts, sigma, background):
    try:
        import bm3d
    except ImportError as err:
        raise MissingExtraError('BM3D needs the bm3d package: pip install "nanoedx[test]" or '
                                "pip install bm3d") from err
    return remove_background(inverse_anscombe(bm3d.bm3d(anscombe(counts), sigma_psd=sigma)),
                             background)


TV_WEIGHT = (1e-3, 1e2)
register("gaussian-oracle", mode="oracle", bounds=GAUSSIAN_SIGMA)(gaussian)
register("gaussian-val", mode="fitted", bounds=GAUSSIAN_SIGMA)(gaussian)
register("tv-oracle", mode="oracle", bounds=TV_WEIGHT)(_tv)
register("tv-val", mode="fitted", bounds=TV_WEIGHT)(_tv)
register("anscombe-nlm-val", mode="fitted", bounds=(0.05, 5.0))(_nlm)
register("anscombe-bm3d-val", mode="fitted", bounds=(0.1, 5.0))(_bm3d)


def _unet(name: str) -> Fn:
    loaded = {}

    def fn(counts, p, background):
        from .inference import denoise
        from .pretrained import load_pretrained

        if "net" not in loaded:  # load once, on first use
            loaded["net"] = load_pretrained(name)[0]
        return denoise(counts, model=loaded["net"], device="cpu").astype(np.float64)

    return fn


register("unet")(_unet("default"))
register("unet-multidose")(_unet("unet-multidose"))

__all__ = ["DENOISERS", "Denoiser", "anscombe", "denoiser", "inverse_anscombe", "register"]
