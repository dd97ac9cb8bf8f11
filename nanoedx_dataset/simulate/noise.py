"""The EDX map noise model (DESIGN.md, the paper's Methods).

For a clean projection ``p`` of one element the expected signal is ``s = C * p / sum(p)``: C
counts per map on average, whatever the particle's size. A spatially uniform background adds B
counts per map on average, and the detector counts are Poisson:
``noisy ~ Poisson(s + B / n_pixels)``. The ground truth of a map is ``s`` alone, so a denoiser
must remove the background too. A map whose element is absent (``sum(p) == 0``) holds background
counts only.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..store.schema import COUNT_DTYPE, noise_tag

# most counts a pixel may expect: a Poisson draw then stays below uint16's 65535
MAX_EXPECTED = 60000

__all__ = ["COUNT_DTYPE", "add_noise", "check_dose", "downsample_counts", "expected_signal",
           "noise_tag"]


def check_dose(counts: float, background: float) -> tuple[float, float]:
    """Validate a noise level: ``counts > 0`` and ``background >= 0`` (finite numbers)."""
    counts, background = float(counts), float(background)
    if not np.isfinite(counts) or counts <= 0:
        raise ConfigError(f"counts must be a positive number of counts per map, got {counts}")
    if not np.isfinite(background) or background < 0:
        raise ConfigError(f"background must be >= 0 counts per map, got {background}")
    return counts, background


def expected_signal(projection: np.ndarray, counts: float) -> np.ndarray:
    """Ground truth of the maps: ``counts * p / sum(p)`` per map over its last two axes.

    Parameters
    ----------
    projection : ndarray, shape (..., row, col)
        Clean line integrals (voxel units), non-negative.
    counts : float
        Signal counts per map on average.

    Returns
    -------
    ndarray, same shape, float32
        Expected signal counts; zero for an empty map.
    """
    p = np.asarray(projection, dtype=np.float64)
    total = p.sum(axis=(-2, -1), keepdims=True)
    scale = np.divide(counts, total, out=np.zeros_like(total), where=total > 0)
    return (p * scale).astype(np.float32)


def add_noise(projection: np.ndarray, counts: float, background: float,
              rng: np.random.Generator) -> np.ndarray:
    """Noisy EDX count maps of clean projections.

    Parameters
    ----------
    projection : ndarray, shape (..., row, col)
        Clean line integrals, non-negative.
    counts, background : float
        Signal counts and background counts per map on average.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray, same shape, uint16
        Counts ``Poisson(counts * p / sum(p) + background / n_pixels)``.
    """
    counts, background = check_dose(counts, background)
    p = np.asarray(projection)
    if np.any(p < 0):
        raise ConfigError("projections must be non-negative to be turned into counts")
    npix = p.shape[-1] * p.shape[-2]
    lam = expected_signal(p, counts).astype(np.float64) + background / npix
    if lam.max(initial=0.0) > 60000:
        raise ConfigError(
            f"a pixel expects {lam.max():.0f} counts, too many for the uint16 count maps; "
            "use fewer counts per map"
        )
    return rng.poisson(lam).astype(COUNT_DTYPE)


def downsample_counts(maps, counts: float = 1000.0, seed=None) -> np.ndarray:
    """Low-dose version of measured count maps: ``Poisson(x * counts / sum(x))`` per map.

    The paper's way of simulating a short exposure from a long one (Methods), so that a
    denoiser can be tried on a user's own high-dose data. Thinning only lowers a dose: a map
    holding fewer than ``counts`` counts is refused, and so are maps whose thinned pixels
    would not fit the uint16 counts returned.

    Parameters
    ----------
    maps : array-like, shape (..., row, col)
        Measured counts (non-negative).
    counts : float
        Counts per map on average after thinning; at most each (non-empty) map's counts.
    seed : int, numpy.random.Generator or None
        Seed (or generator) of the Poisson draws; None draws fresh entropy.

    Returns
    -------
    ndarray, same shape, uint16

    Raises
    ------
    ConfigError
        Negative or non-finite maps, ``counts`` above a map's own counts, or a pixel that
        would expect more counts than uint16 holds.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    counts, _ = check_dose(counts, 0.0)
    x = np.asarray(maps, dtype=np.float64)
    if x.ndim < 2:
        raise ConfigError(f"count maps must have (row, col) as their last axes, got shape "
                          f"{x.shape}")
    if np.any(x < 0) or not np.all(np.isfinite(x)):
        raise ConfigError("count maps must be finite and non-negative")
    totals = x.sum(axis=(-2, -1)).ravel()
    held = totals[totals > 0]
    if held.size and counts > held.min():
        raise ConfigError(f"a map holds only {held.min():.6g} counts, fewer than the "
                          f"{counts:g} asked for: thinning can only lower the dose; choose "
                          f"counts <= {held.min():.6g}")
    lam = expected_signal(x, counts)
    if lam.max(initial=0.0) > MAX_EXPECTED:
        raise ConfigError(f"a thinned pixel would expect {lam.max():.0f} counts, more than the "
                          f"uint16 count maps hold (about {MAX_EXPECTED}); choose fewer counts")
    return rng.poisson(lam).astype(COUNT_DTYPE)
