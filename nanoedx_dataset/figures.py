"""A figure like the paper's Fig. 1: particles, clean projections and noisy EDX maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import schema
from .files import atomic_output
from .errors import ConfigError


def _composite(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element A in orange, B in blue, each scaled to its own maximum."""
    def norm(x):
        m = x.max()
        return x / m if m > 0 else x

    a, b = norm(a), norm(b)
    rgb = np.stack([a, 0.6 * a + 0.5 * b, b], axis=-1)
    return np.clip(rgb, 0, 1)


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


def preview(path, out, samples=None, noise: str | None = None) -> Path:
    """Draw central slices, clean projections and noisy maps of a few samples to a PNG.

    Parameters
    ----------
    path : path-like
        A complete nanoedx database.
    out : path-like
        The PNG to write.
    samples : list of int, optional
        Sample indices (default: the first sample of four different families).
    noise : str, optional
        Noise level tag (default: the first one in the file).

    Returns
    -------
    Path
        ``out``.
    """
    plt = pyplot()
    out = Path(out)
    with schema.open_database(path) as f:
        levels = schema.noise_levels(f)
        if not levels:
            raise ConfigError(f"{path} has no noise level; add one with `nanoedx renoise`")
        tag = noise or next(iter(levels))
        if tag not in levels:
            raise ConfigError(f"no noise level {tag!r} in {path}; it has {', '.join(levels)}")
        fams, kinds = schema.strings(f["family"]), schema.strings(f["kind"])
        if samples is None:
            seen, samples = set(), []
            for i, fam in enumerate(fams):
                if fam not in seen and (kinds[i] != "solid" or len(samples) % 2 == 0):
                    seen.add(fam)
                    samples.append(i)
                if len(samples) == 4:
                    break
        angles = f["angle"][:]
        a0 = int(np.argmin(np.abs(angles)))
        counts = f[schema.noisy_path(tag)][schema.NOISY_FIELD.name]
        cols = ["slice z (fullest)", "slice y (fullest)", f"projection {angles[a0]:g}°",
                f"noisy A {angles[a0]:g}°", f"noisy B {angles[a0]:g}°"]
        fig, axes = plt.subplots(len(samples), len(cols), figsize=(2.3 * len(cols),
                                                                    2.3 * len(samples)),
                                 squeeze=False)
        for r, i in enumerate(samples):
            vol = f["volume"][i].astype(np.float32) * schema.VOLUME_SCALE
            proj = f["projection"][i, :, a0]
            noisy = counts[i, :, a0]
            zc = int(np.argmax(vol.sum(axis=(0, 2, 3))))
            yc = int(np.argmax(vol.sum(axis=(0, 1, 3))))
            panels = [_composite(vol[0, zc], vol[1, zc]), _composite(vol[0, :, yc], vol[1, :, yc]),
                      _composite(proj[0], proj[1]), noisy[0], noisy[1]]
            for c, img in enumerate(panels):
                ax = axes[r, c]
                ax.imshow(img, cmap="inferno" if c > 2 else None, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(cols[c], fontsize=9)
                if c > 2:
                    ax.text(0.02, 0.02, f"{int(img.sum())} counts", color="w", fontsize=7,
                            transform=ax.transAxes)
            axes[r, 0].set_ylabel(f"#{i} {fams[i]}\n{kinds[i]}", fontsize=8)
    fig.suptitle(f"{Path(path).name}: noise {tag}", fontsize=10)
    fig.tight_layout()
    return save_png(fig, out, bbox_inches=None)
