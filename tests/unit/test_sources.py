"""Sources: bare mirrors, refs and PRs resolved to SHAs from local repositories exactly as from GitHub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from examples.smoke import fixtures
from pipeline.core.ir import SourceSpec
from pipeline.errors import SourceError
from pipeline.fsutil import tree_digest
from pipeline.sources.mirror import Mirrors, resolve_ref, resolve_source
from pipeline.spec.types import pr_url_parts


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


def test_source_with_pr_and_patch_facts(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    r, shas = repo
    root = tmp_path / "proj"
    patches = root / "docker-contexts" / "up" / "patches"
    patches.mkdir(parents=True)
    (patches / "0001-x.patch").write_text("patch\n")
    (patches / "notes.txt").write_text("not a patch\n")
    src = resolve_source(Mirrors(tmp_path / "cache"), SourceSpec(name="up", repo=str(r), ref="main", prs=(7,)),
                         root, "build.yaml")
    facts = dict(src.facts)
    assert facts["up.ref main"] == shas["second"]
    assert facts["up.prs #7"] == shas["pr7"]
    assert list(facts)[-1] == "up.patches 0001-x.patch"
    before = src.digest
    (patches / "0001-x.patch").write_text("patch v2\n")
    again = resolve_source(Mirrors(tmp_path / "cache"), SourceSpec(name="up", repo=str(r), ref="main", prs=(7,)),
                           root, "build.yaml")
    assert again.digest != before


def test_missing_pr_is_reported(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    r, _ = repo
    with pytest.raises(SourceError):
        resolve_source(Mirrors(tmp_path / "cache"), SourceSpec(name="up", repo=str(r), ref="main", prs=(99,)),
                       tmp_path, "build.yaml")


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
        "https://github.com/vllm-project/vllm.git", 123)


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


@pytest.mark.parametrize(("describe", "want"), [
    ("v0.11.0-296-gabc1234", "0.11.1.dev296+gabc1234"),
    ("v0.11.0-0-gabc1234", "0.11.0"),
    ("v1.0-3-gabc1234", "1.0.1.dev3+gabc1234"),
    ("", "0.0.0.dev0+g123456789"),
])
def test_scm_version_for_trees_without_git(describe: str, want: str) -> None:
    from pipeline.sources.checkout import scm_version

    assert scm_version(describe, "1234567890" * 4) == want


def test_checkout_hands_over_the_version_not_the_git_dir(tmp_path: Path, repo: tuple[Path, dict[str, str]]) -> None:
    from pipeline.sources.checkout import checkout

    r, shas = repo
    fixtures.git(r, "tag", "-d", "v1.0")
    fixtures.git(r, "tag", "v2.0.0", shas["first"])
    src = resolve_source(Mirrors(tmp_path / "cache"), SourceSpec(name="up", repo=str(r), ref="main"), tmp_path,
                         "build.yaml")
    tree = checkout(src, tmp_path / "cache")
    assert not (tree / ".git").exists()
    assert (tree / ".scm-version").read_text().strip() == f"2.0.1.dev1+g{shas['second'][:7]}"
