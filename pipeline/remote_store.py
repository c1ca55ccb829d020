"""A shared artifact store on an OCI registry (the same kind of registry deploy ships images through).

Each store entry (a stage's files and its manifest.json) is one OCI artifact, `<repo>/<stage>:<key>`,
pushed and pulled with the `oras` library; every file is a layer titled with its path in the entry,
so identical wheels in two entries are one blob in the registry. A pulled entry is checked against its
own manifest (size and sha256 of every file) before the local store takes it, exactly like a local
entry; one that does not match is refused and the stage is built instead. Two machines pushing the same
key push the same content: the registry ends with one artifact either way.

Credentials: the Docker config (~/.docker/config.json, what `docker login` wrote), or
SPARK_PIPELINE_REGISTRY_USER / SPARK_PIPELINE_REGISTRY_PASSWORD in the environment; never argv or logs.
A registry on loopback (or `oci+http://`) is spoken to over plain HTTP, any other over HTTPS.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.contract import LABEL, MASK, is_inner_path, is_stage_key
from pipeline.errors import ConfigError, StoreError
from pipeline.store import MANIFEST, Entry, Store

TITLE = "org.opencontainers.image.title"
URL = re.compile(
    r"(?P<scheme>oci|oci\+http)://(?P<host>[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>[0-9]{1,5}))?"
    r"/(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*)"
)


@dataclass(frozen=True)
class RemoteSpec:
    host: str  # host[:port]
    repo: str
    insecure: bool  # plain HTTP

    def ref(self, stage: str, key: str | None = None) -> str:
        return f"{self.host}/{self.repo}/{stage}" + (f":{key}" if key else "")


def parse_url(url: str, where: str = "--remote-store") -> RemoteSpec:
    m = URL.fullmatch(url.strip())
    shown = re.sub(r"//[^/@]*@", f"//{MASK}@", url)  # a password in the URL is never echoed
    if "@" in url.split("://", 1)[-1].split("/", 1)[0]:
        raise ConfigError(
            f"{where} {shown!r}: credentials do not belong in the URL (it ends up in logs and shell history); "
            "use `docker login HOST` or SPARK_PIPELINE_REGISTRY_USER/_PASSWORD"
        )
    if m is None or (m["port"] and not 0 < int(m["port"]) < 65536):
        raise ConfigError(
            f"{where} {shown!r}: expected oci://HOST[:PORT]/REPO (a registry, a port 1-65535 and a repository "
            "path, lower case), e.g. oci://registry.lan:5000/spark-pipeline"
        )
    host = m["host"] + (f":{m['port']}" if m["port"] else "")
    loopback = m["host"] in ("localhost", "127.0.0.1", "[::1]")
    return RemoteSpec(host=host, repo=m["repo"], insecure=m["scheme"] == "oci+http" or loopback)


class RemoteStore:
    def __init__(self, spec: RemoteSpec):
        import logging

        import oras.client
        from oras.logger import logger as oras_log

        # oras prints its own error lines (a 404 while asking whether a key exists is the normal "no");
        # what goes wrong reaches the user as our StoreError instead.
        oras_log.set_level(logging.CRITICAL)

        self.spec = spec
        self._probed = False
        self.client = oras.client.OrasClient(hostname=spec.host, insecure=spec.insecure)
        user, password = (
            os.environ.get("SPARK_PIPELINE_REGISTRY_USER"),
            os.environ.get("SPARK_PIPELINE_REGISTRY_PASSWORD"),
        )
        if user and password:
            self.client.set_basic_auth(user, password)

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except StoreError:
            raise
        except Exception as e:  # oras raises ValueError/requests errors with the HTTP story in the text
            text = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise StoreError(f"remote store {self.spec.host}/{self.spec.repo}: {what}: {text}") from None

    def probe(self, timeout: float = 10) -> None:
        """Ask the registry's /v2/ once, within `timeout`, before anything else: a closed port, a wrong host
        or a web server that is no registry is one located error in seconds, not minutes of oras's retries
        ending in a traceback, and never an empty store."""
        if self._probed:
            return
        scheme = "http" if self.spec.insecure else "https"
        url = f"{scheme}://{self.spec.host}/v2/"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        where = f"remote store {self.spec.host}"
        try:
            with opener.open(url, timeout=timeout) as r:
                status, api = r.status, r.headers.get("Docker-Distribution-API-Version", "")
        except urllib.error.HTTPError as e:
            status, api = e.code, e.headers.get("Docker-Distribution-API-Version", "")
            if e.code == 401 and e.headers.get("WWW-Authenticate"):
                api = api or "registry/2.0"  # a registry that wants a login (docker login, or the env variables)
        except (OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise StoreError(f"{where}: cannot reach {url} within {timeout:.0f} s ({reason})") from None
        if not api.startswith("registry/2"):
            raise StoreError(
                f"{where}: {url} answered HTTP {status} but is not an OCI registry "
                "(no Docker-Distribution-API-Version header)"
            )
        self._probed = True

    def manifest(self, stage: str, key: str) -> dict[str, Any] | None:
        """The artifact's OCI manifest, or None when the registry has no such key."""
        self.probe()
        try:
            return dict(self.client.get_manifest(self.spec.ref(stage, key)))
        except ValueError as e:
            if "Not Found" in str(e) or "manifest unknown" in str(e):
                return None
            raise StoreError(f"remote store {self.spec.host}: {str(e).splitlines()[0]}") from None
        except Exception as e:
            raise StoreError(f"remote store {self.spec.host}: {type(e).__name__}: {e}") from None

    def has(self, stage: str, key: str) -> bool:
        return self.manifest(stage, key) is not None

    def keys(self, stage: str) -> list[str]:
        self.probe()
        try:
            tags = self.client.get_tags(self.spec.ref(stage))
        except ValueError as e:
            if "Not Found" in str(e) or "NAME_UNKNOWN" in str(e) or "404" in str(e):
                return []  # no such repository yet
            raise StoreError(f"remote store {self.spec.host}: {str(e).splitlines()[0] if str(e) else e!r}") from None
        except Exception as e:
            raise StoreError(f"remote store {self.spec.host}: {type(e).__name__}: {e}") from None
        return sorted(t for t in tags if isinstance(t, str) and is_stage_key(t))

    def push(self, entry: Entry) -> str:
        """Push a local entry (its files, then its manifest.json) as one artifact; returns its reference."""
        self.probe()
        files = [f["path"] for f in entry.files] + [MANIFEST]
        with tempfile.TemporaryDirectory() as tmp:
            ann = Path(tmp) / "annotations.json"
            ann.write_text(
                json.dumps(
                    {p: {TITLE: p} for p in files}
                    | {"$manifest": {f"{LABEL}.stage": entry.stage, f"{LABEL}.key": entry.key}}
                )
            )
            cwd = os.getcwd()
            os.chdir(entry.path)  # oras takes paths relative to the working directory as the layers' files
            try:
                self._call(
                    "push",
                    self.client.push,
                    target=self.spec.ref(entry.stage, entry.key),
                    files=files,
                    annotation_file=str(ann),
                    quiet=True,
                )
            finally:
                os.chdir(cwd)
        return self.spec.ref(entry.stage, entry.key)

    def pull(self, store: Store, stage: str, key: str) -> Entry | None:
        """The entry from the registry into the local store, checked file by file against its manifest;
        None when the registry lacks it. A damaged or foreign artifact raises StoreError (nothing kept)."""
        manifest = self.manifest(stage, key)
        if manifest is None:
            return None
        titles = [layer.get("annotations", {}).get(TITLE, "") for layer in manifest.get("layers", [])]
        if not all(is_inner_path(t) for t in titles) or MANIFEST not in titles:
            raise StoreError(f"remote store: {self.spec.ref(stage, key)} is not a spark-pipeline store entry")
        staging = store.staging_dir(stage)
        try:
            self._call("pull", self.client.pull, target=self.spec.ref(stage, key), outdir=str(staging))
            return store.adopt(stage, key, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
