"""orjson encoding and strict decoding of events.

Decoding errors are turned into :class:`EventDecodeError` whose message names
each bad field by its path (``subtitles.segments.0.end_s``), because the person
reading a dead-letter record needs to know what the producer got wrong.
"""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.events import Event

T = TypeVar("T", bound=BaseModel)

_any_event: TypeAdapter[Event] = TypeAdapter(Event)


class EventDecodeError(ValueError):
    """A payload is not a valid event; the message names the fields."""


def encode_event(event: BaseModel) -> bytes:
    """Serialize an event to compact JSON bytes."""
    return orjson.dumps(event.model_dump(mode="json"))


def decode_event(raw: bytes | str, model: type[T] | None = None) -> T | Event:
    """Parse bytes into ``model``, or into whichever event ``event_type`` names."""
    try:
        if model is not None:
            return model.model_validate_json(raw)
        return _any_event.validate_json(raw)
    except ValidationError as exc:
        raise EventDecodeError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field.path: message (got value)``."""
    lines = []
    for err in exc.errors(include_url=False):
        path = ".".join(str(part) for part in err["loc"]) or "<event>"
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        lines.append(f"{path}: {err['msg']}{shown}")
    return "invalid event: " + "; ".join(lines)
