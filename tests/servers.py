"""Loopback HTTP servers for the release tests: a static file server and a fake Zenodo."""

from __future__ import annotations

import hashlib
import json
import threading
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer, BaseHTTPRequestHandler


@contextmanager
def serving(handler_factory):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_factory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Files(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@contextmanager
def file_server(directory):
    """Serve ``directory``; ``server.requests`` lists the paths asked for."""
    with serving(partial(_Files, directory=str(directory))) as (server, url):
        server.requests = []
        yield server, url


class FakeZenodo:
    """State of a fake Zenodo deposition API.

    ``schema="legacy"``: ``newversion`` answers with the old deposition and a
    ``links.latest_draft``; files carry ``filename`` and a bare MD5. ``schema="current"``:
    ``newversion`` answers with the new draft itself; files carry ``key`` and ``md5:...``.
    ``corrupt=True`` makes the bucket report a wrong checksum.
    """

    def __init__(self, schema: str = "legacy", corrupt: bool = False):
        self.schema, self.corrupt = schema, corrupt
        self.requests: list[tuple[str, str]] = []
        self.uploads: dict[str, bytes] = {}
        self.depositions: dict[int, dict] = {}
        self.next_id = 100
        self.base = ""
        self.auth: list[str] = []

    def _new(self, files=None) -> dict:
        dep_id = self.next_id
        self.next_id += 1
        dep = {"id": dep_id, "files": list(files or []), "metadata": {}, "published": False,
               "links": {"bucket": f"{self.base}/files/bucket-{dep_id}",
                         "self": f"{self.base}/api/deposit/depositions/{dep_id}"}}
        self.depositions[dep_id] = dep
        return dep

    def _file(self, name: str, data: bytes, file_id: str) -> dict:
        digest = hashlib.md5(data).hexdigest()
        if self.schema == "legacy":
            return {"id": file_id, "filename": name, "checksum": digest}
        return {"id": file_id, "key": name, "checksum": f"md5:{digest}"}

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        self.requests.append((method, path))
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "deposit", "depositions"]:
            if method == "POST" and len(parts) == 3:
                return 201, self._new()
            dep = self.depositions.get(int(parts[3]))
            if dep is None:
                return 404, {"message": "no such deposition"}
            if method == "GET" and len(parts) == 4:
                return 200, dep
            if method == "PUT" and len(parts) == 4:
                dep["metadata"] = json.loads(body)["metadata"]
                return 200, dep
            if method == "POST" and parts[4:] == ["actions", "newversion"]:
                draft = self._new(files=dep["files"])
                if self.schema == "legacy":
                    return 201, {**dep, "links": {**dep["links"],
                                                  "latest_draft": draft["links"]["self"]}}
                return 201, draft
            if method == "DELETE" and parts[4] == "files":
                dep["files"] = [f for f in dep["files"] if f["id"] != parts[5]]
                return 204, {}
            if method == "POST" and parts[4:] == ["actions", "publish"]:
                dep["published"] = True
                doi = f"10.5072/zenodo.{dep['id']}"
                links = ({"record_html": f"{self.base}/record/{dep['id']}"}
                         if self.schema == "legacy"
                         else {"html": f"{self.base}/records/{dep['id']}"})
                return 202, {"id": dep["id"], "record_id": dep["id"], "doi": doi, "links": links,
                             "metadata": dep["metadata"], "files": dep["files"]}
        if parts[0] == "files" and method == "PUT":
            dep = self.depositions[int(parts[1].split("-")[1])]
            name = parts[2]
            self.uploads[f"{dep['id']}/{name}"] = body
            entry = self._file(name, body, f"f{len(self.uploads)}")
            dep["files"].append(entry)
            if self.corrupt:
                entry = {**entry, "checksum": "md5:" + "0" * 32}
            return 201, entry
        return 404, {"message": f"unknown endpoint {method} {path}"}


@contextmanager
def fake_zenodo(schema: str = "legacy", corrupt: bool = False):
    state = FakeZenodo(schema, corrupt)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.auth.append(self.headers.get("Authorization", ""))
            status, payload = state.handle(method, self.path, body)
            data = json.dumps(payload).encode() if status != 204 else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._reply("GET")

        def do_POST(self):
            self._reply("POST")

        def do_PUT(self):
            self._reply("PUT")

        def do_DELETE(self):
            self._reply("DELETE")

    with serving(Handler) as (server, url):
        state.base = url
        yield state, f"{url}/api"
