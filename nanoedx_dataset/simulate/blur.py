"""Gaussian blur whose bytes do not depend on the CPU.

``scipy.ndimage.gaussian_filter`` computes its kernel with ``numpy.exp``, which NumPy runs
through a different implementation on CPUs with AVX-512 than on others: the weights differ in
their last bits, and a release regenerated on another machine would differ in a few counts.
:func:`gaussian` is the same filter (the same kernel formula, radius, normalization and
``correlate1d`` passes, axis by axis) with the kernel's exponentials taken by the C library
(``math.exp``), which gives on every CPU the weights NumPy gives without AVX-512: the arrays
of the releases, wherever they are regenerated.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def kernel(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The normalized 1-D Gaussian weights ``scipy.ndimage`` uses for ``sigma`` (radius
    ``int(truncate * sigma + 0.5)``)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    arg = -0.5 / (sigma * sigma) * x**2
    phi = np.array([math.exp(v) for v in arg.tolist()])
    return phi / phi.sum()


def gaussian(a: np.ndarray, sigma, mode: str = "reflect", truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(a, sigma, mode=mode, truncate=truncate)``, CPU-independent.

    Parameters
    ----------
    a : ndarray
        The array (the result has its dtype, as scipy's).
    sigma : float or sequence of float
        Standard deviation per axis (pixels); an axis with ``sigma`` 0 is left as it is.
    mode : str
        Border mode of ``scipy.ndimage.correlate1d`` (one for every axis).
    truncate : float
        Kernel radius in standard deviations.
    """
    a = np.asarray(a)
    sigmas = [float(sigma)] * a.ndim if np.ndim(sigma) == 0 else [float(s) for s in sigma]
    if len(sigmas) != a.ndim:
        raise ValueError(f"{len(sigmas)} sigmas for an array of {a.ndim} axes")
    out = a.copy()
    for axis, s in enumerate(sigmas):
        if s > 1e-15:
            out = ndimage.correlate1d(out, kernel(s, truncate)[::-1], axis, mode=mode, cval=0.0)
    return out
