"""The launcher's errors: polydub's errors (``schemas.errors``), so the CLI shows them as it shows any.

They carry the same two sentences (``reason``: what went wrong, ``fix``: what
to do): a user sees one line and the usual exit code, 2 for a stack asked for
wrongly (:class:`StackInputError`), 3 for one that failed (:class:`StackError`).
"""

from __future__ import annotations

from schemas.errors import InputError, PolydubError


class StackError(PolydubError):
    """A stack server could not be started, probed or stopped (the environment's fault)."""


class StackInputError(StackError, InputError):
    """The caller asked for a stack that cannot be: an unknown service, a missing folder,
    a stack already running. Fixable by whoever gave the arguments (exit code 2 in the CLI)."""
