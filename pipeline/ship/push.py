"""Pushing an image to the loopback registry without compressing it.

`docker push` gzips every layer before it sends it: on a Spark's 200 Gb/s link that is pure cost, and it
made a cold ship slower than the toolkit's `docker save | ssh docker load`. Instead we read `docker save`
as a stream and upload each blob the registry lacks as it goes by, uncompressed, then put an OCI
manifest naming them (`ship/oci_layout.py` says which Docker writes what).

What nodes do with that, measured on Docker 20.10 (docs/shipping.md): they pull the OCI manifest, the
image ID is the original one (the config is uploaded unchanged), and every layer is recorded under the
digest it was pulled under, so the next pull fetches only changed layers. Current Docker pulls OCI
manifests with uncompressed layers too (the OCI spec's own `…layer.v1.tar` type); that it keeps the delta
property is to be measured on a Spark.

The registry's blobs are asked for first (HEAD), and `docker save` runs only when some are missing. It
always writes the whole image, and in 20.10's form a layer's digest shows only after hashing it; so a
member whose size equals that of a blob the registry has is passed over unread, and the save is stopped
as soon as every missing blob is uploaded. Should a new layer share its size with a present one (it is
then still missing at the end), a second save looks at every member.
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urljoin

from pipeline.engines.docker import Docker
from pipeline.errors import DockerError, RegistryError, ShipError
from pipeline.ship.oci_layout import named_digest, oci_manifest

SMALL = 4 << 20
CHUNK = 1 << 20


@dataclass
class PushReport:
    uploaded: int = 0  # blobs sent to the registry
    uploaded_bytes: int = 0
    present: int = 0  # blobs the registry already had
    saves: int = 0  # `docker save` passes (0: the registry had every blob)


class _Hashing:
    """A chunk stream that hashes and counts what passes through it."""

    def __init__(self, chunks: Iterator[bytes], progress: Callable[[int], None]):
        self.chunks, self.progress = chunks, progress
        self.sha, self.size = hashlib.sha256(), 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.sha.update(chunk)
            self.size += len(chunk)
            self.progress(len(chunk))
            yield chunk

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


class RegistryPush:
    def __init__(self, docker: Docker, host: str, progress: Callable[[int], None] | None = None):
        import oras.provider

        self.docker = docker
        self.reg = oras.provider.Registry(hostname=host, insecure=True)
        self.reg.session.trust_env = False  # a loopback registry: never through an HTTP proxy
        self.base = f"http://{host}"
        self._sent = 0
        self._progress = progress or (lambda n: None)

    def push(self, image: str, ref: str, save: subprocess.Popen[bytes] | None = None) -> PushReport:
        """Put `image` into the registry as `ref` (HOST/NAME:TAG), uploading only the blobs it lacks.
        `save`: a `docker save` of the image started earlier (see start_save), used if a pass is needed."""
        container = self.reg.get_container(ref)
        config_id, diff_ids = self._inspect(image)
        present = {d: n for d in {config_id, *diff_ids} if (n := self._blob_size(container, d)) is not None}
        report = PushReport(present=len(present))
        missing = {config_id, *diff_ids} - set(present)
        for trust_sizes in (True, False):
            if missing:
                self._pass(image, container, present, missing, trust_sizes, report, save)
                save = None
        if missing:
            raise ShipError(
                f"docker save {image} did not write {len(missing)} of its layers uncompressed "
                f"(e.g. {sorted(missing)[0][:19]}…); ship it with --ship stream"
            )
        manifest = oci_manifest((config_id, present[config_id]), [(d, present[d]) for d in diff_ids])
        self._request("put the manifest", 201, self.reg.upload_manifest, manifest, container)
        return report

    def layer_sizes(self, ref: str) -> dict[str, int]:
        """The size of each layer of the manifest at `ref`, by the short ID `docker pull` prints."""
        manifest = self._request("read the manifest", None, self.reg.get_manifest, self.reg.get_container(ref))
        return {
            str(layer["digest"]).removeprefix("sha256:")[:12]: int(layer["size"])
            for layer in manifest.get("layers", [])
        }

    def _inspect(self, image: str) -> tuple[str, list[str]]:
        out = self.docker.run(
            "image", "inspect", "--format", "{{.Id}}{{range .RootFS.Layers}} {{.}}{{end}}", image, timeout=60
        ).stdout.split()
        return out[0], out[1:]

    def _pass(
        self,
        image: str,
        container: Any,
        present: dict[str, int],
        missing: set[str],
        trust_sizes: bool,
        report: PushReport,
        proc: subprocess.Popen[bytes] | None,
    ) -> None:
        """One `docker save`, uploading the members that are missing blobs; stopped once none is."""
        report.saves += 1
        proc = proc or start_save(self.docker, image)
        assert proc.stdout is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|", bufsize=CHUNK) as tar:
                for member in tar:
                    self._member(tar, member, container, present, missing, trust_sizes, report)
                    if not missing:
                        break
            while missing and proc.stdout.read(CHUNK):  # the tar's end padding: docker save exits once it is read
                pass
        except tarfile.TarError as e:
            _saved(proc, image)  # a failed docker save explains a broken stream better than tarfile does
            raise ShipError(f"docker save {image} wrote something that is not a tar: {e}") from None
        except BaseException:
            stop_save(proc)
            raise
        if missing:
            _saved(proc, image)
        else:  # everything the registry lacked is there: the rest of the save is not needed
            stop_save(proc)

    def _member(
        self,
        tar: tarfile.TarFile,
        m: tarfile.TarInfo,
        container: Any,
        present: dict[str, int],
        missing: set[str],
        trust_sizes: bool,
        report: PushReport,
    ) -> None:
        if not m.isfile():
            return  # directories, and 20.10's symlinks to a layer it already wrote
        named = named_digest(m.name)
        if named is not None and named not in missing:
            return  # tarfile skips what is not read
        f: IO[bytes] | None = tar.extractfile(m)
        assert f is not None
        if named is None and m.size < SMALL:  # small: hash it, then decide
            data = f.read()
            if "sha256:" + hashlib.sha256(data).hexdigest() in missing:
                self._upload(container, iter([data]), present, missing, report)
        elif named is not None or not (trust_sizes and m.size in present.values()):
            self._upload(container, iter(lambda: f.read(CHUNK), b""), present, missing, report)

    def _upload(
        self, container: Any, chunks: Iterator[bytes], present: dict[str, int], missing: set[str], report: PushReport
    ) -> None:
        """A streamed upload: POST, one PATCH with the bytes, PUT with the digest they turned out to have."""
        stream = _Hashing(chunks, self._count)
        started = self._request(
            "start an upload",
            202,
            self.reg.do_request,
            f"{self.reg.prefix}://{container.upload_blob_url()}",
            "POST",
            headers={"Content-Length": "0"},
        )
        sent = self._request(
            "upload a layer",
            202,
            self.reg.do_request,
            urljoin(self.base, started.headers["Location"]),
            "PATCH",
            data=iter(stream),
            headers={"Content-Type": "application/octet-stream"},
        )
        done = urljoin(self.base, sent.headers["Location"])
        done += ("&" if "?" in done else "?") + f"digest={stream.digest}"
        self._request("finish an upload", 201, self.reg.do_request, done, "PUT", headers={"Content-Length": "0"})
        report.uploaded += 1
        report.uploaded_bytes += stream.size
        present[stream.digest] = stream.size
        missing.discard(stream.digest)

    def _blob_size(self, container: Any, digest: str) -> int | None:
        r = self._request(
            "ask for a blob", None, self.reg.do_request, f"{self.reg.prefix}://{container.get_blob_url(digest)}", "HEAD"
        )
        return int(r.headers.get("Content-Length", 0)) if r.status_code == 200 else None

    def _request(self, what: str, expect: int | None, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            r = fn(*args, **kw)
        except OSError as e:  # requests' errors are OSErrors
            raise RegistryError(f"the loopback registry at {self.base}: could not {what}: {e}") from None
        if expect is not None and r.status_code != expect:
            raise RegistryError(
                f"the loopback registry at {self.base}: could not {what}: HTTP {r.status_code} {r.text.strip()[:300]}"
            )
        return r

    def _count(self, n: int) -> None:
        self._sent += n
        self._progress(self._sent)


def start_save(docker: Docker, image: str) -> subprocess.Popen[bytes]:
    """`docker save` as a stream. Docker 20.10 exports the whole image to a temp dir before the first
    byte (0.56 s for 220 MB here), so a caller that will likely need it starts it early."""
    return subprocess.Popen(docker.cmd("save", image), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop_save(proc: subprocess.Popen[bytes] | None) -> None:
    """End a `docker save` that was not (or not wholly) needed; a no-op when it has ended."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _saved(proc: subprocess.Popen[bytes], image: str) -> None:
    """Wait for `docker save` (its output is read to the end); raise with its own words if it failed."""
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    try:
        err = proc.stderr.read().decode(errors="replace")
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise DockerError(f"docker save {image} did not exit within 60 s of writing its output") from None
    if code != 0:
        raise DockerError(f"docker save {image} failed: {err.strip()[-500:]}")
