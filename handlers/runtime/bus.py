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
  ``POLYDUB_RETRY_MAX_ATTEMPTS`` the job fails with the error's status code and
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, ClassVar, Protocol

import orjson
from pydantic import BaseModel

from handlers.runtime.logs import bind_job
from handlers.runtime.metrics import FAILURES, IN_FLIGHT, STAGE_OUTCOMES
from handlers.runtime.settings import Settings
from handlers.runtime.telemetry import start_span
from schemas.errors import PolydubError
from schemas.events import DeadLetter, DubFailed, Envelope, RetryScheduled
from schemas.serialization import EventDecodeError, decode_event, encode_event
from schemas.status import StatusCode
from schemas.topics import TOPIC_OF_EVENT, event_key, topic_name

log = logging.getLogger(__name__)

HEADER_ATTEMPT = "polydub-attempt"
# Pause after a failed publish before the rewound message is read again (or, in the
# retry relay, before the republish is tried again).
REDELIVERY_PAUSE_S = 1.0


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


def backoff_seconds(attempt: int, settings: Settings) -> float:
    """Delay before ``attempt`` (1-based): doubling from the base, capped."""
    return min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** (attempt - 1))


OnFailure = Callable[[Envelope, PolydubError], Awaitable[None]]


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
    try:
        event = decode_event(raw, stage.consumes)
    except EventDecodeError as exc:
        await publisher.publish(dead_letter(raw, str(exc), source))
        log.warning("dead-lettered an event that does not parse", extra={"error": str(exc)})
        return Outcome.DEAD_LETTERED

    chunk_index = getattr(event, "chunk_index", None)
    with bind_job(event.job_id, stage=stage.name, chunk_index=chunk_index, attempt=attempt), start_span(
        f"stage.{stage.name}",
        job_id=event.job_id,
        stage=stage.name,
        chunk_index=chunk_index,
        attempt=attempt,
    ) as span:
        try:
            await stage.handle(event, attempt)
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
        if error.retryable and next_attempt < settings.retry_max_attempts:
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
            reason = f"{reason} (gave up after {next_attempt} attempts)"
        failed = DubFailed(
            job_id=event.job_id,
            status=error.code,
            stage=stage.name,  # type: ignore[arg-type]
            reason=reason,
            fix=error.fix,
            chunk_index=chunk_index,
        )
        # Publish first, then mark: a marker written before a publish that fails
        # would make the redelivered event skip as "already failed", and
        # dub.failed would never be sent. The other order risks only a duplicate.
        await publisher.publish(failed)
        if on_failure is not None:
            await on_failure(event, error)
        log.error("job failed", extra={"code": int(error.code), "reason": reason})
        return Outcome.FAILED


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
        source = Source(topic, getattr(raw_msg, "partition", None), getattr(raw_msg, "offset", None))
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


def _attempt_of(headers: dict[str, Any] | None) -> int:
    value = (headers or {}).get(HEADER_ATTEMPT, "0")
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return max(0, int(value))
    except ValueError:
        return 0
