"""The event bus: publish events, run stages as Kafka subscribers, retry, dead-letter.

Delivery is at-least-once and every stage is idempotent, so the rules are:

* A message is committed only after its stage has written its outputs and
  published what follows (the next event, a retry, a ``dub.failed`` or a
  dead letter). A crash or a cancelled handler before that leaves the offset
  uncommitted and the event is redelivered (``AckPolicy.MANUAL``).
* A retryable failure does not block the partition: the event goes to
  ``dub.retry`` with the next attempt number and a ``not_before`` time
  (exponential backoff, bounded); the retry relay (:mod:`handlers.runtime.retries`)
  republishes it to its stage's topic when due, each retry on its own timer,
  so a long backoff does not delay a retry due sooner. Past
  the retry budget (``POLYDUB_RETRY_BUDGET_S`` of backoff) the job fails with the error's status code and
  reason.
* A payload that does not parse goes to ``dub.dead-letter`` with the error and
  the raw bytes; nothing is dropped silently.
* If publishing itself fails (the broker is gone), the message is rewound
  (nack) so a later commit cannot skip it; the retry relay instead keeps the
  retry pending (uncommitted) and tries again.

:func:`process_event` holds this logic without Kafka, so unit tests drive it
with a :class:`MemoryPublisher`; :func:`register_stage` binds it to FastStream.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, ClassVar, Protocol

import orjson
from opentelemetry.trace import SpanKind
from pydantic import BaseModel

from handlers.runtime.logs import bind_job
from handlers.runtime.metrics import FAILURES, IN_FLIGHT, STAGE_OUTCOMES
from handlers.runtime.settings import Settings
from handlers.runtime.telemetry import consumer_attributes, start_span
from schemas.errors import PolydubError, StageTimeoutError
from schemas.events import DeadLetter, DubFailed, Envelope, RetryScheduled
from schemas.serialization import EventDecodeError, decode_event, encode_event
from schemas.status import StatusCode
from schemas.topics import ALL_TOPICS, TOPIC_OF_EVENT, event_key, topic_name

log = logging.getLogger(__name__)

HEADER_ATTEMPT = "polydub-attempt"
# Pause after a failed publish before the rewound message is read again (or, in the
# retry relay, before the republish is tried again).
REDELIVERY_PAUSE_S = 1.0
#: Bytes of an oversized event kept in its dead letter: enough to see what it was, small enough to publish.
DEAD_LETTER_KEEP_BYTES = 4096


class Publisher(Protocol):
    """Where stages send events (Kafka in production, a list in unit tests)."""

    async def publish(self, event: BaseModel, attempt: int = 0) -> None: ...

    async def publish_raw(self, topic: str, payload: bytes, key: str | None, attempt: int) -> None: ...


@dataclass
class MemoryPublisher:
    """Collects published events; for unit tests of stage logic only."""

    events: list[tuple[str, BaseModel, int]] = field(default_factory=list)
    raw: list[tuple[str, bytes, str | None, int]] = field(default_factory=list)

    async def publish(self, event: BaseModel, attempt: int = 0) -> None:
        self.events.append((TOPIC_OF_EVENT[event.event_type], event, attempt))  # type: ignore[attr-defined]

    async def publish_raw(self, topic: str, payload: bytes, key: str | None, attempt: int) -> None:
        self.raw.append((topic, payload, key, attempt))

    def of_type(self, model: type[BaseModel]) -> list[Any]:
        return [event for _, event, _ in self.events if isinstance(event, model)]


class KafkaPublisher:
    """Publishes through a FastStream broker, keyed by :func:`schemas.topics.event_key`.

    The telemetry middleware on the broker adds the ``traceparent`` header.
    """

    def __init__(self, broker: Any, settings: Settings) -> None:
        self._broker = broker
        self._prefix = settings.topic_prefix

    async def publish(self, event: BaseModel, attempt: int = 0) -> None:
        topic = TOPIC_OF_EVENT[event.event_type]  # type: ignore[attr-defined]
        if isinstance(event, DeadLetter) and (event.original_key is not None or event.original_headers):
            # The original record's key and headers, so the dead letter lands with its job and trace.
            await self._broker.publish(
                encode_event(event),
                topic_name(topic, self._prefix),
                key=event.original_key.encode() if event.original_key is not None else None,
                headers={**event.original_headers, HEADER_ATTEMPT: str(attempt), "content-type": "application/json"},
            )
            return
        key = event_key(topic, getattr(event, "job_id", None), getattr(event, "chunk_index", None))
        await self.publish_raw(topic, encode_event(event), key, attempt)

    async def publish_raw(self, topic: str, payload: bytes, key: str | None, attempt: int) -> None:
        await self._broker.publish(
            payload,
            topic_name(topic, self._prefix),
            key=key.encode() if key else None,
            headers={HEADER_ATTEMPT: str(attempt), "content-type": "application/json"},
        )


class Stage(Protocol):
    """A pipeline stage: consumes one event type, writes outputs, publishes the next."""

    name: ClassVar[str]
    consumes: ClassVar[type[Envelope]]

    async def handle(self, event: Any, attempt: int) -> None: ...


class Outcome(Enum):
    DONE = "done"
    RETRY_SCHEDULED = "retry_scheduled"
    FAILED = "failed"
    DEAD_LETTERED = "dead_lettered"


@dataclass(frozen=True)
class Source:
    """Where a message came from, for dead letters and logs."""

    topic: str
    partition: int | None = None
    offset: int | None = None
    #: The record's Kafka key and headers: a dead letter keeps them, so it can be traced and replayed.
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def backoff_seconds(attempt: int, settings: Settings) -> float:
    """Delay before ``attempt`` (1-based): doubling from the base, capped."""
    return min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** (attempt - 1))


def backoff_total_s(attempt: int, settings: Settings) -> float:
    """Time an event has waited in backoff once ``attempt`` (1-based) is due: the budget's clock.

    Counted from the attempt number, not read from a clock, so a retry carries
    no extra state and every worker agrees on when the budget is spent.
    """
    return sum(backoff_seconds(a, settings) for a in range(1, attempt + 1))


def may_retry(next_attempt: int, settings: Settings) -> bool:
    """Whether ``next_attempt`` fits the retry budget (time, and the optional attempt bound)."""
    if settings.retry_max_attempts and next_attempt >= settings.retry_max_attempts:
        return False
    return backoff_total_s(next_attempt, settings) <= settings.retry_budget_s


#: Records a job's failure and announces it (``dub.failed``) once; given, it owns publishing
#: the ``dub.failed`` the bus built (see :class:`handlers.runtime.stagekit.JobFailures`).
OnFailure = Callable[[Envelope, PolydubError, DubFailed], Awaitable[None]]
FAILURE_NAMESPACE = uuid.UUID("0d6f3b8e-4c1a-4f7e-9b2d-6a5e8c7f1a24")


def failure_event_id(job_id: str) -> str:
    """The one ``event_id`` a job's ``dub.failed`` ever has: a repeat is recognisably the same event."""
    return str(uuid.uuid5(FAILURE_NAMESPACE, job_id))


async def process_event(
    stage: Stage,
    raw: bytes,
    attempt: int,
    source: Source,
    publisher: Publisher,
    settings: Settings,
    on_failure: OnFailure | None = None,
) -> Outcome:
    """Run one delivery of one event through ``stage``; never raises for bad events.

    Exceptions from the publisher do propagate: the caller must not commit.
    """
    IN_FLIGHT.labels(stage.name).inc()
    try:
        outcome = await _process(stage, raw, attempt, source, publisher, settings, on_failure)
    finally:
        IN_FLIGHT.labels(stage.name).dec()
    STAGE_OUTCOMES.labels(stage.name, outcome.value).inc()
    return outcome


async def _process(
    stage: Stage,
    raw: bytes,
    attempt: int,
    source: Source,
    publisher: Publisher,
    settings: Settings,
    on_failure: OnFailure | None = None,
) -> Outcome:
    if len(raw) > settings.max_event_bytes:
        # Refused unread: parsing it (or handing it to a stage) is what a huge event would exploit.
        error = (f"the event is {len(raw)} bytes, larger than the {settings.max_event_bytes} bytes "
                 "POLYDUB_MAX_EVENT_BYTES allows; put large data (subtitles, media) in the object store and "
                 f"send its URI (the first {DEAD_LETTER_KEEP_BYTES} bytes are kept here)")
        await publisher.publish(dead_letter(raw[:DEAD_LETTER_KEEP_BYTES], error, source))
        log.warning("dead-lettered an oversized event", extra={"bytes": len(raw)})
        return Outcome.DEAD_LETTERED
    try:
        event = decode_event(raw, stage.consumes)
    except EventDecodeError as exc:
        await publisher.publish(dead_letter(raw, str(exc), source))
        log.warning("dead-lettered an event that does not parse", extra={"error": str(exc)})
        return Outcome.DEAD_LETTERED

    chunk_index = getattr(event, "chunk_index", None)
    with bind_job(event.job_id, stage=stage.name, chunk_index=chunk_index, attempt=attempt), start_span(
        f"stage.{stage.name}",
        kind=SpanKind.CONSUMER,
        **consumer_attributes(topic_name(source.topic, settings.topic_prefix) if source.topic in ALL_TOPICS
                              else source.topic,
                              f"{settings.consumer_group_prefix}.{stage.name}", source.partition, source.offset,
                              source.key),
        job_id=event.job_id,
        stage=stage.name,
        chunk_index=chunk_index,
        attempt=attempt,
    ) as span:
        try:
            await _handle_in_time(stage, event, attempt, settings.stage_timeout_s)
            span.set_attribute("status", "done")
            return Outcome.DONE
        except PolydubError as exc:
            error = exc
        except Exception as exc:  # a bug or an unwrapped transient fault: retry, then fail
            log.exception("unexpected error in stage")
            error = PolydubError(f"unexpected {type(exc).__name__}: {exc}")
            error.retryable = True
        FAILURES.labels(stage.name, error.code.name.lower()).inc()
        span.set_attribute("status", "error")
        span.set_attribute("status_code", int(error.code))
        span.set_attribute("error.reason", error.reason)

        next_attempt = attempt + 1
        if error.retryable and may_retry(next_attempt, settings):
            delay = backoff_seconds(next_attempt, settings)
            await publisher.publish(
                RetryScheduled(
                    job_id=event.job_id,
                    status=event.status,
                    target_topic=TOPIC_OF_EVENT[event.event_type],
                    not_before=datetime.now(UTC) + timedelta(seconds=delay),
                    attempt=next_attempt,
                    reason=str(error),
                    event=event.model_dump(mode="json"),
                )
            )
            log.warning("retry scheduled", extra={"delay_s": delay, "reason": str(error)})
            return Outcome.RETRY_SCHEDULED

        reason = error.reason
        if error.retryable:
            waited = backoff_total_s(attempt, settings)
            reason = f"{reason} (gave up after {next_attempt} attempts, {waited:.0f} s of retries)"
        failed = DubFailed(
            event_id=failure_event_id(event.job_id),
            job_id=event.job_id,
            status=error.code,
            stage=stage.name,  # type: ignore[arg-type]
            reason=reason,
            fix=error.fix,
            chunk_index=chunk_index,
        )
        # The hook records the failure before announcing it, so a store outage
        # cannot leave a dub.failed without its marker (redelivered, announced again).
        if on_failure is not None:
            await on_failure(event, error, failed)
        else:
            await publisher.publish(failed)
        log.error("job failed", extra={"code": int(error.code), "reason": reason})
        return Outcome.FAILED


async def _handle_in_time(stage: Stage, event: Any, attempt: int, timeout_s: float) -> None:
    """``stage.handle`` bounded by ``timeout_s``; stuck work becomes a retryable timeout.

    Only the deadline's own expiry is a stage timeout: a ``TimeoutError`` the handler
    raises itself (a socket, a client) keeps its meaning.
    """
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            await stage.handle(event, attempt)
    except TimeoutError as exc:
        if not deadline.expired():
            raise
        raise StageTimeoutError(
            f"stage {stage.name} did not finish this event within {timeout_s:g} s (POLYDUB_STAGE_TIMEOUT_S)",
            "if the input is just large, raise POLYDUB_STAGE_TIMEOUT_S (below POLYDUB_MAX_HANDLER_SECONDS); "
            "otherwise look in this worker's log for the job id: a model or the object store may hang",
        ) from exc


def dead_letter(raw: bytes, error: str, source: Source) -> DeadLetter:
    job_id = None
    try:
        parsed = orjson.loads(raw)
        if isinstance(parsed, dict) and isinstance(parsed.get("job_id"), str):
            job_id = parsed["job_id"]
    except orjson.JSONDecodeError:
        pass
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode(), "base64"
    return DeadLetter(
        job_id=job_id,
        status=StatusCode.INPUT_REJECTED,
        source_topic=source.topic,
        partition=source.partition,
        offset=source.offset,
        original_key=source.key,
        original_headers=dict(source.headers),
        error=error,
        raw_payload=text,
        payload_encoding=encoding,  # type: ignore[arg-type]
    )


def register_stage(broker: Any, stage: Stage, settings: Settings, publisher: Publisher,
                   on_failure: OnFailure | None = None) -> None:
    """Subscribe ``stage`` to its topic in its own consumer group, manual commits."""
    from faststream import AckPolicy
    from faststream.kafka.annotations import KafkaMessage

    topic = TOPIC_OF_EVENT[str(stage.consumes.model_fields["event_type"].default)]

    async def on_message(msg: KafkaMessage) -> None:
        raw_msg = msg.raw_message
        raw_key = getattr(raw_msg, "key", None)
        source = Source(topic, getattr(raw_msg, "partition", None), getattr(raw_msg, "offset", None),
                        key=raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else raw_key,
                        headers=_text_headers(msg.headers))
        attempt = _attempt_of(msg.headers)
        try:
            await process_event(stage, msg.body, attempt, source, publisher, settings, on_failure)
        except Exception:
            log.exception("could not publish the outcome; the event will be redelivered")
            await msg.nack()
            await asyncio.sleep(REDELIVERY_PAUSE_S)
            return
        await msg.ack()

    on_message.__name__ = f"stage_{stage.name}"
    # Annotations are strings here (postponed evaluation); FastStream's DI needs the object.
    on_message.__annotations__["msg"] = KafkaMessage
    broker.subscriber(
        topic_name(topic, settings.topic_prefix),
        group_id=f"{settings.consumer_group_prefix}.{stage.name}",
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="earliest",
        max_poll_interval_ms=int(settings.max_handler_seconds * 1000),
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=settings.consumer_session_timeout_ms // 4,
        title=f"{stage.name}",
        description=(stage.__doc__ or "").strip().splitlines()[0] if stage.__doc__ else None,
    )(on_message)


def _text_headers(headers: dict[str, Any] | None) -> dict[str, str]:
    """A record's headers as text (Kafka header values are bytes)."""
    return {str(name): value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            for name, value in (headers or {}).items()}


def _attempt_of(headers: dict[str, Any] | None) -> int:
    value = (headers or {}).get(HEADER_ATTEMPT, "0")
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return max(0, int(value))
    except ValueError:
        return 0
