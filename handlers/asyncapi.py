"""Generate ``schemas/asyncapi.json``: the AsyncAPI 3 document of the worker app.

``python -m handlers.asyncapi`` (part of ``make generate``) builds the broker
a worker runs with every stage and the retry relay
(:func:`handlers.app.build_broker`, never connected) and renders FastStream's
AsyncAPI document from it; ``tests/test_asyncapi.py`` fails when the
checked-in file drifts from the code.

Two things are added to what FastStream sees, so the document describes the
contract rather than the plumbing:

* **Receive payloads.** Stage subscribers take the raw ``KafkaMessage`` (they
  ack by hand and dead-letter payloads that do not parse), so FastStream
  cannot infer a payload; each receive message is pointed at the schema of
  the event its stage consumes (``Stage.consumes``).
* **Send operations.** Stages publish through ``broker.publish`` rather than
  declared publishers; a spec-only publisher per event topic (this broker is
  never started) documents what the app sends, with the event's schema.

The document is built from fixed settings, never the environment, so a
``POLYDUB_TOPIC_PREFIX`` on the developer's machine cannot leak into it.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from schemas.events import EVENT_MODELS, SCHEMA_VERSION, MediaSubmitted, RetryScheduled, event_type_of
from schemas.topics import TOPIC_OF_EVENT

ASYNCAPI_FILE = Path(__file__).resolve().parents[1] / "schemas" / "asyncapi.json"
TITLE = "polydub"
DESCRIPTION = (
    "Event-driven AI dubbing. Every event is a small JSON document keyed by job_id (per-chunk topics by "
    "job_id/chunk_index; each message's Kafka binding gives its key); the W3C traceparent rides in the Kafka "
    "headers (components/schemas/MessageHeaders). Topics get POLYDUB_TOPIC_PREFIX in front."
)
#: Events the app never publishes itself (upstream systems submit jobs).
NOT_PUBLISHED_BY_APP = (MediaSubmitted,)
_COMPONENT_REF = "#/components/schemas/{model}"


def render_asyncapi() -> str:
    """The document as stable JSON text (sorted keys, trailing newline)."""
    from faststream.specification import AsyncAPI

    from handlers.app import ALL_STAGES, RETRY_RELAY, STAGE_CLASSES, build_broker
    from handlers.runtime.settings import Settings

    with tempfile.TemporaryDirectory(prefix="polydub-asyncapi-") as tmp:
        # model_construct: defaults only, no environment (see the module doc).
        settings = Settings.model_construct(local_store_dir=Path(tmp) / "store", trace_file=Path(tmp) / "spans.jsonl")
        broker, _ = build_broker(settings, ALL_STAGES + (RETRY_RELAY,))
        for model in EVENT_MODELS:
            if model in NOT_PUBLISHED_BY_APP:
                continue
            topic = TOPIC_OF_EVENT[event_type_of(model)]
            broker.publisher(
                topic,
                schema=model,
                title=f"{topic}:publish",
                description=(model.__doc__ or "").strip().splitlines()[0],
            )
        spec = AsyncAPI(broker, title=TITLE, version=str(SCHEMA_VERSION), description=DESCRIPTION)
        document: dict[str, Any] = spec.to_specification().to_jsonable()

    consumes = {name: cls.consumes for name, cls in STAGE_CLASSES.items()}
    consumes[RETRY_RELAY] = RetryScheduled
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    messages = document["components"].get("messages", {})
    for title, model in consumes.items():
        message = messages.get(f"{title}:SubscribeMessage")
        if message is None:
            raise RuntimeError(f"FastStream named the {title!r} subscriber's message differently; update {__name__}")
        _add_schema(schemas, model)
        message["payload"] = {"$ref": _COMPONENT_REF.format(model=model.__name__)}
    _add_keys_and_headers(document)
    if not any("EmptyPayload" in json.dumps(m) for m in messages.values()):
        schemas.pop("EmptyPayload", None)
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


#: The Kafka binding version FastStream writes on channels; messages use the same.
KAFKA_BINDING_VERSION = "0.4.0"
HEADERS_SCHEMA = "MessageHeaders"
_JOB_ID_PATTERN = "[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


def message_headers_schema() -> dict[str, Any]:
    """The Kafka headers every polydub record carries (producers may add more)."""
    from handlers.runtime.bus import HEADER_ATTEMPT

    return {
        "type": "object",
        "description": "Kafka record headers (UTF-8 values). Producers outside polydub need send none of them; "
        "`traceparent` joins their submission to the job's trace.",
        "properties": {
            "traceparent": {"type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
                            "description": "W3C Trace Context of the span that published the record."},
            "tracestate": {"type": "string", "description": "W3C Trace Context vendor state, when set."},
            "baggage": {"type": "string", "description": "W3C Baggage, when set."},
            HEADER_ATTEMPT: {"type": "string", "pattern": "^[0-9]+$",
                             "description": "Delivery attempt of the event at its stage (0: first)."},
            "content-type": {"type": "string", "const": "application/json"},
            "correlation_id": {"type": "string", "description": "FastStream's message correlation id."},
        },
        "additionalProperties": {"type": "string"},
    }


def message_key_schema(topic: str) -> dict[str, Any]:
    """The Kafka key of the records on ``topic`` (see ``schemas.topics.event_key``)."""
    from schemas.topics import DEAD_LETTER, PER_CHUNK_TOPICS

    if topic == DEAD_LETTER:
        return {"type": ["string", "null"], "description": "The key of the record that was dead-lettered, kept."}
    if topic in PER_CHUNK_TOPICS:
        return {"type": "string", "pattern": f"^{_JOB_ID_PATTERN}/[0-9]+$",
                "description": "`{job_id}/{chunk_index}`: one chunk's events stay in order."}
    return {"type": "string", "pattern": f"^{_JOB_ID_PATTERN}$",
            "description": "The job id: every job-level event of a job lands in one partition, in order."}


def _add_keys_and_headers(document: dict[str, Any]) -> None:
    """Each message's Kafka key (by its channel's topic) and the shared headers schema."""
    components = document["components"]
    components["schemas"][HEADERS_SCHEMA] = message_headers_schema()
    messages = components.get("messages", {})
    for channel in document.get("channels", {}).values():
        for ref in channel.get("messages", {}).values():
            message = messages[ref["$ref"].rsplit("/", 1)[-1]]
            message["headers"] = {"$ref": _COMPONENT_REF.format(model=HEADERS_SCHEMA)}
            message["bindings"] = {"kafka": {"bindingVersion": KAFKA_BINDING_VERSION,
                                             "key": message_key_schema(channel["address"])}}


def _add_schema(schemas: dict[str, Any], model: Any) -> None:
    """The model's JSON Schema, and the ones it refers to, under ``components/schemas``."""
    schema = model.model_json_schema(ref_template=_COMPONENT_REF)
    for name, nested in schema.pop("$defs", {}).items():
        schemas.setdefault(name, nested)
    schemas.setdefault(model.__name__, schema)


def write_asyncapi(path: Path = ASYNCAPI_FILE) -> Path:
    path.write_text(render_asyncapi())
    return path


if __name__ == "__main__":
    sys.stdout.write(f"wrote {write_asyncapi()}\n")
