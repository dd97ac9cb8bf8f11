"""The torch device of a job: ``auto`` takes the GPU when there is one."""

from __future__ import annotations

import torch

from nanoedx_dataset.errors import ConfigError


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but no GPU is available; use --device cpu")
    return torch.device(device)
