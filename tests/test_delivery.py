"""Delivery semantics over a real broker (Tansu on loopback), as workers run them.

In process, through :func:`handlers.app.build_broker` and
:func:`handlers.app.start_broker`: a malformed event lands in
``dub.dead-letter`` (and is committed, not redelivered forever); a TTS call
that fails twice still completes the job through the real ``dub.retry``
topic and relay; one that always fails ends the job with exactly one
``dub.failed`` (``INFERENCE_FAILED``).

Across processes: a worker (``tests/crash_worker.py``) is SIGKILLed while a
chunk is inside a slowed-down stage; a second worker takes the uncommitted
event over and finishes the job, and exactly one ``dub.completed`` reaches the
topic.

Every test isolates itself by topic and consumer-group prefix on the session's
broker, and reads topics with a group-less consumer (no rebalance to wait for).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers.app import ALL_STAGES, RETRY_RELAY, build_broker, start_broker
from handlers.runtime.inference import InferenceClient
from handlers.runtime.jobstate import JobState
from handlers.runtime.objectstore import LocalObjectStore
from handlers.runtime.settings import Settings
from handlers.sample import SampleFiles, make_sample
from infra.broker import BrokerServer
from infra.topics import ensure_topics
from schemas.events import (
    ChunkPlanned,
    DeadLetter,
    DubCompleted,
    DubFailed,
    EngineChoice,
    MediaSubmitted,
    RetryScheduled,
    SubtitlesRef,
)
from schemas.serialization import decode_event, encode_event
from schemas.status import StatusCode
from schemas.topics import (
    CHUNK_PLANNED,
    DEAD_LETTER,
    DUB_COMPLETED,
    DUB_FAILED,
    MEDIA_SUBMITTED,
    RETRY,
    topic_name,
)
from tests.fixtures.faults import FlakyInference

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
#: Tansu holds a group's first join for half the session timeout: keep it short.
SESSION_TIMEOUT_MS = 3000
#: Engines skipped but TTS: the failure paths only need the stage that fails.
TTS_ONLY = EngineChoice(tts="espeak", vc="none", lipsync="none")
JOB_TIMEOUT_S = 90.0
#: How long to keep reading after the outcome, to catch a duplicate.
QUIET_S = 3.0
#: How long the first worker sits in the slow stage before SIGKILL: longer than
#: aiokafka's auto-commit interval (5 s), so a consumer that committed on receipt
#: (auto-commit, ``ACK_FIRST``) would lose the event and fail the test.
KILL_AFTER_S = 6.0


# --- helpers ------------------------------------------------------------------------


def _settings(broker: BrokerServer, root: Path, **overrides: Any) -> Settings:
    """Settings of one test: its own topics, groups and store on the session's broker."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    values: dict[str, Any] = {
        "bootstrap_servers": broker.bootstrap_servers,
        "topic_prefix": prefix,
        "consumer_group_prefix": f"{prefix}polydub",
        "object_store": "local",
        "local_store_dir": root / "store",
        "inference": "local",
        "consumer_session_timeout_ms": SESSION_TIMEOUT_MS,
        "trace_file": root / "traces.jsonl",
        "retry_max_attempts": 4,
        "retry_backoff_s": 0.2,
        "retry_backoff_max_s": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


def _submission(sample: SampleFiles, engines: EngineChoice) -> MediaSubmitted:
    return MediaSubmitted(
        job_id=f"delivery-{uuid.uuid4().hex[:10]}",
        source_uri=sample.video.resolve().as_uri(),
        target_lang="ko",
        subtitles=SubtitlesRef(uri=sample.subtitles.resolve().as_uri(), format="srt"),
        engines=engines,
    )


class TopicReader:
    """Reads whole topics from the beginning without a consumer group, decoding every event."""

    def __init__(self, settings: Settings, topics: Iterable[str]) -> None:
        self.settings = settings
        self.topics = [topic_name(t, settings.topic_prefix) for t in topics]
        self.events: list[Any] = []
        self.records: list[Any] = []
        self._consumer: Any = None

    async def start(self) -> TopicReader:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.bootstrap_servers,
                                          enable_auto_commit=False)
        await self._consumer.start()
        partitions = []
        for topic in self.topics:
            ids = self._consumer.partitions_for_topic(topic)
            deadline = time.monotonic() + 10
            while not ids and time.monotonic() < deadline:
                await self._consumer.topics()  # refreshes the metadata: topics just created
                ids = self._consumer.partitions_for_topic(topic)
            assert ids, f"topic {topic} does not exist"
            partitions += [TopicPartition(topic, p) for p in sorted(ids)]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        return self

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def poll(self, timeout_s: float = 0.2) -> None:
        batches = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000))
        for records in batches.values():
            for record in records:
                self.records.append(record)
                self.events.append(decode_event(record.value))

    async def until(self, done: Callable[[list[Any]], bool], timeout_s: float = JOB_TIMEOUT_S) -> list[Any]:
        """Read until ``done(events)``; fails the test with what was seen on timeout."""
        deadline = time.monotonic() + timeout_s
        while not done(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events seen: {[type(e).__name__ for e in self.events]}")
            await self.poll()
        return self.events

    async def settle(self, seconds: float = QUIET_S) -> list[Any]:
        """Keep reading a little longer, so a duplicate would show up."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.poll()
        return self.events

    def of(self, model: type, job_id: str | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, model) and (job_id is None or e.job_id == job_id)]


@asynccontextmanager
async def reading(settings: Settings, topics: Iterable[str]) -> AsyncIterator[TopicReader]:
    reader = await TopicReader(settings, topics).start()
    try:
        yield reader
    finally:
        await reader.stop()


@asynccontextmanager
async def running(settings: Settings, stages: Iterable[str],
                  inference: InferenceClient | None = None) -> AsyncIterator[Any]:
    """The stages' subscribers in this process, over the real broker, until the block ends."""
    broker, deps = build_broker(settings, tuple(stages), service_name="test-delivery", inference=inference)
    async with broker:
        await start_broker(broker)
        yield deps
    await deps.inference.close()


async def _run_job(settings: Settings, inference: InferenceClient, submitted: MediaSubmitted) -> TopicReader:
    """Every stage and the relay in process; submit, read outcomes and retries until the job ends."""
    await ensure_topics(settings.bootstrap_servers, settings.topic_prefix)
    async with reading(settings, [DUB_COMPLETED, DUB_FAILED, RETRY]) as reader, \
            running(settings, ALL_STAGES + (RETRY_RELAY,), inference) as deps:
        await deps.publisher.publish(submitted)
        await reader.until(_ended(submitted.job_id))
        await reader.settle()
    return reader


def _ended(job_id: str) -> Callable[[list[Any]], bool]:
    return lambda events: any(isinstance(e, DubCompleted | DubFailed) and e.job_id == job_id for e in events)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    """The 6 s Korean-subtitled sample video (one chunk at the default chunk length)."""
    return make_sample(tmp_path_factory.mktemp("sample") / "sample.mp4", target_lang="ko", seconds=6)


# --- in process ---------------------------------------------------------------------------


async def test_malformed_event_lands_in_dead_letter_and_is_committed(broker: BrokerServer, tmp_path: Path) -> None:
    settings = _settings(broker, tmp_path)
    await ensure_topics(settings.bootstrap_servers, settings.topic_prefix)
    raw = b'{"event_type": "chunk.planned", "job_id": "delivery-bad", "chunk_index": "first"}'

    async with reading(settings, [DEAD_LETTER]) as reader, running(settings, ["synthesis"]) as deps:
        await deps.publisher.publish_raw(CHUNK_PLANNED, raw, "delivery-bad", 0)
        await reader.until(lambda events: len(events) >= 1, timeout_s=30)
        await reader.settle()

    (letter,) = reader.of(DeadLetter)
    assert letter.raw_payload == raw.decode() and letter.payload_encoding == "utf-8"
    assert letter.job_id == "delivery-bad"
    assert letter.source_topic == CHUNK_PLANNED
    assert "chunk_index" in letter.error
    assert letter.partition is not None and letter.offset is not None
    # Committed past the bad message: the group will not read it again.
    group = f"{settings.consumer_group_prefix}.synthesis"
    topic = topic_name(CHUNK_PLANNED, settings.topic_prefix)
    assert await _committed(settings, group, topic, letter.partition) == letter.offset + 1


async def _committed(settings: Settings, group: str, topic: str, partition: int) -> int | None:
    """The group's committed offset of one partition (a group consumer that never joins)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, partition))
    finally:
        await consumer.stop()


async def test_tts_failing_twice_completes_through_the_retry_topic(
    broker: BrokerServer, sample: SampleFiles, tmp_path: Path
) -> None:
    settings = _settings(broker, tmp_path, retry_max_attempts=4)
    inference = FlakyInference("tts_espeak", fail_first=2)
    submitted = _submission(sample, TTS_ONLY)

    reader = await _run_job(settings, inference, submitted)

    assert len(reader.of(DubCompleted, submitted.job_id)) == 1
    assert reader.of(DubFailed, submitted.job_id) == []
    retries = reader.of(RetryScheduled, submitted.job_id)
    assert [r.attempt for r in retries] == [1, 2]
    assert all(r.target_topic == CHUNK_PLANNED and "injected failure" in r.reason for r in retries)
    assert inference.calls["tts_espeak"] == 3


async def test_tts_always_failing_ends_with_one_inference_failed(
    broker: BrokerServer, sample: SampleFiles, tmp_path: Path
) -> None:
    settings = _settings(broker, tmp_path, retry_max_attempts=3)
    inference = FlakyInference("tts_espeak", always=True)
    submitted = _submission(sample, TTS_ONLY)

    reader = await _run_job(settings, inference, submitted)

    (failed,) = reader.of(DubFailed, submitted.job_id)
    assert failed.status is StatusCode.INFERENCE_FAILED
    assert failed.stage == "synthesis"
    assert "(gave up after 3 attempts," in failed.reason
    assert reader.of(DubCompleted, submitted.job_id) == []
    assert [r.attempt for r in reader.of(RetryScheduled, submitted.job_id)] == [1, 2]
    assert inference.calls["tts_espeak"] == 3
    marker = JobState(LocalObjectStore(settings.local_store_dir), submitted.job_id).read_json("state/failed")
    assert marker["code"] == int(StatusCode.INFERENCE_FAILED)


# --- the retry relay: each retry waits for its own backoff ------------------------------------

#: Backoff of the long retry: the relay must have joined its group and republished the
#: short one, and a second relay must have joined again, well before it is due.
LONG_RETRY_S = 12.0


def _retry_of(event: ChunkPlanned, due_in_s: float) -> RetryScheduled:
    return RetryScheduled(job_id=event.job_id, status=event.status, target_topic=CHUNK_PLANNED,
                          not_before=datetime.now(UTC) + timedelta(seconds=due_in_s), attempt=1,
                          reason="injected", event=event.model_dump(mode="json"))


def _relay_timers() -> list[asyncio.Task[Any]]:
    """The relay's pending timers in this process (``RetryScheduler`` names them ``retry ...``)."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("retry ") and not t.done()]


async def test_a_short_retry_overtakes_a_long_one_and_commits_stop_at_the_long_one(
    broker: BrokerServer, tmp_path: Path
) -> None:
    settings = _settings(broker, tmp_path)
    await ensure_topics(settings.bootstrap_servers, settings.topic_prefix)
    job = f"delivery-{uuid.uuid4().hex[:8]}"
    chunk = {"job_id": job, "n_chunks": 2, "manifest_uri": f"file:///x/jobs/{job}/manifest.json",
             "segment_indices": [0]}
    slow = ChunkPlanned(chunk_index=0, start_s=0.0, end_s=5.0, **chunk)
    fast = ChunkPlanned(chunk_index=1, start_s=5.0, end_s=10.0, **chunk)
    group = f"{settings.consumer_group_prefix}.{RETRY_RELAY}"
    retry_topic = topic_name(RETRY, settings.topic_prefix)

    async with reading(settings, [RETRY, CHUNK_PLANNED]) as reader:
        async with running(settings, [RETRY_RELAY]) as deps:
            long_retry = _retry_of(slow, LONG_RETRY_S)
            await deps.publisher.publish(long_retry)  # long first ...
            await deps.publisher.publish(_retry_of(fast, 0.5))  # ... short second, same job: one partition
            await reader.until(lambda events: len([e for e in events if isinstance(e, ChunkPlanned)]) >= 1,
                               timeout_s=LONG_RETRY_S / 2)
            retries = [r for r in reader.records if r.topic == retry_topic]
            assert len(retries) == 2 and retries[0].partition == retries[1].partition
            long_offset, partition = retries[0].offset, retries[0].partition
            assert [e.chunk_index for e in reader.of(ChunkPlanned)] == [fast.chunk_index]
            await reader.settle(1.0)  # give a wrong commit time to land
            committed = await _committed(settings, group, retry_topic, partition)
            assert committed is None or committed <= long_offset, "committed past a retry not yet republished"
            assert len(_relay_timers()) == 1  # the long one waits, in memory

        # Stopped before the long one was due: its timer is gone, uncommitted.
        assert _relay_timers() == []
        assert [e.chunk_index for e in reader.of(ChunkPlanned)] == [fast.chunk_index]
        committed = await _committed(settings, group, retry_topic, partition)
        assert committed is None or committed <= long_offset

        # The next relay of the group reads it again and republishes it when due.
        async with running(settings, [RETRY_RELAY]):
            await reader.until(lambda events: slow.chunk_index in
                               [e.chunk_index for e in events if isinstance(e, ChunkPlanned)],
                               timeout_s=LONG_RETRY_S * 2)
            deadline = time.monotonic() + 10
            while (committed := await _committed(settings, group, retry_topic, partition)) != long_offset + 2:
                assert time.monotonic() < deadline, f"committed offset stayed at {committed}"
                await asyncio.sleep(0.2)

    chunks = [e.chunk_index for e in reader.of(ChunkPlanned)]
    assert chunks[0] == fast.chunk_index and slow.chunk_index in chunks
    assert chunks.count(slow.chunk_index) == 1  # the dropped timer never fired
    (republished,) = [r for r in reader.records
                      if r.topic != retry_topic and decode_event(r.value).chunk_index == slow.chunk_index]
    assert republished.timestamp / 1000 >= long_retry.not_before.timestamp() - 0.05  # not before it was due


# --- a worker killed mid-chunk ----------------------------------------------------------------


class WorkerProcess:
    """``python -m tests.crash_worker`` with a settings environment; logs to a file."""

    def __init__(self, settings: Settings, run_dir: Path, name: str, **hooks: str) -> None:
        self.log = run_dir / f"{name}.log"
        self.ready = run_dir / f"{name}.ready"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "POLYDUB_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "POLYDUB_TOPIC_PREFIX": settings.topic_prefix,
            "POLYDUB_CONSUMER_GROUP_PREFIX": settings.consumer_group_prefix,
            "POLYDUB_OBJECT_STORE": "local",
            "POLYDUB_LOCAL_STORE_DIR": str(settings.local_store_dir),
            "POLYDUB_INFERENCE": "local",
            "POLYDUB_CONSUMER_SESSION_TIMEOUT_MS": str(settings.consumer_session_timeout_ms),
            "POLYDUB_TRACE_FILE": str(run_dir / "traces.jsonl"),
            "POLYDUB_LOG_FORMAT": "text",
            "POLYDUB_TEST_READY_FILE": str(self.ready),
            **hooks,
        }
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "tests.crash_worker"], cwd=REPO, env=env,
                                            stdout=log, stderr=subprocess.STDOUT)

    def wait_for(self, path: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker did not write {path.name} in {timeout_s}s:\n{self.tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no commit, no leaving the groups."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Every worker a test starts is stopped at its end, whatever happened."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


async def test_worker_killed_mid_chunk_leaves_a_job_another_worker_finishes(
    broker: BrokerServer, sample: SampleFiles, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    settings = _settings(broker, tmp_path)
    await ensure_topics(settings.bootstrap_servers, settings.topic_prefix)
    submitted = _submission(sample, EngineChoice())  # every engine: conversion is the slowed stage
    in_slow_stage = tmp_path / "in-slow-stage"

    first = WorkerProcess(settings, tmp_path, "worker-1", POLYDUB_TEST_SLOW_MODEL="vc_world",
                          POLYDUB_TEST_SLOW_SECONDS="600", POLYDUB_TEST_SLOW_MARKER=str(in_slow_stage))
    workers.append(first)
    first.wait_for(first.ready, 60)

    async with reading(settings, [DUB_COMPLETED, DUB_FAILED]) as reader:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(topic_name(MEDIA_SUBMITTED, settings.topic_prefix),
                                         encode_event(submitted), key=submitted.job_id.encode())
        finally:
            await producer.stop()

        await asyncio.to_thread(first.wait_for, in_slow_stage, 60)
        await asyncio.sleep(KILL_AFTER_S)  # an early or automatic commit would have happened by now
        first.kill()
        store = LocalObjectStore(settings.local_store_dir)
        assert not JobState(store, submitted.job_id).is_done("conversion", 0)

        second = WorkerProcess(settings, tmp_path, "worker-2")
        workers.append(second)
        try:
            await reader.until(_ended(submitted.job_id))
            await reader.settle()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker-2 log ---\n{second.tail()}") from None

    completed = reader.of(DubCompleted, submitted.job_id)
    assert len(completed) == 1, completed
    assert reader.of(DubFailed, submitted.job_id) == []
    assert completed[0].qc.passed
    state = JobState(store, submitted.job_id)
    assert state.is_done("conversion", 0) and state.is_marked("completed")
