"""The project's exception tree, split by who must act.

The CLI maps each class to an exit code: a user's input problem (ConfigError) exits 2 with a located
message and no traceback; a build or host failure exits 1; anything else is an internal error.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the tool reports to a user."""

    exit_code = 1


class ConfigError(PipelineError, ValueError):
    """Bad input in a file or on the command line: the user must fix it (exit 2)."""

    exit_code = 2

    def __init__(self, messages: str | list[str]):
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        super().__init__("\n".join(self.messages))


class SourceError(PipelineError):
    """A source repository could not be fetched, or a ref, PR or patch could not be resolved."""

    exit_code = 2


class StoreError(PipelineError):
    """The artifact store is unreadable, corrupt or not writable."""


class StageError(PipelineError):
    """A stage failed while it ran on an engine."""

    def __init__(self, stage: str, message: str, *, step: str = "", exit_code: int | None = None,
                 log_tail: str = "", log_path: str = ""):
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


class EngineUnavailable(PipelineError):
    """The requested build engine cannot be reached; the message says what the user needs."""

    exit_code = 2
