"""Sources: bare mirrors, refs and PRs resolved to SHAs from local repositories exactly as from GitHub."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from examples.smoke import fixtures
from pipeline.config.types import pr_url_parts
from pipeline.core.ir import SourceSpec
from pipeline.errors import SourceError
from pipeline.fsutil import tree_digest
from pipeline.sources.mirror import Mirrors, resolve_ref
from pipeline.sources.resolve import resolve_source


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    r = tmp_path / "up"
    shas = {"first": fixtures.make_repo(r, {"a.txt": "1\n"})}
    fixtures.git(r, "tag", "v1.0")
    shas["second"] = fixtures.commit(r, {"a.txt": "2\n"}, "second")
    shas["pr7"] = fixtures.make_pr(r, 7, {"b.txt": "pr\n"})
    return r, shas


@pytest.mark.parametrize(("ref", "which"), [("main", "second"), ("v1.0", "first"), ("pull/7/head", "pr7")])
def test_refs_resolve_to_full_shas(tmp_path: Path, repo: tuple[Path, dict[str, str]], ref: str, which: str) -> None:
    r, shas = repo
    _, sha = resolve_ref(Mirrors(tmp_path / "cache"), "up", str(r), ref, "build.yaml:x.ref")
    assert sha == shas[which]


def test_sha_prefix_and_full_sha(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    r, shas = repo
    m = Mirrors(tmp_path / "cache")
    assert resolve_ref(m, "up", str(r), shas["first"][:9], "x")[1] == shas["first"]
    assert resolve_ref(m, "up", f"file://{r}", shas["first"], "x")[1] == shas["first"]


def test_unknown_ref_is_a_located_error(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    r, _ = repo
    with pytest.raises(SourceError, match=r"build.yaml:vllm.ref: 'nope' is not a branch, tag or commit"):
        resolve_ref(Mirrors(tmp_path / "cache"), "up", str(r), "nope", "build.yaml:vllm.ref")


def test_moving_branch_is_seen_after_fetch(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    r, shas = repo
    cache = tmp_path / "cache"
    assert resolve_ref(Mirrors(cache), "up", str(r), "main", "x")[1] == shas["second"]
    third = fixtures.commit(r, {"a.txt": "3\n"}, "third")
    assert resolve_ref(Mirrors(cache), "up", str(r), "main", "x")[1] == third
    # --offline keeps what the mirror had
    fixtures.commit(r, {"a.txt": "4\n"}, "fourth")
    assert resolve_ref(Mirrors(cache, offline=True), "up", str(r), "main", "x")[1] == third


def test_offline_without_mirror_fails_clearly(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    r, _ = repo
    with pytest.raises(SourceError, match="no mirror"):
        resolve_ref(Mirrors(tmp_path / "cache", offline=True), "up", str(r), "main", "x")


NEW_FILE_PATCH = (
    "diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1 @@\n+{text}\n"
)


def test_source_with_pr_and_patch_facts(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    r, shas = repo
    root = tmp_path / "proj"
    patches = root / "docker-contexts" / "up" / "patches"
    patches.mkdir(parents=True)
    (patches / "0001-x.patch").write_text(NEW_FILE_PATCH.format(text="patch"))
    (patches / "notes.txt").write_text("not a patch\n")
    src = resolve_source(
        Mirrors(tmp_path / "cache"), SourceSpec(name="up", repo=str(r), ref="main", prs=(7,)), root, "build.yaml"
    )
    facts = dict(src.facts)
    assert facts["up.ref main"] == shas["second"]
    assert facts["up.prs #7"] == shas["pr7"]
    assert list(facts)[-1] == "up.patches 0001-x.patch"
    before = src.digest
    (patches / "0001-x.patch").write_text(NEW_FILE_PATCH.format(text="patch v2"))
    again = resolve_source(
        Mirrors(tmp_path / "cache"), SourceSpec(name="up", repo=str(r), ref="main", prs=(7,)), root, "build.yaml"
    )
    assert again.digest != before


def test_missing_pr_is_reported(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    r, _ = repo
    with pytest.raises(SourceError):
        resolve_source(
            Mirrors(tmp_path / "cache"),
            SourceSpec(name="up", repo=str(r), ref="main", prs=(99,)),
            tmp_path,
            "build.yaml",
        )


def test_source_dir_must_be_clean(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    r, shas = repo
    spec = SourceSpec(name="up", repo="unused", ref="main", source_dir=str(r))
    src = resolve_source(Mirrors(tmp_path / "cache"), spec, tmp_path, "build.yaml")
    assert src.commit == shas["second"]
    (r / "a.txt").write_text("dirty\n")
    with pytest.raises(SourceError, match="uncommitted changes"):
        resolve_source(Mirrors(tmp_path / "cache"), spec, tmp_path, "build.yaml")


def test_pr_url_parts() -> None:
    assert pr_url_parts("https://github.com/vllm-project/vllm/pull/123") == (
        "https://github.com/vllm-project/vllm.git",
        123,
    )


def test_tree_digest_ignores_mtime_but_not_content_or_mode(tmp_path: Path) -> None:
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("x")
    first = tree_digest(d)
    os.utime(d / "sub" / "f", (1, 1))
    assert tree_digest(d) == first
    (d / "sub" / "f").chmod(0o755)
    assert tree_digest(d) != first
    (d / "sub" / "f").chmod(0o644)
    (d / "sub" / "f").write_text("y")
    assert tree_digest(d) != first


def scm_tree(tmp_path: Path, r: Path, ref: str = "main") -> str:
    from pipeline.sources.checkout import checkout

    src = resolve_source(
        Mirrors(tmp_path / "cache"), SourceSpec(name="up", repo=str(r), ref=ref), tmp_path, "build.yaml"
    )
    return (checkout(src, tmp_path / "cache") / ".scm-version").read_text().strip()


@pytest.mark.parametrize(
    ("tag", "after", "want"),
    [
        ("v0.12.0rc1", 0, "0.12.0rc1"),  # an rc tag is an rc, not a final release
        ("v0.12.0rc1", 2, "0.12.0rc2.dev2+g{sha}"),  # after an rc: the next rc's dev release
        ("v0.11.0.post1", 0, "0.11.0.post1"),
        ("v0.11.0", 1, "0.11.1.dev1+g{sha}"),  # main after a release: older than the next release
    ],
)
def test_versions_come_from_setuptools_scm(tmp_path: Path, tag: str, after: int, want: str) -> None:
    r = tmp_path / "up"
    fixtures.make_repo(r, {"a.txt": "1\n"})
    fixtures.git(r, "tag", tag)
    sha = fixtures.git(r, "rev-parse", "HEAD")
    for i in range(after):
        sha = fixtures.commit(r, {"a.txt": f"{i + 2}\n"}, f"after {i}")
    got = scm_tree(tmp_path, r)
    assert re.fullmatch(re.escape(want.format(sha=sha[:7])) + ("[0-9a-f]*" if "{sha}" in want else ""), got), got


def test_checkout_hands_over_the_version_not_the_git_dir(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    from pipeline.sources.checkout import checkout

    r, shas = repo
    fixtures.git(r, "tag", "-d", "v1.0")
    fixtures.git(r, "tag", "v2.0.0", shas["first"])
    src = resolve_source(
        Mirrors(tmp_path / "cache"), SourceSpec(name="up", repo=str(r), ref="main"), tmp_path, "build.yaml"
    )
    tree = checkout(src, tmp_path / "cache")
    assert not (tree / ".git").exists()
    assert (tree / ".scm-version").read_text().strip().startswith(f"2.0.1.dev1+g{shas['second'][:7]}")


def test_mirrors_fetch_only_the_ref_and_the_tags_in_its_history(tmp_path: Path) -> None:
    r = tmp_path / "up"
    fixtures.make_repo(r, {"a.txt": "1\n"})
    fixtures.git(r, "tag", "v1.0")
    for i in range(40):  # branches and PR refs nobody asked for
        fixtures.git(r, "branch", f"topic-{i}")
        fixtures.git(r, "update-ref", f"refs/pull/{i + 1}/head", "HEAD")
    fixtures.git(r, "checkout", "-q", "-b", "other")
    fixtures.commit(r, {"b.txt": "x\n"}, "elsewhere")
    fixtures.git(r, "tag", "v9.9")  # not in main's history
    fixtures.git(r, "checkout", "-q", "main")
    mirror, _ = resolve_ref(Mirrors(tmp_path / "cache"), "up", str(r), "main", "x")
    refs = fixtures.git(mirror, "for-each-ref", "--format=%(refname)").split()
    assert refs == ["refs/heads/main", "refs/tags/v1.0"]


def test_a_fetch_past_its_deadline_is_a_located_error_and_the_next_run_completes(
    tmp_path: Path, repo: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    r, shas = repo
    resolve_ref(Mirrors(tmp_path / "cache"), "up", str(r), "main", "x")  # the mirror exists; then main moves
    third = fixtures.commit(r, {"a.txt": "3\n"}, "third")
    slow = tmp_path / "slow-upload-pack"  # a connection that stalls
    slow.write_text('#!/bin/sh\nsleep 30\nexec git-upload-pack "$@"\n')
    slow.chmod(0o755)
    monkeypatch.setenv("SPARK_PIPELINE_GIT_TIMEOUT", "2")
    for key, value in {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "remote.origin.uploadpack",
        "GIT_CONFIG_VALUE_0": str(slow),
    }.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SourceError) as info:
        resolve_ref(Mirrors(tmp_path / "cache"), "up", str(r), "main", "build.yaml:vllm.ref")
    message = str(info.value)
    assert message.startswith("build.yaml:vllm.ref: fetching origin did not finish within 2 s")
    assert "what the mirror had is kept. Retry with the same command" in message and "git -C " in message
    monkeypatch.delenv("GIT_CONFIG_COUNT")
    assert resolve_ref(Mirrors(tmp_path / "cache"), "up", str(r), "main", "x")[1] == third != shas["second"]


def test_submodules_are_mirrored_checked_out_and_keyed(tmp_path: Path) -> None:
    from pipeline.sources.checkout import checkout

    sub = tmp_path / "cutlass"
    first = fixtures.make_repo(sub, {"include/cutlass.h": "#define V 1\n"})
    parent = tmp_path / "flashinfer"
    fixtures.make_repo(parent, {"setup.py": "\n"})
    fixtures.add_submodule(parent, "3rdparty/cutlass", "../cutlass", first)
    spec = SourceSpec(name="flashinfer", repo=str(parent), ref="main", patches=())
    src = resolve_source(Mirrors(tmp_path / "cache"), spec, tmp_path, "build.yaml")
    assert dict(src.facts)["flashinfer.submodules 3rdparty/cutlass"] == first
    tree = checkout(src, tmp_path / "cache")
    assert (tree / "3rdparty" / "cutlass" / "include" / "cutlass.h").read_text() == "#define V 1\n"
    second = fixtures.commit(sub, {"include/cutlass.h": "#define V 2\n"}, "v2")
    fixtures.git(parent, "update-index", "--cacheinfo", f"160000,{second},3rdparty/cutlass")
    fixtures.git(parent, "commit", "-q", "-m", "bump cutlass")
    moved = resolve_source(Mirrors(tmp_path / "cache"), spec, tmp_path, "build.yaml")
    assert moved.digest != src.digest
    assert (checkout(moved, tmp_path / "cache") / "3rdparty/cutlass/include/cutlass.h").read_text() == "#define V 2\n"


def test_a_conflicting_pr_is_named_when_resolving(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    r, _ = repo
    fixtures.make_pr(r, 8, {"a.txt": "from the PR\n"})
    fixtures.commit(r, {"a.txt": "main moved on\n"}, "main moved on")
    spec = SourceSpec(name="vllm", repo=str(r), ref="main", prs=(8,), tolerate_conflicts=("docs/*",))
    with pytest.raises(
        SourceError,
        match=r"^vllm: PR #8 conflicts in a\.txt; rebase the PR, pick another "
        r"vllm\.ref, or drop it from vllm\.prs$",
    ):
        resolve_source(Mirrors(tmp_path / "cache"), spec, tmp_path, "build.yaml")
