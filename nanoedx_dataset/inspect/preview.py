"""A figure like the paper's Fig. 1: particles, clean projections and noisy EDX maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..store import schema
from ..store.reader import Database
from .plotting import composite, pyplot, save_png


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
    db = Database(path)
    tag = db.level(noise)
    if tag is None:
        raise ConfigError(f"{path} has no noise level; add one with `nanoedx renoise`")
    fams, kinds = db.catalogue[schema.FAMILY], db.catalogue[schema.KIND]
    if samples is None:
        seen, samples = set(), []
        for i, fam in enumerate(fams):
            if fam not in seen and (kinds[i] != "solid" or len(samples) % 2 == 0):
                seen.add(fam)
                samples.append(i)
            if len(samples) == 4:
                break
    bad = [i for i in samples if not 0 <= i < db.n]
    if bad:
        raise ConfigError(f"sample indices {bad} are out of range: {path} holds samples "
                          f"0 to {db.n - 1}")
    a0 = int(np.argmin(np.abs(db.angles)))
    names = db.elements
    cols = ["slice z (fullest)", "slice y (fullest)", f"projection {db.angles[a0]:g}°",
            *(f"noisy {e} {db.angles[a0]:g}°" for e in names)]
    fig, axes = plt.subplots(len(samples), len(cols), figsize=(2.3 * len(cols),
                                                                2.3 * len(samples)),
                             squeeze=False)
    for r, i in enumerate(samples):
        vol = db.volume(i)
        proj = db.projection(i, slice(None), a0)
        noisy = db.counts(tag, i, slice(None), a0)
        zc = int(np.argmax(vol.sum(axis=(0, 2, 3))))
        yc = int(np.argmax(vol.sum(axis=(0, 1, 3))))
        panels = [composite(vol[:, zc]), composite(vol[:, :, yc]), composite(proj), *noisy]
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
    fig.suptitle(f"{Path(path).name}: noise {tag}; colour: "
                 + ", ".join(f"{e} = {c}" for e, c in zip(names, ("red", "green", "blue"))),
                 fontsize=10)
    fig.tight_layout()
    return save_png(fig, out, bbox_inches=None)
