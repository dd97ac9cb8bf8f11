"""Data-parallel training (torch DDP) for ``train`` when started by ``torchrun``.

``torchrun --nproc-per-node G [--nnodes N ...] -m nanoedx_models.cli train ...`` starts one
process per GPU (or per CPU share) with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`world` reads them (one process without them).
The processes join one group (NCCL on CUDA, Gloo on CPU) and each trains a
``DistributedDataParallel`` copy of the model on its share of every global batch.

The global batch is the ``batch_size`` given to ``train``; each of the W processes takes
``batch_size / W`` maps of it (so ``batch_size`` must divide by W). :class:`DealtSampler` deals
the single-process order of an epoch out round-robin, so that the W per-process batches of a
step together are exactly the single-process batch of that step; DDP averages the gradients,
and the mean of W equal-sized per-process L1 means is the global batch's L1 mean. Training
with W processes therefore follows single-process training to floating-point rounding, with
one exception: an epoch's last, short batch is trimmed to a multiple of W maps (at most W - 1
maps of an epoch left out), as ``DistributedSampler(drop_last=True)`` does. Only rank 0
evaluates, writes the model file and checkpoints, and shows progress bars.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from nanoedx_dataset.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes files and shows progress (rank 0)."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


def world() -> World:
    """The world ``torchrun`` describes in the environment (one process if unset)."""
    size = int(os.environ.get("WORLD_SIZE", 1))
    if size <= 1:
        return World()
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", 0)))


def per_process_batch(batch_size: int, w: World) -> int:
    """Maps per process and step: the global ``batch_size`` shared equally by the processes."""
    if batch_size % w.size:
        raise ConfigError(f"the global batch size {batch_size} does not divide among "
                          f"{w.size} processes; give --batch-size a multiple of {w.size}")
    return batch_size // w.size


def setup(w: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, Gloo on CPU); returns this process's device."""
    if not w.parallel:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", w.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=w.rank, world_size=w.size)
    return device


def teardown(w: World) -> None:
    """Leave the process group."""
    if w.parallel and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, w: World, device: torch.device) -> torch.nn.Module:
    """The model DDP-wrapped when there are several processes (rank 0's weights broadcast)."""
    if not w.parallel:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def mean(value: torch.Tensor, w: World) -> float:
    """The mean of a scalar over the processes (each computed on an equal share)."""
    if not w.parallel:
        return float(value)
    total = value.detach().clone().reshape(1)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return float(total) / w.size


def barrier(w: World) -> None:
    """Wait for every process (no-op in one process)."""
    if w.parallel:
        dist.barrier()


class DealtSampler(Sampler):
    """One process's share of a global order, dealt out round-robin.

    Process ``rank`` of ``size`` takes items ``rank, rank + size, rank + 2 size, ...`` of
    ``order`` trimmed to a multiple of ``size``; with a per-process batch ``b``, the processes'
    batches of step ``j`` together are ``order[j * b * size : (j + 1) * b * size]``.
    """

    def __init__(self, order: list[int], w: World):
        keep = len(order) - len(order) % w.size
        self.indices = list(order[:keep])[w.rank::w.size]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
