"""The retry relay: every retry republished to its stage's topic at its own ``not_before``.

A retryable failure does not block its partition: :func:`handlers.runtime.bus.process_event`
publishes the event to ``dub.retry`` with the next attempt number and a due
time, and this relay republishes it when due. Each retry waits on its own
timer (:class:`RetryScheduler`), so a long backoff never holds up a short one,
and offsets are committed only up to the lowest retry still waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from aiokafka import ConsumerRebalanceListener
from aiokafka.structs import OffsetAndMetadata, TopicPartition

from handlers.runtime.bus import REDELIVERY_PAUSE_S, Outcome, Publisher, Source, dead_letter
from handlers.runtime.settings import Settings
from schemas.events import RetryScheduled
from schemas.serialization import EventDecodeError, decode_event
from schemas.topics import DEAD_LETTER, RETRY, TOPIC_OF_EVENT, event_key, topic_name

log = logging.getLogger(__name__)


async def relay_retry(raw: bytes, publisher: Publisher, source: Source) -> Outcome:
    """Wait until a retry is due, then republish its event to the stage's topic.

    One retry's whole life in the relay; :class:`RetryScheduler` runs one of
    these per message, so each waits for its own ``not_before`` only.
    """
    try:
        retry = decode_event(raw, RetryScheduled)
    except EventDecodeError as exc:
        await publisher.publish(dead_letter(raw, str(exc), source))
        return Outcome.DEAD_LETTERED
    if retry.target_topic not in TOPIC_OF_EVENT.values() or retry.target_topic in (RETRY, DEAD_LETTER):
        # Republishing would fail on every redelivery and block the partition.
        error = f"cannot republish a retry to target_topic {retry.target_topic!r}: no stage consumes it"
        await publisher.publish(dead_letter(raw, error, source))
        return Outcome.DEAD_LETTERED
    delay = (retry.not_before - datetime.now(UTC)).total_seconds()
    if delay > 0:
        await asyncio.sleep(delay)
    await publisher.publish_raw(
        retry.target_topic,
        orjson.dumps(retry.event),
        event_key(retry.target_topic, retry.job_id, retry.event.get("chunk_index")),
        retry.attempt,
    )
    return Outcome.DONE

class RetryConsumer(Protocol):
    """What the scheduler needs of the consumer that read a retry (``AIOKafkaConsumer`` has it)."""

    def assignment(self) -> set[TopicPartition]: ...

    async def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> Any: ...

Relay = Callable[[bytes, Publisher, Source], Awaitable[Outcome]]

@dataclass(eq=False)
class _PartitionTimers:
    """One partition's retries in memory: which offsets still wait, how far it may be committed."""

    timers: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    #: Highest offset whose retry has been republished (or dead-lettered).
    finished: int = -1
    #: Next offset already committed (Kafka's convention: last processed + 1).
    committed: int = 0
    #: Set when the partition was revoked or the relay stopped: its timers no longer commit.
    dropped: bool = False

    def frontier(self) -> int:
        """The offset that may be committed: the lowest unfinished retry, or past the last finished."""
        return min(self.timers) if self.timers else self.finished + 1

class RetryScheduler(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs every retry on its own timer, so a long backoff does not hold up a short one.

    FastStream hands a subscriber one message at a time; sleeping in the
    handler would make every retry behind a 30 s backoff wait those 30 s too.
    Instead :meth:`submit` starts a task per retry (``relay_retry``: wait for
    its ``not_before``, republish) and returns at once.

    At-least-once: a partition is committed, with explicit offsets, only up to
    its lowest retry not yet republished, so a crash loses nothing that was
    not republished, and a retry republished out of order is at worst
    republished again after a restart (idempotent downstream). At most
    ``max_pending`` retries wait in memory: at the bound :meth:`submit` waits
    for one to finish, which stops the consumer reading further (backpressure).
    On revocation (:meth:`on_partitions_revoked`, as aiokafka's rebalance
    listener) or shutdown (:meth:`drop_all`) pending timers are cancelled
    uncommitted; the partition's next owner reads them again.
    """

    def __init__(self, publisher: Publisher, max_pending: int, relay: Relay = relay_retry,
                 pause_after_failure_s: float = REDELIVERY_PAUSE_S) -> None:
        self._publisher = publisher
        self._relay = relay
        self._pause_s = pause_after_failure_s
        self._slots = asyncio.Semaphore(max_pending)
        self._partitions: dict[TopicPartition, _PartitionTimers] = {}
        self._commit_lock = asyncio.Lock()
        self._commits: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    @property
    def pending(self) -> int:
        """Retries waiting in memory (their offsets are not committed)."""
        return sum(len(p.timers) for p in self._partitions.values())

    async def submit(self, raw: bytes, tp: TopicPartition, offset: int, consumer: RetryConsumer) -> None:
        """Schedule the retry at ``offset`` of ``tp``; waits only while ``max_pending`` are waiting."""
        await self._slots.acquire()
        if tp not in consumer.assignment():
            # Revoked while this message waited for a slot: its next owner reads it again.
            self._slots.release()
            return
        partition = self._partitions.setdefault(tp, _PartitionTimers())
        source = Source(RETRY, tp.partition, offset)
        timer = asyncio.create_task(self._run(raw, source), name=f"retry {tp.topic}[{tp.partition}]@{offset}")
        partition.timers[offset] = timer
        timer.add_done_callback(lambda task: self._finished(task, tp, partition, offset, consumer))

    async def _run(self, raw: bytes, source: Source) -> None:
        """One retry until it is republished; a failed publish is tried again, the offset stays pending."""
        while True:
            try:
                await self._relay(raw, self._publisher, source)
                return
            except Exception:
                log.exception("could not republish a retry; trying again",
                              extra={"partition": source.partition, "offset": source.offset})
                await asyncio.sleep(self._pause_s)

    def _finished(self, task: asyncio.Task[None], tp: TopicPartition, partition: _PartitionTimers,
                  offset: int, consumer: RetryConsumer) -> None:
        self._slots.release()
        if partition.dropped or task.cancelled():
            return
        del partition.timers[offset]
        partition.finished = max(partition.finished, offset)
        commit = asyncio.create_task(self._commit(tp, partition, consumer), name=f"commit {tp}")
        self._commits.add(commit)
        commit.add_done_callback(self._commits.discard)
        commit.add_done_callback(_log_commit_failure)

    async def _commit(self, tp: TopicPartition, partition: _PartitionTimers, consumer: RetryConsumer) -> None:
        """Commit ``tp`` up to its frontier; serialised, so the committed offset never goes back."""
        async with self._commit_lock:
            offset = partition.frontier()
            if partition.dropped or offset <= partition.committed:
                return
            await consumer.commit({tp: OffsetAndMetadata(offset, "")})
            partition.committed = offset

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        """Cancel the timers of ``partitions``, uncommitted: whoever owns them next reads them again."""
        for tp in partitions:
            partition = self._partitions.pop(tp, None)
            if partition is None:
                continue
            partition.dropped = True
            for timer in partition.timers.values():
                timer.cancel()
            if partition.timers:
                log.info("dropped pending retries uncommitted; they will be read again",
                         extra={"topic": tp.topic, "partition": tp.partition, "retries": len(partition.timers)})

    def drop_all(self) -> None:
        """Shutdown: every pending timer is cancelled uncommitted."""
        self.drop(list(self._partitions))

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """aiokafka's rebalance callback: the partitions are someone else's from now on."""
        self.drop(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Nothing to do: an assigned partition is read from its committed offset."""

def _log_commit_failure(task: asyncio.Task[None]) -> None:
    """A failed commit loses nothing (the next one covers it, or the retries are read again)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("could not commit republished retries; a later commit or a redelivery covers them",
                    extra={"error": f"{type(exc).__name__}: {exc}"})

def register_retry_relay(broker: Any, settings: Settings, publisher: Publisher) -> RetryScheduler:
    """The ``dub.retry`` consumer: each retry on its own timer (:class:`RetryScheduler`).

    The handler only schedules, so it returns at once and the next retry is
    read while earlier ones still wait; offsets are committed by the scheduler
    (explicit offsets, never ``msg.ack()``, which would commit everything
    fetched, waiting retries included).
    """
    from faststream import AckPolicy
    from faststream.kafka.annotations import KafkaMessage

    scheduler = RetryScheduler(publisher, settings.retry_relay_max_pending)
    linked: set[asyncio.Task[Any]] = set()

    def on_consume_loop_done(task: asyncio.Task[Any]) -> None:
        linked.discard(task)
        if task.cancelled():  # the subscriber was stopped; a crashed loop is restarted on the same consumer
            scheduler.drop_all()

    async def relay(msg: KafkaMessage) -> None:
        # FastStream calls the handler inside the subscriber's consume loop, which
        # ``stop()`` cancels: that is when this relay's timers must go.
        loop_task = asyncio.current_task()
        if loop_task is not None and loop_task not in linked:
            linked.add(loop_task)
            loop_task.add_done_callback(on_consume_loop_done)
        record = msg.raw_message
        tp = TopicPartition(record.topic, record.partition)
        await scheduler.submit(msg.body, tp, record.offset, msg.consumer)

    relay.__annotations__["msg"] = KafkaMessage
    broker.subscriber(
        topic_name(RETRY, settings.topic_prefix),
        group_id=f"{settings.consumer_group_prefix}.retry",
        ack_policy=AckPolicy.MANUAL,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=settings.consumer_session_timeout_ms // 4,
        auto_offset_reset="earliest",
        listener=scheduler,
        title="retry",
        description="Republishes each retry when its own backoff has elapsed.",
    )(relay)
    return scheduler
