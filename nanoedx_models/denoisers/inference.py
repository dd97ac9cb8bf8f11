"""``denoise``: raw EDX count maps in, expected signal counts out (background removed, counts
conserved)."""

from __future__ import annotations

import numpy as np
import torch

from nanoedx_dataset.errors import ConfigError

from ..data.counts import check_backgrounds, check_count_maps, series_backgrounds
from ..data.scale import normalize
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


def denoise_context(series, model, haadf=None, device: str = "auto", batch_size: int = 16,
                    background=0.0, which=None, context=None) -> np.ndarray:
    """Denoise the maps of a particle's tilt series with a context U-net.

    A context U-net (trained with ``context=``, :mod:`nanoedx_models.data.context`) reads,
    beside each map, the HAADF image at its tilt, the other elements' maps and/or the
    neighbouring tilts of the same series; the model file names which.

    Parameters
    ----------
    series : array-like, shape (element, angle, row, col)
        Raw counts of every element's tilt series (background included), in tilt order.
    model : str, path or UNet
        A pretrained name or a model file of a context U-net (a single-map one works too).
    haadf : array-like, shape (angle, row, col), optional
        The HAADF images recorded with the maps; required by a model with the haadf context.
    device : {"auto", "cpu", "cuda"}
    batch_size : int
    background : float or array-like of shape (element,) or (element, angle)
        Background counts of each map (the whole map), as :func:`denoise`.
    which : sequence of (element, angle), optional
        Denoise only these maps (default: all).
    context : sequence of str, optional
        The model's context channels; default: what the model file says (a UNet given as
        ``model`` without ``context`` reads the map alone).

    Returns
    -------
    ndarray, float32
        Expected signal counts, (element, angle, row, col), or (len(which), row, col) with
        ``which``; each map's total is its input's total minus its background.
    """
    from ..data.context import channels

    x = np.asarray(series)
    if x.ndim != 4:
        raise ConfigError(f"a context U-net denoises a series (element, angle, row, col), got "
                          f"shape {x.shape}")
    x = check_count_maps(x.reshape((-1,) + x.shape[-2:])).reshape(x.shape)
    b = series_backgrounds(background, x.shape[:2])
    dev = pick_device(device)
    if isinstance(model, UNet):
        net = model
    else:
        net, meta = load_pretrained(model, dev)
        context = meta.get("context") if context is None else context
    context = tuple(context or ())
    net = net.to(dev).eval()
    todo = [(e, a) for e in range(x.shape[0]) for a in range(x.shape[1])] if which is None \
        else [tuple(int(v) for v in w) for w in which]
    out = np.empty((len(todo),) + x.shape[-2:], np.float32)
    with torch.no_grad():
        for s in range(0, len(todo), batch_size):
            pairs = [channels(x, e, a, context, haadf) for e, a in todo[s : s + batch_size]]
            batch = torch.from_numpy(np.stack([c for c, _ in pairs])).to(dev)
            pred = net(batch).clamp_min(0)[:, 0].cpu().numpy()
            out[s : s + len(pairs)] = pred * np.array([k for _, k in pairs],
                                                      np.float32)[:, None, None]
    for i, (e, a) in enumerate(todo):
        out[i] = conserve(out[i], x[e, a], b[e, a])
    return out if which is not None else out.reshape(x.shape)
