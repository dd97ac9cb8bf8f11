"""Fetch a release's files: embedded in the package, cached, or downloaded with pooch.

Downloads go to the cache (``NANOEDX_DATA_DIR`` or the OS cache folder) from the release's base
URL (``NANOEDX_DATA_URL`` overrides it); a cached file whose hash matches is used with no
network call, a cached file whose hash does not match is deleted and fetched again, and a
download whose hash does not match is deleted. An HTTP download has an overall time limit
(``NANOEDX_DOWNLOAD_TIMEOUT`` seconds, default one hour), not only a limit per read, so a
server that sends a byte now and then cannot hang the caller.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ConfigError, DatasetNotFoundError, NanoEDXError, SchemaError
from ..store.files import sha256
from .registry import data_dir, hex_of, release_entry

URL_ENV = "NANOEDX_DATA_URL"
CACHE_ENV = "NANOEDX_DATA_DIR"
TIMEOUT_ENV = "NANOEDX_DOWNLOAD_TIMEOUT"
TIMEOUT = 3600.0  # seconds a whole download may take (NANOEDX_DOWNLOAD_TIMEOUT)
STALL = 60.0  # seconds to connect, and to wait for the next bytes
SCHEMES = ("http", "https", "ftp", "sftp", "doi")  # what pooch downloads from

log = logging.getLogger(__name__)


def download_timeout() -> float:
    """The overall time limit of one download, seconds (``NANOEDX_DOWNLOAD_TIMEOUT``)."""
    text = os.environ.get(TIMEOUT_ENV, "")
    if not text:
        return TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{TIMEOUT_ENV}={text!r} is not a positive number of seconds")
    return value


def check_url(base: str, source: str) -> str:
    """``base`` if it is a URL pooch can download from; ``source`` names where it came from."""
    parts = urlparse(base)
    if parts.scheme not in SCHEMES or (parts.scheme != "doi" and not parts.netloc):
        raise ConfigError(f"{base!r} ({source}) is not a download address: give a URL such as "
                          "https://server/folder/ holding the release files (schemes: "
                          f"{', '.join(SCHEMES)})")
    return base


class TimedDownload:
    """A pooch downloader for HTTP(S) with an overall deadline.

    ``requests``' own timeout applies to each read, so a slow-drip server never trips it;
    here the bytes are read as they arrive and the whole download stops after ``timeout``
    seconds. Pooch writes to a temporary file and deletes it when this raises.
    """

    def __init__(self, timeout: float, progress: bool = False):
        self.timeout, self.progress = timeout, progress

    def __call__(self, url: str, output_file, pooch_obj=None) -> None:
        import requests
        from tqdm.auto import tqdm

        deadline = time.monotonic() + self.timeout
        stall = min(STALL, self.timeout)
        with requests.get(url, stream=True, timeout=(stall, stall)) as answer:
            answer.raise_for_status()
            size = int(answer.headers.get("content-length") or 0) or None
            with (open(output_file, "wb") if isinstance(output_file, (str, Path))
                  else _kept(output_file)) as fh, \
                    tqdm(total=size, unit="B", unit_scale=True, leave=False,
                         desc=Path(urlparse(url).path).name, disable=not self.progress) as bar:
                while True:
                    if time.monotonic() > deadline:
                        raise DatasetNotFoundError(
                            f"the download of {url} took longer than {self.timeout:g} s "
                            f"({TIMEOUT_ENV}); the server is too slow or stalled: try again "
                            f"later, set {TIMEOUT_ENV} higher, or use a mirror ({URL_ENV})")
                    chunk = answer.raw.read1(1 << 16, decode_content=True)
                    if not chunk:
                        break
                    fh.write(chunk)
                    bar.update(len(chunk))


class _kept:
    """A file object given by the caller, not closed here."""

    def __init__(self, fh):
        self.fh = fh

    def __enter__(self):
        return self.fh

    def __exit__(self, *exc):
        return False


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
    if os.environ.get(URL_ENV):
        check_url(base, URL_ENV)
    if missing and not base:
        raise DatasetNotFoundError(f"release {name} {version} is not published for download "
                                   f"yet; {fix}")
    fetched = download(missing, base, cache_dir, fix, progress) if missing else {}
    return [local.get(f) or fetched[f] for f in files]


def download(files: dict[str, str], base: str, cache_dir, fix: str,
             progress: bool = False) -> dict[str, Path]:
    """Fetch files (name -> ``sha256:...``) from ``base`` into the cache with pooch.

    A cached file with the right hash is used without a network call; a cached file with a
    wrong hash (damaged, or cut short) is deleted and downloaded again; a download whose hash
    does not match is deleted and raises :class:`SchemaError`; an unreachable server with no
    cached copy, or a download that takes longer than :func:`download_timeout`, raises
    :class:`DatasetNotFoundError` ending with ``fix``; ``base`` that is not a URL raises
    :class:`ConfigError`.
    """
    import pooch
    import requests

    check_url(base, "the download address")
    timeout = download_timeout()
    store = pooch.create(
        path=Path(cache_dir) if cache_dir else pooch.os_cache("nanoedx"),
        base_url=base.rstrip("/") + "/",
        registry=files,
        env=None if cache_dir else CACHE_ENV,
        retry_if_failed=0,
    )
    http = urlparse(base).scheme in ("http", "https")
    out = {}
    for fname in files:
        cached = Path(store.abspath) / fname
        if cached.is_file():
            if sha256(cached) == hex_of(files[fname]):
                out[fname] = cached
                continue
            log.warning("%s does not match its SHA-256: deleted, fetching it again", cached)
            cached.unlink()
        get = TimedDownload(timeout, progress) if http else None  # ftp, doi: pooch's own
        try:
            out[fname] = Path(store.fetch(fname, progressbar=progress, downloader=get))
        except NanoEDXError:
            raise
        except ValueError as err:
            if "hash" in str(err):
                raise SchemaError(f"download of {fname} from {base} is corrupt: {err}") from err
            raise
        except (requests.RequestException, OSError) as err:
            raise DatasetNotFoundError(f"cannot download {fname} from {base} and it is not in "
                                       f"the cache ({store.abspath}): {err}; {fix}") from err
    return out
