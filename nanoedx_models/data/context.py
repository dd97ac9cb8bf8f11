"""Context channels: what the microscope records beside the map a U-net denoises.

A map of one element at one tilt is not alone: the HAADF-STEM image recorded with it shows the
same object at a far higher dose, the other elements' maps of the same particle show its
outline, and the neighbouring tilts show it from 10 degrees away. A context U-net takes them
as extra input channels beside the map (:data:`CONTEXTS`, in this order):

* ``haadf`` -- the HAADF image at the map's tilt (1 channel);
* ``elements`` -- the sum of the other elements' maps at the map's tilt (1 channel; zeros
  for a series of one element);
* ``tilts`` -- the same element's maps at the previous and the next tilt (2 channels; at
  either end of the series the one neighbour stands for both).

Every channel is divided by its own mean per pixel (the map by its mean count ``k``, as a
single-channel U-net's input; :func:`~nanoedx_models.data.scale.normalize`), so that a
network sees shapes, not doses; its output times ``k`` is the expected signal counts.
"""

from __future__ import annotations

import numpy as np

from nanoedx_dataset.errors import ConfigError

from .scale import normalize

CONTEXTS = ("haadf", "elements", "tilts")
WIDTH = {"haadf": 1, "elements": 1, "tilts": 2}


def check_context(context) -> tuple[str, ...]:
    """The context names in :data:`CONTEXTS` order; an unknown or repeated name is an error."""
    names = tuple(context or ())
    unknown = [c for c in names if c not in CONTEXTS]
    if unknown or len(set(names)) != len(names):
        raise ConfigError(f"context must be distinct names among {', '.join(CONTEXTS)}, got "
                          f"{', '.join(names) or 'none'}")
    return tuple(c for c in CONTEXTS if c in names)


def n_channels(context) -> int:
    """Input channels of a U-net with this context (the map's included)."""
    return 1 + sum(WIDTH[c] for c in check_context(context))


def neighbours(n_angles: int, angle: int) -> tuple[int, int]:
    """The previous and the next tilt of ``angle`` (the one neighbour twice at an end)."""
    if n_angles < 2:
        raise ConfigError("the tilts context needs a series of at least 2 tilts")
    prev = angle - 1 if angle > 0 else angle + 1
    nxt = angle + 1 if angle < n_angles - 1 else angle - 1
    return prev, nxt


def channels(series: np.ndarray, element: int, angle: int, context,
             haadf: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """The normalized input channels of one map and its scale ``k``.

    Parameters
    ----------
    series : ndarray, shape (element, angle, row, col)
        Raw counts of every element's tilt series of the particle (or field).
    element, angle : int
        The map to denoise.
    context : sequence of str
        Names among :data:`CONTEXTS`.
    haadf : ndarray, shape (angle, row, col), optional
        The HAADF images; required by the ``haadf`` context.

    Returns
    -------
    ndarray, shape (channel, row, col), float32
        The map divided by ``k``, then the context channels, each divided by its own mean.
    float
        ``k``, the map's mean count per pixel.
    """
    context = check_context(context)
    series = np.asarray(series)
    if series.ndim != 4:
        raise ConfigError(f"a context needs the series as (element, angle, row, col), got "
                          f"shape {series.shape}")
    x, k = normalize(series[element, angle])
    out = [x]
    if "haadf" in context:
        if haadf is None:
            raise ConfigError("this model reads the HAADF image beside each map: pass the "
                              "HAADF images (angle, row, col) of the series (--haadf FILE)")
        haadf = np.asarray(haadf)
        if haadf.shape != series.shape[1:]:
            raise ConfigError(f"HAADF images of shape {haadf.shape} for maps of shape "
                              f"{series.shape[1:]}: give one image per tilt, of the maps' size")
        out.append(normalize(haadf[angle])[0])
    if "elements" in context:
        others = np.delete(series[:, angle], element, axis=0).sum(axis=0)
        out.append(normalize(others)[0] if others.any() else np.zeros_like(x))
    if "tilts" in context:
        out += [normalize(series[element, a])[0] for a in neighbours(series.shape[1], angle)]
    return np.stack(out), k
