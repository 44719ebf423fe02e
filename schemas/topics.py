"""Kafka topic names, one per event type, and the event each topic carries.

Events are keyed by ``job_id`` (per-chunk events by ``job_id/chunk_index``,
see :func:`partition_key`). Deployments that share a cluster prefix every name
(``POLYDUB_TOPIC_PREFIX``); :func:`topic_name` applies it.
"""

from __future__ import annotations

from typing import Final

MEDIA_SUBMITTED: Final = "media.submitted"
JOB_ACCEPTED: Final = "job.accepted"
CHUNK_PLANNED: Final = "chunk.planned"
CHUNK_SYNTHESIZED: Final = "chunk.synthesized"
CHUNK_CONVERTED: Final = "chunk.converted"
CHUNK_RENDERED: Final = "chunk.rendered"
JOB_MERGED: Final = "job.merged"
DUB_COMPLETED: Final = "dub.completed"
DUB_FAILED: Final = "dub.failed"
DUB_STATUS: Final = "dub.status"
RETRY: Final = "dub.retry"
DEAD_LETTER: Final = "dub.dead-letter"

ALL_TOPICS: Final[tuple[str, ...]] = (
    MEDIA_SUBMITTED,
    JOB_ACCEPTED,
    CHUNK_PLANNED,
    CHUNK_SYNTHESIZED,
    CHUNK_CONVERTED,
    CHUNK_RENDERED,
    JOB_MERGED,
    DUB_COMPLETED,
    DUB_FAILED,
    DUB_STATUS,
    RETRY,
    DEAD_LETTER,
)


# The topic each event type is published to (most share their event's name).
TOPIC_OF_EVENT: Final[dict[str, str]] = {
    **{topic: topic for topic in ALL_TOPICS if topic not in (RETRY, DEAD_LETTER)},
    "retry.scheduled": RETRY,
    "dead.letter": DEAD_LETTER,
}


def partition_key(job_id: str | None, chunk_index: int | None = None) -> str | None:
    """The Kafka key of an event: the job, or the job's chunk for per-chunk events.

    Job-level events (``dub.status``, ``dub.completed``...) are keyed by
    ``job_id``, so one job's progress and outcome stay ordered in one
    partition. Per-chunk events are keyed by ``{job_id}/{chunk_index}``: one
    chunk's events stay ordered, while a job's chunks spread over partitions
    and so over the workers of a stage; keyed by job alone, every chunk of a
    long video would queue behind one consumer.
    """
    if job_id is None:
        return None
    return job_id if chunk_index is None else f"{job_id}/{chunk_index}"


#: Topics with one event per chunk of a job: the only ones keyed per chunk.
PER_CHUNK_TOPICS: Final[frozenset[str]] = frozenset({CHUNK_PLANNED, CHUNK_SYNTHESIZED, CHUNK_CONVERTED, CHUNK_RENDERED})


def event_key(topic: str, job_id: str | None, chunk_index: int | None = None) -> str | None:
    """The key an event is published with on ``topic``: per chunk on the chunk topics, else the job.

    Job-level topics carry some events that name a chunk (a chunk's ``dub.status``,
    the ``dub.failed`` of the chunk that failed); they stay keyed by the job, so a
    follower reading the job's one partition of each topic sees every one of them.
    """
    return partition_key(job_id, chunk_index if topic in PER_CHUNK_TOPICS else None)


def topic_name(topic: str, prefix: str = "") -> str:
    """The physical topic for a logical one, with the deployment's prefix."""
    if topic not in ALL_TOPICS:
        raise ValueError(f"unknown topic {topic!r}; known topics: {', '.join(ALL_TOPICS)}")
    return f"{prefix}{topic}"
