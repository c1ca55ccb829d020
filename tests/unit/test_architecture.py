"""The layout shows the architecture, and the code keeps to it: every import (also those inside
functions) goes down the layers, never up or around in a cycle; the pure modules do no I/O; every
folder is a regular package and none is named `build`."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

PKG = REPO / "pipeline"
DATA = PKG / "resources"  # the tool's shipped files (build.yaml, recipes, mods, docker-contexts): data, not code
# Each unit (a subpackage or a top-level module of `pipeline`) may import only units of lower layers.
LAYERS: list[set[str]] = [
    {"pipeline", "errors"},  # the error tree and its exit codes: everything may raise them
    {"paths", "fsutil", "report", "contract"},  # where files live; atomic writes; the Reporter; outside names
    {"config"},  # build.yaml / cluster.yaml / recipes -> validated models; recipes rendered
    {"core"},  # pure: IR, keys, plan, build.lock
    {"sources", "stages", "store"},  # git mirrors and trees; spec -> Stage; the artifact store
    {"remote_store", "python_env"},  # the shared store on an OCI registry; the resolved Python environment
    {"engines"},  # BuildKit, Dagger, the local Docker, bootstrap images
    {"resolution", "nodes"},  # sources resolved, auto versions, keys and the plan; transports, facts, discovery
    {"builder", "ship"},  # run stages; which nodes lack what, push, pull, the loopback registry
    {"launch", "model", "benchmark"},  # interfaces, launch plan, typed steps, apply, mods; models to the nodes
    # (over nodes' Hosts); llama-benchy against an endpoint
    {"deploy"},  # the use cases: Deployer, setup, image shipping, failed-node records
    {"cli"},  # click: parse, call, render, map errors to exits
    {"__main__"},  # python -m pipeline
]
PURE = [
    "core/*.py",
    "stages/*.py",
    "launch/plan.py",
    "launch/interfaces.py",
    "nodes/netfacts.py",
    "launch/steps.py",
    "launch/doctor.py",
    "config/render.py",
    "config/vllm_args.py",
    "ship/oci_layout.py",
    "engines/identity.py",
    "model/manifest.py",
    "model/select.py",
    "benchmark/profiles.py",
    "benchmark/results.py",
    "contract.py",
]
IO_MODULES = {
    "subprocess",
    "socket",
    "shutil",
    "tempfile",
    "urllib",
    "http",
    "paramiko",
    "fabric",
    "invoke",
    "rich",
    "dagger",
    "os",
    "pipeline.cli",
    "pipeline.engines",
    "pipeline.nodes.hosts",
    "pipeline.store",
    "pipeline.paths",
    "pipeline.fsutil",
}
IO_CALLS = {
    "open",
    "print",
    "input",
    "read_text",
    "write_text",
    "read_bytes",
    "write_bytes",
    "mkdir",
    "unlink",
    "exists",
    "iterdir",
    "glob",
    "rglob",
    "rename",
    "system",
    "popen",
}  # not replace: str.replace


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(p for p in PKG.rglob("*.py") if DATA not in p.parents):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def imports(path: Path, name: str) -> set[str]:
    """Every module `path` imports, anywhere in the file, as absolute dotted names."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from pipeline import paths` imports a module
    return out


def unit(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "pipeline":
        return None
    return parts[1] if len(parts) > 1 else "pipeline"


def known_units() -> set[str]:
    return {unit(n) for n, _ in modules()} - {None}  # type: ignore[return-value]


def layer_of(u: str) -> int:
    for i, layer in enumerate(LAYERS):
        if u in layer:
            return i
    raise AssertionError(f"pipeline.{u} is in no layer of LAYERS: place it (and say why) in this test")


def edges() -> set[tuple[str, str, str]]:
    """(from unit, to unit, importing module) for every import between two units of the tool."""
    units = known_units()
    out = set()
    for name, path in modules():
        src = unit(name)
        for imp in imports(path, name):
            dst = unit(imp)
            if src and dst and dst != src and dst in units:
                out.add((src, dst, name))
    return out


def test_every_unit_has_a_layer() -> None:
    for u in known_units():
        layer_of(u)


def test_imports_only_go_down_the_layers() -> None:
    wrong = sorted(
        f"{mod} ({src}, layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
        for src, dst, mod in edges()
        if layer_of(dst) >= layer_of(src) and src != "pipeline"
    )
    assert not wrong, "\n".join(wrong)


def test_no_two_subpackages_import_each_other() -> None:
    pairs = {(s, d) for s, d, _ in edges()}
    cycles = sorted(f"{a} <-> {b}" for a, b in pairs if (b, a) in pairs and a < b)
    assert not cycles, cycles


@pytest.mark.parametrize("pattern", PURE)
def test_pure_modules_do_no_io(pattern: str) -> None:
    for path in sorted(PKG.glob(pattern)):
        name = next(n for n, p in modules() if p == path)
        bad_imports = sorted(i for i in imports(path, name) if any(i == m or i.startswith(m + ".") for m in IO_MODULES))
        assert not bad_imports, f"{path.relative_to(REPO)} imports {bad_imports}"
        calls = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
                if called in IO_CALLS:
                    calls.add(f"{called}() line {node.lineno}")
        assert not calls, f"{path.relative_to(REPO)} calls {sorted(calls)}"


def test_every_folder_is_a_package_and_none_is_named_build() -> None:
    for d in [
        PKG,
        *sorted(
            p for p in PKG.rglob("*") if p.is_dir() and p.name != "__pycache__" and p != DATA and DATA not in p.parents
        ),
    ]:
        assert (d / "__init__.py").is_file(), f"{d.relative_to(REPO)} has no __init__.py"
        assert d.name != "build", f"{d.relative_to(REPO)}: a folder named build is ignored by common .gitignores"


def test_the_layer_test_sees_imports_inside_functions(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from pipeline.cli import console\n    import subprocess\n")
    assert {"pipeline.cli", "pipeline.cli.console", "subprocess"} <= imports(src, "pipeline.core.m")


def test_stage_modules_are_the_stages_of_build_yaml_in_dependency_order() -> None:
    from pipeline.config.build import BuildSpec
    from pipeline.contract import STAGES
    from pipeline.stages import MODULES, all_stages

    assert tuple(MODULES) == STAGES
    seen: set[str] = set()
    for s in all_stages(BuildSpec()):
        assert set(s.upstream) <= seen, f"{s.name} consumes a stage listed after it"
        seen.add(s.name)


def module_edges() -> dict[str, set[str]]:
    """Within each package: module -> the modules of the same package it imports."""
    names = {n for n, _ in modules()}
    out: dict[str, set[str]] = {}
    for name, path in modules():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        out[name] = {
            i for i in imports(path, name) if i in names and i != name and i.rsplit(".", 1)[0] == pkg and i != pkg
        }
    return out


def test_no_import_cycle_between_modules_of_one_package() -> None:
    """Inside a package (deploy's rooms, config, cli …) the modules form floors too: a cycle between two
    modules means neither can be read, tested or moved without the other."""
    graph = module_edges()
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append(" -> ".join([*path[path.index(m) :], m]))
            elif m not in state:
                visit(m, [*path, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, cycles


def test_a_deploy_room_only_imports_rooms_below_it() -> None:
    """nodes < ship < launch < deploy: transports know nothing of shipping, shipping nothing of launch
    plans, and launch nothing of the use cases that drive it."""
    rooms = ["nodes", "ship", "launch", "deploy"]
    wrong = sorted(
        f"{mod} imports pipeline.{dst}"
        for src, dst, mod in edges()
        if src in rooms and dst in rooms and rooms.index(dst) > rooms.index(src)
    )
    assert not wrong, wrong


def test_no_command_module_imports_another() -> None:
    """A command's use case lives below the command line: `recipe run --setup` calls pipeline.deploy.setup,
    not cli/model's functions. Command modules (those the CLI's COMMANDS name) import none of each other;
    what several commands share (flags, tables, the console) lives in modules no command owns."""
    from pipeline.cli import COMMANDS

    commands = {mod for mod, _, _ in COMMANDS.values()}
    wrong = sorted(
        f"{name} imports {i}"
        for name, path in modules()
        if name in commands
        for i in imports(path, name)
        if i in commands and i != name
    )
    assert not wrong, wrong
