"""Kafka topic names, one per event type, and the event each topic carries.

Every event is keyed by ``job_id`` so one job's events stay ordered within a
partition. Deployments that share a cluster prefix every name
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


def topic_name(topic: str, prefix: str = "") -> str:
    """The physical topic for a logical one, with the deployment's prefix."""
    if topic not in ALL_TOPICS:
        raise ValueError(f"unknown topic {topic!r}; known topics: {', '.join(ALL_TOPICS)}")
    return f"{prefix}{topic}"
