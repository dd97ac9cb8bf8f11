"""``denoise``: raw EDX count maps in, expected signal counts out (background removed)."""

from __future__ import annotations

import numpy as np
import torch

from nanoedx_dataset.errors import ConfigError

from .datasets import normalize
from .pretrained import load_pretrained
from .training import pick_device
from .unet import UNet


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


def denoise(maps, model=None, device: str = "auto", batch_size: int = 16) -> np.ndarray:
    """Denoise EDX count maps with a U-net.

    Parameters
    ----------
    maps : array-like, shape (row, col) or (map, row, col)
        Raw counts (background included), any size.
    model : None, str, path or UNet
        None for the default pretrained model (embedded, works offline), a pretrained name, a
        model file, or a U-net.
    device : {"auto", "cpu", "cuda"}
    batch_size : int

    Returns
    -------
    ndarray, same shape, float32
        Expected signal counts per pixel, background removed, non-negative.
    """
    x = check_count_maps(maps)
    dev = pick_device(device)
    net = model if isinstance(model, UNet) else load_pretrained(model or "default", dev)[0]
    net = net.to(dev).eval()
    stack = x.reshape((-1,) + x.shape[-2:])
    out = np.empty(stack.shape, np.float32)
    with torch.no_grad():
        for s in range(0, len(stack), batch_size):
            pairs = [normalize(m) for m in stack[s : s + batch_size]]
            batch = torch.from_numpy(np.stack([p for p, _ in pairs]))[:, None].to(dev)
            pred = net(batch).clamp_min(0)[:, 0].cpu().numpy()
            scales = np.array([k for _, k in pairs], np.float32)[:, None, None]
            out[s : s + len(pairs)] = pred * scales
    return out.reshape(x.shape)
