"""Before any rank starts, each model the command loads must be whole on every node, as this machine's
cache holds it (the files `model copy` sends: model/selection.py). Discovery lists each node's copy (one
`find`, no byte read); a node that lacks a file, holds it partly or holds another revision is refused,
named with the files, and so is one where the last `model verify` found a damaged file (model/damage.py:
same-size damage a listing cannot see). A model this machine does not hold is not checked (nothing to
compare with). Also each node's memory, as the preflight reads it (launch/memory.py)."""

from __future__ import annotations

from pipeline.config.render import flag_value, models_named
from pipeline.errors import NodeProblem
from pipeline.launch.memory import NodeMemory
from pipeline.model.copy import entries_of
from pipeline.model.damage import Damage
from pipeline.model.damage import key as damage_key
from pipeline.model.hub import local_snapshot, repo_folder
from pipeline.model.manifest import Entry, missing_files, names_of_blobs, parse_listing
from pipeline.model.select import WEIGHTS
from pipeline.model.selection import Choice, chosen_files
from pipeline.nodes.discover import NodeFacts

Expected = dict[str, tuple[str, str, list[Entry]]]  # cache folder -> (repo, commit, the snapshot's entries)


def expected_models(command: tuple[str, ...]) -> Expected:
    """The models the command loads that this machine's cache holds (the served one at the command's
    --revision), as the entries a copy sends."""
    out: Expected = {}
    for i, repo in enumerate(models_named(command, None)):
        snap = local_snapshot(repo, flag_value(list(command), ("--revision",)) if i == 0 else None)
        if snap is not None:
            chosen = chosen_files(repo, snap.commit, snap.path, Choice())
            out[repo_folder(repo)] = (repo, snap.commit, entries_of(snap, chosen))
    return out


def model_problems(facts: list[NodeFacts], expected: Expected, damaged: Damage | None = None) -> list[NodeProblem]:
    """Nodes whose copy lacks files (from discovery's listing), or holds files the last `model verify`
    found damaged (`damaged`: model/damage.py's record, keyed repo@commit)."""
    out = []
    for f in facts:
        for repo, commit, _ in expected.values():
            bad = (damaged or {}).get(f.node.label, {}).get(damage_key(repo, commit), [])
            if bad:
                out.append(
                    NodeProblem(
                        f.node.label,
                        "model",
                        f"model {repo}: `model verify` found {len(bad)} damaged file(s): {', '.join(bad[:4])} "
                        f"(`python -m pipeline model copy {repo} --verify` repairs them)",
                    )
                )
        for folder, (repo, _, entries) in expected.items():
            if not f.reachable or folder not in f.models:  # facts saved before this check: unknown
                continue
            missing = missing_files(entries, parse_listing(f.models[folder]))
            if missing:
                more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
                out.append(
                    NodeProblem(
                        f.node.label,
                        "model",
                        f"model {repo}: {len(missing)} file(s) missing, partial or of another revision: "
                        f"{', '.join(missing[:4])}{more} (`python -m pipeline model copy {repo}` sends them)",
                    )
                )
    return out


def weights_of(expected: Expected, command: tuple[str, ...]) -> int:
    """Bytes of the served model's weight files this machine holds (0 when it holds none of them)."""
    served = models_named(command, None)
    held = expected.get(repo_folder(served[0])) if served else None
    if held is None:
        return 0
    entries = held[2]
    sizes = {e.path: e.size for e in entries if e.kind == "blob"}
    blobs = {blob for blob, names in names_of_blobs(entries).items() if any(n.endswith(WEIGHTS) for n in names)}
    return sum(sizes.get(b, 0) for b in blobs)


def memory_of(facts: list[NodeFacts], gpus: str) -> list[NodeMemory]:
    """Each node's memory as the preflight reads it. Only a GB10 (compute capability 12.1) shares its
    memory with the OS; a discrete GPU's claim is in its own memory, which MemAvailable does not show."""
    return [
        NodeMemory(
            f.node.label,
            f.mem_total,
            f.mem_available,
            gpus != "none" and any(g.compute_cap.startswith("12.1") or "GB10" in g.name for g in f.gpus),
            f.container_running == "true",
        )
        for f in facts
        if f.reachable
    ]
