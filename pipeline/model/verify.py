"""`model verify`: each node's copy of a model against this machine's, all nodes at once. What a node
lacks comes from a listing of its cache (sizes, links: no byte read); what it holds whole is read and
its sha256 compared (an LFS blob is named by its sha256; the rest were hashed here)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.config.cluster import ClusterSpec, NodeSpec
from pipeline.model import damage
from pipeline.model.copy import Copier, entries_of
from pipeline.model.hub import Snapshot
from pipeline.model.manifest import Entry, missing_files, names_of_blobs
from pipeline.model.selection import Choice, chosen_files
from pipeline.nodes.hosts import Hosts


@dataclass(frozen=True)
class VerifyResult:
    node: str
    repo: str
    commit: str
    files: int  # the files of the set checked
    missing: tuple[str, ...]  # absent, partial, another size, or another revision's snapshot
    damaged: tuple[str, ...]  # whole, but another sha256
    seconds: float
    error: str = ""  # the node could not be checked

    @property
    def ok(self) -> bool:
        return not (self.missing or self.damaged or self.error)


def verify_one(copier: Copier, node: NodeSpec, snap: Snapshot, entries: list[Entry]) -> VerifyResult:
    start = time.monotonic()
    d = copier.node_dir(node, snap.repo)
    have = copier.listing(node, d)
    names = names_of_blobs(entries)
    bad = copier.damaged(node, d, entries, have)
    damaged = sorted({n for b in bad for n in names.get(b, [b])})
    files = sum(1 for e in entries if e.kind == "link")
    return VerifyResult(
        node.label,
        snap.repo,
        snap.commit,
        files,
        tuple(missing_files(entries, have)),
        tuple(damaged),
        round(time.monotonic() - start, 2),
    )


def verify_all(spec: ClusterSpec, snap: Snapshot, choice: Choice | None = None) -> list[VerifyResult]:
    """Every node's copy of `snap` (the files a copy sends: selection.py), nodes in parallel."""
    entries = entries_of(snap, chosen_files(snap.repo, snap.commit, snap.path, choice or Choice()))
    hosts = Hosts(spec)
    try:
        copier = Copier(hosts)
        outcome = hosts.each(lambda node: verify_one(copier, node, snap, entries))
    finally:
        hosts.close()
    results = [
        o.value if o.value is not None else VerifyResult(o.node.label, snap.repo, snap.commit, 0, (), (), 0.0, o.reason)
        for o in outcome
    ]
    for r in results:
        if not r.error:
            damage.record(r.node, snap.repo, snap.commit, list(r.damaged))  # deploy refuses the node until repaired
    return results
