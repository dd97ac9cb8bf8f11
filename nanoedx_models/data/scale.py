"""The invertible normalization of count maps that every U-net reads and writes.

A raw count map ``x`` is divided by its mean count per pixel, ``k = mean(x)``; a network's output
``y`` is turned back into expected counts as ``y * k``.
"""

from __future__ import annotations

import numpy as np

MIN_SCALE = 1e-3  # counts per pixel; guards the normalization of an all-zero map


def normalize(counts: np.ndarray) -> tuple[np.ndarray, float]:
    """Divide a count map by its mean count per pixel; returns the map and the scale ``k``."""
    k = max(float(np.mean(counts)), MIN_SCALE)
    return np.asarray(counts, np.float32) / np.float32(k), k


def denormalize(values, k: float):
    """Expected counts from normalized values: ``values * k``."""
    return values * k
