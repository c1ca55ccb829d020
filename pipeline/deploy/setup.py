"""`recipe run --setup` as a use case: everything a recipe needs before its deploy, decided, then done.

    setup = Setup(store, mirrors, reporter)
    sp = setup.plan(SetupRequest(build_file, profiles, tag, models, cluster))
    for line in sp.lines(): print(line)         # --dry-run stops here
    setup.apply(sp)

1. image: the recipe's tag must hold the image whose *build key* (the runtime stage's key, which hashes
   every stage below it) matches build.yaml with the recipe's build_args as profiles; a tag that holds
   another build is rebuilt (stages in the store are reused). Deploy then ships it to the nodes.
2. models: the served model and every other model the command loads (a draft, a tokenizer) are downloaded
   into this machine's cache when it lacks them.
3. copy: each node gets the files of those models it lacks (checked by size and sha256 on the node).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.builder import Builder, StageResult
from pipeline.config import LoadedBuild, load_build
from pipeline.config.cluster import ClusterSpec
from pipeline.contract import KEY_LABEL
from pipeline.core.plan import Plan
from pipeline.engines import make_engine
from pipeline.engines.docker import Docker
from pipeline.model.copy import CopyResult, copy_all
from pipeline.model.hub import Snapshot, download, local_snapshot, resumed_note
from pipeline.model.selection import Choice
from pipeline.paths import cache_root
from pipeline.report import Reporter
from pipeline.resolution import plan_build
from pipeline.sources.mirror import Mirrors
from pipeline.store import Store


@dataclass(frozen=True)
class SetupRequest:
    build_file: Path
    profiles: tuple[str, ...]
    tag: str  # the recipe's image
    models: tuple[tuple[str, str | None], ...]  # (repo, revision) of every model the command loads
    cluster: ClusterSpec
    load_format: str = "auto"  # the command's --load-format: which weight set of the served (first) model


@dataclass
class SetupPlan:
    request: SetupRequest
    loaded: LoadedBuild
    build: Plan
    key: str  # the runtime key build.yaml gives with the profiles
    have: str  # the runtime key the local tag holds ('' when none)
    cached: dict[str, Snapshot] = field(default_factory=dict)  # models this machine has

    @property
    def image_current(self) -> bool:
        return self.have == self.key

    def lines(self, dry_run: bool = False) -> list[str]:
        """Every action, numbered as it runs, with what it does (or, in a dry run, would do) and why."""
        r = self.request
        would = "would " if dry_run else ""
        via = f" (profiles: {', '.join(r.profiles)})" if r.profiles else ""
        if self.image_current:
            out = [f"[setup 1/3] image {r.tag} is build {self.key[:12]} of {r.build_file}{via}: up to date"]
        else:
            why = f"holds build {self.have[:12]}" if self.have else "is not on this machine"
            out = [
                f"[setup 1/3] image {r.tag} {why}: {would}build {self.key[:12]} from {r.build_file}{via} "
                f"({len(self.build.to_build)} of {len(self.build.stages)} stages not in the store)"
            ]
        for repo, revision in r.models:
            snap = self.cached.get(repo)
            out.append(
                f"[setup 2/3] model {repo}: in this machine's cache ({snap.size / 1e6:.1f} MB, {snap.commit[:12]})"
                if snap
                else f"[setup 2/3] model {repo}: not in this machine's cache: {would}download it"
                + (f" at {revision}" if revision else "")
            )
        nodes = ", ".join(n.label for n in r.cluster.ordered())
        names = ", ".join(m for m, _ in r.models) or "no model"
        out.append(f"[setup 3/3] {would}copy to {nodes} the files of {names} each lacks (checked by size and sha256)")
        return out


@dataclass
class SetupResult:
    key: str
    built: list[StageResult] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    copies: list[CopyResult] = field(default_factory=list)


class Setup:
    def __init__(self, store: Store, mirrors: Mirrors, reporter: Reporter, docker: Docker | None = None):
        self.store = store
        self.mirrors = mirrors
        self.report = reporter
        self.docker = docker or Docker()

    def plan(self, request: SetupRequest) -> SetupPlan:
        """Resolve the build and look at this machine's image and model cache. Builds, downloads and
        copies nothing."""
        loaded = load_build(request.build_file, (), {"runtime.tag": request.tag}, request.profiles)
        _, build, _ = plan_build(loaded, self.mirrors, self.store)
        cached = {repo: snap for repo, rev in request.models if (snap := local_snapshot(repo, rev)) is not None}
        return SetupPlan(
            request,
            loaded,
            build,
            build.stages[-1].key,
            self.docker.image_labels(request.tag).get(KEY_LABEL, ""),
            cached,
        )

    def apply(self, sp: SetupPlan) -> SetupResult:
        lines = sp.lines()
        self.report.say(lines[0])
        result = SetupResult(sp.key)
        if not sp.image_current:
            builder = Builder(
                sp.loaded, make_engine(sp.loaded.spec.engine, cache_root()), self.store, self.mirrors, self.report
            )
            _, result.built = builder.run(tag=sp.request.tag)
        for i, (repo, revision) in enumerate(sp.request.models):
            snap = sp.cached.get(repo)
            if snap is None:
                self.report.say(f"[setup 2/3] model {repo}: downloading")
                choice = Choice(sp.request.load_format if i == 0 else "auto")
                snap = download(repo, revision, resumed_note(repo, self.report.say, "[setup 2/3] "), choice)
                self.report.say(f"[setup 2/3] model {repo}: {snap.files} file(s), {snap.size / 1e6:.1f} MB", "ok")
            else:
                self.report.say(f"[setup 2/3] model {repo}: in this machine's cache")
            result.snapshots.append(snap)
        if result.snapshots:
            nodes = ", ".join(n.label for n in sp.request.cluster.ordered())
            self.report.say(
                f"[setup 3/3] copying {', '.join(s.repo for s in result.snapshots)} to {nodes} (only what each lacks)"
            )
            result.copies = copy_all(sp.request.cluster, result.snapshots, self.report.transfer)
        return result
