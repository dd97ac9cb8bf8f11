"""From the occupancies of a particle's parts to its elements, shared by every backend; and a
comparison of two voxelizations."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...store.schema import ELEMENTS
from .. import blur
from ..specs import ParticleSpec


def compose(spec: ParticleSpec, size: int, part: Callable[[str], np.ndarray]) -> np.ndarray:
    """Per-element occupancy of a particle from the occupancies of its parts.

    Parameters
    ----------
    spec : ParticleSpec
    size : int
    part : callable
        ``part(name) -> (size, size, size)`` occupancy in [0, 1] of the part ``name`` of
        :meth:`ParticleSpec.sdfs`: ``"outer"``, ``"core"`` (core-shell) or ``"wall"`` (hollow).

    Returns
    -------
    ndarray, shape (2, size, size, size), float32
        As :func:`voxelize`: the core of a core-shell particle is Gaussian-blurred with the
        spec's ``blur`` (mimicking partial alloying) and kept inside the particle.
    """
    out = np.zeros((len(ELEMENTS), size, size, size), dtype=np.float32)
    if spec.kind == "solid":
        out[0] = part("outer")
    elif spec.kind == "hollow":
        out[0] = part("wall")
    else:  # core_shell: blur the core's interface, keep it inside the particle
        total = part("outer")
        core = part("core")
        sigma = spec.inner["blur"] * size
        if sigma > 0:
            core = blur.gaussian(core, sigma, mode="constant", truncate=3.0)
        core = np.minimum(core, total)
        out[0] = total - core
        out[1] = core
    return out


def agreement(ref: np.ndarray, other: np.ndarray) -> list[dict]:
    """How two voxelizations of one particle agree, element by element.

    Parameters
    ----------
    ref, other : ndarray, shape (element, z, y, x)
        Occupancies in [0, 1] (e.g. the analytic and the blender backend's).

    Returns
    -------
    list of dict
        One per element present in either: ``element`` (index), ``iou`` (intersection over
        union of the voxels with occupancy > 0.5) and ``sum_diff`` (relative difference of the
        occupancy sums, ``other / ref - 1``).
    """
    out = []
    for e in range(ref.shape[0]):
        a, b = ref[e] > 0.5, other[e] > 0.5
        total_a, total_b = (float(v[e].sum(dtype=np.float64)) for v in (ref, other))
        if total_a == 0 and total_b == 0:
            continue
        union = int((a | b).sum())
        out.append({"element": e, "iou": int((a & b).sum()) / union if union else 1.0,
                    "sum_diff": total_b / total_a - 1 if total_a else np.inf})
    return out
