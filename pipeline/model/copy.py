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
import shlex
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pipeline.config.cluster import ClusterSpec, NodeSpec, SshSpec
from pipeline.contract import LIST_FORMAT, is_decimal
from pipeline.errors import HostError, NodesFailed
from pipeline.model import damage
from pipeline.model.hub import Snapshot, repo_folder
from pipeline.model.manifest import (
    INCOMPLETE,
    SHA256,
    Entry,
    Listing,
    Todo,
    parse_listing,
    todo,
    verify,
)
from pipeline.model.selection import Choice, chosen_files
from pipeline.nodes.hosts import Hosts
from pipeline.nodes.local import LocalTransport
from pipeline.nodes.openssh import ssh_command

Progress = Callable[[str, int], None]
CHUNK = 1 << 20


@dataclass(frozen=True)
class CopyResult:
    node: str
    repo: str
    sent_bytes: int
    sent_files: int
    resumed: int  # .incomplete files found whole on the node and kept (verified, not re-sent)
    seconds: float
    note: str = ""
    repaired: int = 0  # blobs the node held whole but damaged (`--verify`): removed, then sent again


def entries_of(snap: Snapshot, keep: set[str] | None = None) -> list[Entry]:
    """The snapshot as cache entries: its blobs (with sha256), its links, the refs naming its commit.
    `keep`: only these files of the snapshot (select.py's choice), None for all."""
    repo_dir = snap.repo_dir
    out: list[Entry] = []
    blobs: dict[str, Entry] = {}
    for link in sorted(p for p in snap.path.rglob("*") if p.is_symlink() or p.is_file()):
        if keep is not None and link.relative_to(snap.path).as_posix() not in keep:
            continue
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


def rsync_argv(node: NodeSpec, ssh: SshSpec, src: Path, dest: str) -> list[str]:
    """rsync over ssh_command(): blobs land at their final name only when whole (rsync renames), a partial
    one waits in .rsync-partial/ and is continued next time. The file list comes on stdin."""
    cmd = ssh_command(node, ssh)
    host = f"[{node.address}]" if ":" in node.address else node.address
    return [
        "rsync",
        "-a",
        "--protect-args",
        "--partial-dir=.rsync-partial",
        "--files-from=-",
        "--no-inc-recursive",
        "--info=progress2",
        "--stats",
        "-e",
        shlex.join(cmd),
        f"{src}/",
        f"{node.user}@{host}:{dest}/",
    ]


def rsync_progress(line: str) -> int | None:
    """Bytes so far from an --info=progress2 line ("  1,234,567  12%  …")."""
    first = line.strip().split(" ", 1)[0].replace(",", "")
    return int(first) if is_decimal(first) else None


class Copier:
    """via: auto (rsync where both ends have it, else tar), rsync, or tar. repair: first read every blob
    the node holds (sha256) and send the damaged ones again."""

    def __init__(self, hosts: Hosts, progress: Progress | None = None, via: str = "auto", repair: bool = False):
        self.hosts = hosts
        self.progress = progress or (lambda node, n: None)
        self.via = via
        self.repair = repair

    def node_dir(self, node: NodeSpec, repo: str) -> str:
        return f"{self.hosts.home(node)}/.cache/huggingface/hub/{repo_folder(repo)}"

    def plan(self, node: NodeSpec, snap: Snapshot, entries: list[Entry]) -> tuple[str, Todo, bool]:
        """The node's directory, what it lacks, and whether rsync can carry it (both ends have it)."""
        d = self.node_dir(node, snap.repo)
        self.hosts.run(node, ["mkdir", "-p", d])
        out = self.hosts.run(
            node,
            [
                "sh",
                "-c",
                'command -v rsync >/dev/null 2>&1 && echo "# rsync"; find "$1" -printf "$2"',
                "sh",
                d,
                LIST_FORMAT,
            ],
            timeout=300,
        ).stdout
        can = (
            node.transport == "ssh"
            and out.startswith("# rsync")
            and shutil.which("rsync") is not None
            and shutil.which("ssh") is not None
        )
        if self.via == "rsync" and not can:
            raise HostError(node.label, "--via rsync: rsync (and ssh) must exist here and on the node (transport ssh)")
        return d, todo(entries, parse_listing(out)), can and self.via != "tar"

    def copy(self, node: NodeSpec, snap: Snapshot, entries: list[Entry]) -> CopyResult:
        start = time.monotonic()
        if node.transport == "local" and Path(self.node_dir(node, snap.repo)).resolve() == snap.repo_dir.resolve():
            return CopyResult(node.label, snap.repo, 0, 0, 0, 0.0, "this machine's own cache")
        bad = []
        if self.repair:
            d = self.node_dir(node, snap.repo)
            bad = self.damaged(node, d, entries, self.listing(node, d))
            self.remove(node, d, bad)
        d, work, rsync = self.plan(node, snap, entries)
        sent = [0]

        def report(n: int) -> None:
            sent[0] += n
            self.progress(node.label, sent[0])

        blobs = tuple(e for e in work.send if e.kind == "blob")
        rest = tuple(e for e in work.send if e.kind != "blob")
        if rsync:
            # rsync checks every file it wrote against the sender's whole-file checksum and renames it into
            # place only then: hashing it again on the node would read every byte a second time
            nbytes = self.rsync(node, d, snap.repo_dir, blobs)
            self.finish(node, d, work.check)
        else:
            self.send(node, d, snap.repo_dir, blobs, report)
            nbytes = work.nbytes
            self.finish(node, d, work.blobs)
        # links and refs last: until every blob is in place, the node's snapshot does not exist
        self.send(node, d, snap.repo_dir, rest, report)
        return CopyResult(
            node.label,
            snap.repo,
            nbytes,
            len(work.send),
            len(work.check),
            round(time.monotonic() - start, 2),
            "rsync" if rsync and blobs else "",
            len(bad),
        )

    def rsync(self, node: NodeSpec, d: str, repo_dir: Path, blobs: tuple[Entry, ...]) -> int:
        """Send blobs with rsync; returns the bytes it sent (its --stats)."""
        if not blobs:
            return 0
        argv = rsync_argv(node, self.hosts.cluster.ssh, repo_dir, d)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write("".join(e.path + "\n" for e in blobs))
        proc.stdin.close()
        total = 0
        for line in proc.stdout:
            for part in line.split("\r"):
                n = rsync_progress(part)
                if n is not None:
                    self.progress(node.label, n)
                if part.startswith("Total bytes sent:"):
                    total = int(part.split(":")[1].strip().replace(",", ""))
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise HostError(
                node.label, f"rsync failed (exit {proc.returncode})", command=shlex.join(argv[:-3]), tail=err.strip()
            )
        return total

    def send(
        self, node: NodeSpec, d: str, repo_dir: Path, entries: tuple[Entry, ...], report: Callable[[int], None]
    ) -> None:
        """One tar stream into the node's directory: through the system ssh when there is one, else over
        our own SSH connection (paramiko) or, for this machine, a local tar."""
        if not entries:
            return
        argv = ["tar", "-x", "-m", "-C", d]
        cmd = self.hosts.transport(node).local_argv(argv)
        if cmd is not None:
            ran = LocalTransport(node.label).feed(cmd, lambda out: write_tar(out, repo_dir, entries, report))
        else:
            ran = self.hosts.feed(node, argv, lambda out: write_tar(out, repo_dir, entries, report))
        if ran.status != 0:
            raise HostError(
                node.label, "tar -x failed", command=f"tar -x -C {d}", remote_status=ran.status, tail=ran.stderr.strip()
            )

    def mismatches(self, node: NodeSpec, d: str, blobs: tuple[Entry, ...], suffix: str) -> list[str]:
        """The blobs whose file on the node (name + suffix) has another sha256 than ours, or none."""
        if not blobs:
            return []
        timeout = max(300.0, sum(e.size for e in blobs) / 200e6)
        out = self.hosts.run(
            node,
            [
                "sh",
                "-c",
                'cd "$1" && s=$2 && shift 2 && for f; do sha256sum "$f$s"; done',
                "sh",
                d,
                suffix,
                *(e.path for e in blobs),
            ],
            timeout=timeout,
            check=False,
        ).stdout
        return verify(blobs, out, suffix)

    def remove(self, node: NodeSpec, d: str, paths: list[str], suffix: str = "") -> None:
        self.hosts.run(
            node,
            ["sh", "-c", 'cd "$1" && s=$2 && shift 2 && for f; do rm -f "$f$s"; done', "sh", d, suffix, *paths],
            check=False,
        )

    def check(self, node: NodeSpec, d: str, blobs: tuple[Entry, ...], suffix: str) -> None:
        """Check each blob's sha256 on the node (at its name + suffix); a bad one is removed (the next
        copy sends it again) and the node fails."""
        bad = self.mismatches(node, d, blobs, suffix)
        if bad:
            self.remove(node, d, bad, suffix)
            raise HostError(
                node.label,
                f"{len(bad)} file(s) arrived damaged (sha256 differs): {', '.join(bad[:3])};"
                " removed, run the copy again",
            )

    def listing(self, node: NodeSpec, d: str) -> Listing:
        """The node's copy of a repository (nothing when it has none); changes nothing there."""
        out = self.hosts.run(
            node,
            ["sh", "-c", 'test -d "$1" || exit 0; find "$1" -printf "$2"', "sh", d, LIST_FORMAT],
            timeout=300,
        ).stdout
        return parse_listing(out)

    def damaged(self, node: NodeSpec, d: str, entries: list[Entry], have: Listing) -> list[str]:
        """Blobs the node holds whole (our size) whose sha256 is not ours: every byte on the node is read."""
        whole = tuple(e for e in entries if e.kind == "blob" and have.files.get(e.path) == e.size)
        return self.mismatches(node, d, whole, "")

    def finish(self, node: NodeSpec, d: str, blobs: tuple[Entry, ...]) -> None:
        """Blobs that arrived as .incomplete: checked, then renamed into place."""
        if not blobs:
            return
        self.check(node, d, blobs, INCOMPLETE)
        self.hosts.run(
            node,
            [
                "sh",
                "-c",
                'cd "$1" && shift && for f; do mv -f "$f.incomplete" "$f"; done',
                "sh",
                d,
                *(e.path for e in blobs),
            ],
        )


def copy_all(
    spec: ClusterSpec,
    snaps: list[Snapshot],
    progress: Callable[[str, int], None],
    via: str = "auto",
    choice: Choice | None = None,
    repair: bool = False,
) -> list[CopyResult]:
    """Every snapshot to every node of spec (nodes in parallel), only the files vLLM loads (selection.py)
    unless `choice.all_files`; a node that fails is reported, the others finish, then NodesFailed names
    the failed ones."""
    hosts = Hosts(spec)
    results: list[CopyResult] = []
    try:
        copier = Copier(hosts, progress, via, repair)
        for snap in snaps:
            entries = entries_of(snap, chosen_files(snap.repo, snap.commit, snap.path, choice or Choice()))
            outcome = hosts.each(lambda node, s=snap, e=entries: copier.copy(node, s, e))  # type: ignore[misc]
            results += list(outcome.values.values())
            for label in outcome.values if repair else ():
                damage.record(label, snap.repo, snap.commit, [])  # read whole and repaired
            failed = outcome.failed
            if failed:
                raise NodesFailed(
                    f"copy of {snap.repo} failed on {', '.join(failed)}", {n: f"copy: {w}" for n, w in failed.items()}
                )
    finally:
        hosts.close()
    return results
