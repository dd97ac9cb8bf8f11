"""Self-supervised adaptation of a U-net to the user's own noisy maps (no ground truth).

Each step takes random crops of the user's count maps ``x`` and splits every crop binomially,
``y ~ Binomial(x, p)`` and ``r = x - y``: for Poisson maps of expected counts ``lam`` the two
halves are independent Poisson maps of means ``p * lam`` and ``(1 - p) * lam`` (Poisson
thinning), so ``r`` is a valid training target for a prediction made from ``y``
(Noise2Noise; for Poisson noise this is the recorrupted-to-recorrupted recipe of Monroy et al.,
"Generalized recorrupted-to-recorrupted", CVPR 2025). The network sees ``y`` normalized as at
inference (:func:`~nanoedx_models.data.datasets.normalize`: divided by its mean count ``k``);
its output times ``k`` estimates the expected counts of ``y``, and times ``(1 - p) / p`` those
of ``r``, which the loss compares with ``r``: the Poisson negative log-likelihood of ``r``
(default) or the squared error, both in counts, so that the expected rate is what minimizes
them. Never the absolute error: against sparse count targets it learns their median, often 0.

What the adapted model returns. The target ``r`` holds every count of the map, background
included, and nothing in the user's data tells signal from a uniform background; the adapted
model therefore estimates the expected counts per pixel *including* the background the maps
hold (a pretrained model removes the background it was trained with). Its totals match the
input's. Subtract a background estimate before quantifying if the maps hold one.

Where it is not valid. Maps that record at most one count per pixel (single-event maps) are
not Poisson where the local rate is high (tenths of a count per pixel): a pixel counted in one
half is then empty in the other, the halves are not independent, and the network learns that
dependence instead of the rate. Sum short frames of a low rate per frame instead.

Fresh splits, crops, flips and rotations are drawn from ``(seed, step)`` at every step; a
checkpoint ``<out>.ckpt`` (weights, optimizer, step, loss history) is written atomically every
``checkpoint_every`` steps, so ``resume=True`` continues an interrupted run to the weights an
uninterrupted run reaches. The output is an ordinary model file (``nanoedx denoise --model``,
``unet:PATH``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from nanoedx_dataset import __version__
from nanoedx_dataset.errors import ConfigError
from nanoedx_dataset.store.lock import output_lock

from ..data.counts import check_counts
from ..data.scale import MIN_SCALE, normalize
from ..denoisers.modelfile import load_checkpoint, save_model
from ..device import pick_device
from .loop import _checkpoint_path, _save_checkpoint

log = logging.getLogger(__name__)

LOSSES = ("poisson", "mse")
MIN_MAP_COUNTS = 100  # counts per map below which its halves say too little to learn from
SOFTPLUS_BETA = 50.0  # training-time positive output; within log(2)/50 of the clamp at inference


def check_maps(maps) -> np.ndarray:
    """The user's maps as a stack (map, row, col) of int64 counts, refused if unfit to adapt to.

    Raises
    ------
    ConfigError
        Not whole non-negative counts, maps smaller than 16 px, or a map holding fewer than
        ``MIN_MAP_COUNTS`` counts.
    """
    x = check_counts(maps)
    if min(x.shape[-2:]) < 16:
        raise ConfigError(f"maps of {x.shape[-2]} x {x.shape[-1]} px are too small to adapt "
                          "to: give maps of at least 16 x 16 px")
    totals = x.sum(axis=(1, 2))
    low = np.flatnonzero(totals < MIN_MAP_COUNTS)
    if low.size:
        raise ConfigError(f"map {low[0]} holds {totals[low[0]]} counts: adaptation needs at "
                          f"least {MIN_MAP_COUNTS} per map; sum frames or leave that map out")
    return x


def count_loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Loss of predicted expected counts against a count map, per count of the target.

    ``poisson``: ``mean(pred - target * log(pred)) / mean(target)`` (the Poisson negative
    log-likelihood, up to a term free of ``pred``); ``mse``: ``mean((pred - target)**2) /
    mean(target)``. Both are minimized by the expected counts.
    """
    scale = target.mean().clamp_min(MIN_SCALE)
    if kind == "poisson":
        return torch.nn.functional.poisson_nll_loss(pred, target, log_input=False,
                                                    eps=1e-8) / scale
    if kind == "mse":
        return torch.nn.functional.mse_loss(pred, target) / scale
    raise ConfigError(f"unknown loss {kind!r}; choose one of: {', '.join(LOSSES)}")


def _crops(x: np.ndarray, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random square crops (with a random flip and rot90) of random maps of ``x``.

    A crop is placed around a count drawn at random, so crops fall where the maps have counts.
    """
    out = np.empty((n, size, size), np.int64)
    h, w = x.shape[-2:]
    for i in range(n):
        m = x[rng.integers(len(x))]
        flat = m.ravel()
        pick = rng.choice(flat.size, p=flat / flat.sum())
        r, c = divmod(int(pick), w)
        r0 = rng.integers(max(0, r - size + 1), min(r, h - size) + 1)
        c0 = rng.integers(max(0, c - size + 1), min(c, w - size) + 1)
        crop = m[r0:r0 + size, c0:c0 + size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = np.rot90(crop, int(rng.integers(4)))
    return out


def _batch(x: np.ndarray, n: int, size: int, p: float, rng: np.random.Generator):
    """Normalized halves ``y / k``, their scales ``k`` and the other halves ``r``."""
    crops = _crops(x, n, size, rng)
    y = rng.binomial(crops, p)
    pairs = [normalize(m) for m in y]
    inputs = torch.from_numpy(np.stack([q for q, _ in pairs]))[:, None]
    k = torch.tensor([max(s, 1.0 / size**2) for _, s in pairs], dtype=torch.float32)
    return inputs, k[:, None, None, None], torch.from_numpy((crops - y)[:, None].astype(np.float32))


def adapt(maps, out, *, init: str = "default", steps: int = 300, batch_size: int = 8,
          crop: int = 96, lr: float = 1e-4, fraction: float = 0.5, loss: str = "poisson",
          seed: int = 0, device: str = "auto", resume: bool = False, progress: bool = True,
          checkpoint_every: int = 50) -> Path:
    """Fine-tune a U-net on the user's own noisy count maps, without ground truth.

    Parameters
    ----------
    maps : array-like, shape (row, col), (map, row, col) or with more leading axes
        Raw detector counts (whole numbers, non-negative; background included), at least
        ``MIN_MAP_COUNTS`` counts and 16 x 16 px per map. All the maps train one model.
    out : path-like
        The model file to write; ``<out>.ckpt`` holds the state to resume from.
    init : str
        The model to start from: a pretrained name (``"default"``, ``"unet-multidose"``,
        ``"unet-fields"``) or a model file.
    steps, batch_size, crop
        Optimizer steps, crops per step and the crop's side in pixels (cut to the maps' size).
    lr : float
        Adam's learning rate (small: the start is a trained model).
    fraction : float
        Share ``p`` of each crop's counts given to the network (0 < p < 1); the rest is the
        target.
    loss : {"poisson", "mse"}
        Poisson negative log-likelihood or squared error of the target counts.
    seed : int
        Seeds the crops, flips and splits of every step.
    device : {"auto", "cpu", "cuda"}
    resume : bool
        Continue from ``<out>.ckpt`` (the same maps and options).
    progress : bool
        A tqdm bar over the steps.
    checkpoint_every : int
        Steps between checkpoints.

    Returns
    -------
    Path
        ``out``, a model file whose output is the expected counts per pixel of the input map,
        background included (module docstring).

    Raises
    ------
    ConfigError
        Maps that are not counts or hold too few, bad options, ``out`` the same file as
        ``init``, or ``resume`` without a checkpoint.
    """
    from ..denoisers.pretrained import load_pretrained

    out = Path(out)
    x = check_maps(maps)
    if loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; choose one of: {', '.join(LOSSES)}")
    if not 0 < fraction < 1:
        raise ConfigError(f"fraction must be between 0 and 1 (exclusive), got {fraction}")
    if steps < 1 or batch_size < 1 or crop < 16 or lr <= 0 or checkpoint_every < 1:
        raise ConfigError("steps, batch_size and checkpoint_every must be >= 1, crop >= 16 px "
                          "and lr > 0")
    if Path(init).suffix == ".pt" and out.resolve() == Path(init).resolve():
        raise ConfigError(f"{out} is the model to start from: write the adapted model to "
                          "another file")
    dev = pick_device(device)
    torch.manual_seed(seed)
    model, base_meta = load_pretrained(init, dev)
    size = min(crop, *x.shape[-2:])
    meta = {"adapted_from": str(init), "init_meta": {k: base_meta.get(k) for k in
                                                      ("preset", "counts", "recipe") if k in base_meta},
            "steps": steps, "batch_size": batch_size, "crop": size, "lr": lr,
            "fraction": fraction, "loss": loss, "seed": seed, "maps": int(len(x)),
            "map_shape": list(x.shape[-2:]), "counts_per_map": float(x.sum() / len(x)),
            "output": "expected counts per pixel, background included", "nanoedx": __version__}
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ckpt = _checkpoint_path(out)
    history, start = [], 0
    with output_lock(out):
        if resume:
            if not ckpt.exists():
                raise ConfigError(f"nothing to resume: no {ckpt}; start without --resume")
            state = load_checkpoint(ckpt, model, opt)
            history, start = state["history"], state["epoch"]
        model.train()
        bar = tqdm(range(start, steps), desc="adapt", disable=not progress, leave=False)
        for step in bar:
            rng = np.random.default_rng([seed, step])
            inputs, k, target = _batch(x, batch_size, size, fraction, rng)
            raw = model(inputs.to(dev))
            pred = torch.nn.functional.softplus(raw, beta=SOFTPLUS_BETA) if loss == "poisson" \
                else raw
            pred = pred * k.to(dev) * ((1 - fraction) / fraction)
            value = count_loss(pred, target.to(dev), loss)
            opt.zero_grad()
            value.backward()
            opt.step()
            history.append(float(value.detach()))
            bar.set_postfix(loss=f"{np.mean(history[-20:]):.4f}")
            if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
                _save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                        "history": history, "best": None, "epoch": step + 1})
        log.info("adapted %s on %d maps: %d steps, loss %.4f", init, len(x), steps,
                 np.mean(history[-20:]) if history else float("nan"))
        save_model(out, model.eval(), {**meta, "history": history})
    return out


def denoise_splits(maps, model, splits: int = 8, fraction: float = 0.5, seed: int = 0,
                   device: str = "auto") -> np.ndarray:
    """Expected counts of the full maps as the mean over ``splits`` binomial parts.

    Each part ``y ~ Binomial(x, fraction)`` is denoised and divided by ``fraction``: the dose
    an adapted model was trained at, instead of the full map's (compare :func:`denoise`).

    Returns
    -------
    ndarray, float32, the shape of ``maps``
    """
    from ..denoisers.inference import denoise

    x = check_counts(maps).reshape(np.shape(maps))
    rng = np.random.default_rng(seed)
    total = np.zeros(x.shape, np.float64)
    for _ in range(splits):
        total += denoise(rng.binomial(x, fraction), model=model, device=device)
    return (total / (splits * fraction)).astype(np.float32)


__all__ = ["adapt", "check_maps", "count_loss", "denoise_splits"]
