"""``denoise``: raw EDX count maps in, expected signal counts out (background removed, counts
conserved)."""

from __future__ import annotations

import numpy as np
import torch

from ..data.counts import check_backgrounds, check_count_maps
from ..data.datasets import normalize
from ..device import pick_device
from .pretrained import load_pretrained
from .registry import conserve
from .unet import UNet


def denoise(maps, model=None, device: str = "auto", batch_size: int = 16,
            background=0.0) -> np.ndarray:
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
    background : float or array-like of shape (map,)
        Background counts of each map (the whole map, not per pixel). Each output map is
        rescaled so that its total is its input's total minus this, clipped at zero
        (:func:`~nanoedx_models.denoisers.registry.conserve`): the sums that elemental ratios
        are quantified from. Default 0 keeps the input's whole total.

    Returns
    -------
    ndarray, same shape, float32
        Expected signal counts per pixel, background removed, non-negative; each map's total
        is its input's total minus ``background``.
    """
    x = check_count_maps(maps)
    b = check_backgrounds(background, x.shape[:-2]).ravel()
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
    for i in range(len(stack)):
        out[i] = conserve(out[i], stack[i], b[i])
    return out.reshape(x.shape)
