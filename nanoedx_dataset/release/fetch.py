"""Fetch a release's files: embedded in the package, cached, or downloaded with pooch.

Downloads go to the cache (``NANOEDX_DATA_DIR`` or the OS cache folder) from the release's base
URL (``NANOEDX_DATA_URL`` overrides it); a cached file whose hash matches is used with no
network call, and a download whose hash does not match is deleted.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DatasetNotFoundError, SchemaError
from ..store.files import sha256
from .registry import data_dir, hex_of, release_entry

URL_ENV = "NANOEDX_DATA_URL"
CACHE_ENV = "NANOEDX_DATA_DIR"


def _check_hash(path: Path, expected: str) -> None:
    got = sha256(path)
    if got != hex_of(expected):
        raise SchemaError(f"{path.name}: SHA-256 {got} does not match the registry's "
                          f"{expected}; the file is corrupt or not this release")


def _embedded(name: str, fname: str) -> Path | None:
    path = data_dir() / fname
    return path if path.is_file() else None


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
