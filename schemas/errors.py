"""Errors that carry a status code and a reason a person can act on.

Handlers and the CLI catch :class:`PolydubError` and turn it into a
``dub.failed`` event or a one-line message with a non-zero exit; anything
else is an internal error and is reported as such, never as the user's fault.
"""

from __future__ import annotations

from schemas.status import StatusCode


class PolydubError(Exception):
    """Base of every error polydub raises on purpose.

    ``reason`` says what went wrong, ``fix`` what to do about it; both are
    shown to users verbatim, so they are written as sentences.
    """

    code: StatusCode = StatusCode.INTERNAL_ERROR
    retryable: bool = False

    def __init__(self, reason: str, fix: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.reason} ({self.fix})" if self.fix else self.reason

    def as_dict(self) -> dict[str, object]:
        return {
            "code": int(self.code),
            "code_name": self.code.name,
            "reason": self.reason,
            "fix": self.fix,
        }


class InputError(PolydubError):
    """The user's input is wrong: a missing file, bad subtitles, an unknown language."""

    code = StatusCode.INPUT_REJECTED


class UnusableInputError(InputError):
    """A model cannot use an input (a voice reference with too little voiced speech).

    A condition of the input, so never retried; a stage that has a fallback (the
    conversion stage's: another reference, or no conversion) catches it.
    """


class InferenceError(PolydubError):
    """A model call failed; worth retrying until the retry bound."""

    code = StatusCode.INFERENCE_FAILED
    retryable = True


class StageTimeoutError(PolydubError):
    """A stage did not finish one event in time: stuck work, retried like a transient fault.

    Whatever the stuck call still does in a worker thread cannot be stopped from here;
    it only ever writes the deterministic keys a redelivery writes too.
    """

    code = StatusCode.TIMEOUT
    retryable = True


class StorageError(PolydubError):
    """The object store failed; transient unless the object is simply missing."""

    code = StatusCode.STORAGE_FAILED
    retryable = True


class ObjectNotFound(StorageError):
    """A key that should exist does not."""

    retryable = False
