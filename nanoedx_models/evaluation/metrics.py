"""Error measures, each with the direction that is better (:data:`MEASURES`): the nMAE is
best low, the signed total bias best at zero."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


def _pair(estimate, truth) -> tuple[np.ndarray, np.ndarray]:
    estimate, truth = np.asarray(estimate, np.float64), np.asarray(truth, np.float64)
    if estimate.shape != truth.shape:
        raise ValueError(f"shapes differ: {estimate.shape} vs {truth.shape}")
    return estimate, truth


def nmae(estimate, truth) -> float:
    """Normalized mean absolute error in percent: ``mean|x_hat - x| / mean(x) * 100``.

    Parameters
    ----------
    estimate, truth : array-like of the same shape
        A denoised map (or reconstruction) and its ground truth, over all pixels (voxels).
    """
    estimate, truth = _pair(estimate, truth)
    return float(np.abs(estimate - truth).mean() / truth.mean() * 100.0)


def bias(estimate, truth) -> float:
    """Signed error of the total in percent: ``(sum(x_hat) - sum(x)) / sum(x) * 100``.

    What a quantification from summed counts gets wrong; best at 0, negative when counts are
    lost. NaN for a truth that sums to zero.

    Parameters
    ----------
    estimate, truth : array-like of the same shape
        A denoised map (or reconstruction) and its ground truth (counts).
    """
    estimate, truth = _pair(estimate, truth)
    total = float(truth.sum())
    return float((estimate.sum() - total) / total * 100.0) if total else float("nan")


def standard_error(values) -> float:
    """Standard error of the mean of 1-D values (NaN for fewer than two)."""
    v = np.asarray(values, np.float64)
    return float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


@dataclass(frozen=True)
class Measure:
    """A measure and the direction that is better: ``"lower"`` or ``"zero"`` (signed)."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    best: str

    def key(self, value: float) -> float:
        """Sort key, smaller is better: the value, or its magnitude for a signed measure."""
        return abs(value) if self.best == "zero" else value


MEASURES = {"nmae": Measure("nmae", nmae, "lower"), "bias": Measure("bias", bias, "zero")}
