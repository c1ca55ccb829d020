"""`model download | copy | ls`: Hugging Face models downloaded once on this machine, copied to the nodes
that lack them (only the files they lack, all nodes at once), listed per node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.nodeopts import cluster_options
from pipeline.cli.tables import copy_table, size_text

if TYPE_CHECKING:
    from pipeline.model.copy import CopyResult
    from pipeline.model.hub import Snapshot
    from pipeline.model.selection import Choice, Record
    from pipeline.model.verify import VerifyResult


@click.group()
def model() -> None:
    """Hugging Face models: download once, copy to the nodes that lack them, list per node.

    huggingface_hub does the downloading: HF_HOME says where the cache is, HF_TOKEN (or `hf auth login`)
    opens gated and private models, HF_ENDPOINT points at a mirror. Nodes keep models in
    ~/.cache/huggingface, the directory deploy mounts into the containers (which run with
    HF_HUB_OFFLINE=1, so no node downloads on its own).
    """


def _copy_opts(o: dict[str, Any]) -> bool:
    return bool(o.get("nodes") or o.get("cluster_file"))


@model.command()
@click.argument("repo")
@click.option("--revision", default=None, help="Branch, tag or commit [default: main].")
@click.option(
    "--copy-to",
    "copy_to",
    default=None,
    metavar="HOST[,HOST…]",
    help="Then copy it to these nodes (only what each lacks). --cluster FILE copies to a cluster's nodes.",
)
@click.option(
    "--load-format",
    default="auto",
    show_default=True,
    metavar="FORMAT",
    help="vLLM's --load-format the model is served with: it decides which weight set is fetched "
    "(auto/safetensors: the safetensors shards; pt: the .bin set; mistral: consolidated*.safetensors).",
)
@click.option("--gguf", default=None, metavar="FILE", help="The GGUF file vLLM serves (a GGUF repository).")
@click.option("--all-files", is_flag=True, help="Every file of the repository, not only what vLLM loads.")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="What was downloaded and copied, as JSON on stdout.")
def download(repo: str, revision: str | None, copy_to: str | None, as_json: bool, **o: Any) -> None:
    """Download REPO (a Hugging Face model id) into this machine's cache: only the files vLLM loads (one
    weight set, with config, tokenizer, templates and code; never original/, a .bin set beside
    safetensors, consolidated.* beside shards, or other frameworks' weights). Files it has are not
    fetched again, and a download that was interrupted resumes.

    \b
    Examples:
      python -m pipeline model download Qwen/Qwen3-8B
      python -m pipeline model download Qwen/Qwen3-8B --copy-to 192.168.100.11,192.168.100.12
      python -m pipeline model download unsloth/Qwen3-8B-GGUF --gguf Qwen3-8B-Q4_K_M.gguf
    """
    from pipeline.cli.console import console, emit_json, say, transfer_progress
    from pipeline.cli.nodeopts import cluster_from
    from pipeline.model.copy import copy_all
    from pipeline.model.hub import download as fetch
    from pipeline.model.hub import resumed_note
    from pipeline.model.selection import load_selection

    choice = choice_from(o)
    snap = fetch(check_repo(repo), revision, resumed_note(repo, say), choice)
    rec = None if choice.all_files else load_selection(repo, snap.commit)
    say(f"{repo}: {snap.files} file(s), {snap.size / 1e6:.1f} MB at {snap.commit[:12]} in {snap.repo_dir}", "ok")
    if rec is not None:
        say(f"{repo}: weights: {rec.selection.weights}; {left_out_line(rec)}")
    results: list[CopyResult] = []
    if copy_to or _copy_opts(o):
        with transfer_progress() as reporter:
            nodes = cluster_from({**o, "nodes": copy_to or o.get("nodes")})
            results = copy_all(nodes, [snap], reporter.transfer, choice=choice)
        if not as_json:
            console.print(copy_table(results))
    if as_json:
        emit_json(
            {
                "repo": repo,
                "commit": snap.commit,
                "path": str(snap.path),
                "files": snap.files,
                "bytes": snap.size,
                "weights": rec.selection.weights if rec else "every file",
                "left_out": [{"path": p, "why": why} for p, why in rec.selection.left_out] if rec else [],
                "left_out_bytes": rec.left_out_bytes if rec else 0,
                "copies": [r.__dict__ for r in results],
            }
        )


def choice_from(o: dict[str, Any]) -> Choice:
    from pipeline.model.selection import Choice

    return Choice(o.pop("load_format", "auto"), o.pop("gguf", None), bool(o.pop("all_files", False)))


def left_out_line(rec: Record) -> str:
    """`left out 5 file(s), 7.0 MB: original/ ×2, another weight set ×2, ...`, grouped by folder or why."""
    left = rec.selection.left_out
    if not left:
        return "nothing left out"
    groups: dict[str, int] = {}
    for path, why in left:
        key = path.split("/")[0] + "/" if "/" in path else why
        groups[key] = groups.get(key, 0) + 1
    parts = ", ".join(f"{k} ×{n}" for k, n in groups.items())
    return f"left out {len(left)} file(s), {size_text(rec.left_out_bytes)}: {parts}"[:300]


def check_repo(repo: str) -> str:
    from pipeline.config.recipe import is_model_id
    from pipeline.errors import ConfigError

    if not is_model_id(repo):
        raise ConfigError(f"model {repo!r}: expected a Hugging Face model id such as Qwen/Qwen3-8B")
    return repo


@model.command()
@click.argument("repo")
@click.option("--revision", default=None, help="Branch, tag or commit [default: main].")
@click.option(
    "--via",
    type=click.Choice(["auto", "rsync", "tar"]),
    default="auto",
    show_default=True,
    help="auto: rsync where this machine and the node have it (a partial file continues), else a tar "
    "stream over the SSH channel.",
)
@click.option("--all-files", is_flag=True, help="Every file the cache holds, not only what vLLM loads.")
@click.option(
    "--verify",
    "repair",
    is_flag=True,
    help="First read every file the node holds (sha256) and send the damaged ones again (`model verify` names them).",
)
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Per-node results as JSON on stdout.")
def copy(repo: str, revision: str | None, via: str, repair: bool, as_json: bool, **o: Any) -> None:
    """Copy REPO from this machine's cache to the nodes: the files `model download` chose (what vLLM
    loads), only what each node lacks, checked by sha256.

    \b
    Examples:
      python -m pipeline model copy Qwen/Qwen3-8B -n 192.168.100.11,192.168.100.12
      python -m pipeline model copy Qwen/Qwen3-8B --cluster cluster.yaml --verify    # repairs damaged files
    """
    from pipeline.cli.console import console, emit_json, transfer_progress
    from pipeline.cli.nodeopts import cluster_from
    from pipeline.model.copy import copy_all

    snap = cached(repo, revision)
    choice = choice_from(o)
    with transfer_progress() as reporter:
        results = copy_all(cluster_from(o), [snap], reporter.transfer, via, choice, repair)
    if as_json:
        emit_json([r.__dict__ for r in results])
        return
    console.print(copy_table(results))


def cached(repo: str, revision: str | None) -> Snapshot:
    from pipeline.errors import ConfigError
    from pipeline.model.hub import local_snapshot

    snap = local_snapshot(check_repo(repo), revision)
    if snap is None:
        raise ConfigError(f"model {repo}: not in this machine's cache; `model download {repo}` first")
    return snap


@model.command()
@click.argument("repo")
@click.option("--revision", default=None, help="Branch, tag or commit [default: main].")
@click.option("--all-files", is_flag=True, help="Every file the cache holds, not only what vLLM loads.")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Per-node results as JSON on stdout.")
def verify(repo: str, revision: str | None, as_json: bool, **o: Any) -> None:
    """Check each node's copy of REPO against this machine's, all nodes at once: the files it lacks (or
    holds partly, or of another revision) and those whose sha256 differs (every byte is read). Exits 1
    naming the nodes and files when one is not whole; `model copy --verify` repairs them.

    \b
    Examples:
      python -m pipeline model verify Qwen/Qwen3-8B --cluster cluster.yaml
    """
    from pipeline.cli.console import console, emit_json
    from pipeline.cli.nodeopts import cluster_from
    from pipeline.errors import NodesFailed
    from pipeline.model.verify import verify_all

    snap = cached(repo, revision)
    choice = choice_from(o)
    results = verify_all(cluster_from(o), snap, choice)
    if as_json:
        emit_json([r.__dict__ for r in results])
    else:
        console.print(verify_table(results))
    bad = {r.node: r for r in results if not r.ok}
    if bad:
        raise NodesFailed(
            f"model {repo}: not whole on "
            + "; ".join(f"{n} ({verify_line(r)})" for n, r in bad.items())
            + f". `model copy {repo} --verify` repairs it",
            {n: verify_line(r) for n, r in bad.items()},
        )


def verify_line(r: VerifyResult) -> str:
    if r.error:
        return f"cannot check: {r.error}"
    parts = [
        f"{what}: {', '.join(files[:4])}{' …' if len(files) > 4 else ''}"
        for what, files in (("missing", r.missing), ("damaged", r.damaged))
        if files
    ]
    return "; ".join(parts) or f"{r.files} file(s) whole"


def verify_table(results: list[VerifyResult]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    t = Table()
    for col in ("node", "model", "commit", "files", "state", "seconds"):
        t.add_column(col)
    for r in results:
        state = "[green]whole[/]" if r.ok else f"[red]{escape(verify_line(r))}[/]"
        t.add_row(escape(r.node), escape(r.repo), r.commit[:12], str(r.files), state, f"{r.seconds:.1f}")
    return t


@model.command("ls")
@cluster_options
@click.option("--json", "as_json", is_flag=True, help="Per machine, the models it holds, as JSON on stdout.")
def ls(as_json: bool, **o: Any) -> None:
    """The models in this machine's cache, and with -n/--cluster in each node's.

    \b
    Examples:
      python -m pipeline model ls
      python -m pipeline model ls -n 192.168.100.11,192.168.100.12 --json
    """
    from rich.markup import escape
    from rich.table import Table

    from pipeline.cli.console import console, emit_json
    from pipeline.model.hub import cached_models
    from pipeline.model.selection import load_selection

    rows = [("this machine", s.repo, s.commit, s.size) for s in cached_models()]
    records = {(r, c): load_selection(r, c) for m, r, c, _ in rows}
    if _copy_opts(o):
        rows += node_models(o)
    if as_json:
        emit_json(
            [
                {
                    "machine": m,
                    "repo": r,
                    "commit": c,
                    "bytes": b,
                    "left_out_bytes": rec.left_out_bytes if (rec := _record(records, m, r, c)) else None,
                }
                for m, r, c, b in rows
            ]
        )
        return
    t = Table()
    for col in ("machine", "model", "commit", "size", "left out"):
        t.add_column(col)
    for m, r, c, b in rows:
        rec = _record(records, m, r, c)
        t.add_row(escape(m), escape(r), c[:12], f"{b / 1e6:.1f} MB", escape(left_out_line(rec)) if rec else "")
    console.print(t)


def _record(records: dict[tuple[str, str], Record | None], machine: str, repo: str, commit: str) -> Record | None:
    """What this machine's download of repo@commit left out; nodes hold what was copied, so none."""
    return records.get((repo, commit)) if machine == "this machine" else None


def node_models(o: dict[str, Any]) -> list[tuple[str, str, str, int]]:
    from pipeline.cli.nodeopts import cluster_from
    from pipeline.contract import LIST_FORMAT
    from pipeline.model.manifest import snapshots_of
    from pipeline.nodes.hosts import Hosts

    spec = cluster_from(o)
    hosts = Hosts(spec)
    try:

        def one(node: Any) -> list[tuple[str, str, str, int]]:
            hub = f"{hosts.home(node)}/.cache/huggingface/hub"
            out = hosts.run(
                node,
                [
                    "sh",
                    "-c",
                    'test -d "$1" || exit 0; find "$1" -mindepth 1 -maxdepth 3 -printf "$2"',
                    "sh",
                    hub,
                    LIST_FORMAT,
                ],
                timeout=120,
            ).stdout
            return [(node.label, *s) for s in snapshots_of(out)]

        res = hosts.each(one)
    finally:
        hosts.close()
    rows: list[tuple[str, str, str, int]] = []
    for oc in res:
        rows += oc.value if oc.ok and oc.value is not None else [(oc.node.label, f"(unreachable: {oc.reason})", "", 0)]
    return rows
