"""Classical denoisers of EDX count maps and the paper's "best case" parameter search.

Every classical method works on the raw counts; then the mean background per pixel is
subtracted and negatives set to zero, so that all methods estimate the expected signal
(DESIGN.md). The oracle sets a method's one parameter per map by Brent's bounded minimization of
the mean absolute error against the ground truth (what the paper compares against); it needs the
ground truth, so it is a benchmark device, not something a user can run on real data.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.optimize import minimize_scalar

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


def oracle(method, counts: np.ndarray, truth: np.ndarray, bounds: tuple[float, float],
           background: float = 0.0, xatol: float = 1e-3) -> tuple[np.ndarray, float]:
    """Best-case output of ``method(counts, p, background)`` over its parameter ``p``.

    Minimizes the mean absolute error against ``truth`` with Brent's bounded method on
    ``log(p)``; returns the denoised map and the parameter found.
    """
    def mae(logp: float) -> float:
        return float(np.abs(method(counts, np.exp(logp), background) - truth).mean())

    res = minimize_scalar(mae, bounds=np.log(bounds), method="bounded",
                          options={"xatol": xatol})
    p = float(np.exp(res.x))
    return method(counts, p, background), p
