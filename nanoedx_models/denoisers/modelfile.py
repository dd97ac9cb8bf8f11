"""The model file: one torch file holding weights, architecture, normalization and metadata.

Loading uses ``torch.load(weights_only=True)`` (no code runs from the file) and refuses files
that are not nanoedx model files, files whose architecture does not match their weights, and
weights that are not finite (a model with a NaN weight answers NaN for every map). Training
checkpoints are read by :func:`load_checkpoint` with the same checks.
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


def _read(path: Path, what: str, fix: str):
    """``torch.load`` of a file that must be a dict (weights only: no code runs)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- not a torch file, damaged, or one holding code
        raise SchemaError(f"{path} is not a {what} ({type(err).__name__}); {fix}") from err
    if not isinstance(blob, dict):
        raise SchemaError(f"{path} is not a {what} (it holds a {type(blob).__name__}); {fix}")
    return blob


def _load_weights(model: torch.nn.Module, state, path: Path, fix: str) -> None:
    """Load ``state`` into ``model``; a mismatch or a non-finite weight is a SchemaError."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise SchemaError(f"{path} holds no weights (state_dict); {fix}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise SchemaError(f"{path} holds NaN or infinite weights ({bad[0]}, ...): the model "
                          f"would answer NaN; {fix}")
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v
                               for k, v in state.items()})
    except RuntimeError as err:
        first = str(err).splitlines()[1:2] or [str(err)]
        raise SchemaError(f"{path}: its weights do not fit its U-net ({first[0].strip()}); "
                          f"{fix}") from err


def load_model(path, device: str | torch.device = "cpu") -> tuple[UNet, dict]:
    """Read a model file; returns the U-net (eval mode, float32) and its metadata.

    Raises
    ------
    DatasetNotFoundError
        No file at ``path``.
    SchemaError
        Not a nanoedx model file, another model format version, an architecture that does not
        match the weights, or NaN / infinite weights.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"no model file at {path}; train one with `nanoedx train` "
                                   "or use a pretrained name (nanoedx_models.PRETRAINED)")
    fix = "train one with `nanoedx train` or use a pretrained name"
    blob = _read(path, "nanoedx model file", fix)
    if blob.get("format") != FORMAT:
        raise SchemaError(f"{path} is not a nanoedx model file (no format {FORMAT!r}); {fix}")
    if blob.get("format_version") != FORMAT_VERSION:
        raise SchemaError(f"{path} has model format {blob.get('format_version')}, this nanoedx "
                          f"reads {FORMAT_VERSION}: upgrade nanoedx")
    config = blob.get("config")
    try:
        model = UNet(**config)
    except (TypeError, ValueError, RuntimeError) as err:
        raise SchemaError(f"{path} has an unusable U-net config {config!r} ({err}); "
                          f"{fix}") from err
    _load_weights(model, blob.get("state_dict"), path, fix)
    meta = blob.get("meta", {})
    return model.to(device).eval(), dict(meta) if isinstance(meta, dict) else {}


def load_checkpoint(path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore a training checkpoint into ``model`` and ``optimizer``; returns its state.

    The state holds ``history``, ``best`` and ``epoch``. A file that is not a checkpoint, is
    damaged, was made for another U-net preset or holds non-finite weights raises
    :class:`SchemaError` saying to start again without ``--resume``.
    """
    path = Path(path)
    fix = "delete it and train again without --resume (or with the options it was started with)"
    state = _read(path, "nanoedx training checkpoint", fix)
    missing = [k for k in ("model", "optimizer", "history", "best", "epoch") if k not in state]
    if missing:
        raise SchemaError(f"{path} is not a nanoedx training checkpoint (no {missing[0]}); {fix}")
    _load_weights(model, state["model"], path, fix)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise SchemaError(f"{path}: its optimizer state does not fit this run ({err}); "
                          f"{fix}") from err
    return state
