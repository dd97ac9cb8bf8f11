"""Pretrained models by name: small ones ship in the package, larger ones come through pooch.

The registry (``pretrained.json``, package data) lists per name the file, its SHA-256, whether
it is embedded, the base URL to fetch it from otherwise, and how it was trained.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

from nanoedx_dataset.errors import DatasetNotFoundError, SchemaError
from nanoedx_dataset.release.fetch import download
from nanoedx_dataset.release.registry import hex_of
from nanoedx_dataset.store.files import sha256

from .modelfile import load_model

DEFAULT = "unet-fields"  # robust to dose and field; unet-small was the default up to 0.1
URL_ENV = "NANOEDX_MODELS_URL"


@lru_cache(maxsize=1)
def registry() -> dict:
    """``{name: entry}`` of the pretrained models."""
    return json.loads(resources.files(__package__).joinpath("pretrained.json").read_text())


def model_path(name: str = DEFAULT, cache_dir=None) -> Path:
    """Local, hash-checked file of a pretrained model (fetched with pooch if not embedded)."""
    reg = registry()
    if name == "default":
        name = DEFAULT
    if name not in reg:
        raise DatasetNotFoundError(f"unknown pretrained model {name!r}; known: "
                                   f"{', '.join(reg)} (or give a model file path)")
    entry = reg[name]
    if not entry.get("file"):
        raise DatasetNotFoundError(f"pretrained model {name!r} is not available: "
                                   f"{entry.get('status', 'not trained yet')}")
    if entry.get("embedded"):
        path = Path(str(resources.files(__package__).joinpath("weights", entry["file"])))
        if sha256(path) != hex_of(entry["sha256"]):
            raise SchemaError(f"{path} does not match its SHA-256 in pretrained.json; "
                              "reinstall nanoedx")
        return path
    base = os.environ.get(URL_ENV) or entry.get("url")
    fix = f"set {URL_ENV} to a server holding {entry['file']}"
    if not base:
        raise DatasetNotFoundError(f"{name} is not published for download yet; {fix}")
    files = {entry["file"]: entry["sha256"]}
    return download(files, base, cache_dir, fix)[entry["file"]]


def load_pretrained(name: str = "default", device: str = "cpu"):
    """A pretrained U-net and its metadata.

    Parameters
    ----------
    name : str
        ``"default"`` (the embedded CPU-friendly model), a name of :func:`registry`, or a
        path to a model file.
    device : str

    Returns
    -------
    (UNet, dict)
    """
    path = Path(name)
    if name not in registry() and name != "default" and path.suffix == ".pt":
        return load_model(path, device)
    return load_model(model_path(name), device)
