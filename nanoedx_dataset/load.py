"""``load_dataset``: a release or local files as one lazy, labelled ``xarray.Dataset``.

Releases are listed in ``releases.json`` (package data): per name and version the file names,
their SHA-256 hashes, the base URL and the exact command that regenerates them. The ``mini``
release ships inside the package; the others are fetched with pooch into a cache
(``NANOEDX_DATA_DIR`` or the OS cache folder) from the release's base URL (``NANOEDX_DATA_URL``
overrides it). A cached file whose hash matches is used with no network call.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import xarray as xr

from . import schema, shards
from .errors import ConfigError, DatasetNotFoundError, SchemaError
from .files import sha256

URL_ENV = "NANOEDX_DATA_URL"
CACHE_ENV = "NANOEDX_DATA_DIR"
REGISTRY = "releases.json"
CATALOGUE = ("family", "kind", "split", "params")


@lru_cache(maxsize=1)
def releases() -> dict:
    """The release registry: ``{name: {version: entry}}`` (see ``releases.json``)."""
    return json.loads(resources.files(__package__).joinpath(REGISTRY).read_text())


def _listing() -> str:
    return "; ".join(f"{n} ({', '.join(v)})" for n, v in releases().items())


def _semver(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in v.split("."))


def release_entry(name: str, version: str = "latest") -> tuple[str, dict]:
    """The registry entry of a release; the errors list what is known."""
    if name not in releases():
        raise DatasetNotFoundError(f"unknown release {name!r}; known releases: {_listing()}")
    versions = releases()[name]
    if version == "latest":
        version = max(versions, key=_semver)
    if version not in versions:
        raise DatasetNotFoundError(f"release {name!r} has no version {version!r}; "
                                   f"known versions: {', '.join(versions)}")
    return version, versions[version]


def _check_hash(path: Path, expected: str) -> None:
    got = sha256(path)
    if got != expected.split(":")[-1]:
        raise SchemaError(f"{path.name}: SHA-256 {got} does not match the registry's "
                          f"{expected}; the file is corrupt or not this release")


def _embedded(name: str, fname: str) -> Path | None:
    ref = resources.files(__package__).joinpath("data", fname)
    return Path(str(ref)) if ref.is_file() else None


def fetch_release(name: str, version: str = "latest", cache_dir=None,
                  progress: bool = False) -> list[Path]:
    """Local paths of a release's files: embedded, cached, or downloaded with pooch.

    Parameters
    ----------
    name : str
        Release name (``mini``, ``standard``, ``paper``).
    version : str
        A version of that release, or ``"latest"``.
    cache_dir : path-like, optional
        Cache folder (default: ``$NANOEDX_DATA_DIR`` or the OS cache folder).
    progress : bool
        Show pooch's download progress bar.

    Returns
    -------
    list of Path
        The release's files, each hash-checked.
    """
    version, entry = release_entry(name, version)
    files: dict[str, str] = entry["files"]
    local = {f: _embedded(name, f) for f in files} if entry.get("embedded") else {}
    for fname, path in local.items():
        _check_hash(path, files[fname])
    missing = {f: h for f, h in files.items() if local.get(f) is None}
    fix = (f"set {URL_ENV} to a server holding the release files, or generate it locally: "
           f"`{entry['command']}`")
    base = os.environ.get(URL_ENV) or entry.get("url")
    if missing and not base:
        raise DatasetNotFoundError(f"release {name} {version} is not published for download "
                                   f"yet; {fix}")
    fetched = download(missing, base, cache_dir, fix, progress) if missing else {}
    return [local.get(f) or fetched[f] for f in files]


def download(files: dict[str, str], base: str, cache_dir, fix: str,
             progress: bool = False) -> dict[str, Path]:
    """Fetch files (name -> ``sha256:...``) from ``base`` into the cache with pooch.

    A cached file with the right hash is used without a network call; a download whose hash
    does not match is deleted and raises :class:`SchemaError`; an unreachable server with no
    cached copy raises :class:`DatasetNotFoundError` ending with ``fix``.
    """
    import pooch
    import requests

    store = pooch.create(
        path=Path(cache_dir) if cache_dir else pooch.os_cache("nanoedx"),
        base_url=base.rstrip("/") + "/",
        registry=files,
        env=None if cache_dir else CACHE_ENV,
        retry_if_failed=0,
    )
    out = {}
    for fname in files:
        try:
            out[fname] = Path(store.fetch(fname, progressbar=progress))
        except ValueError as err:
            if "hash" in str(err):
                raise SchemaError(f"download of {fname} from {base} is corrupt: {err}") from err
            raise
        except (requests.RequestException, OSError) as err:
            raise DatasetNotFoundError(f"cannot download {fname} from {base} and it is not in "
                                       f"the cache ({store.abspath}): {err}; {fix}") from err
    return out


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        shards.check_complete(path)  # a sharded run still being written is refused
        files = sorted(path.glob("*.h5"))
        if not files:
            raise DatasetNotFoundError(f"no .h5 files in {path}; generate one with "
                                       "`nanoedx generate --out DIR/FILE.h5`")
        return files
    if path.is_file():
        return [path]
    raise DatasetNotFoundError(f"unknown release {str(path)!r} and no such file or folder; "
                               f"known releases: {_listing()}")


def resolve(name_or_path, version: str = "latest", cache_dir=None) -> list[Path]:
    """Local files of a release name (fetched if needed), a file, or a folder of shards."""
    path = Path(name_or_path)
    if isinstance(name_or_path, str) and name_or_path in releases() and not path.exists():
        return fetch_release(name_or_path, version, cache_dir)
    return _local_files(path)


def open_file(path: Path, noise: str | None = None) -> xr.Dataset:
    """One database file as a lazy dataset, with one noise level as the variable ``noisy``."""
    with schema.open_database(path) as f:  # checks it is a complete nanoedx file
        levels = schema.noise_levels(f)
    ds = xr.open_dataset(path, engine="h5netcdf", chunks={"sample": 1})
    ds = ds.drop_vars("written").set_coords(list(CATALOGUE))
    ds = ds.assign_coords(sample=np.arange(ds.sizes["sample"]))
    if levels:
        tag = noise or next(iter(levels))
        if tag not in levels:
            raise ConfigError(f"{path.name} has no noise level {tag!r}; it has "
                              f"{', '.join(levels)} (add one with `nanoedx renoise`)")
        grp = xr.open_dataset(path, engine="h5netcdf", group=schema.noisy_path(tag),
                              chunks={"sample": 1})
        ds["noisy"] = grp[schema.NOISY_FIELD.name].assign_attrs(
            {**grp.attrs, "tag": tag})
    ds.attrs["noise_levels"] = list(levels)
    return ds


def load_dataset(name_or_path="mini", version: str = "latest", split: str | None = None,
                 noise: str | None = None, cache_dir=None) -> xr.Dataset:
    """Load a nanoedx database as a lazy, labelled ``xarray.Dataset``.

    Parameters
    ----------
    name_or_path : str or path-like
        A release name (``"mini"``, ``"standard"``, ``"paper"``), an HDF5 file, or a folder of
        shard files (joined along ``sample`` in name order).
    version : str
        Release version, or ``"latest"``. Ignored for local paths.
    split : {"train", "val", "test"}, optional
        Keep one split.
    noise : str, optional
        Noise level tag (e.g. ``"c1000_b100"``) to expose as ``noisy``; default: the file's
        first level.
    cache_dir : path-like, optional
        Download cache (default ``$NANOEDX_DATA_DIR`` or the OS cache).

    Returns
    -------
    xarray.Dataset
        ``volume`` (sample, element, z, y, x) occupancy in [0, 1]; ``projection`` (sample,
        element, angle, row, col) clean line integrals in voxels; ``noisy`` (same dims) uint16
        counts; coordinates ``angle`` (degrees), ``element`` and the catalogue ``family``,
        ``kind``, ``split`` and ``params`` (JSON spec) per sample. Arrays are dask-backed and
        read only when used.

    Examples
    --------
    >>> from nanoedx_dataset import load_dataset
    >>> ds = load_dataset("mini", split="test")  # embedded: works offline
    >>> ds.noisy.isel(sample=0, element=0, angle=7).values.sum()  # doctest: +SKIP
    """
    schema.check_split(split)
    parts = [open_file(p, noise) for p in resolve(name_or_path, version, cache_dir)]
    if len(parts) == 1:
        ds = parts[0]
    else:
        for p in parts[1:]:
            if p.sizes["z"] != parts[0].sizes["z"] or not (p["angle"] == parts[0]["angle"]).all():
                raise SchemaError("shards differ in size or angles; they are not one release")
        offsets, start = [], 0
        for p in parts:
            offsets.append(p.assign_coords(sample=range(start, start + p.sizes["sample"])))
            start += p.sizes["sample"]
        ds = xr.concat(offsets, dim="sample", data_vars="minimal", coords="minimal",
                       compat="override", join="override", combine_attrs="override")
    if split is not None:
        ds = ds.isel(sample=(ds["split"] == split).values)
    return ds
