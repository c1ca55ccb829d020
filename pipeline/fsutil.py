"""Small filesystem helpers that several layers share: atomic writes, content digests, liveness of a
PID that owns a temp directory."""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pipeline.errors import FileRefused


def write_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Write via a temp file in the same directory + rename: readers never see half a file. Only a regular
    file (or a link) is ever replaced: a rename over a FIFO, a device (/dev/null, as root) or a socket
    would put a file where the system expects something else."""
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, device or socket)"
            raise FileRefused(f"{path}: is {kind}; refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(path: Path, exclude: Iterable[str] = (".git", "__pycache__")) -> str:
    """Content hash of a directory: relative paths, the executable bit and file contents only (no
    mtimes, owners or absolute paths). Bytecode caches are not content: pip compiles the scripts of an
    installed copy, and a key must not change with that. Raises FileNotFoundError when `path` is not a
    directory."""
    if not path.is_dir():
        raise FileNotFoundError(f"directory not found: {path}")
    skip = set(exclude)
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        rel_dir = Path(dirpath).relative_to(path)
        for fn in sorted(filenames):
            p = Path(dirpath) / fn
            rel = (rel_dir / fn).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                h.update(f"L {rel} {os.readlink(p)}\n".encode())
                continue
            mode = "x" if st.st_mode & stat.S_IXUSR else "-"
            h.update(f"F {rel} {mode} {file_sha256(p)}\n".encode())
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
