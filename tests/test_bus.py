"""Delivery semantics of :mod:`handlers.runtime.bus`, without Kafka.

:func:`process_event` is what every stage subscriber runs for one delivery;
here it is driven with a :class:`MemoryPublisher` and a tiny scripted stage,
so each rule of issue 4 is pinned down on its own: a payload that does not
parse is dead-lettered with the error and the raw bytes, a transient failure
goes to the retry topic with the next attempt and a capped exponential
backoff, the last attempt fails the job with the error's status code, user
errors fail at once, and the retry relay republishes only when due.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import orjson
import pytest
from pydantic import BaseModel

from handlers.runtime.bus import (
    HEADER_ATTEMPT,
    MemoryPublisher,
    Outcome,
    Source,
    _attempt_of,
    backoff_seconds,
    process_event,
    relay_retry,
)
from handlers.runtime.errors import InferenceError, InputError, PolydubError
from handlers.runtime.settings import Settings
from schemas.events import ChunkPlanned, DeadLetter, DubFailed, Envelope, JobAccepted, RetryScheduled
from schemas.serialization import encode_event
from schemas.status import StatusCode
from schemas.topics import CHUNK_PLANNED, DEAD_LETTER, DUB_FAILED, RETRY

SOURCE = Source(CHUNK_PLANNED, partition=3, offset=42)


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"retry_max_attempts": 4, "retry_backoff_s": 0.5, "retry_backoff_max_s": 3.0}
    values.update(overrides)
    return Settings(**values)


def _chunk_event(job_id: str = "job-bus-1", index: int = 1) -> ChunkPlanned:
    return ChunkPlanned(
        job_id=job_id,
        chunk_index=index,
        n_chunks=3,
        manifest_uri="file:///store/jobs/job-bus-1/manifest.json",
        start_s=9.0,
        end_s=19.0,
        segment_indices=[2, 3],
    )


class ScriptedStage:
    """A stage that raises the scripted exceptions in turn, then succeeds (records every call)."""

    name: ClassVar[str] = "synthesis"
    consumes: ClassVar[type[Envelope]] = ChunkPlanned

    def __init__(self, failures: Sequence[BaseException | None] = (), *, forever: BaseException | None = None) -> None:
        self.failures = list(failures)
        self.forever = forever
        self.calls: list[tuple[ChunkPlanned, int]] = []

    async def handle(self, event: ChunkPlanned, attempt: int) -> None:
        self.calls.append((event, attempt))
        if self.forever is not None:
            raise self.forever
        if self.failures:
            failure = self.failures.pop(0)
            if failure is not None:
                raise failure


class FailureRecorder:
    """``on_failure`` hook that records what it was called with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Envelope, PolydubError]] = []

    async def __call__(self, event: Envelope, error: PolydubError) -> None:
        self.calls.append((event, error))


def _only(publisher: MemoryPublisher, model: type[BaseModel]) -> Any:
    found = publisher.of_type(model)
    assert len(found) == 1, f"expected one {model.__name__}, got {publisher.events}"
    return found[0]


# --- dead letters ---------------------------------------------------------------


async def test_truncated_json_goes_to_dead_letter_with_error_and_raw_text() -> None:
    stage = ScriptedStage()
    publisher = MemoryPublisher()
    raw = b'{"event_type": "chunk.planned", "job_id": "job-bus-1", "chunk_in'

    outcome = await process_event(stage, raw, 0, SOURCE, publisher, _settings())

    assert outcome is Outcome.DEAD_LETTERED
    assert stage.calls == []
    letter = _only(publisher, DeadLetter)
    assert publisher.events[0][0] == DEAD_LETTER
    assert letter.raw_payload == raw.decode()
    assert letter.payload_encoding == "utf-8"
    assert letter.error.startswith("invalid event")
    assert (letter.source_topic, letter.partition, letter.offset) == (CHUNK_PLANNED, 3, 42)
    assert letter.job_id is None  # not parseable, so no job can be named
    assert len(publisher.events) == 1


async def test_event_with_a_bad_field_is_dead_lettered_naming_the_field_and_job() -> None:
    document = _chunk_event().model_dump(mode="json")
    document["n_chunks"] = "three"
    raw = orjson.dumps(document)
    publisher = MemoryPublisher()

    outcome = await process_event(ScriptedStage(), raw, 0, SOURCE, publisher, _settings())

    assert outcome is Outcome.DEAD_LETTERED
    letter = _only(publisher, DeadLetter)
    assert "n_chunks" in letter.error
    assert letter.job_id == "job-bus-1"
    assert orjson.loads(letter.raw_payload) == document


async def test_an_event_of_another_type_on_the_topic_is_dead_lettered() -> None:
    accepted = JobAccepted(
        job_id="job-bus-1",
        manifest_uri="file:///m.json",
        source_uri="file:///v.mp4",
        duration_s=6.0,
        n_segments=2,
        target_lang="ko",
        engines={"tts": "espeak", "vc": "world", "lipsync": "mouthwarp"},  # type: ignore[arg-type]
    )
    stage = ScriptedStage()
    publisher = MemoryPublisher()

    outcome = await process_event(stage, encode_event(accepted), 0, SOURCE, publisher, _settings())

    assert outcome is Outcome.DEAD_LETTERED
    assert stage.calls == []
    assert "event_type" in _only(publisher, DeadLetter).error


async def test_binary_payload_is_kept_base64_encoded() -> None:
    raw = b"\xff\xfe\x00\x81binary\x00garbage"
    publisher = MemoryPublisher()

    outcome = await process_event(ScriptedStage(), raw, 0, SOURCE, publisher, _settings())

    assert outcome is Outcome.DEAD_LETTERED
    letter = _only(publisher, DeadLetter)
    assert letter.payload_encoding == "base64"
    assert base64.b64decode(letter.raw_payload) == raw


# --- retries ----------------------------------------------------------------------


def test_backoff_doubles_from_the_base_and_is_capped() -> None:
    settings = _settings(retry_backoff_s=0.5, retry_backoff_max_s=3.0)
    assert [backoff_seconds(a, settings) for a in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


@pytest.mark.parametrize(("attempt", "delay"), [(0, 0.5), (1, 1.0), (2, 2.0)])
async def test_retryable_error_schedules_the_next_attempt_after_the_backoff(attempt: int, delay: float) -> None:
    event = _chunk_event()
    stage = ScriptedStage([InferenceError("tts_espeak timed out")])
    publisher = MemoryPublisher()
    on_failure = FailureRecorder()
    before = datetime.now(UTC)

    outcome = await process_event(stage, encode_event(event), attempt, SOURCE, publisher, _settings(), on_failure)

    after = datetime.now(UTC)
    assert outcome is Outcome.RETRY_SCHEDULED
    assert stage.calls == [(event, attempt)]
    retry = _only(publisher, RetryScheduled)
    assert publisher.events[0][0] == RETRY
    assert retry.attempt == attempt + 1
    assert retry.target_topic == CHUNK_PLANNED
    assert retry.job_id == event.job_id
    assert "tts_espeak timed out" in retry.reason
    assert before + timedelta(seconds=delay) <= retry.not_before <= after + timedelta(seconds=delay)
    assert ChunkPlanned.model_validate_json(orjson.dumps(retry.event)) == event  # same event_id
    assert publisher.of_type(DubFailed) == []
    assert on_failure.calls == []


async def test_backoff_of_a_late_attempt_is_capped() -> None:
    settings = _settings(retry_max_attempts=10, retry_backoff_s=0.5, retry_backoff_max_s=3.0)
    publisher = MemoryPublisher()
    before = datetime.now(UTC)

    await process_event(ScriptedStage(forever=InferenceError("down")), encode_event(_chunk_event()), 6,
                        SOURCE, publisher, settings)

    retry = _only(publisher, RetryScheduled)
    assert retry.attempt == 7
    assert retry.not_before - before < timedelta(seconds=3.5)
    assert retry.not_before - before >= timedelta(seconds=3.0)


async def test_last_attempt_fails_the_job_with_the_errors_code_and_count() -> None:
    event = _chunk_event()
    error = InferenceError("model 'tts_espeak' rejected the request", "check the Triton log")
    publisher = MemoryPublisher()
    on_failure = FailureRecorder()

    outcome = await process_event(ScriptedStage(forever=error), encode_event(event), 3, SOURCE, publisher,
                                  _settings(retry_max_attempts=4), on_failure)

    assert outcome is Outcome.FAILED
    failed = _only(publisher, DubFailed)
    assert publisher.events[0][0] == DUB_FAILED
    assert failed.status is StatusCode.INFERENCE_FAILED
    assert failed.reason == "model 'tts_espeak' rejected the request (gave up after 4 attempts)"
    assert failed.fix == "check the Triton log"
    assert (failed.job_id, failed.stage, failed.chunk_index) == (event.job_id, "synthesis", 1)
    assert publisher.of_type(RetryScheduled) == []
    assert on_failure.calls == [(event, error)]


async def test_input_error_fails_the_job_at_once_without_retry() -> None:
    event = _chunk_event()
    publisher = MemoryPublisher()
    on_failure = FailureRecorder()
    error = InputError("segment 3 starts after the video ends", "fix the subtitles")

    outcome = await process_event(ScriptedStage(forever=error), encode_event(event), 0, SOURCE, publisher,
                                  _settings(), on_failure)

    assert outcome is Outcome.FAILED
    failed = _only(publisher, DubFailed)
    assert failed.status is StatusCode.INPUT_REJECTED
    assert failed.reason == "segment 3 starts after the video ends"  # no "gave up": never retried
    assert publisher.of_type(RetryScheduled) == []
    assert len(on_failure.calls) == 1


async def test_unexpected_exception_is_retried_then_fails_as_internal_error() -> None:
    event = _chunk_event()
    stage = ScriptedStage(forever=RuntimeError("boom"))
    settings = _settings(retry_max_attempts=3)

    first = MemoryPublisher()
    assert await process_event(stage, encode_event(event), 0, SOURCE, first, settings) is Outcome.RETRY_SCHEDULED
    assert "unexpected RuntimeError: boom" in _only(first, RetryScheduled).reason

    last = MemoryPublisher()
    assert await process_event(stage, encode_event(event), 2, SOURCE, last, settings) is Outcome.FAILED
    failed = _only(last, DubFailed)
    assert failed.status is StatusCode.INTERNAL_ERROR
    assert failed.reason == "unexpected RuntimeError: boom (gave up after 3 attempts)"


async def test_a_success_publishes_nothing_of_its_own() -> None:
    publisher = MemoryPublisher()
    stage = ScriptedStage()

    outcome = await process_event(stage, encode_event(_chunk_event()), 2, SOURCE, publisher, _settings())

    assert outcome is Outcome.DONE
    assert [attempt for _, attempt in stage.calls] == [2]
    assert publisher.events == [] and publisher.raw == []


async def test_retries_through_the_relay_until_the_bound() -> None:
    """The whole loop: stage -> dub.retry -> relay -> stage, attempts counted by the header."""
    settings = _settings(retry_max_attempts=4, retry_backoff_s=0.0, retry_backoff_max_s=0.0)
    event = _chunk_event()
    stage = ScriptedStage(forever=InferenceError("tts down"))
    publisher = MemoryPublisher()
    on_failure = FailureRecorder()
    raw, attempt = encode_event(event), 0
    outcomes = []
    for _ in range(10):
        outcome = await process_event(stage, raw, attempt, SOURCE, publisher, settings, on_failure)
        outcomes.append(outcome)
        if outcome is not Outcome.RETRY_SCHEDULED:
            break
        retry = publisher.of_type(RetryScheduled)[-1]
        relayed = MemoryPublisher()
        assert await relay_retry(encode_event(retry), relayed, Source(RETRY)) is Outcome.DONE
        (topic, raw, key, attempt), = relayed.raw
        assert (topic, key) == (CHUNK_PLANNED, f"{event.job_id}/{event.chunk_index}")  # the chunk's key

    assert outcomes == [Outcome.RETRY_SCHEDULED] * 3 + [Outcome.FAILED]
    assert [a for _, a in stage.calls] == [0, 1, 2, 3]
    assert all(call_event == event for call_event, _ in stage.calls)
    assert _only(publisher, DubFailed).reason.endswith("(gave up after 4 attempts)")
    assert len(on_failure.calls) == 1


async def test_failure_is_published_before_the_job_is_marked_failed() -> None:
    """If ``dub.failed`` cannot be published, the failed marker must not exist yet.

    The delivery is then rewound and redelivered; had the marker been written
    first, the redelivered event would be skipped as "job already failed" and
    ``dub.failed`` would never reach anyone.
    """

    class BrokerDown(MemoryPublisher):
        async def publish(self, event: BaseModel, attempt: int = 0) -> None:
            raise ConnectionError("broker unreachable")

    on_failure = FailureRecorder()
    with pytest.raises(ConnectionError):
        await process_event(ScriptedStage(forever=InputError("bad subtitles")), encode_event(_chunk_event()), 0,
                            SOURCE, BrokerDown(), _settings(), on_failure)
    assert on_failure.calls == []

    publisher = MemoryPublisher()

    async def check_published_first(event: Envelope, error: PolydubError) -> None:
        assert publisher.of_type(DubFailed), "the job was marked failed before dub.failed was published"
        await on_failure(event, error)

    await process_event(ScriptedStage(forever=InputError("bad subtitles")), encode_event(_chunk_event()), 0,
                        SOURCE, publisher, _settings(), check_published_first)
    assert len(on_failure.calls) == 1


async def test_publish_failure_while_scheduling_a_retry_propagates() -> None:
    """The caller must not commit: the exception reaches it (and it nacks)."""

    class BrokerDown(MemoryPublisher):
        async def publish(self, event: BaseModel, attempt: int = 0) -> None:
            raise ConnectionError("broker unreachable")

    with pytest.raises(ConnectionError):
        await process_event(ScriptedStage(forever=InferenceError("x")), encode_event(_chunk_event()), 0,
                            SOURCE, BrokerDown(), _settings())


# --- the retry relay --------------------------------------------------------------


def _retry(event: ChunkPlanned, not_before: datetime, attempt: int = 2, target: str = CHUNK_PLANNED) -> bytes:
    return encode_event(
        RetryScheduled(
            job_id=event.job_id,
            status=event.status,
            target_topic=target,
            not_before=not_before,
            attempt=attempt,
            reason="tts down",
            event=event.model_dump(mode="json"),
        )
    )


async def test_relay_waits_until_not_before_then_republishes_with_the_attempt() -> None:
    event = _chunk_event()
    publisher = MemoryPublisher()
    started = time.monotonic()

    outcome = await relay_retry(_retry(event, datetime.now(UTC) + timedelta(seconds=0.4), attempt=2),
                                publisher, Source(RETRY))

    assert outcome is Outcome.DONE
    assert time.monotonic() - started >= 0.35
    (topic, payload, key, attempt), = publisher.raw
    assert (topic, key, attempt) == (CHUNK_PLANNED, f"{event.job_id}/{event.chunk_index}", 2)
    assert ChunkPlanned.model_validate_json(payload) == event


async def test_relay_republishes_a_due_retry_at_once() -> None:
    publisher = MemoryPublisher()
    started = time.monotonic()

    await relay_retry(_retry(_chunk_event(), datetime.now(UTC) - timedelta(seconds=5)), publisher, Source(RETRY))

    assert time.monotonic() - started < 0.2
    assert len(publisher.raw) == 1


async def test_relay_dead_letters_what_it_cannot_parse() -> None:
    publisher = MemoryPublisher()

    outcome = await relay_retry(b"not json", publisher, Source(RETRY, 0, 7))

    assert outcome is Outcome.DEAD_LETTERED
    letter = _only(publisher, DeadLetter)
    assert (letter.source_topic, letter.offset, letter.raw_payload) == (RETRY, 7, "not json")
    assert publisher.raw == []


async def test_relay_dead_letters_a_retry_for_an_unknown_topic() -> None:
    """A retry naming no topic of ours cannot be republished; it must not loop forever."""
    publisher = MemoryPublisher()

    outcome = await relay_retry(_retry(_chunk_event(), datetime.now(UTC), target="chunk.plannd"),
                                publisher, Source(RETRY))

    assert outcome is Outcome.DEAD_LETTERED
    assert "chunk.plannd" in _only(publisher, DeadLetter).error
    assert publisher.raw == []


@pytest.mark.parametrize(
    ("headers", "attempt"),
    [({HEADER_ATTEMPT: b"3"}, 3), ({HEADER_ATTEMPT: "2"}, 2), ({}, 0), (None, 0),
     ({HEADER_ATTEMPT: b"x"}, 0), ({HEADER_ATTEMPT: b"-4"}, 0)],
)
def test_attempt_travels_in_a_header(headers: dict[str, Any] | None, attempt: int) -> None:
    assert _attempt_of(headers) == attempt
