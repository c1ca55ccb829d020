"""Test-only: a forward HTTP proxy on a Docker 28 daemon's own bridge, so that apt in its builds reaches
Debian's mirror and nothing else. That daemon's bridge has no NAT (its iptables stay off: the host's
rules are the host daemon's), so a build container reaches only this proxy, which forwards plain-HTTP
GET and HEAD to the allowed hosts on port 80 and answers 403 to anything else. A .deb is named by its
version, so each one is kept once (`cache`) and served from there to the next build."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import os
import shutil
import socketserver
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

# headers that belong to one connection, never forwarded
HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailers", "upgrade"})


class _Handler(http.server.BaseHTTPRequestHandler):
    allowed: frozenset[str] = frozenset()
    cache: Path | None = None
    protocol_version = "HTTP/1.1"

    def _cached(self, path: str) -> Path | None:
        if self.cache is None or self.command != "GET" or not path.endswith(".deb"):
            return None
        return self.cache / hashlib.sha256(path.encode()).hexdigest()

    def _serve_file(self, f: Path) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.debian.binary-package")
        self.send_header("Content-Length", str(f.stat().st_size))
        self.end_headers()
        with f.open("rb") as src:
            shutil.copyfileobj(src, self.wfile, 1 << 16)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _forward(self) -> None:
        url = urlsplit(self.path)
        if url.scheme != "http" or url.hostname not in self.allowed or (url.port or 80) != 80:
            self.send_error(403, "not allowed")
            return
        kept = self._cached(url.path)
        if kept is not None and kept.exists():
            self._serve_file(kept)
            return
        conn = http.client.HTTPConnection(url.hostname, 80, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
            conn.request(self.command, (url.path or "/") + (f"?{url.query}" if url.query else ""), headers=headers)
            resp = conn.getresponse()
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP | {"transfer-encoding"}:
                    self.send_header(k, v)
            chunked = resp.getheader("Content-Length") is None and self.command != "HEAD"
            if chunked:  # the length is unknown: end this connection with the body
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self._relay(resp, kept if resp.status == 200 else None)
        except OSError as e:
            self.send_error(502, f"upstream: {e}")
        finally:
            conn.close()

    def _relay(self, resp: http.client.HTTPResponse, kept: Path | None) -> None:
        """The body to the client, and into the cache when it is a .deb that arrived whole."""
        tmp = tempfile.NamedTemporaryFile(dir=kept.parent, delete=False) if kept else None  # noqa: SIM115
        try:
            while chunk := resp.read(1 << 16):
                self.wfile.write(chunk)
                if tmp:
                    tmp.write(chunk)
            if tmp and kept:
                tmp.close()
                os.replace(tmp.name, kept)
                tmp = None
        finally:
            if tmp:
                tmp.close()
                Path(tmp.name).unlink(missing_ok=True)

    do_GET = _forward
    do_HEAD = _forward


class AptProxy:
    def __init__(self, address: str, allowed: set[str], port: int = 3128, cache: Path | None = None):
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_Handler,), {"allowed": frozenset(allowed), "cache": cache})
        self.server = socketserver.ThreadingTCPServer((address, port), handler, bind_and_activate=False)
        self.server.daemon_threads = True
        self.server.allow_reuse_address = True
        self.server.server_bind()
        self.server.server_activate()
        self.url = f"http://{address}:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
