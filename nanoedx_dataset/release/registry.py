"""The release registry: ``releases.json`` (package data), per release name and version the
file names, their SHA-256 hashes (``sha256:<hex>``), the base URL and the exact command that
regenerates them. Plain data, read here and written by :func:`~.publish.publish`."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import DatasetNotFoundError

REGISTRY = "releases.json"
PACKAGE = "nanoedx_dataset"
HASH_PREFIX = "sha256:"  # the one spelling of a hash in the package's registries


def registry_path() -> Path:
    """The package's registry file."""
    return Path(str(resources.files(PACKAGE).joinpath(REGISTRY)))


def data_dir() -> Path:
    """The package folder that embedded releases ship in."""
    return Path(str(resources.files(PACKAGE).joinpath("data")))


def spell_hash(hexdigest: str) -> str:
    """A hash as the registries write it: ``sha256:<hex>``."""
    return HASH_PREFIX + hexdigest


def hex_of(spelled: str) -> str:
    """The hex digest of a registry hash (``sha256:<hex>``)."""
    return spelled.removeprefix(HASH_PREFIX)


@lru_cache(maxsize=1)
def releases() -> dict:
    """The release registry: ``{name: {version: entry}}`` (see ``releases.json``)."""
    return json.loads(registry_path().read_text())


def listing() -> str:
    return "; ".join(f"{n} ({', '.join(v)})" for n, v in releases().items())


def semver(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in v.split("."))


def release_entry(name: str, version: str = "latest") -> tuple[str, dict]:
    """The registry entry of a release; the errors list what is known."""
    if name not in releases():
        raise DatasetNotFoundError(f"unknown release {name!r}; known releases: {listing()}")
    versions = releases()[name]
    if version == "latest":
        version = max(versions, key=semver)
    if version not in versions:
        raise DatasetNotFoundError(f"release {name!r} has no version {version!r}; "
                                   f"known versions: {', '.join(versions)}")
    return version, versions[version]
