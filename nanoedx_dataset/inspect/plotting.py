"""Figures to files: matplotlib on the Agg backend, PNGs written atomically, and the colour
composite of several elements that every figure of the package uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..store.files import atomic_output

# One colour per element, in element order (then repeating).
COLOURS = np.array([[1.0, 0.15, 0.1], [0.1, 0.85, 0.2], [0.2, 0.4, 1.0], [1.0, 0.8, 0.1],
                    [0.9, 0.2, 0.9], [0.1, 0.9, 0.9]])


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (figures go to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path, bbox_inches: str | None = "tight") -> Path:
    """Write ``fig`` to ``path`` as a PNG (atomically) and close it."""
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches=bbox_inches, format="png")
    pyplot().close(fig)
    return path


def composite(images: np.ndarray) -> np.ndarray:
    """RGB image (..., 3) of element images (element, ...), each scaled to its own maximum."""
    images = np.asarray(images, np.float64)
    out = np.zeros(images.shape[1:] + (3,))
    for k, s in enumerate(images):
        top = s.max()
        out += (s / top if top > 0 else s)[..., None] * COLOURS[k % len(COLOURS)]
    return np.clip(out, 0, 1)
