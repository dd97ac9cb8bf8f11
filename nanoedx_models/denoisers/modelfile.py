"""The model file: one torch file holding weights, architecture, normalization and metadata.

Loading uses ``torch.load(weights_only=True)`` (no code runs from the file) and refuses files
that are not nanoedx model files.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nanoedx_dataset.errors import DatasetNotFoundError, SchemaError
from nanoedx_dataset.store.files import atomic_output

from .unet import UNet

FORMAT = "nanoedx-model"
FORMAT_VERSION = 1
NORMALIZATION = "divide by the noisy map's mean count per pixel; output times that mean"


def save_model(path, model: UNet, meta: dict, half: bool = False) -> Path:
    """Write a model file atomically. ``half`` stores the weights as float16 (half the size)."""
    path = Path(path)
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": "unet",
            "config": model.config, "normalization": NORMALIZATION, "state_dict": state,
            "meta": meta}
    with atomic_output(path) as tmp:
        torch.save(blob, tmp)
    return path


def load_model(path, device: str | torch.device = "cpu") -> tuple[UNet, dict]:
    """Read a model file; returns the U-net (eval mode, float32) and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"no model file at {path}; train one with `nanoedx train` "
                                   "or use a pretrained name (nanoedx_models.PRETRAINED)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, or one holding code
        raise SchemaError(f"{path} is not a nanoedx model file ({type(err).__name__}); "
                          "train one with `nanoedx train`") from err
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise SchemaError(f"{path} is not a nanoedx model file (no format {FORMAT!r}); "
                          "train one with `nanoedx train`")
    if blob.get("format_version") != FORMAT_VERSION:
        raise SchemaError(f"{path} has model format {blob.get('format_version')}, this nanoedx "
                          f"reads {FORMAT_VERSION}: upgrade nanoedx")
    model = UNet(**blob["config"])
    model.load_state_dict({k: v.float() for k, v in blob["state_dict"].items()})
    return model.to(device).eval(), dict(blob.get("meta", {}))
