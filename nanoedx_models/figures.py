"""Pictures of volumes: central orthoslices, and a colour composite of several elements."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nanoedx_dataset.figures import pyplot, save_png

PLANES = ("xy (z = mid)", "xz (y = mid)", "yz (x = mid)")
COLOURS = np.array([[1.0, 0.15, 0.1], [0.1, 0.85, 0.2], [0.2, 0.4, 1.0], [1.0, 0.8, 0.1],
                    [0.9, 0.2, 0.9], [0.1, 0.9, 0.9]])


def orthoslices(volume: np.ndarray) -> np.ndarray:
    """The three central slices (z, y, x planes) of a cubic volume, shape (3, n, n)."""
    v = np.asarray(volume, np.float32)
    n = v.shape[0] // 2
    return np.stack([v[n], v[:, n], v[:, :, n]])


def composite(slices: np.ndarray) -> np.ndarray:
    """RGB image (..., 3) of element slices (element, ...), each scaled to its own maximum."""
    out = np.zeros(slices.shape[1:] + (3,))
    for k, s in enumerate(slices):
        top = s.max()
        out += (s / top if top > 0 else s)[..., None] * COLOURS[k % len(COLOURS)]
    return np.clip(out, 0, 1)


def volume_figure(volume: np.ndarray, elements: list[str], path, title: str = "") -> Path:
    """PNG of the central orthoslices of (element, z, y, x): one row per element, plus a colour
    composite row when there are several elements (like the paper's Fig. 3a / 4b)."""
    plt = pyplot()
    slices = np.stack([orthoslices(v) for v in volume])  # (element, plane, n, n)
    rows = len(elements) + (len(elements) > 1)
    fig, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows + 0.4), squeeze=False)
    for e, name in enumerate(elements):
        for p in range(3):
            axes[e, p].imshow(slices[e, p], cmap="inferno", vmin=0, vmax=slices[e].max() or 1)
        axes[e, 0].set_ylabel(name)
    if len(elements) > 1:
        for p in range(3):
            axes[-1, p].imshow(composite(slices[:, p]))
        axes[-1, 0].set_ylabel(" + ".join(elements))
    for p, label in enumerate(PLANES):
        axes[0, p].set_title(label, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path)
