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

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from pydantic import BaseModel

from handlers.runtime.bus import (
    HEADER_ATTEMPT,
    MemoryPublisher,
    Outcome,
    Source,
    _attempt_of,
    backoff_seconds,
    failure_event_id,
    process_event,
)
from handlers.runtime.jobstate import JobState
from handlers.runtime.objectstore import LocalObjectStore
from handlers.runtime.retries import RetryScheduler, relay_retry
from handlers.runtime.settings import Settings
from handlers.runtime.stagekit import JobFailures
from schemas.errors import InferenceError, InputError, PolydubError
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
    """``on_failure`` hook that records what it was called with and announces the ``dub.failed``."""

    def __init__(self, publisher: MemoryPublisher) -> None:
        self.publisher = publisher
        self.calls: list[tuple[Envelope, PolydubError]] = []

    async def __call__(self, event: Envelope, error: PolydubError, failed: DubFailed) -> None:
        self.calls.append((event, error))
        await self.publisher.publish(failed)


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
    on_failure = FailureRecorder(publisher)
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
    on_failure = FailureRecorder(publisher)

    outcome = await process_event(ScriptedStage(forever=error), encode_event(event), 3, SOURCE, publisher,
                                  _settings(retry_max_attempts=4), on_failure)

    assert outcome is Outcome.FAILED
    failed = _only(publisher, DubFailed)
    assert publisher.events[0][0] == DUB_FAILED
    assert failed.status is StatusCode.INFERENCE_FAILED
    assert failed.reason.startswith("model 'tts_espeak' rejected the request (gave up after 4 attempts,")
    assert failed.fix == "check the Triton log"
    assert (failed.job_id, failed.stage, failed.chunk_index) == (event.job_id, "synthesis", 1)
    assert publisher.of_type(RetryScheduled) == []
    assert on_failure.calls == [(event, error)]


class HangingStage(ScriptedStage):
    """A stage whose model never answers (or, with ``own_timeout``, whose client times out itself)."""

    def __init__(self, own_timeout: bool = False) -> None:
        super().__init__()
        self.own_timeout = own_timeout

    async def handle(self, event: ChunkPlanned, attempt: int) -> None:
        self.calls.append((event, attempt))
        if self.own_timeout:
            raise TimeoutError("read timed out")
        await asyncio.Event().wait()


async def test_stuck_work_times_out_and_is_retried_then_fails_with_the_timeout_code() -> None:
    event = _chunk_event()
    settings = _settings(stage_timeout_s=0.05, retry_max_attempts=2)
    first = MemoryPublisher()
    assert await process_event(HangingStage(), encode_event(event), 0, SOURCE, first, settings) is Outcome.RETRY_SCHEDULED
    retry = _only(first, RetryScheduled)
    assert "stage synthesis did not finish this event within 0.05 s (POLYDUB_STAGE_TIMEOUT_S)" in retry.reason

    last = MemoryPublisher()
    assert await process_event(HangingStage(), encode_event(event), 1, SOURCE, last, settings) is Outcome.FAILED
    failed = _only(last, DubFailed)
    assert failed.status is StatusCode.TIMEOUT
    assert failed.reason.startswith("stage synthesis did not finish this event within 0.05 s")
    assert "raise POLYDUB_STAGE_TIMEOUT_S" in (failed.fix or "")


async def test_a_timeout_the_handler_raises_itself_is_not_called_stuck_work() -> None:
    publisher = MemoryPublisher()
    settings = _settings(stage_timeout_s=30.0, retry_max_attempts=1)
    outcome = await process_event(HangingStage(own_timeout=True), encode_event(_chunk_event()), 0, SOURCE,
                                  publisher, settings)
    assert outcome is Outcome.FAILED
    failed = _only(publisher, DubFailed)
    assert failed.status is StatusCode.INTERNAL_ERROR and "TimeoutError: read timed out" in failed.reason


def test_the_stage_timeout_must_fit_inside_the_broker_s_poll_interval() -> None:
    with pytest.raises(ValueError, match="POLYDUB_STAGE_TIMEOUT_S .* must be below POLYDUB_MAX_HANDLER_SECONDS"):
        Settings(stage_timeout_s=600.0, max_handler_seconds=600.0)


async def test_input_error_fails_the_job_at_once_without_retry() -> None:
    event = _chunk_event()
    publisher = MemoryPublisher()
    on_failure = FailureRecorder(publisher)
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
    assert failed.reason.startswith("unexpected RuntimeError: boom (gave up after 3 attempts,")


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
    on_failure = FailureRecorder(publisher)
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
    assert "(gave up after 4 attempts," in _only(publisher, DubFailed).reason
    assert len(on_failure.calls) == 1


async def test_a_failure_is_recorded_before_it_is_announced_and_announced_once(tmp_path: Path) -> None:
    """The marker first (holding its ``dub.failed``), then the event: never announced without a record.

    With the broker down the delivery raises (rewound, not committed) and the
    marker says "not published"; the next delivery's guard announces it, with
    the job's one ``event_id``; a second failure of the job announces nothing.
    """

    class BrokerDown(MemoryPublisher):
        async def publish(self, event: BaseModel, attempt: int = 0) -> None:
            raise ConnectionError("broker unreachable")

    store = LocalObjectStore(tmp_path)
    event = _chunk_event()
    with pytest.raises(ConnectionError):
        await process_event(ScriptedStage(forever=InputError("bad subtitles")), encode_event(event), 0,
                            SOURCE, BrokerDown(), _settings(), JobFailures(store, BrokerDown()))
    state = JobState(store, event.job_id)
    assert state.read_json("state/failed")["published"] is False

    publisher = MemoryPublisher()
    failures = JobFailures(store, publisher)
    await failures.resume(state)
    assert _only(publisher, DubFailed).event_id == failure_event_id(event.job_id)
    assert state.read_json("state/failed")["published"] is True
    await process_event(ScriptedStage(forever=InputError("another chunk")), encode_event(event), 0,
                        SOURCE, publisher, _settings(), failures)
    await failures.resume(state)
    assert _only(publisher, DubFailed).reason == "bad subtitles"


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


# --- the retry scheduler: each retry on its own timer ------------------------------------

RETRY_TP = TopicPartition("dub.retry", 0)


class FakeConsumer:
    """The two calls the scheduler makes of aiokafka's consumer: which partitions it owns, commit."""

    def __init__(self, *owned: TopicPartition) -> None:
        self.owned = set(owned or (RETRY_TP,))
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.commits.append(dict(offsets))

    def committed(self, tp: TopicPartition = RETRY_TP) -> int | None:
        offsets = [c[tp].offset for c in self.commits if tp in c]
        return offsets[-1] if offsets else None


def _due_in(seconds: float, index: int, job_id: str = "job-sched") -> bytes:
    return _retry(_chunk_event(job_id, index), datetime.now(UTC) + timedelta(seconds=seconds))


def _republished_chunks(publisher: MemoryPublisher) -> list[int]:
    return [orjson.loads(payload)["chunk_index"] for _, payload, _, _ in publisher.raw]


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_retry_due_later_does_not_delay_one_due_sooner() -> None:
    publisher, consumer = MemoryPublisher(), FakeConsumer()
    scheduler = RetryScheduler(publisher, max_pending=10)
    started = time.monotonic()

    await scheduler.submit(_due_in(0.8, index=0), RETRY_TP, 0, consumer)  # long backoff first
    await scheduler.submit(_due_in(0.1, index=1), RETRY_TP, 1, consumer)
    assert time.monotonic() - started < 0.1, "submit waited for a backoff"

    await _until(lambda: len(publisher.raw) == 1)
    assert _republished_chunks(publisher) == [1]
    assert time.monotonic() - started < 0.6
    await asyncio.sleep(0.05)
    assert consumer.committed() is None, "committed past the long retry, which is not republished yet"

    await _until(lambda: consumer.committed() == 2)
    assert _republished_chunks(publisher) == [1, 0]
    assert time.monotonic() - started >= 0.75
    assert scheduler.pending == 0


async def test_commits_only_up_to_the_lowest_unfinished_retry() -> None:
    publisher, consumer = MemoryPublisher(), FakeConsumer()
    scheduler = RetryScheduler(publisher, max_pending=10)

    await scheduler.submit(_due_in(0.05, index=0), RETRY_TP, 10, consumer)
    await scheduler.submit(_due_in(0.6, index=1), RETRY_TP, 11, consumer)
    await scheduler.submit(_due_in(0.1, index=2), RETRY_TP, 12, consumer)

    await _until(lambda: len(publisher.raw) == 2)
    await asyncio.sleep(0.05)
    assert _republished_chunks(publisher) == [0, 2]
    assert consumer.committed() == 11  # 10 is done; 11 still waits, so 12 is not committed yet
    await _until(lambda: consumer.committed() == 13)
    offsets = [c[RETRY_TP].offset for c in consumer.commits]
    assert offsets == sorted(offsets), "the committed offset went back"


async def test_at_the_bound_submit_waits_for_a_retry_to_finish() -> None:
    publisher, consumer = MemoryPublisher(), FakeConsumer()
    scheduler = RetryScheduler(publisher, max_pending=2)
    await scheduler.submit(_due_in(0.3, index=0), RETRY_TP, 0, consumer)
    await scheduler.submit(_due_in(0.3, index=1), RETRY_TP, 1, consumer)

    third = asyncio.create_task(scheduler.submit(_due_in(0.0, index=2), RETRY_TP, 2, consumer))
    await asyncio.sleep(0.15)
    assert not third.done() and scheduler.pending == 2
    await asyncio.wait_for(third, 2)
    assert len(publisher.raw) >= 1  # a slot was freed by a republish
    await _until(lambda: consumer.committed() == 3)
    assert sorted(_republished_chunks(publisher)) == [0, 1, 2]


async def test_revoked_or_stopped_timers_are_dropped_uncommitted() -> None:
    other = TopicPartition("dub.retry", 1)
    publisher, consumer = MemoryPublisher(), FakeConsumer(RETRY_TP, other)
    scheduler = RetryScheduler(publisher, max_pending=10)
    await scheduler.submit(_due_in(0.2, index=0), RETRY_TP, 0, consumer)
    await scheduler.submit(_due_in(0.2, index=1), other, 0, consumer)

    await scheduler.on_partitions_revoked({RETRY_TP})
    consumer.owned.discard(RETRY_TP)
    await scheduler.submit(_due_in(0.0, index=2), RETRY_TP, 1, consumer)  # read before the revocation
    assert scheduler.pending == 1
    scheduler.drop_all()  # what stopping the subscriber does
    assert scheduler.pending == 0

    await asyncio.sleep(0.35)
    assert publisher.raw == [] and consumer.commits == []


async def test_a_failed_republish_is_tried_again_and_holds_the_commit() -> None:
    class FlakyPublisher(MemoryPublisher):
        """The first retry's republish fails twice; the second's goes through at once."""

        failures = 2

        async def publish_raw(self, topic: str, payload: bytes, key: str | None, attempt: int) -> None:
            if self.failures and orjson.loads(payload)["chunk_index"] == 0:
                self.failures -= 1
                raise ConnectionError("broker unreachable")
            await super().publish_raw(topic, payload, key, attempt)

    publisher, consumer = FlakyPublisher(), FakeConsumer()
    scheduler = RetryScheduler(publisher, max_pending=10, pause_after_failure_s=0.1)
    await scheduler.submit(_due_in(0.0, index=0), RETRY_TP, 0, consumer)
    await scheduler.submit(_due_in(0.0, index=1), RETRY_TP, 1, consumer)

    await _until(lambda: consumer.committed() == 2)
    assert sorted(_republished_chunks(publisher)) == [0, 1]
    assert all(c[RETRY_TP].offset == 2 for c in consumer.commits)  # nothing was committed while one failed


async def test_an_undecodable_retry_is_dead_lettered_and_committed() -> None:
    publisher, consumer = MemoryPublisher(), FakeConsumer()
    scheduler = RetryScheduler(publisher, max_pending=10)
    await scheduler.submit(b"not json", RETRY_TP, 4, consumer)

    await _until(lambda: consumer.committed() == 5)
    letter = _only(publisher, DeadLetter)
    assert (letter.source_topic, letter.partition, letter.offset) == (RETRY, 0, 4)


@pytest.mark.parametrize(
    ("headers", "attempt"),
    [({HEADER_ATTEMPT: b"3"}, 3), ({HEADER_ATTEMPT: "2"}, 2), ({}, 0), (None, 0),
     ({HEADER_ATTEMPT: b"x"}, 0), ({HEADER_ATTEMPT: b"-4"}, 0)],
)
def test_attempt_travels_in_a_header(headers: dict[str, Any] | None, attempt: int) -> None:
    assert _attempt_of(headers) == attempt
