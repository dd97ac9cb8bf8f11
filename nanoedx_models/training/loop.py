"""Train the U-net denoiser (the paper's protocol: Adam, lr 1e-3, supervised pairs).

Each epoch draws its own noise (on-the-fly mode) and its own shuffling from ``(seed, epoch)``,
and a checkpoint (model, optimizer, history) is written after every epoch, so ``resume=True``
continues an interrupted run to exactly the weights an uninterrupted run reaches. The model
file keeps the weights of the best validation epoch. Started by ``torchrun``, the processes
train one model data-parallel (DDP) on shares of the same global batches
(:mod:`nanoedx_models.distributed`). The model file and the checkpoint are each written to a
temporary file, made durable and renamed, so a kill leaves the previous one or the new one;
one run trains into an output at a time (its lock is ``<out>.lock``).
"""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm

from nanoedx_dataset import __version__
from nanoedx_dataset.errors import ConfigError
from nanoedx_dataset.store.files import atomic_output
from nanoedx_dataset.store.lock import output_lock

from ..data.context import check_context, n_channels
from ..data.datasets import EDXMaps
from ..denoisers.modelfile import load_checkpoint, load_model, save_model
from ..denoisers.unet import PRESETS, UNet
from ..device import pick_device
from . import distributed

log = logging.getLogger(__name__)


def _checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def _evaluate(model: UNet, loader: DataLoader, device: torch.device) -> float:
    """Mean per-map nMAE (%) of the clamped output against the target."""
    model.eval()
    errs = []
    with torch.no_grad():
        for x, y in loader:
            pred = model(x.to(device)).clamp_min(0).cpu()
            errs += ((pred - y).abs().mean((1, 2, 3)) / y.mean((1, 2, 3)) * 100).tolist()
    return float(np.mean(errs))


def train(data, out, *, preset: str = "small", epochs: int = 10, batch_size: int = 8,
          lr: float = 1e-3, device: str = "auto", seed: int = 0, noise: str | None = None,
          counts=None, background: float | None = None,
          background_fraction: float | None = None, per_structure: bool = True,
          maps_per_epoch: int | None = None, workers: int = 0, resume: bool = False,
          progress: bool = True, crops=None, init: str | None = None, context=()) -> Path:
    """Train a U-net on the ``train`` split and keep the best ``val`` epoch.

    Parameters
    ----------
    data : str or path-like
        Release name, database file or folder of shards.
    out : path-like
        The model file to write (``<out>.ckpt`` holds the resumable state).
    preset : str
        U-net preset (:data:`nanoedx_models.unet.PRESETS`).
    epochs, batch_size, lr, seed
        Training length and Adam's learning rate (1e-3 in the paper).
    device : {"auto", "cpu", "cuda"}
    noise, counts, background, background_fraction
        Stored noise level, or on-the-fly noise (see :class:`EDXMaps`).
    per_structure : bool
        One map per training structure (paper) or all maps.
    maps_per_epoch : int, optional
        Random maps drawn per epoch (default: all).
    workers : int
        DataLoader worker processes.
    resume : bool
        Continue from ``<out>.ckpt``.
    crops : sequence of int, optional
        Train each batch on a random square crop of one of these sizes (drawn per batch), each
        crop renormalized by its own mean count: the network sees several map sizes at the
        same counts per pixel. Default: whole maps.
    init : str, optional
        Start from these weights (a pretrained name or a model file of the same preset)
        instead of a random initialization: fine-tuning. A single-map model can start a
        context model: its first convolution's weights on the context channels start at zero,
        so training starts from the single-map model's output.
    context : sequence of str, optional
        Context channels beside each map (:mod:`nanoedx_models.data.context`: ``haadf``,
        ``elements``, ``tilts``); stored in the model file, and a denoiser reads them from the
        series it is given.

    Notes
    -----
    Run under ``torchrun`` (several processes, ``WORLD_SIZE`` > 1), ``batch_size`` is the
    global batch, shared equally by the processes (it must divide by their number); rank 0
    writes the model file and checkpoints. See :mod:`nanoedx_models.distributed`.

    Returns
    -------
    Path
        ``out``.
    """
    out = Path(out)
    if preset not in PRESETS:
        raise ConfigError(f"unknown U-net preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ConfigError("epochs and batch_size must be >= 1 and lr > 0")
    world = distributed.world()
    local_batch = distributed.per_process_batch(batch_size, world)
    dev = pick_device(device)
    context = check_context(context)
    kw = dict(noise=noise, counts=counts, background=background,
              background_fraction=background_fraction, seed=seed, context=context)
    train_ds = EDXMaps(data, "train", per_structure=per_structure, **kw)
    val_ds = EDXMaps(data, "val", per_structure=True, **kw)  # fixed noise: epoch 0 always
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise ConfigError(f"{data} has {len(train_ds)} train and {len(val_ds)} val maps; "
                          "training needs both")
    meta = {"data": str(data), "data_version": train_ds.describe()["dataset_version"],
            "noise": noise, "counts": counts, "background": background,
            "background_fraction": background_fraction, "preset": preset, "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "seed": seed, "per_structure": per_structure,
            "train_maps": len(train_ds), "val_maps": len(val_ds), "nanoedx": __version__,
            "processes": world.size, "crops": list(crops) if crops else None, "init": init,
            "context": list(context),
            "schedule": f"Adam, constant learning rate {lr:g}, batch {batch_size}; "
                        f"{maps_per_epoch or len(train_ds)} maps per epoch"}
    base = None
    if init is not None:
        from ..denoisers.pretrained import load_pretrained

        base, base_meta = load_pretrained(init)
        meta.update(_continued(init, base_meta, meta["schedule"]))
    with output_lock(out) if world.main else nullcontext():  # rank 0 writes the files
        dev = distributed.setup(world, dev)
        try:
            return _fit(train_ds, val_ds, out, meta, world, dev, local_batch, maps_per_epoch,
                        workers, resume, progress, base)
        finally:
            distributed.teardown(world)


def _fit(train_ds: EDXMaps, val_ds: EDXMaps, out: Path, meta: dict, world, dev,
         local_batch: int, maps_per_epoch: int | None, workers: int, resume: bool,
         progress: bool, base: UNet | None = None) -> Path:
    """The epochs of :func:`train` (in each process of a DDP run); ``base``: the ``init``
    model's network."""
    epochs, batch_size, seed = meta["epochs"], meta["batch_size"], meta["seed"]
    torch.manual_seed(seed)
    model = UNet.from_preset(meta["preset"], n_channels(meta.get("context"))).to(dev)
    if base is not None and not resume:
        model.load_state_dict(_init_state(base, model, meta))
    opt = torch.optim.Adam(model.parameters(), lr=meta["lr"])
    history, best, start = [], float("inf"), 0
    ckpt = _checkpoint_path(out)
    if resume:
        if not ckpt.exists():
            raise ConfigError(f"nothing to resume: no {ckpt}; start without --resume")
        state = load_checkpoint(ckpt, model, opt)
        history, best, start = state["history"], state["best"], state["epoch"] + 1
    net = distributed.wrap(model, world, dev)
    val_loader = DataLoader(val_ds, batch_size=batch_size, num_workers=workers)
    loss_fn = torch.nn.L1Loss()
    drawn = meta.get("prior_epochs", 0)  # a further stage draws new noise and map orders
    for epoch in range(start, epochs):
        train_ds.set_epoch(drawn + epoch)
        gen = torch.Generator().manual_seed(seed * 100_003 + drawn + epoch)
        crop_gen = torch.Generator().manual_seed(seed * 100_003 + drawn + epoch + 50_021)
        sampler = RandomSampler(train_ds, num_samples=maps_per_epoch or len(train_ds),
                                generator=gen)
        if world.parallel:  # this process's share of the same global batches
            sampler = distributed.DealtSampler(list(sampler), world)
        loader = DataLoader(train_ds, batch_size=local_batch, sampler=sampler,
                            num_workers=workers)
        net.train()
        started = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not (progress and world.main), leave=False)
        running = []
        for x, y in bar:
            if meta.get("crops"):
                x, y = _crop(x, y, meta["crops"], crop_gen)
            opt.zero_grad()
            loss = loss_fn(net(x.to(dev)), y.to(dev))
            loss.backward()
            opt.step()
            running.append(distributed.mean(loss.detach(), world))  # the global batch's loss
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}")
        if not world.main:
            distributed.barrier(world)  # rank 0 evaluates and writes
            continue
        val = _evaluate(model, val_loader, dev)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(running)), "val_nmae": val,
                        "map_steps": meta.get("prior_map_steps", 0)
                        + (epoch + 1) * (maps_per_epoch or len(train_ds)),
                        "seconds": round(time.perf_counter() - started, 3)})
        log.info("epoch %d: loss %.4f, val nMAE %.2f %%", epoch + 1, np.mean(running), val)
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{epochs}: loss {np.mean(running):.4f}, "
                       f"val nMAE {val:.2f} %")
        if val < best:
            best = val
            save_model(out, model, {**meta, "best_epoch": epoch + 1, "val_nmae": val,
                                    "history": history})
        _save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                "history": history, "best": best, "epoch": epoch})
        distributed.barrier(world)
    if world.main:  # the model file records the whole history, whichever epoch was best
        model_best, meta_best = load_model(out)
        save_model(out, model_best, {**meta_best, "history": history})
    return out


def _continued(init: str, prior: dict, schedule: str) -> dict:
    """What a model started from ``init`` (metadata ``prior``) inherits from it: the map-steps
    and epochs it was trained for (its history's last; this stage's noise and map order go on
    from its epochs), and its schedule before this stage's (``then``); nothing for a model
    without a history."""
    steps = (prior.get("history") or [{}])[-1].get("map_steps")
    if steps is None:
        return {}
    before = prior.get("schedule") or "an unrecorded schedule"
    return {"prior_map_steps": int(steps),
            "prior_epochs": prior.get("prior_epochs", 0) + len(prior["history"]),
            "schedule": f"{before}; then, from {init!r} after {int(steps)} map-steps: {schedule}"}


def _init_state(base: UNet, model: UNet, meta: dict) -> dict:
    """``base``'s weights for ``model``: the same U-net, or ``model`` with context channels
    (its first convolution's weights on them zero, so it starts as ``base``)."""
    same = {k: v for k, v in base.config.items() if k != "in_channels"}
    want = {k: v for k, v in model.config.items() if k != "in_channels"}
    if same != want or base.in_channels not in (1, model.in_channels):
        raise ConfigError(f"init model {meta['init']!r} is a {base.config} U-net, not the "
                          f"{meta['preset']!r} preset's {model.config}")
    state = base.state_dict()
    if base.in_channels != model.in_channels:
        first = "down.0.0.weight"
        w = torch.zeros_like(model.state_dict()[first])
        w[:, :1] = state[first]
        state = {**state, first: w}
    return state


def _crop(x: torch.Tensor, y: torch.Tensor, sizes, gen: torch.Generator):
    """A random square crop (one size and offset for the batch) of normalized map pairs,
    each input channel renormalized by its crop's mean (the target by the map's)."""
    size = int(sizes[int(torch.randint(len(sizes), (1,), generator=gen))])
    h, w = x.shape[-2:]
    size = min(size, h, w)
    r = int(torch.randint(h - size + 1, (1,), generator=gen))
    c = int(torch.randint(w - size + 1, (1,), generator=gen))
    x, y = x[..., r:r + size, c:c + size], y[..., r:r + size, c:c + size]
    m = x.mean(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    return x / m, y / m[:, :1]


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_output(path) as tmp:
        torch.save(state, tmp)
