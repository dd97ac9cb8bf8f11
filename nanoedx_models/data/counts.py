"""Checks of count maps given by a user: finite, non-negative, and whole numbers where raw
detector counts are needed."""

from __future__ import annotations

import numpy as np

from nanoedx_dataset.errors import ConfigError


def check_count_maps(maps, whole: bool = False) -> np.ndarray:
    """Validate count maps: a 2D map or a stack (N, H, W) of finite, non-negative numbers
    (whole numbers too, with ``whole``: raw detector counts)."""
    x = np.asarray(maps)
    if x.dtype.kind not in "uif":
        raise ConfigError(f"count maps must be numbers, got dtype {x.dtype}")
    if x.ndim not in (2, 3):
        raise ConfigError(f"count maps must be (row, col) or (map, row, col), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("count maps hold NaN or infinite values; give raw counts")
    if np.any(x < 0):
        raise ConfigError(f"count maps must be non-negative counts (min {x.min()}); give raw "
                          "counts, not background-subtracted or normalized data")
    if whole and x.dtype.kind == "f" and not np.array_equal(x, np.round(x)):
        raise ConfigError("these maps hold fractions, not whole numbers of counts: give the raw "
                          "detector counts, before any background subtraction, normalization "
                          "or smoothing")
    return x


def check_counts(maps) -> np.ndarray:
    """Raw detector counts as a stack (map, row, col) of int64: whole, non-negative, finite.

    ``maps`` may have any number of leading axes (element, angle, ...) before (row, col).
    """
    x = np.asarray(maps)
    x = check_count_maps(x.reshape((-1,) + x.shape[-2:]) if x.ndim > 3 else x, whole=True)
    return x.reshape((-1,) + x.shape[-2:]).astype(np.int64)


def check_backgrounds(background, shape: tuple[int, ...]) -> np.ndarray:
    """Background counts per map, broadcast to ``shape`` (the maps' leading dimensions).

    ``background`` is one number or an array that broadcasts to ``shape``, finite and
    non-negative (counts per map); anything else is a :class:`ConfigError`.
    """
    try:
        b = np.broadcast_to(np.asarray(background, np.float64), shape)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"background must be one number or one per map {shape} in counts "
                          f"per map, got {background!r}") from err
    if not np.all(np.isfinite(b)) or np.any(b < 0):
        raise ConfigError(f"background must be finite, non-negative counts per map, got "
                          f"{background!r}")
    return b


def series_backgrounds(background, shape: tuple[int, int]) -> np.ndarray:
    """Background counts per map of a series, shape (element, angle).

    ``background`` is one number, one per element (a sequence of that length) or one per map
    (element, angle), in counts of the whole map.
    """
    b = np.asarray(background, np.float64)
    if b.ndim == 1 and b.size == shape[0]:
        b = b[:, None]
    return check_backgrounds(b, shape)
