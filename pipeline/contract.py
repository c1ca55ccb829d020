"""The names the outside world sees: image labels, tags, the container, env names, files on the nodes,
the stage list. Users' scripts, `docker inspect` on a node and old deploys read these, so each is
written here once and used everywhere (a rename is a compatibility break, decided in one place)."""

from __future__ import annotations

import re

# The build's stages, in dependency order: build.yaml's sections, store folders, log folders, CLI words.
STAGES = ("base", "triton", "flashinfer", "vllm", "runtime")
# The stages whose outputs are store entries (runtime's output is an image).
STORED_STAGES = STAGES[:-1]

LABEL = "io.spark-pipeline"  # the prefix of every image and container label we set
KEY_LABEL = f"{LABEL}.key.runtime"  # the runtime image's build key: what `bench` and `status` key results by
GPU_ARCH_LABEL = f"{LABEL}.gpu-arch"
GPU_CODE_LABEL = f"{LABEL}.gpu-code"
ROLE_LABEL = f"{LABEL}.role"  # head | worker, on each deployed container
RANK_LABEL = f"{LABEL}.rank"
DEPLOY_LABEL = f"{LABEL}.deploy"  # the deploy hash: a container with the same one is left running


def key_label(stage: str) -> str:
    return f"{LABEL}.key.{stage}"


def source_label(source: str) -> str:
    return f"{LABEL}.source.{source}"


IMAGE = "vllm-node"  # the runtime image's default tag (build.yaml runtime.tag, cluster.yaml image)
CONTAINER = "vllm_node"  # the deployed container's default name (the toolkit's)
EXIT_FILE = "/tmp/spark-pipeline-exit"  # in the container: the server's exit status once it ended
STATE_DIR = ".spark-pipeline"  # under the SSH user's home on each node: env files and mod uploads

# An environment variable's name, as POSIX shells take it. \Z, not $: `$` also matches before a final
# newline, and a name with a newline in it would start a new line of an env file.
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
ENV_NAME = re.compile(_NAME + r"\Z")
# `${NAME}` in a recipe value: filled from the environment of the machine that renders it.
ENV_REFERENCE = re.compile(r"\$\{(" + _NAME + r")\}")


def is_env_name(name: str) -> bool:
    return ENV_NAME.match(name) is not None


def is_inner_path(path: str) -> bool:
    """A relative path that stays inside the folder it is taken from: not absolute, no `~`, no `..` part,
    no drive (`C:`), no backslash, no NUL. One rule for zip members, store manifests, registry titles and
    the files a recipe names beside itself."""
    parts = path.split("/")
    return (
        bool(path)
        and not path.startswith(("/", "~"))
        and "\\" not in path
        and "\0" not in path
        and ":" not in parts[0]
        and ".." not in parts
    )


def is_decimal(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes ², ١ and other digits int() refuses."""
    return re.fullmatch(r"[0-9]{1,18}", text) is not None


def is_one_line(value: str) -> bool:
    """An env value, label or argument that cannot start a new line of whatever file it is written to."""
    return not any(c in value for c in "\n\r\0\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


# Variables whose values are secrets wherever they appear: deploy puts them in a 0600 env file, never argv;
# `recipe show` and plans print them masked. cluster.yaml `secrets:` adds names of one's own.
KNOWN_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VLLM_API_KEY", "RAY_AUTH_TOKEN")
_SECRET_LOOKING = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|APIKEY|CREDENTIAL", re.IGNORECASE)
MASK = "***"


def looks_secret(name: str) -> bool:
    """A known secret, or a name that says it is one (WANDB_API_KEY, GITHUB_TOKEN, …): never printed."""
    return name in KNOWN_SECRETS or _SECRET_LOOKING.search(name) is not None


STAGE_KEY = re.compile(r"[0-9a-f]{64}\Z")  # a stage's content key: the store's folder name, the remote tag


def is_stage_key(key: str) -> bool:
    """A stage key is an identifier (64 lowercase hex), never a path: `..`, `/x` or `a/b` are refused."""
    return STAGE_KEY.match(key) is not None


# `find DIR -printf` format a node lists a model's cache folder in (model copy, model verify, deploy's
# discovery): type, size, path relative to DIR, link target. Parsed by model/manifest.py.
LIST_FORMAT = r"%y %s %P\t%l\n"
