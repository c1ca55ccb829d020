"""The project's one error tree, split by who must act, and the one place that maps it to exit codes.

    2   the user must fix something: a file or flag (ConfigError), a source that cannot be resolved
        (SourceError), a tool to install (ToolMissing), an engine to start (EngineUnavailable)
    1   a step of a build or deploy failed, or a node did (StepFailed and its subclasses)
    70  anything else: a bug in spark-pipeline (EX_SOFTWARE)
    130 interrupted (Ctrl-C)

Library code raises these classes and never exits; `pipeline.cli.main` calls `exit_code()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EXIT_USER = 2
EXIT_FAILED = 1
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class PipelineError(Exception):
    """Base of every error the tool reports to a user (without a traceback)."""

    exit_code = EXIT_FAILED


# --- the user must act (exit 2) ---------------------------------------------------------------------
class UserError(PipelineError):
    """Something the user must fix before anything can run."""

    exit_code = EXIT_USER


class ConfigError(UserError, ValueError):
    """Bad input in a file or on the command line, with its location (file:key or --flag)."""

    SHOWN = 20  # a file full of mistakes shows the first ones and a count, not 200,000 lines

    def __init__(self, messages: str | list[str]):
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        shown = self.messages[: self.SHOWN]
        if len(self.messages) > self.SHOWN:
            shown.append(f"… and {len(self.messages) - self.SHOWN} more")
        super().__init__("\n".join(shown))


class SourceError(UserError):
    """A source repository could not be fetched, or a ref, PR or patch could not be resolved."""


class FileRefused(UserError, OSError):
    """A path given (a flag, an env var, a file's key) that cannot be read or written as asked: a directory
    where a file belongs, a FIFO, a device, no permission. Also what an OSError naming a file becomes at
    the command line: the user's machine, not a bug."""


class ToolMissing(UserError):
    """A program this step needs is not installed; the message names the command that installs it."""


class EngineUnavailable(UserError):
    """The requested build engine cannot be reached; the message says what the user needs."""


# --- a step or a node failed (exit 1) ---------------------------------------------------------------
class StepFailed(PipelineError):
    """A build or deploy step failed, or one node did."""

    exit_code = EXIT_FAILED


class StoreError(StepFailed):
    """The artifact store is unreadable, corrupt or not writable."""


class DockerError(StepFailed):
    """The local Docker refused or failed a command (build, save, push, import)."""


class StageError(StepFailed):
    """A stage failed while it ran on an engine."""

    def __init__(
        self,
        stage: str,
        message: str,
        *,
        step: str = "",
        exit_code: int | None = None,
        log_tail: str = "",
        log_path: str = "",
    ):
        self.stage = stage
        self.step = step
        self.step_exit_code = exit_code
        self.log_tail = log_tail
        self.log_path = log_path
        parts = [f"stage {stage} failed: {message}"]
        if step:
            parts.append(f"step: {step}")
        if exit_code is not None:
            parts.append(f"exit code: {exit_code}")
        if log_path:
            parts.append(f"log: {log_path}")
        super().__init__("\n".join(parts))


class RemoteError(StepFailed):
    """A service elsewhere (the model hub, a registry) did not answer, or refused what we asked."""


class RegistryError(StepFailed):
    """The loopback registry that ships images did not start, answer, or collect its garbage."""


class ShipError(StepFailed):
    """An image could not be put on the nodes in the form shipping needs."""


class EngineLost(StepFailed):
    """The build engine went away in the middle of a stage (not the stage's own failure)."""


class BootstrapFailed(StepFailed):
    """A base image the tool makes itself (debootstrap rootfs + pip-downloaded tools) could not be made."""


class BenchFailed(StepFailed):
    """llama-benchy ended without results."""


class ChecksFailed(StepFailed):
    """`doctor` found problems that block a deploy."""


class HostError(StepFailed):
    """Something failed on one node: which node, what ran, how it ended. `remote_status` is the remote
    command's exit status (never the tool's own exit code)."""

    def __init__(self, host: str, message: str, command: str = "", remote_status: int | None = None, tail: str = ""):
        self.host = host
        self.message = message
        self.command = command
        self.remote_status = remote_status
        self.tail = tail
        text = f"{host}: {message}"
        if command:
            text += f"\n  command: {command}"
        if remote_status is not None:
            text += f"\n  exit status: {remote_status}"
        if tail:
            text += "\n  " + "\n  ".join(tail.splitlines()[-10:])
        super().__init__(text)

    @property
    def reason(self) -> str:
        """One line: what went wrong (the command's last output line), not the command itself."""
        lines = self.tail.strip().splitlines()
        return lines[-1] if lines else self.message.splitlines()[0]


class NodesFailed(StepFailed):
    """A command failed on some nodes; `failures` maps node -> why."""

    def __init__(self, message: str, failures: dict[str, str]):
        self.failures = failures
        super().__init__(message)


@dataclass(frozen=True)
class NodeProblem:
    """Why one node cannot take part, as data: the node's label (any text, an IPv6 address included: it
    is never parsed back out of a message), what kind of problem, and the message."""

    node: str
    kind: str  # unreachable | discovery | interfaces | layout | model
    message: str


class LaunchFailed(NodesFailed):
    """A deploy could not bring the server up; `deployment` holds the per-node state for the report."""

    def __init__(self, message: str, failures: dict[str, str], deployment: Any = None):
        super().__init__(message, failures)
        self.deployment = deployment

    @classmethod
    def from_problems(cls, what: str, problems: list[NodeProblem]) -> LaunchFailed:
        """One line per problem, each node named once per line; failures: node -> its problems."""
        failures: dict[str, str] = {}
        for p in problems:
            failures[p.node] = f"{failures[p.node]}; {p.message}" if p.node in failures else p.message
        return cls(f"{what}:\n" + "\n".join(f"  {p.node}: {p.message}" for p in problems), failures)


def exit_code(exc: BaseException) -> int:
    """The process exit status for an exception that reached the command line."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, PipelineError):
        return type(exc).exit_code
    return EXIT_INTERNAL
