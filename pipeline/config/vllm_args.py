"""vLLM's command line, read and edited as argv (never as a shell string). Pure.

Both the recipe renderer and the launch plan read the same flags (-tp/-pp/-dp, --port, the executor
backend) with these helpers, so a recipe and a hand-typed `deploy -- vllm serve …` agree.
"""

from __future__ import annotations

import re

from pipeline.errors import ConfigError

PARALLEL_FLAGS = {
    "-tp": "tp",
    "--tensor-parallel-size": "tp",
    "-pp": "pp",
    "--pipeline-parallel-size": "pp",
    "-dp": "dp",
    "--data-parallel-size": "dp",
}
BACKEND = ("--distributed-executor-backend",)


def flag_value(argv: tuple[str, ...] | list[str], names: tuple[str, ...]) -> str | None:
    """The value of the last `--flag v` or `--flag=v` among `names` (vLLM: last one wins)."""
    value = None
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                value = argv[i + 1]
            elif a.startswith(n + "="):
                value = a.split("=", 1)[1]
    return value


def check_command(command: tuple[str, ...]) -> None:
    """The vLLM flags deploy reads must have sane values before anything runs: a flag at the end with
    no value, -tp/-pp/-dp that are not whole numbers ≥ 1, a --port that is not a port."""
    for i, a in enumerate(command):
        if a in (*PARALLEL_FLAGS, "--port") and i == len(command) - 1:
            raise ConfigError(f"command: {a} expects a value after it")
    for flag in PARALLEL_FLAGS:
        v = flag_value(command, (flag,))
        if v is not None and (not re.fullmatch(r"[0-9]{1,6}", v) or int(v) < 1):
            raise ConfigError(f"command: {flag} expects a whole number ≥ 1, got {v!r}")
    port = flag_value(command, ("--port",))
    if port is not None and (not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536):
        raise ConfigError(f"command: --port expects a port number 1-65535, got {port!r}")


def parallel_sizes(command: tuple[str, ...]) -> dict[str, int]:
    """tp, pp and dp as the command sets them (checked: a bad value is a located error); unset ones absent."""
    check_command(command)
    found: dict[str, int] = {}
    for flag, key in PARALLEL_FLAGS.items():
        v = flag_value(command, (flag,))
        if v is not None:
            found[key] = int(v)
    return found


def parallelism(command: tuple[str, ...]) -> int | None:
    """tp × pp × dp from the command; None when it sets none of them."""
    found = parallel_sizes(command)
    if not found:
        return None
    return found.get("tp", 1) * found.get("pp", 1) * found.get("dp", 1)


def without_flag(argv: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    """argv without `--flag v` / `--flag=v` for each of names."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in names:
            skip = True
            continue
        if any(a.startswith(n + "=") for n in names):
            continue
        out.append(a)
    return tuple(out)


def is_vllm_serve(command: tuple[str, ...]) -> bool:
    return len(command) >= 2 and command[0].endswith("vllm") and command[1] == "serve"


# vLLM flags whose value is a secret, and the variable vLLM (or huggingface_hub) reads it from instead:
# deploy moves them out of argv (visible in `ps` and `docker inspect` on every node) into the env file.
SECRET_FLAGS = {"--api-key": "VLLM_API_KEY", "--hf-token": "HF_TOKEN"}


def secret_flags(argv: tuple[str, ...]) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """argv without its secret flags, and (variable, value) for each one it had (the last one wins)."""
    found = [(var, v) for flag, var in SECRET_FLAGS.items() if (v := flag_value(argv, (flag,))) is not None]
    return without_flag(argv, tuple(SECRET_FLAGS)), found
