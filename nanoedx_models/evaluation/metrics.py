"""Error measures. Lower is better for all of them."""

from __future__ import annotations

import numpy as np


def nmae(estimate, truth) -> float:
    """Normalized mean absolute error in percent: ``mean|x_hat - x| / mean(x) * 100``.

    Parameters
    ----------
    estimate, truth : array-like of the same shape
        A denoised map (or reconstruction) and its ground truth, over all pixels (voxels).
    """
    estimate, truth = np.asarray(estimate, np.float64), np.asarray(truth, np.float64)
    if estimate.shape != truth.shape:
        raise ValueError(f"shapes differ: {estimate.shape} vs {truth.shape}")
    return float(np.abs(estimate - truth).mean() / truth.mean() * 100.0)
