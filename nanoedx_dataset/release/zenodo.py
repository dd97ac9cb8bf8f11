"""A small client for Zenodo's deposition REST API (``/api/deposit/depositions``).

It does what a release needs: a new deposition, or a new version of an existing one (the draft's
inherited files removed), upload of each file to the deposition's bucket with an MD5 check,
metadata, publish. Responses of both the legacy record schema (``links.latest_draft``,
``filename``, bare MD5 checksums) and the current one (the draft returned by ``newversion``,
``key``, ``md5:`` checksums) are understood.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import requests

from ..errors import NanoEDXError

log = logging.getLogger(__name__)

ZENODO_API = "https://zenodo.org/api"
SANDBOX_API = "https://sandbox.zenodo.org/api"
TOKEN_ENV = "ZENODO_TOKEN"


class ZenodoError(NanoEDXError, RuntimeError):
    """Zenodo refused a request or an upload did not arrive intact."""


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _checksum(value: str | None) -> str:
    return (value or "").split(":")[-1].lower()


class Zenodo:
    """Deposit files on Zenodo.

    Parameters
    ----------
    token : str
        A personal access token with the ``deposit:write`` and ``deposit:actions`` scopes.
    api : str
        API root, e.g. :data:`ZENODO_API` or :data:`SANDBOX_API`.
    timeout : float
        Seconds per request.
    """

    def __init__(self, token: str, api: str = ZENODO_API, timeout: float = 300.0):
        if not token:
            raise ZenodoError(f"no Zenodo token: set {TOKEN_ENV} to a personal access token "
                              "(Zenodo > Applications > New token, scopes deposit:write and "
                              "deposit:actions)")
        self.api = api.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, url: str, **kw) -> dict:
        try:
            r = self.session.request(method, url, timeout=self.timeout, **kw)
        except requests.RequestException as err:
            raise ZenodoError(f"{method} {url} failed: {err}") from err
        if r.status_code >= 400:
            raise ZenodoError(f"{method} {url} -> HTTP {r.status_code}: {r.text[:300]}")
        return r.json() if r.content else {}

    def _deposition(self, dep_id) -> str:
        return f"{self.api}/deposit/depositions/{dep_id}"

    def new_deposition(self) -> dict:
        """Create an empty draft deposition."""
        return self._call("POST", f"{self.api}/deposit/depositions", json={})

    def new_version(self, dep_id) -> dict:
        """A draft for a new version of deposition ``dep_id``, emptied of inherited files."""
        r = self._call("POST", f"{self._deposition(dep_id)}/actions/newversion")
        latest = r.get("links", {}).get("latest_draft")
        draft = self._call("GET", latest) if latest else r  # legacy: a link; current: the draft
        for f in draft.get("files", []):
            self._call("DELETE", f"{self._deposition(draft['id'])}/files/{f['id']}")
        return draft

    def upload(self, draft: dict, path: Path) -> None:
        """Put one file into the draft's bucket and check that Zenodo got the same bytes."""
        path = Path(path)
        bucket = draft["links"]["bucket"]
        with open(path, "rb") as data:
            r = self._call("PUT", f"{bucket}/{path.name}", data=data)
        local, remote = md5(path), _checksum(r.get("checksum"))
        if remote != local:
            raise ZenodoError(f"upload of {path.name} arrived corrupt: MD5 {remote or 'missing'}"
                              f" on Zenodo, {local} here; the draft was not published")

    def set_metadata(self, draft: dict, metadata: dict) -> dict:
        return self._call("PUT", self._deposition(draft["id"]), json={"metadata": metadata})

    def publish(self, draft: dict) -> dict:
        """Publish a draft; returns ``{"id", "record_id", "doi", "url"}``."""
        r = self._call("POST", f"{self._deposition(draft['id'])}/actions/publish")
        links = r.get("links", {})
        return {"id": r.get("id", draft["id"]), "record_id": r.get("record_id", r.get("id")),
                "doi": r.get("doi") or r.get("metadata", {}).get("doi"),
                "url": links.get("record_html") or links.get("html") or links.get("self_html")}

    def deposit(self, files: list[Path], metadata: dict, previous=None) -> dict:
        """Upload ``files`` with ``metadata`` as a new deposition or a new version of
        ``previous`` (a deposition id), and publish it."""
        draft = self.new_version(previous) if previous else self.new_deposition()
        log.info("Zenodo draft %s", draft.get("id"))
        for path in files:
            self.upload(draft, path)
        self.set_metadata(draft, metadata)
        return self.publish(draft)
