"""What a deploy is asked to do: the settings object of `deploy` (and `recipe run`), its defaults defined
here once (the command line takes its defaults from it). Light to import: no SSH, no Docker."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.config.cluster import ClusterSpec
from pipeline.config.vllm_args import secret_flags
from pipeline.contract import CONTAINER
from pipeline.errors import ConfigError
from pipeline.fsutil import write_atomic
from pipeline.launch.mods import Mod
from pipeline.launch.plan import Expose, Mode, Options, parse_env_items
from pipeline.launch.secrets import Secrets
from pipeline.launch.secrets import gather as gather_secrets


@dataclass(frozen=True)
class DeployRequest:
    """Everything a deploy is asked to do (the flags of `deploy`, without click)."""

    command: tuple[str, ...]
    image: str | None = None  # default: cluster.yaml `image`
    mode: Mode = "auto"
    name: str = CONTAINER
    env: tuple[str, ...] = ()  # -e K=V (or K, taken from this environment)
    nccl_debug: str | None = None
    privileged: bool = True
    limits: dict[str, int] = field(default_factory=dict)  # mem_limit_gb, mem_swap_limit_gb, pids_limit, shm_size_gb
    nofile: int = 1048576
    earlyoom: bool = False
    earlyoom_args: str | None = None
    cache_dirs: bool = True
    volumes: tuple[str, ...] = ()
    master_port: int = 29501
    jobs: int | None = None
    gpus: str = "all"
    ray_num_cpus: int = 2
    ray_object_store_bytes: int = 1073741824
    mods: tuple[str, ...] = ()
    vllm_prs: tuple[str, ...] = ()
    vllm_repo: str = "https://github.com/vllm-project/vllm.git"
    ship_mode: str = "registry"
    timeout: float = 7200  # the whole start: a cold 100B+ model compiles for tens of minutes
    phase_deadlines: dict[str, float] = field(default_factory=dict)  # startup phase -> seconds (launch/startup.py)
    force: bool = False
    cleanup_on_failure: bool = False
    api_key: str | None = None  # "auto": a key made once per container name, kept 0600 (paths.api_key_file)
    expose: Expose | None = None  # who reaches the API (vLLM's --host); None: as the command says
    ray_auth: bool = True  # Ray mode: RAY_AUTH_MODE=token, the token made once per container name
    ray_client: bool = False  # Ray mode: Ray's client server on the head (off: whoever reaches it runs code)

    def secrets(self, spec: ClusterSpec, make_key: bool = True) -> Secrets:
        """The secrets' values, from every place a user can set them (see launch/secrets.py); vLLM's own
        --api-key and --hf-token count as -e VLLM_API_KEY / -e HF_TOKEN."""
        _, from_flags = secret_flags(self.command)
        made = []
        if self.api_key == "auto":
            made.append(("VLLM_API_KEY", stored_secret(paths.api_key_file(self.name), make_key)))
        if self.ray_token:
            made.append(("RAY_AUTH_TOKEN", stored_secret(paths.ray_token_file(self.name), make_key)))
        return gather_secrets(spec, [*made, *parse_env_items(self.env, os.environ), *from_flags], os.environ)

    @property
    def ray_token(self) -> bool:
        """Ray's token auth (Ray ≥ 2.52 enforces it on the GCS, the nodes and the client server; older Ray
        ignores RAY_AUTH_MODE)."""
        return self.mode == "ray" and self.ray_auth

    def options(self, spec: ClusterSpec, mods: list[Mod], secret_names: tuple[str, ...]) -> Options:
        if self.privileged and self.limits:
            raise ConfigError(
                "--mem-limit-gb, --mem-swap-limit-gb, --pids-limit and --shm-size-gb need --non-privileged"
            )
        extra: dict[str, Any] = {k: v for k, v in self.limits.items() if k != "mem_swap_limit_gb"}
        ray_env = (("RAY_AUTH_MODE", "token"),) if self.ray_token else ()
        if self.earlyoom_args:
            extra["earlyoom_args"] = self.earlyoom_args
        return Options(
            image=self.image or spec.image,
            command=secret_flags(self.command)[0],
            mode=self.mode,
            name=self.name,
            env=(*ray_env, *spec.container_env.items(), *parse_env_items(self.env, os.environ)),
            secret_env=secret_names,
            nccl_debug=self.nccl_debug,
            privileged=self.privileged,
            nofile=self.nofile,
            mem_swap_limit_gb=self.limits.get("mem_swap_limit_gb"),
            gpus=self.gpus,
            earlyoom=self.earlyoom or bool(self.earlyoom_args),
            cache_dirs=self.cache_dirs,
            volumes=self.volumes,
            master_port=self.master_port,
            jobs=self.jobs,
            ray_num_cpus=self.ray_num_cpus,
            ray_object_store_memory=self.ray_object_store_bytes,
            mods=tuple(f"{m.name}:{m.digest}" for m in mods),
            allow_mixed_transports=spec.allow_mixed_transports,
            expose=self.expose,
            ray_client=self.ray_client,
            **extra,
        )


def stored_secret(path: Path, make: bool = True) -> str:
    """A secret this tool makes for a deployment (its API key, Ray's token): made once (32 random bytes,
    URL-safe), kept in a 0600 file, the same on every redeploy so clients keep working; `bench` reads the
    API key from there. A dry run (make=False) writes nothing and stands in a placeholder (the plan holds
    secret names, never values)."""
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if not key and not make:
        return "(made by the deploy)"
    if not key:
        key = secrets.token_urlsafe(32)
        write_atomic(path, key + "\n", mode=0o600)
    return key
