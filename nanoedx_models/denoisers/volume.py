"""Denoisers of the reconstruction domain: methods that take one element's whole raw tilt series
and return its volume (``scope="volume"`` in :mod:`.registry`).

* ``em-bm4d-val`` -- EM of the raw maps (background removed as by every method), then BM4D of
  the volume, its noise level fitted on validation structures.
* ``n2i`` -- self-supervised in the spirit of Noise2Inverse (Hendriksen, Pelt and Batenburg,
  IEEE TCI 2020): the counts of each map are split binomially into two independent halves, each
  half reconstructed by EM, and a small U-net trained, on this structure alone, to predict one
  half's reconstruction from the other's; the denoised halves are summed. Trained per
  structure, it sees only the data it denoises and needs no training set or ground truth, so it
  runs on a user's own tilt series just as in the benchmark.

Both return counts per voxel, as :func:`~nanoedx_models.reconstruction.em.reconstruct` does;
:meth:`.registry.Denoiser.reconstruct` then rescales the volume to the mean total of the maps
less the background. Both are deterministic (fixed seeds, one thread inside), so a volume does
not depend on the number of benchmark workers.
"""

from __future__ import annotations

import numpy as np

from nanoedx_dataset.errors import ConfigError

from ..reconstruction.em import reconstruct
from .classical import block_matching, remove_background
from .registry import register

# BM4D profile, measured on a 128^3 EM reconstruction of a standard-size structure (1 thread):
# hard thresholding only, the conventional white-noise thresholds (nf = 0; the default
# estimates exact variances of correlated noise), reference-block step 4 = the block size (a
# larger step leaves voxels uncovered and BM4D returns NaN there), search window 3 (7^3
# candidates, default 7), 8 blocks per group (default 16), one thread (the library otherwise
# uses every core, and its aggregation order, so the last bits, varies with the thread count).
BM4D_PROFILE = {"nf": (0, 0, 0), "step_ht": (4, 4, 4), "search_window_ht": (3, 3, 3),
                "max_stack_size_ht": 8, "num_threads": 1}
BM4D_SIGMA = (0.5, 50.0)  # noise level of the square-root volume (normalized to mean 1)


def _bm4d(volume: np.ndarray, sigma: float) -> np.ndarray:
    """BM4D (hard thresholding, :data:`BM4D_PROFILE`) of a float64 volume, noise std ``sigma``."""
    bm4d, profile = block_matching("bm4d", "em-bm4d-val", "BM4DProfile", BM4D_PROFILE)
    return bm4d.bm4d(volume, sigma, profile=profile,
                     stage_arg=bm4d.BM4DStages.HARD_THRESHOLDING)


def em_bm4d(series, angles, sigma, background, iterations, threads):
    """EM reconstruction of the raw maps, then BM4D of its square root.

    Parameters
    ----------
    series : ndarray, shape (angle, row, col)
        Raw counts of one element, background included.
    angles : sequence of float
        Degrees.
    sigma : float
        BM4D's noise standard deviation on the square root of the volume normalized to mean 1.
    background : float
        Background counts per map.
    iterations : int
        EM iterations.
    threads : int or None
        Threads of the reconstruction.

    Returns
    -------
    ndarray, shape (col, row, col), float64
        Counts per voxel (z, y, x).

    Notes
    -----
    The noise of an MLEM reconstruction of Poisson data is roughly multiplicative, its variance
    growing with the mean like the counts' own (Barrett, Wilson and Tsui, Phys. Med. Biol. 39,
    833, 1994), so the square root of the volume has a nearly uniform noise level and one
    ``sigma`` serves every voxel; the estimate is squared back. (Stabilizing the maps before EM
    would not do: EM needs counts.)
    """
    rec = reconstruct(remove_background(series, background), angles, iterations,
                      threads=threads).astype(np.float64)
    scale = float(rec.mean())
    if scale <= 0.0:
        return rec
    root = _bm4d(np.sqrt(rec / scale), sigma)
    return np.maximum(root, 0.0) ** 2 * scale


N2I = {"preset": "tiny", "steps": 300, "batch": 8, "crop": 64, "lr": 1e-3, "seed": 0,
       "root": True}


def _inputs(x: np.ndarray) -> np.ndarray:
    """The network's view of a normalized half volume: its square root (``root``), which evens
    out the dynamic range of EM's spiky noise; the target stays linear."""
    return np.sqrt(np.maximum(x, 0.0)) if N2I["root"] else x


def binomial_halves(series: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """Split counts into two independent halves: ``a ~ Bin(x, 1/2)`` and ``x - a``.

    For Poisson counts of rate ``r``, the halves are independent Poisson counts of rate ``r/2``.
    """
    x = np.rint(np.asarray(series, np.float64))
    if not np.all(np.isfinite(x)) or x.min() < 0:
        raise ConfigError("a binomial split needs raw counts (non-negative integers); give the "
                          "tilt series as measured, before any scaling or background removal")
    x = x.astype(np.int64)
    a = rng.binomial(x, 0.5)
    return a.astype(np.float64), (x - a).astype(np.float64)


def _train(pairs: np.ndarray, rng: np.random.Generator):
    """A tiny U-net trained on ``pairs`` (2, slice, H, W): each half's slices to the other's.

    Random crops of random slices, both directions, squared loss (the targets are counts).
    """
    import torch

    from .unet import UNet

    net = UNet.from_preset(N2I["preset"])
    opt = torch.optim.Adam(net.parameters(), lr=N2I["lr"])
    _, n_slices, h, w = pairs.shape
    ch, cw = min(N2I["crop"], h), min(N2I["crop"], w)
    for _ in range(N2I["steps"]):
        src = rng.integers(0, 2, N2I["batch"])
        k = rng.integers(0, n_slices, N2I["batch"])
        i, j = rng.integers(0, h - ch + 1, N2I["batch"]), rng.integers(0, w - cw + 1, N2I["batch"])
        crops = np.stack([pairs[[s, 1 - s], kk, ii:ii + ch, jj:jj + cw]
                          for s, kk, ii, jj in zip(src, k, i, j)]).astype(np.float32)
        x, y = torch.from_numpy(_inputs(crops[:, :1])), torch.from_numpy(crops[:, 1:])
        opt.zero_grad()
        loss = torch.mean((net(x) - y) ** 2)
        loss.backward()
        opt.step()
    return net.eval()


def noise2inverse(series, angles, p, background, iterations, threads):
    """Self-supervised reconstruction-domain denoising of one element (Noise2Inverse-like).

    The counts are split binomially into halves A and B (:func:`binomial_halves`), each is
    reconstructed by EM with half the background removed, and a tiny U-net is trained on this
    structure's y-slices (the tilt axis is y: each is an independent 2D tomography problem)
    mapping A to B and B to A with a squared loss, :data:`N2I` steps (its input is the square
    root of the half, :func:`_inputs`; its target the other half itself). As the halves' noise
    is independent, the network learns the expected half volume given one half. It is applied to
    both halves and the outputs summed: each holds half the counts, and the network has seen
    only half-dose inputs (the full reconstruction has other noise and another EM bias).

    Parameters
    ----------
    series : ndarray, shape (angle, row, col)
        Raw counts of one element, background included.
    angles : sequence of float
        Degrees.
    p : None
        No parameter.
    background : float
        Background counts per map.
    iterations : int
        EM iterations of each half.
    threads : int or None
        Threads of the reconstructions (training runs on one torch thread, so the result does
        not depend on them).

    Returns
    -------
    ndarray, shape (col, row, col), float64
        Counts per voxel (z, y, x).
    """
    import torch

    rng = np.random.default_rng(N2I["seed"])
    halves = [reconstruct(remove_background(h, background / 2), angles, iterations,
                          threads=threads) for h in binomial_halves(series, rng)]
    scale = float(np.mean([h.mean() for h in halves]))
    if scale <= 0.0:
        return halves[0] + halves[1]
    pairs = np.stack([h.transpose(1, 0, 2) / scale for h in halves])  # (half, y, z, x)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(N2I["seed"])
            net = _train(pairs, rng)
        with torch.no_grad():
            out = sum(net(torch.from_numpy(_inputs(h[:, None].astype(np.float32)))).numpy()[:, 0]
                      for h in pairs)
    finally:
        torch.set_num_threads(saved)
    return np.maximum(out.astype(np.float64), 0.0).transpose(1, 0, 2) * scale


register("em-bm4d-val", mode="fitted", bounds=BM4D_SIGMA, scope="volume")(em_bm4d)
register("n2i", scope="volume")(noise2inverse)
