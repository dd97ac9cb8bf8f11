"""Classical denoisers of EDX count maps and the paper's "best case" parameter search.

Every classical method works on the raw counts; then the mean background per pixel is
subtracted and negatives set to zero, so that all methods estimate the expected signal
(DESIGN.md). The oracle sets a method's one parameter per map by Brent's bounded minimization of
the mean absolute error against the ground truth (what the paper compares against); it needs the
ground truth, so it is a benchmark device, not something a user can run on real data.


Each method is registered by name in :mod:`.registry` (see there for the modes).
"""

from __future__ import annotations

import importlib

import numpy as np
from scipy import ndimage

from nanoedx_dataset.errors import MissingExtraError

from .registry import register

GAUSSIAN_SIGMA = (0.05, 20.0)  # pixels


def remove_background(smoothed: np.ndarray, background: float) -> np.ndarray:
    """Subtract the mean background per pixel (B / n_pixels) and clip at zero."""
    npix = smoothed.shape[-1] * smoothed.shape[-2]
    return np.maximum(smoothed - background / npix, 0.0)


def gaussian(counts: np.ndarray, sigma: float, background: float = 0.0) -> np.ndarray:
    """Gaussian filter (SciPy) of a count map, background removed.

    Parameters
    ----------
    counts : ndarray, shape (row, col)
    sigma : float
        Filter width in pixels.
    background : float
        Background counts per map on average.
    """
    smoothed = ndimage.gaussian_filter(np.asarray(counts, np.float64), sigma, mode="reflect")
    return remove_background(smoothed, background)


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


# BM3D profile: reference-block step 5 (default 3) and search window 21 px (default 39) in both
# stages, one thread (the benchmark runs one process per core). On 6 standard validation maps
# (sigma 1.3) this is 3x faster than the defaults and no worse: 16.2 vs 17.0 % nMAE.
BM3D_PROFILE = {"step_ht": 5, "step_wiener": 5, "search_window_ht": 21,
                "search_window_wiener": 21, "num_threads": 1}


def block_matching(module: str, what: str, profile: str, settings: dict):
    """The block-matching library ``module`` (bm3d, bm4d) and its ``profile`` class set to
    ``settings``; a missing library is a :class:`MissingExtraError` naming ``what`` needs it."""
    try:
        lib = importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(f"{what} needs the {module} package (a dependency of nanoedx): "
                                f"pip install {module}") from err
    configured = getattr(lib, profile)()
    for key, value in settings.items():
        setattr(configured, key, value)
    return lib, configured


def _bm3d(counts, sigma, background):
    bm3d, profile = block_matching("bm3d", "BM3D", "BM3DProfile", BM3D_PROFILE)
    y = bm3d.bm3d(anscombe(counts), sigma_psd=sigma, profile=profile)
    return remove_background(inverse_anscombe(y), background)


TV_WEIGHT = (1e-3, 1e2)

register("gaussian-oracle", mode="oracle", bounds=GAUSSIAN_SIGMA)(gaussian)
register("gaussian-val", mode="fitted", bounds=GAUSSIAN_SIGMA)(gaussian)
register("tv-oracle", mode="oracle", bounds=TV_WEIGHT)(_tv)
register("tv-val", mode="fitted", bounds=TV_WEIGHT)(_tv)
register("anscombe-nlm-val", mode="fitted", bounds=(0.05, 5.0))(_nlm)
register("anscombe-bm3d-val", mode="fitted", bounds=(0.1, 5.0))(_bm3d)
