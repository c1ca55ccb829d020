"""What a node lacks of a model snapshot, from a listing of its cache. Pure.

A snapshot in the Hugging Face cache is `models--ORG--NAME/` with `blobs/<etag>` (the files),
`snapshots/<commit>/<path>` (symlinks to ../../blobs/<etag>) and `refs/<branch>` (the commit). A node
has the same layout under its own cache, so copying one means sending the blobs it lacks, then the
links and refs. A blob arrives as `<etag>.incomplete` (huggingface_hub's own name for a partial file)
and is renamed only after its sha256 is checked on the node, so an interrupted copy never leaves a file
that looks complete; the next copy checks the `.incomplete` files that have their full size instead of
sending them again.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from pipeline.contract import is_decimal

SHA256 = re.compile(r"[0-9a-f]{64}")
INCOMPLETE = ".incomplete"


@dataclass(frozen=True)
class Entry:
    path: str  # relative to models--ORG--NAME/
    kind: str  # "blob" | "link" | "ref"
    size: int = 0
    target: str = ""  # a link's target; a ref's content
    sha256: str = ""  # a blob's


@dataclass(frozen=True)
class Listing:
    files: dict[str, int]  # path -> size (regular files)
    links: dict[str, str]  # path -> target


@dataclass(frozen=True)
class Todo:
    send: tuple[Entry, ...]  # blobs (sent as .incomplete), links and refs
    check: tuple[Entry, ...]  # blobs whose .incomplete already has the full size: verify, don't send

    @property
    def nbytes(self) -> int:
        return sum(e.size for e in self.send if e.kind == "blob")

    @property
    def blobs(self) -> tuple[Entry, ...]:
        return tuple(e for e in (*self.send, *self.check) if e.kind == "blob")


def parse_listing(text: str) -> Listing:
    files: dict[str, int] = {}
    links: dict[str, str] = {}
    for line in text.splitlines():
        head, _, target = line.partition("\t")
        kind, size, path = [*head.split(" ", 2), "", ""][:3]
        if kind == "f" and is_decimal(size):
            files[path] = int(size)
        elif kind == "l":
            links[path] = target
    return Listing(files, links)


def todo(entries: list[Entry], have: Listing) -> Todo:
    send: list[Entry] = []
    check: list[Entry] = []
    for e in entries:
        if e.kind == "blob":
            if have.files.get(e.path) == e.size:
                continue
            if have.files.get(e.path + INCOMPLETE) == e.size:
                check.append(e)
            else:
                send.append(e)
        elif not _present(e, have):
            send.append(e)
    return Todo(tuple(send), tuple(check))


def _present(e: Entry, have: Listing) -> bool:
    if e.kind == "link":
        return have.links.get(e.path) == e.target
    return have.files.get(e.path) == e.size


def verify(blobs: tuple[Entry, ...], sha256sum_output: str, suffix: str = INCOMPLETE) -> list[str]:
    """Blobs whose file on the node (name + suffix) has another sha256 than ours, or none."""
    got: dict[str, str] = {}
    for line in sha256sum_output.splitlines():
        digest, _, path = line.partition("  ")
        got[path.strip()] = digest
    return [e.path for e in blobs if got.get(e.path + suffix) != e.sha256]


def snapshots_of(hub_listing: str) -> list[tuple[str, str, int]]:
    """(repo, commit, bytes of its repository's blobs) for each snapshot in a listing of a hub cache
    directory (depth 3); partial (.incomplete) files are not counted."""
    listing = parse_listing(hub_listing)
    size: dict[str, int] = {}
    for path, n in listing.files.items():
        parts = path.split("/")
        if len(parts) == 3 and parts[1] == "blobs" and not path.endswith(INCOMPLETE):
            size[parts[0]] = size.get(parts[0], 0) + n
    out = []
    for line in hub_listing.splitlines():
        kind, _, rest = line.partition(" ")
        parts = rest.split(" ", 1)[-1].split("\t")[0].split("/")
        if kind == "d" and len(parts) == 3 and parts[1] == "snapshots" and parts[0].startswith("models--"):
            repo = parts[0].removeprefix("models--").replace("--", "/", 1)
            out.append((repo, parts[2], size.get(parts[0], 0)))
    return sorted(out)


def file_name(entry: Entry) -> str:
    """A link's name inside its snapshot: `snapshots/<commit>/a/b.json` -> `a/b.json`."""
    return entry.path.split("/", 2)[-1]


def names_of_blobs(entries: list[Entry]) -> dict[str, list[str]]:
    """blob path -> the snapshot files that link to it (what a person knows the file as)."""
    out: dict[str, list[str]] = {}
    for e in entries:
        if e.kind == "link" and e.target:
            blob = posixpath.normpath(posixpath.join(posixpath.dirname(e.path), e.target))
            out.setdefault(blob, []).append(file_name(e))
    return out


def missing_files(entries: list[Entry], have: Listing) -> list[str]:
    """The snapshot's files a node lacks: no blob, a blob of another size or still partial, or no link
    (another revision's snapshot)."""
    work = todo(entries, have)
    names = names_of_blobs(entries)
    out = {n for e in (*work.send, *work.check) if e.kind == "blob" for n in names.get(e.path, [e.path])}
    out |= {file_name(e) for e in work.send if e.kind == "link"}
    return sorted(out)
