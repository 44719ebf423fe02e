"""Structured logs that always say which job they are about.

``bind_job(job_id, stage=...)`` puts the job into a context variable, so every
log line written while that job is handled carries ``job_id`` (and the stage
and chunk) without each call passing them. Lines are JSON for machines or a
short text form for a person at a terminal (``POLYDUB_LOG_FORMAT``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar(
    "polydub_log_context", default={}
)

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@contextlib.contextmanager
def bind_job(job_id: str, **fields: Any) -> Iterator[None]:
    """Attach ``job_id`` and other fields to every log line inside the block."""
    token = _context.set({**_context.get(), "job_id": job_id, **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_context.get(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``LEVEL message [job_id=... stage=...]`` for humans."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {**_context.get()}
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                fields[key] = value
        suffix = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{record.levelname:<7} {record.getMessage()}"
        if suffix:
            line += f"  [{suffix}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Install the polydub formatter on the root logger (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_polydub", False):
            root.removeHandler(old)
    handler._polydub = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiokafka", "botocore", "urllib3", "faststream"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
