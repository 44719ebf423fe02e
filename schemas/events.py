"""Every event of the polydub pipeline, as strict pydantic models.

Events are small: they carry URIs into the object store, never media. Each
shares the :class:`Envelope` fields; ``event_type`` is the discriminator, so
:func:`schemas.serialization.decode_event` can parse any of them. Models forbid
unknown fields and coerce nothing (``strict``), so a producer's typo fails
loudly at the consumer with the field's name instead of being dropped.

Bump :data:`SCHEMA_VERSION` on any incompatible change and regenerate
``schemas/events/*.json`` (``make schemas``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.registry import DEFAULT_ENGINES, STAGE_NAMES, engine_names
from schemas.status import StatusCode

SCHEMA_VERSION = 1

Language = Literal["ko", "en", "ja", "zh"]
SUPPORTED_LANGUAGES: tuple[str, ...] = ("ko", "en", "ja", "zh")
# Derived from the registry, so the contract, the CLI and the stages agree by construction.
TtsEngine = Literal[engine_names("tts")]  # type: ignore[valid-type]
VcEngine = Literal[engine_names("vc")]  # type: ignore[valid-type]
LipsyncEngine = Literal[engine_names("lipsync")]  # type: ignore[valid-type]
Stage = Literal[STAGE_NAMES]  # type: ignore[valid-type]

JobId = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="Job id and idempotency key: letters, digits, '.', '_', '-'; at most 128.",
    ),
]
Uri = Annotated[
    str,
    Field(
        min_length=1,
        pattern=r"^(s3|file|https?)://",
        description="Where an object lives: s3://bucket/key, file:///path or http(s)://.",
    ),
]
Seconds = Annotated[float, Field(ge=0.0, description="A time in seconds.")]


def _now() -> datetime:
    return datetime.now(UTC)


def _event_id() -> str:
    return str(uuid.uuid4())


class _Model(BaseModel):
    """Strict, closed, immutable: the contract rejects what it does not know."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Envelope(_Model):
    """Fields every event carries. The W3C ``traceparent`` rides in Kafka headers."""

    event_id: str = Field(default_factory=_event_id, description="Unique id of this event (uuid4).")
    event_type: str = Field(description="The event's name; equals its topic's logical name.")
    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Version of this contract.")
    job_id: JobId
    occurred_at: datetime = Field(
        default_factory=_now, description="When the producer emitted it (UTC, ISO 8601)."
    )
    status: StatusCode = Field(description="The job's status code after this event.")


# --- payload parts -------------------------------------------------------------


class SubtitleSegment(_Model):
    """One timed line of target-language text."""

    start_s: Seconds
    end_s: Seconds
    text: str = Field(min_length=1, description="What the dub says in this slot.")
    speaker: str | None = Field(None, description="Speaker label; segments of one label share a voice.")

    @model_validator(mode="after")
    def _positive_span(self) -> SubtitleSegment:
        if self.end_s <= self.start_s:
            raise ValueError(
                f"segment ends at {self.end_s}s, not after its start {self.start_s}s; "
                "give each segment a positive duration"
            )
        return self


class SubtitlesRef(_Model):
    """Target-language subtitles: a file in the object store or inline segments."""

    uri: Uri | None = Field(None, description="An SRT or WebVTT file.")
    format: Literal["srt", "vtt"] | None = Field(None, description="Format of `uri`; guessed if unset.")
    segments: list[SubtitleSegment] | None = Field(None, description="Inline segments instead of a file.")

    @model_validator(mode="after")
    def _exactly_one(self) -> SubtitlesRef:
        if (self.uri is None) == (self.segments is None):
            raise ValueError("subtitles need exactly one of `uri` or `segments`")
        if self.segments is not None and not self.segments:
            raise ValueError("subtitles.segments is empty; give at least one segment")
        return self


class EngineChoice(_Model):
    """Which model does each stage; `none` skips that stage."""

    tts: TtsEngine = Field(DEFAULT_ENGINES["tts"], description="Text to speech.")
    vc: VcEngine = Field(DEFAULT_ENGINES["vc"], description="Voice conversion toward the source speaker.")
    lipsync: LipsyncEngine = Field(DEFAULT_ENGINES["lipsync"], description="Lip re-sync of the video.")


VoiceName = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._()+-]{0,127}$",
        description="A voice of the deployment's RVC voices directory: the name of its `.pth` file without "
        "the suffix.",
    ),
]
#: The ``voices`` key that gives every speaker without an entry of its own a voice.
ANY_SPEAKER = "*"


class SpeakerVoice(_Model):
    """The RVC voice one speaker is converted to (``vc`` engine ``rvc``)."""

    voice: VoiceName
    pitch_shift: float | None = Field(
        None, ge=-24.0, le=24.0,
        description="Semitones to shift the dub's pitch by; absent: the shift that moves it to the speaker's "
        "register, measured on their reference clip.",
    )


class SegmentFit(_Model):
    """How one dubbed segment was fitted into its subtitle slot."""

    segment_index: int = Field(ge=0)
    slot_start_s: Seconds
    slot_end_s: Seconds
    speech_s: Seconds = Field(description="Length of the speech laid on the track from the slot's start (it may "
                              "run past the slot's end into the silence before the next segment).")
    speedup: float = Field(gt=0, description="Speed-up against the natural reading, rate and time-stretch "
                           "together; >1 is faster, never above POLYDUB_MAX_SPEEDUP.")
    cut_s: Seconds = Field(0.0, description="Speech that did not fit even at the speed-up bound and the silence "
                           "after the slot: cut, faded, at the next segment's start (QC fails the timing gate).")


class QCSummary(_Model):
    """The QC verdict as downstream apps see it; the full report is at `report_uri`."""

    passed: bool
    failed_checks: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    report_uri: Uri | None = None


# --- events --------------------------------------------------------------------


class MediaSubmitted(Envelope):
    """An upstream system asks for a dub. ``job_id`` is also the idempotency key."""

    event_type: Literal["media.submitted"] = "media.submitted"
    status: StatusCode = StatusCode.RECEIVED
    source_uri: Uri = Field(description="The video to dub.")
    target_lang: Language
    source_lang: Language | None = Field(None, description="Spoken language of the source, if known.")
    subtitles: SubtitlesRef
    speaker_references: dict[str, Uri] = Field(
        default_factory=dict,
        description="Reference audio per speaker label; extracted from the source when absent.",
    )
    engines: EngineChoice = Field(default_factory=EngineChoice)
    voices: dict[str, SpeakerVoice] = Field(
        default_factory=dict,
        description="RVC voice per speaker label, for `engines.vc` = `rvc`; the key `*` covers every speaker "
        "not named. Speakers left out use the deployment's default voice (POLYDUB_RVC_DEFAULT_VOICE).",
    )
    output_prefix: Uri | None = Field(
        None, description="Where to deliver outputs; defaults to the job's folder in the store."
    )


class JobAccepted(Envelope):
    """Ingest validated the inputs and wrote the job manifest."""

    event_type: Literal["job.accepted"] = "job.accepted"
    status: StatusCode = StatusCode.INGESTED
    manifest_uri: Uri
    source_uri: Uri = Field(description="The source as copied into the object store.")
    duration_s: Seconds
    n_segments: int = Field(ge=1)
    target_lang: Language
    engines: EngineChoice


class _ChunkEvent(Envelope):
    chunk_index: int = Field(ge=0)
    n_chunks: int = Field(ge=1)

    @model_validator(mode="after")
    def _index_in_range(self) -> _ChunkEvent:
        if self.chunk_index >= self.n_chunks:
            raise ValueError(f"chunk_index {self.chunk_index} is not below n_chunks {self.n_chunks}")
        return self


class ChunkPlanned(_ChunkEvent):
    """One window of the timeline, ready for synthesis."""

    event_type: Literal["chunk.planned"] = "chunk.planned"
    status: StatusCode = StatusCode.CHUNKED
    manifest_uri: Uri
    start_s: Seconds = Field(description="Window start, including shared context.")
    end_s: Seconds = Field(description="Window end, including shared context.")
    segment_indices: list[int] = Field(description="Subtitle segments this chunk dubs.")


class ChunkSynthesized(_ChunkEvent):
    """Target-language speech for the chunk's window."""

    event_type: Literal["chunk.synthesized"] = "chunk.synthesized"
    status: StatusCode = StatusCode.SYNTHESIZED
    audio_uri: Uri
    engine: TtsEngine
    segment_fits: list[SegmentFit] = Field(default_factory=list)


class ChunkConverted(_ChunkEvent):
    """The chunk's speech in the source speaker's voice."""

    event_type: Literal["chunk.converted"] = "chunk.converted"
    status: StatusCode = StatusCode.CONVERTED
    audio_uri: Uri
    engine: VcEngine


class ChunkRendered(_ChunkEvent):
    """The chunk's final audio and, when lip-synced, its frames."""

    event_type: Literal["chunk.rendered"] = "chunk.rendered"
    status: StatusCode = StatusCode.LIP_SYNCED
    audio_uri: Uri
    video_uri: Uri | None = Field(None, description="Re-synced frames; unset when lip-sync is off.")
    engine: LipsyncEngine


class JobMerged(Envelope):
    """All chunks joined; the output video exists and awaits QC."""

    event_type: Literal["job.merged"] = "job.merged"
    status: StatusCode = StatusCode.MERGED
    output_video_uri: Uri
    dub_audio_uri: Uri = Field(description="The dub voice alone on the job's timeline (pipeline rate).")
    unconverted_dub_uri: Uri | None = Field(
        None, description="The same before voice conversion; unset when conversion changed nothing."
    )
    mix_uri: Uri = Field(description="The delivered soundtrack: the dub over the ducked original.")
    subtitles_uri: Uri
    duration_s: Seconds


class DubCompleted(Envelope):
    """The dub passed QC and is delivered."""

    event_type: Literal["dub.completed"] = "dub.completed"
    status: StatusCode = StatusCode.COMPLETED
    output_video_uri: Uri
    dub_audio_uri: Uri
    subtitles_uri: Uri
    qc: QCSummary
    stage_timings_s: dict[str, float] = Field(
        default_factory=dict, description="Wall time spent per stage, summed over chunks."
    )
    engine_versions: dict[str, str] = Field(
        default_factory=dict, description="Engine or model (and checkpoint) used per stage."
    )


class DubFailed(Envelope):
    """The job ended without a deliverable; `status` is the failure code."""

    event_type: Literal["dub.failed"] = "dub.failed"
    status: StatusCode
    stage: Stage
    reason: str = Field(min_length=1, description="What went wrong, for a person.")
    fix: str | None = Field(None, description="What to do about it.")
    chunk_index: int | None = None
    failed_checks: list[str] = Field(default_factory=list, description="QC checks that failed.")
    qc: QCSummary | None = None
    candidate_video_uri: Uri | None = Field(
        None, description="When QC failed: the dubbed video it judged, kept so a person can see and hear what "
                          "failed (never delivered as the job's output).")
    candidate_subtitles_uri: Uri | None = Field(
        None, description="When QC failed: the target-language subtitles that went with the candidate video.")

    @model_validator(mode="after")
    def _is_failure(self) -> DubFailed:
        if not self.status.is_failure:
            raise ValueError(f"dub.failed needs a failure status code, got {self.status.name}")
        return self


class DubStatus(Envelope):
    """Progress of a job, emitted by every stage.

    Job-level stages report the whole stage; per-chunk stages report one chunk
    (``chunk_index``) without counting the others (counting would mean reading
    every chunk's state on every chunk event). A follower that reads all of a
    job's statuses (they share its partition) counts the chunks itself.
    """

    event_type: Literal["dub.status"] = "dub.status"
    stage: Stage
    chunk_index: int | None = Field(None, ge=0, description="The chunk this status reports (per-chunk stages).")
    chunks_done: int | None = Field(
        None, ge=0, description="Chunks through `stage`, when the emitter knows (job-level stages)."
    )
    chunks_total: int = Field(0, ge=0, description="Chunks of the job (0 before chunking).")
    progress: float = Field(
        ge=0.0, le=1.0,
        description="Whole-job progress, 0 to 1, as far as this event proves it (a lower bound for "
        "per-chunk statuses).",
    )
    message: str | None = None


class RetryScheduled(Envelope):
    """A stage's event to redeliver after a backoff (the retry topic)."""

    event_type: Literal["retry.scheduled"] = "retry.scheduled"
    target_topic: str = Field(description="Logical topic to republish the event to.")
    not_before: datetime = Field(description="Earliest redelivery time (UTC).")
    attempt: int = Field(ge=1)
    reason: str
    event: dict[str, Any] = Field(description="The event to redeliver, as JSON.")


class DeadLetter(_Model):
    """An event no handler could parse or process, kept with its error.

    Not an :class:`Envelope`: a payload that did not parse may have no job.
    """

    event_id: str = Field(default_factory=_event_id)
    event_type: Literal["dead.letter"] = "dead.letter"
    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: str | None = None
    occurred_at: datetime = Field(default_factory=_now)
    status: StatusCode = StatusCode.INTERNAL_ERROR
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    original_key: str | None = Field(
        None, description="Kafka key of the original record (UTF-8); the dead letter is published with it.")
    original_headers: dict[str, str] = Field(
        default_factory=dict, description="Headers of the original record (`traceparent`, ...), kept as they were.")
    error: str = Field(min_length=1)
    raw_payload: str = Field(description="The payload as received (UTF-8, or base64 if binary).")
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"


EVENT_MODELS: tuple[type[_Model], ...] = (
    MediaSubmitted,
    JobAccepted,
    ChunkPlanned,
    ChunkSynthesized,
    ChunkConverted,
    ChunkRendered,
    JobMerged,
    DubCompleted,
    DubFailed,
    DubStatus,
    RetryScheduled,
    DeadLetter,
)

Event = Annotated[
    MediaSubmitted
    | JobAccepted
    | ChunkPlanned
    | ChunkSynthesized
    | ChunkConverted
    | ChunkRendered
    | JobMerged
    | DubCompleted
    | DubFailed
    | DubStatus
    | RetryScheduled
    | DeadLetter,
    Field(discriminator="event_type"),
]


def event_type_of(model: type[_Model]) -> str:
    """The ``event_type`` literal a model carries."""
    return str(model.model_fields["event_type"].default)
