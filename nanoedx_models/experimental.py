"""A user's own tilt series: thin to a low dose, denoise, reconstruct, all elements together.

The command line (``nanoedx denoise`` / ``nanoedx reconstruct``) is a thin layer over
:func:`denoise_series` and :func:`reconstruct_series`; files are read and written by
:mod:`nanoedx_models.data.tiltio`. The maps must be aligned to a common tilt axis along the rows
(y) at the centre column: :func:`nanoedx_models.reconstruction.align.align_series` (``nanoedx
align``) does that.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from nanoedx_dataset.errors import ConfigError
from nanoedx_dataset.simulate.noise import downsample_counts

from .data.counts import check_counts, series_backgrounds
from .data.tiltio import Series
from .denoisers.inference import denoise, denoise_context
from .denoisers.pretrained import load_pretrained
from .denoisers.unet import UNet
from .reconstruction.em import reconstruct


def thin(series: Series, counts: float, seed: int = 0) -> Series:
    """The series with every map thinned to ``counts`` counts (``Poisson(x C / sum x)``).

    The maps must be raw counts (whole, non-negative); ``counts`` above a map's own counts, or
    one that would overflow the uint16 thinned maps, is refused with the reason
    (:func:`~nanoedx_dataset.simulate.noise.downsample_counts`).
    """
    check_counts(series.data)
    low = downsample_counts(series.data, counts, seed=seed)
    meta = dict(series.metadata, downsampled_to_counts=float(counts), downsample_seed=seed)
    return Series(low, series.elements, series.angles, meta, series.format)


def denoise_series(series: Series, model=None, device: str = "auto",
                   progress: bool = True, background=0.0, haadf=None) -> Series:
    """Denoise every map of every element with a U-net (expected signal counts, float32).

    Parameters
    ----------
    series : Series
        Raw count maps (whole numbers, background included).
    model : None, str, path or UNet
        As :func:`nanoedx_models.denoise` (default: the embedded model).
    device : {"auto", "cpu", "cuda"}
    progress : bool
    background : float or array-like of shape (element,) or (element, angle)
        Background counts of each map (the whole map): each output map's total is its input's
        total minus this, clipped at zero. Default 0 keeps the whole input total.
    haadf : array-like, shape (angle, row, col), optional
        The HAADF images of the series, for a context U-net that reads them (``unet-haadf``,
        ``unet-context``; :func:`~nanoedx_models.denoisers.inference.denoise_context`). A
        context U-net sees all elements and tilts of the series together.
    """
    check_counts(series.data)
    b = series_backgrounds(background, series.data.shape[:2])
    if isinstance(model, UNet):
        net, context = model, ()
    else:  # loaded once for all elements; the model file names its context channels
        net, info = load_pretrained(model or "default")
        context = tuple(info.get("context") or ())
    if context:
        out = denoise_context(series.data, net, haadf, device=device, background=b,
                              context=context)
    else:
        out = np.empty(series.data.shape, np.float32)
        for e in tqdm(range(len(series.elements)), desc="denoise", disable=not progress):
            out[e] = denoise(series.data[e], model=net, device=device, background=b[e])
    meta = dict(series.metadata, denoised_with=str(model or "default"),
                background_counts=b.tolist())
    return Series(out, series.elements, series.angles, meta, series.format)


def reconstruct_series(series: Series, iterations: int = 15, method: str = "em",
                       device: str | None = None, progress: bool = True) -> np.ndarray:
    """Reconstruct each element: (element, z, y, x) float32, on DESIGN.md's grid.

    Parameters
    ----------
    series : Series
        Raw or denoised maps (non-negative); needs its tilt angles.
    iterations, method, device
        As :func:`nanoedx_models.reconstruct`.
    progress : bool
    """
    if series.angles is None:
        raise ConfigError("the tilt angles are unknown: give them with --angles START:STOP:STEP "
                          "or a file of angles (one per map)")
    vols = [reconstruct(series.data[e], series.angles, iterations=iterations, method=method,
                        device=device, progress=progress)
            for e in tqdm(range(len(series.elements)), desc=f"{method} reconstruction",
                          disable=not progress)]
    return np.stack(vols)
