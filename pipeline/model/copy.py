"""Copy a model snapshot from this machine's Hugging Face cache to the nodes' caches (the directory
deploy mounts into the containers: ~/.cache/huggingface on the node), only what each node lacks, all
nodes at once. I/O; what to send is decided in manifest.py.

Per node: list its copy of the repository (one `find`), send the missing files as one tar stream over
the SSH channel (every node has tar), check the sha256 of every blob that arrived, then rename them into
place. Bytes go straight from the local cache into the channel: nothing is staged on either side.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pipeline.deploy.hosts import Hosts
from pipeline.errors import HostError
from pipeline.model.hub import Snapshot, repo_folder
from pipeline.model.manifest import INCOMPLETE, LIST_FORMAT, SHA256, Entry, Todo, parse_listing, todo, verify
from pipeline.spec.cluster import NodeSpec

Progress = Callable[[str, int], None]
CHUNK = 1 << 20


@dataclass(frozen=True)
class CopyResult:
    node: str
    repo: str
    sent_bytes: int
    sent_files: int
    resumed: int        # .incomplete files found whole on the node and kept (verified, not re-sent)
    seconds: float
    note: str = ""


def entries_of(snap: Snapshot) -> list[Entry]:
    """The snapshot as cache entries: its blobs (with sha256), its links, the refs naming its commit."""
    repo_dir = snap.repo_dir
    out: list[Entry] = []
    blobs: dict[str, Entry] = {}
    for link in sorted(p for p in snap.path.rglob("*") if p.is_symlink() or p.is_file()):
        rel = link.relative_to(repo_dir).as_posix()
        real = link.resolve()
        blob = real.relative_to(repo_dir).as_posix()
        if blob not in blobs:
            blobs[blob] = Entry(blob, "blob", real.stat().st_size, sha256=_sha256_of(real))
        out.append(Entry(rel, "link", target=os.readlink(link) if link.is_symlink() else ""))
    for ref in sorted((repo_dir / "refs").glob("**/*")):
        if ref.is_file() and ref.read_text().strip() == snap.commit:
            out.append(Entry(ref.relative_to(repo_dir).as_posix(), "ref", ref.stat().st_size, target=ref.read_text()))
    return [*blobs.values(), *out]


def _sha256_of(path: Path) -> str:
    if SHA256.fullmatch(path.name):
        return path.name  # an LFS blob is named by its sha256 (the hub's ETag)
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Counting(io.RawIOBase):
    """A file read through, reporting the bytes read so far to the progress display."""

    def __init__(self, f: IO[bytes], report: Callable[[int], None]):
        self.f, self.report = f, report

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = self.f.readinto(b)  # type: ignore[attr-defined]
        self.report(n or 0)
        return n or 0


def write_tar(out: IO[bytes], repo_dir: Path, send: tuple[Entry, ...], report: Callable[[int], None]) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for e in send:
            info = tarfile.TarInfo(e.path + (INCOMPLETE if e.kind == "blob" else ""))
            info.mtime = int(time.time())
            if e.kind == "link":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, e.target, 0o777
                tar.addfile(info)
            elif e.kind == "ref":
                data = e.target.encode()
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            else:
                info.size, info.mode = e.size, 0o644
                with (repo_dir / e.path).open("rb") as f:
                    tar.addfile(info, Counting(f, report))


class Copier:
    def __init__(self, hosts: Hosts, progress: Progress | None = None):
        self.hosts = hosts
        self.progress = progress or (lambda node, n: None)

    def node_dir(self, node: NodeSpec, repo: str) -> str:
        return f"{self.hosts.home(node)}/.cache/huggingface/hub/{repo_folder(repo)}"

    def plan(self, node: NodeSpec, snap: Snapshot, entries: list[Entry]) -> tuple[str, Todo]:
        d = self.node_dir(node, snap.repo)
        self.hosts.run(node, ["mkdir", "-p", d])
        listing = self.hosts.run(node, ["find", d, "-printf", LIST_FORMAT], timeout=300).stdout
        return d, todo(entries, parse_listing(listing))

    def copy(self, node: NodeSpec, snap: Snapshot, entries: list[Entry]) -> CopyResult:
        start = time.monotonic()
        if node.transport == "local" and Path(self.node_dir(node, snap.repo)).resolve() == snap.repo_dir.resolve():
            return CopyResult(node.label, snap.repo, 0, 0, 0, 0.0, "this machine's own cache")
        d, work = self.plan(node, snap, entries)
        sent = [0]

        def report(n: int) -> None:
            sent[0] += n
            self.progress(node.label, sent[0])

        blobs = tuple(e for e in work.send if e.kind == "blob")
        rest = tuple(e for e in work.send if e.kind != "blob")
        self.send(node, d, snap.repo_dir, blobs, report)
        self.finish(node, d, work)
        # links and refs last: until every blob is in place, the node's snapshot does not exist
        self.send(node, d, snap.repo_dir, rest, report)
        return CopyResult(node.label, snap.repo, work.nbytes, len(work.send), len(work.check),
                          round(time.monotonic() - start, 2))

    def send(self, node: NodeSpec, d: str, repo_dir: Path, entries: tuple[Entry, ...],
             report: Callable[[int], None]) -> None:
        if not entries:
            return
        ran = self.hosts.feed(node, ["tar", "-x", "-m", "-C", d], lambda out: write_tar(out, repo_dir, entries, report))
        if ran.status != 0:
            raise HostError(node.label, "tar -x failed", command=f"tar -x -C {d}", remote_status=ran.status,
                            tail=ran.stderr.strip())

    def finish(self, node: NodeSpec, d: str, work: Todo) -> None:
        """Check each arrived blob's sha256 on the node, then rename it into place; a bad one is removed
        (the next copy sends it again) and the node fails."""
        blobs = work.blobs
        if not blobs:
            return
        rels = [e.path for e in blobs]
        timeout = max(300.0, sum(e.size for e in blobs) / 200e6)
        out = self.hosts.run(node, ["sh", "-c", 'cd "$1" && shift && for f; do sha256sum "$f.incomplete"; done',
                                    "sh", d, *rels], timeout=timeout, check=False).stdout
        bad = verify(blobs, out)
        if bad:
            self.hosts.run(node, ["sh", "-c", 'cd "$1" && shift && for f; do rm -f "$f.incomplete"; done', "sh", d,
                                  *bad], check=False)
            raise HostError(node.label, f"{len(bad)} file(s) arrived damaged (sha256 differs): {', '.join(bad[:3])};"
                            " removed, run the copy again")
        self.hosts.run(node, ["sh", "-c", 'cd "$1" && shift && for f; do mv -f "$f.incomplete" "$f"; done', "sh", d,
                              *rels])
