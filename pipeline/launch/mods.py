"""Mods: patches applied to a container at launch (the toolkit's contract).

A mod is a directory, or a .zip of one, holding `run.sh` and its assets. Deploy copies it into the
container as /workspace/mods/<name> and runs it there (the commands are in steps.py) with WORKSPACE_DIR
set to the container's working directory (where mods drop chat templates or parsers the command
refers to). Mods run in the order given,
before the command; a failing mod stops the deploy with its output.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.contract import is_inner_path
from pipeline.errors import ConfigError
from pipeline.launch.steps import ModRef


@dataclass(frozen=True)
class Mod:
    name: str
    path: Path  # a directory holding run.sh
    digest: str  # content hash: part of the deploy hash, so a changed mod redeploys

    def ref(self) -> ModRef:
        return ModRef(name=self.name, local=str(self.path), digest=self.digest)


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


MAX_ZIP_BYTES = 256 << 20  # a mod is scripts and templates: a zip that unpacks to more is refused
MAX_ZIP_MEMBERS = 10_000
_MOD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def unpack(path: Path, spec: str, workdir: Path) -> Path:
    """The zip's mod folder, unpacked into a fresh folder under workdir. Every member is checked before
    anything is written: an absolute path, `..`, a drive or a size past the limits refuses the whole zip."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ConfigError(f"--apply-mod {spec}: not a readable zip ({e})") from None
    with z:
        infos = z.infolist()
        bad = [i.filename for i in infos if not is_inner_path(i.filename)]
        if bad:
            raise ConfigError(f"--apply-mod {spec}: member {bad[0]!r} would land outside the mod's folder")
        if len(infos) > MAX_ZIP_MEMBERS or sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
            raise ConfigError(
                f"--apply-mod {spec}: over {MAX_ZIP_MEMBERS} members or {MAX_ZIP_BYTES >> 20} MiB "
                "unpacked; a mod is scripts and templates"
            )
        names = [i.filename for i in infos]
        top = {n.split("/")[0] for n in names}
        root = "" if "run.sh" in names else (f"{next(iter(top))}/" if len(top) == 1 else None)
        if root is None or f"{root}run.sh" not in names:
            raise ConfigError(f"--apply-mod {spec}: the zip holds no run.sh")
        dest = Path(tempfile.mkdtemp(prefix="mod-", dir=workdir))
        for n in names:
            if n.startswith(root) and not n.endswith("/"):
                target = dest / n[len(root) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(n))
    return dest


def load_mod(spec: str, search: list[Path], workdir: Path) -> Mod:
    """A mod given as a path, a .zip, or a name under mods/ (a plain name: it never climbs out of them)."""
    candidates = [Path(spec)] + ([d / spec for d in search] if _MOD_NAME.match(spec) else [])
    path = next((c for c in candidates if c.exists()), None)
    if path is None:
        raise ConfigError(f"--apply-mod {spec}: no such directory or .zip (looked in ., {', '.join(map(str, search))})")
    if path.is_file():
        if path.suffix != ".zip":
            raise ConfigError(f"--apply-mod {spec}: expected a directory or a .zip")
        name = path.stem
        path = unpack(path, spec, workdir)
    else:
        name = path.name
        if not (path / "run.sh").is_file():
            raise ConfigError(f"--apply-mod {spec}: {path} holds no run.sh")
    return Mod(name=name, path=path.resolve(), digest=_digest(path))


def cleanup(mods: list[Mod], workdir: Path) -> None:
    for m in mods:
        if m.path.is_relative_to(workdir):
            shutil.rmtree(m.path, ignore_errors=True)
