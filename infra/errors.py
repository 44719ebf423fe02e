"""The launcher's own errors, so that ``infra`` needs nothing of ``handlers``.

They carry the same two sentences as polydub's errors (``reason``: what went
wrong, ``fix``: what to do); ``handlers.localstack`` turns them into
``handlers.runtime.errors`` ones for the CLI, so a user sees one line and the
usual exit code.
"""

from __future__ import annotations


class StackError(Exception):
    """A stack server could not be started, probed or stopped (the environment's fault)."""

    def __init__(self, reason: str, fix: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.reason} ({self.fix})" if self.fix else self.reason


class StackInputError(StackError):
    """The caller asked for a stack that cannot be: an unknown service, a missing folder,
    a stack already running. Fixable by whoever gave the arguments (exit code 2 in the CLI)."""
