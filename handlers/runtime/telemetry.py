"""OpenTelemetry: one trace per job, across processes, Kafka and Triton.

The W3C ``traceparent`` rides in Kafka headers and in Triton request headers,
so an SRE sees a job as one tree of spans. Spans go to an OTLP collector when
``POLYDUB_OTLP_ENDPOINT`` is set, otherwise to a JSON-lines file
(``POLYDUB_TRACE_FILE``) that ``polydub trace JOB`` reads back.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from handlers.runtime.settings import Settings

TRACER_NAME = "polydub"
_configured = False
_lock = threading.Lock()


class JsonLinesSpanExporter(SpanExporter):
    """Appends one JSON object per finished span; safe across processes (O_APPEND)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = b"".join(orjson.dumps(span_record(s), default=_jsonable) + b"\n" for s in spans)
        fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines)
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _jsonable(value: Any) -> Any:
    """Span attributes may hold bytes (message keys); show them as text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot serialize {type(value).__name__}")


def span_record(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.get_span_context()
    parent = span.parent
    return {
        "trace_id": f"{ctx.trace_id:032x}",
        "span_id": f"{ctx.span_id:016x}",
        "parent_id": f"{parent.span_id:016x}" if parent else None,
        "name": span.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "service": (span.resource.attributes or {}).get("service.name"),
    }


def configure_tracing(settings: Settings, service_name: str = "polydub") -> None:
    """Install the tracer provider once per process."""
    global _configured
    with _lock:
        if _configured:
            return
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if settings.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True))
            )
        else:
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(settings.trace_file)))
        trace.set_tracer_provider(provider)
        _configured = True


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def consumer_attributes(topic: str, group: str, partition: int | None, offset: int | None,
                        key: str | None) -> dict[str, Any]:
    """OpenTelemetry messaging attributes (semantic conventions 1.26+) of a Kafka record being processed."""
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
        "messaging.destination.partition.id": None if partition is None else str(partition),
        "messaging.kafka.offset": offset,
        "messaging.kafka.message.key": key,
    }


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add the current ``traceparent`` (and baggage) to outgoing headers."""
    propagate.inject(headers)
    return headers


@contextmanager
def start_span(name: str, parent: otel_context.Context | None = None, kind: trace.SpanKind = trace.SpanKind.INTERNAL,
               **attributes: Any) -> Iterator[trace.Span]:
    """A span with polydub's attributes (``job_id``, ``stage``, ``chunk_index``...) and its kind."""
    clean = {k: v for k, v in attributes.items() if v is not None}
    with tracer().start_as_current_span(name, context=parent, kind=kind, attributes=clean) as span:
        yield span
