"""A Hugging Face Hub look-alike on 127.0.0.1, for download tests that need no network.

Files live under `root/datasets/<org>/<name>/<path>` and `root/models/<org>/<name>/<path>` and are
served at the Hub's URLs, `/datasets/<org>/<name>/resolve/<rev>/<path>` and `/<org>/<name>/resolve/
<rev>/<path>`, for HEAD and GET, with Range requests (206) and the Hub's headers: X-Repo-Commit,
X-Linked-Etag ("<sha256>", as the Hub sends for an LFS file), X-Linked-Size, ETag, Content-Length.
A test can cut a response after N bytes once (the connection closes mid-body) or serve corrupt bytes.

    from hubserver import hub_fixture, no_network_fixture  # noqa: F401 (the fixtures `hub`, `no_network`)

    def test_x(hub):  # the server started, ABLAB_MIRROR at it, ABLAB_CACHE in tmp_path, no other host
        hub.add("datasets", "org/name", "train.txt", b"...")
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubServer:
    root: Path
    url: str = ""
    commit: str = COMMIT
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)
    cut_after: dict[str, int] = field(default_factory=dict)  # repo path -> bytes sent before closing, once
    corrupt: set[str] = field(default_factory=set)  # repo paths served with one byte changed

    def add(self, kind: str, repo: str, path: str, data: bytes) -> Path:
        """Put a file into the tree; `kind` is "datasets" or "models"."""
        target = self.root / kind / repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def gets(self, path_end: str) -> list[str | None]:
        """The Range header of every GET of a URL ending in `path_end` (None: no Range)."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith(path_end)]

    def resolve(self, url_path: str) -> tuple[Path, str] | None:
        parts = url_path.split("?")[0].lstrip("/").split("/")
        kind = "models"
        if parts and parts[0] in ("datasets", "spaces"):
            kind, parts = parts[0], parts[1:]
        if len(parts) < 5 or parts[2] != "resolve" or parts[3] not in (self.commit, "main"):
            return None
        repo, path = "/".join(parts[:2]), "/".join(parts[4:])
        file = self.root / kind / repo / path
        return (file, path) if file.is_file() else None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        hub = self.server.hub  # type: ignore[attr-defined]
        hub.requests.append((self.command, self.path, self.headers.get("Range")))
        found = hub.resolve(self.path)
        if found is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        file, path = found
        data = file.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if path in hub.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes=") and body:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", hub.commit)
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("ETag", f'"{sha}"')
        self.send_header("Accept-Ranges", "bytes")
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        if not body:
            return
        cut = hub.cut_after.pop(path, None)
        if cut is not None:  # send part of the body, then drop the connection, once
            self.wfile.write(data[start:start + cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(data[start:])


def start(root: Path) -> tuple[HubServer, http.server.ThreadingHTTPServer]:
    hub = HubServer(root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.hub = hub  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    return hub, server


@pytest.fixture(name="no_network")
def no_network_fixture(monkeypatch):
    """Fail the test if anything but 127.0.0.1 is contacted (or a name other than localhost looked up)."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "localhost", "::1"):
            raise AssertionError(f"the test tried to reach {address}, outside 127.0.0.1")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost", "::1", None):
            raise AssertionError(f"the test tried to look up {host!r}, outside 127.0.0.1")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(name="hub")
def hub_fixture(tmp_path, monkeypatch, no_network):
    """A running Hub look-alike; ABLAB_MIRROR points at it and ABLAB_CACHE is a fresh folder."""
    served, server = start(tmp_path / "hub")
    for variable in ("ABLAB_DATA", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ABLAB_MIRROR", served.url)
    monkeypatch.setenv("ABLAB_CACHE", str(tmp_path / "cache"))
    yield served
    server.shutdown()
    server.server_close()
