"""TEST-ONLY stand-in for the Hugging Face hub, on loopback (HF_ENDPOINT=http://127.0.0.1:PORT).

It serves model repositories from a directory (`root/<org>/<name>/…`, such as the smoke fixture's
models) through the routes huggingface_hub's `snapshot_download` uses: repo info
(/api/models/ORG/NAME/revision/REV; with `?blobs=true`, sizes and LFS sha256), the tree listing
(/api/models/ORG/NAME/tree/REV), and file downloads (/ORG/NAME/resolve/REV/PATH, HEAD and GET, with
Range) with the hub's headers (X-Repo-Commit, ETag, X-Linked-Etag/X-Linked-Size for LFS files). Files
over 1 MiB are "LFS" (their ETag is the sha256), as on the hub. A gated repository answers 401 with
X-Error-Code: GatedRepo unless the request carries the right token.
Every request is logged (method, path, Range, bytes sent) for the tests;
`rate` (bytes/s) slows downloads so a test can kill one half-way.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LFS_MIN = 1 << 20


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Hit:
    method: str
    path: str
    range: str | None
    sent: int


@dataclass
class HubState:
    root: Path
    gated: dict[str, str] = field(default_factory=dict)  # repo -> the token that opens it
    rate: float = 0.0  # bytes/s for file bodies; 0 = unlimited
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def files(self, repo: str) -> dict[str, bytes]:
        d = self.root / repo
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    def commit(self, repo: str) -> str:
        h = hashlib.sha1()
        for name, data in self.files(repo).items():
            h.update(f"{name}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        return h.hexdigest()

    def entry(self, name: str, data: bytes) -> dict[str, Any]:
        e: dict[str, Any] = {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha1(data)}
        if len(data) >= LFS_MIN:
            e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return e

    def sent_bytes(self, kind: str = "resolve") -> int:
        return sum(h.sent for h in self.hits if f"/{kind}/" in h.path)


class Handler(http.server.BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def _json(self, code: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        for k, v in {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._log(len(body) if self.command != "HEAD" else 0)

    def _log(self, sent: int) -> None:
        with self.state.lock:
            self.state.hits.append(Hit(self.command, self.path, self.headers.get("Range"), sent))

    def _repo_ok(self, repo: str) -> bool:
        if not (self.state.root / repo).is_dir():
            self._json(
                404,
                {"error": "Repository not found"},
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            )
            return False
        token = self.state.gated.get(repo)
        if token is not None and self.headers.get("Authorization") != f"Bearer {token}":
            msg = f"Access to model {repo} is restricted. You must have access to it and be authenticated."
            self._json(401, {"error": msg}, {"X-Error-Code": "GatedRepo", "X-Error-Message": msg})
            return False
        return True

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def _route(self) -> None:
        path = self.path.split("?")[0]
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            if self._repo_ok(m[1]):
                self._info(m[1])
        elif m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?", path):
            if self._repo_ok(m[1]):
                files = self.state.files(m[1])
                self._json(200, [self.state.entry(n, d) for n, d in files.items()])
        elif m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            if self._repo_ok(m[1]):
                self._file(m[1], m[3])
        else:
            self._json(404, {"error": f"no route {path}"})

    def _info(self, repo: str) -> None:
        files = self.state.files(repo)
        self._json(
            200,
            {
                "id": repo,
                "modelId": repo,
                "sha": self.state.commit(repo),
                "private": False,
                "gated": "manual" if repo in self.state.gated else False,
                "siblings": [self._sibling(n, d) for n, d in files.items()],
            },
        )

    def _sibling(self, name: str, data: bytes) -> dict[str, Any]:
        """A file as repo info lists it; with `?blobs=true` (files_metadata) its size, blob ID and LFS
        sha256, as the hub gives them."""
        if "blobs=true" not in self.path.partition("?")[2].lower():
            return {"rfilename": name}
        e = self.state.entry(name, data)
        out: dict[str, Any] = {"rfilename": name, "size": len(data), "blobId": e["oid"]}
        if "lfs" in e:
            out["lfs"] = {"sha256": e["lfs"]["oid"], "size": len(data), "pointerSize": 134}
        return out

    def _file(self, repo: str, name: str) -> None:
        files = self.state.files(repo)
        if name not in files:
            self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            return
        data = files[name]
        e = self.state.entry(name, data)
        etag = e["lfs"]["oid"] if "lfs" in e else e["oid"]
        start = 0
        if (rng := self.headers.get("Range")) and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng)):
            start = int(m[1])
        body = data[start:]
        self.send_response(206 if start else 200)
        headers = {
            "X-Repo-Commit": self.state.commit(repo),
            "ETag": f'"{etag}"',
            "Content-Length": str(len(body)),
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if "lfs" in e:
            headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        sent = 0
        if self.command == "GET":
            sent = self._send(body)
        self._log(sent)

    def _send(self, body: bytes) -> int:
        sent, chunk = 0, 64 << 10
        try:
            for i in range(0, len(body), chunk):
                self.wfile.write(body[i : i + chunk])
                sent += len(body[i : i + chunk])
                if self.state.rate:
                    time.sleep(len(body[i : i + chunk]) / self.state.rate)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent

    def log_message(self, fmt: str, *args: Any) -> None:
        pass


class HubStandin:
    """`with HubStandin(root) as hub:` -> hub.url for HF_ENDPOINT; hub.state.hits after."""

    def __init__(self, root: Path, gated: dict[str, str] | None = None, rate: float = 0.0, port: int = 0):
        self.state = HubState(root=root, gated=gated or {}, rate=rate)
        handler = type("BoundHandler", (Handler,), {"state": self.state})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> HubStandin:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":  # serve by hand: python -m tests.standin.hf_hub ROOT PORT [RATE]
    import sys

    hub = HubStandin(Path(sys.argv[1]), port=int(sys.argv[2]), rate=float(sys.argv[3]) if len(sys.argv) > 3 else 0)
    print(hub.url, flush=True)
    hub.server.serve_forever()
