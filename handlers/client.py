"""The user's side of a deployment: ``polydub submit``, ``polydub status``, ``polydub watch``.

These commands talk to a running cluster (workers started with ``polydub
worker``) through the same two things the workers share, never through a
worker: the object store and the Kafka topics.

* **submit** validates the inputs on this machine first (a bad file fails in
  a second with the reason, not in a worker's log), uploads the video and the
  subtitles under ``uploads/{job_id}/``, and publishes ``media.submitted``
  inside a root span ``job``, so every stage's span joins one trace.
* **status** reads the job's state from the object store only (manifest,
  plan, chunk rows, ``_done`` markers, job markers, outputs): it works for a
  job finished last week, with no broker and no worker running.
* **watch** follows ``dub.status``/``dub.completed``/``dub.failed``. It reads
  with a plain consumer outside any consumer group: a watcher must neither
  take partitions from anyone nor wait for a group join, and it commits
  nothing. Watching one job reads only the partition its key hashes to, from
  the start of the topic's retention, so a job that finished before the
  watch began still prints its history and ends at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from handlers.progress import JobProgress
from handlers.runtime import keys
from handlers.runtime.logs import bind_job
from handlers.runtime.objectstore import ObjectStore
from handlers.runtime.settings import Settings
from handlers.runtime.subtitles import subtitle_format
from handlers.tracing_view import NS_PER_S, format_duration
from schemas.errors import InputError, ObjectNotFound, PolydubError
from schemas.events import DubCompleted, DubFailed, DubStatus, EngineChoice, MediaSubmitted, SpeakerVoice, SubtitlesRef
from schemas.status import StatusCode
from schemas.topics import DUB_COMPLETED, DUB_FAILED, DUB_STATUS, topic_name

log = logging.getLogger(__name__)

#: Where ``polydub submit`` puts a job's inputs, before ingest copies them under ``jobs/``.
UPLOAD_PREFIX = "uploads"
SUBMIT_SERVICE_NAME = "polydub-submit"
WATCH_CLIENT_ID = "polydub-watch"
WATCH_TOPICS: tuple[str, ...] = (DUB_STATUS, DUB_COMPLETED, DUB_FAILED)
#: Longest one poll of the watch consumer blocks (bounds Ctrl-C and timeout latency).
WATCH_POLL_MS = 500
#: After a job's final event, how long to collect its events still in other partitions.
WATCH_DRAIN_MS = 300
#: A video's file extension is kept in its upload key when it is this simple.
_SIMPLE_EXTENSION = re.compile(r"\.[a-z0-9]{1,5}")


class WatchTimeout(PolydubError):
    """The job did not finish within ``--timeout``."""

    code = StatusCode.TIMEOUT


def new_job_id() -> str:
    """A fresh job id: short enough to type, random enough never to collide."""
    return f"job-{uuid.uuid4().hex[:12]}"


def upload_keys(job_id: str, video: Path, subtitles: Path) -> tuple[str, str]:
    """``uploads/{job_id}/video.mp4`` and ``uploads/{job_id}/subtitles.srt`` (or ``.vtt``)."""
    prefix = f"{UPLOAD_PREFIX}/{keys.validate_job_id(job_id)}/"
    suffix = video.suffix.lower()
    video_name = "video" + (suffix if _SIMPLE_EXTENSION.fullmatch(suffix) else "")
    return prefix + video_name, prefix + f"subtitles.{subtitle_format(subtitles)}"


def media_submitted(job_id: str, video_uri: str, subtitles_uri: str, target_lang: str,
                    engines: EngineChoice, voices: Mapping[str, SpeakerVoice] | None = None) -> MediaSubmitted:
    """The ``media.submitted`` of a video and its subtitles file (both already where ingest can read them)."""
    return MediaSubmitted(
        job_id=job_id,
        source_uri=video_uri,
        target_lang=target_lang,  # type: ignore[arg-type]
        subtitles=SubtitlesRef(uri=subtitles_uri, format=subtitle_format(subtitles_uri)),
        engines=engines,
        voices=dict(voices or {}),
    )


# --- submit ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """What ``polydub submit`` did."""

    job_id: str
    video_uri: str
    subtitles_uri: str


async def submit_job(
    video: Path,
    subtitles: Path,
    target_lang: str,
    engines: EngineChoice,
    settings: Settings,
    *,
    job_id: str | None = None,
    voices: Mapping[str, SpeakerVoice] | None = None,
) -> Submission:
    """Validate, upload, publish ``media.submitted``; returns once the broker has the event."""
    from aiokafka.errors import KafkaError

    from handlers.app import build_broker
    from handlers.inputs import validate_inputs
    from handlers.localstack import ensure_topics
    from handlers.runtime.telemetry import start_span

    validate_inputs(video, subtitles, settings)
    job_id = keys.validate_job_id(job_id or new_job_id())
    with bind_job(job_id):
        # No stages: a broker with the workers' telemetry wiring and the keyed publisher.
        broker, deps = build_broker(settings, (), service_name=SUBMIT_SERVICE_NAME)
        store = deps.store
        try:
            if await asyncio.to_thread(store.exists, keys.manifest_key(job_id)):
                raise InputError(
                    f"job {job_id} already exists (its inputs were ingested)",
                    f"submit without --job-id for a new job, or see `polydub status {job_id}`",
                )
            video_key, subtitles_key = upload_keys(job_id, video, subtitles)
            await asyncio.to_thread(store.put_file, video_key, video)
            await asyncio.to_thread(store.put_file, subtitles_key, subtitles)
            log.info("uploaded inputs", extra={"video": store.uri(video_key), "subtitles": store.uri(subtitles_key)})
            event = media_submitted(job_id, store.uri(video_key), store.uri(subtitles_key), target_lang, engines,
                                    voices)
            try:
                # Producing to a missing topic would auto-create it with the broker's defaults.
                await ensure_topics(settings)
                async with broker:  # connects
                    with start_span("job", job_id=job_id, target_lang=target_lang):
                        await deps.publisher.publish(event)
            except (KafkaError, OSError) as exc:
                raise kafka_unreachable(settings.bootstrap_servers, exc) from exc
        finally:
            await deps.inference.close()
        log.info("submitted", extra={"event_id": event.event_id})
    return Submission(job_id, event.source_uri, store.uri(subtitles_key))


def kafka_unreachable(bootstrap_servers: str, exc: BaseException) -> InputError:
    """The one message every command gives when the configured Kafka does not answer."""
    return InputError(
        f"cannot reach Kafka at {bootstrap_servers}: {exc or type(exc).__name__}",
        "start it (`polydub stack up` prints the variables) or set POLYDUB_BOOTSTRAP_SERVERS",
    )


# --- watch -----------------------------------------------------------------------------


Outcome = DubCompleted | DubFailed
JobEvent = DubStatus | DubCompleted | DubFailed


def format_event(event: DubStatus | DubCompleted | DubFailed, progress: JobProgress | None = None) -> str:
    """One line per event: time (UTC), job, stage or outcome, progress, details.

    ``progress`` is the job's progress including this event (a follower's count of its
    chunks); without it the line shows what the event alone proves.
    """
    ts = event.occurred_at.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]
    if isinstance(event, DubStatus):
        job = progress if progress is not None else JobProgress()
        if progress is None:
            job.update(event)
        line = f"{ts}  {event.job_id}  {event.stage:<10} {job.fraction * 100:4.0f}%  {event.status.name.lower()}"
        if event.chunks_total:
            line += job.describe(event)[len(event.stage):]
        return line + (f"  {event.message}" if event.message else "")
    if isinstance(event, DubCompleted):
        qc = "QC passed" if event.qc.passed else f"QC failed: {', '.join(event.qc.failed_checks)}"
        warnings = f" ({len(event.qc.warnings)} warning(s))" if event.qc.warnings else ""
        return f"{ts}  {event.job_id}  {'completed':<10}  100%  {event.output_video_uri}  {qc}{warnings}"
    line = (f"{ts}  {event.job_id}  {'FAILED':<10}        in {event.stage}: "
            f"[{int(event.status)} {event.status.name.lower()}] {event.reason}")
    return line + (f"  fix: {event.fix}" if event.fix else "")


async def job_events(
    settings: Settings,
    job_id: str | None = None,
    *,
    from_beginning: bool = False,
    timeout_s: float | None = None,
) -> AsyncIterator[JobEvent]:
    """The job's (or every job's) ``dub.status``/``dub.completed``/``dub.failed`` events as they come.

    The one follower of jobs: ``polydub watch`` prints what it yields and
    ``polydub run`` drives its progress bar with it. Following one job starts at
    its first event and ends after its outcome (its last statuses, which may sit
    in another topic, are drained and yielded first); following every job starts
    at the end of the topics unless ``from_beginning`` and ends only at
    ``timeout_s``. A job that does not finish in ``timeout_s`` raises
    :class:`WatchTimeout`.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    if job_id is not None:
        keys.validate_job_id(job_id)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        client_id=WATCH_CLIENT_ID,
    )
    try:
        await consumer.start()
    except (KafkaError, OSError) as exc:
        await consumer.stop()
        raise kafka_unreachable(settings.bootstrap_servers, exc) from exc
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        partitions = await _watch_partitions(consumer, settings.topic_prefix, job_id)
        consumer.assign(partitions)
        if job_id is not None or from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            await consumer.seek_to_end(*partitions)
        while True:
            events = await _poll(consumer, job_id, WATCH_POLL_MS)
            outcome = next((e for e in events if isinstance(e, DubCompleted | DubFailed)), None)
            if job_id is not None and outcome is not None:
                events += await _poll(consumer, job_id, WATCH_DRAIN_MS)
                for event in sorted((e for e in events if isinstance(e, DubStatus)), key=lambda e: e.occurred_at):
                    yield event
                yield outcome
                return
            for event in events:
                yield event
            if deadline is not None and time.monotonic() > deadline:
                if job_id is None:
                    return  # following every job for a while is a complete run
                raise WatchTimeout(
                    f"job {job_id} did not finish within {timeout_s:g}s",
                    "check `polydub status JOB` and that workers for every stage run",
                )
    finally:
        await consumer.stop()


async def follow(
    settings: Settings,
    job_id: str | None = None,
    *,
    from_beginning: bool = False,
    timeout_s: float | None = None,
    emit: Callable[[str], None] = print,
) -> Outcome | None:
    """Print the job's (or every job's) events as lines; returns the job's outcome."""
    jobs: dict[str, JobProgress] = {}
    outcome: Outcome | None = None
    async for event in job_events(settings, job_id, from_beginning=from_beginning, timeout_s=timeout_s):
        if isinstance(event, DubStatus):
            job = jobs.setdefault(event.job_id, JobProgress())
            job.update(event)
            emit(format_event(event, job))
        else:
            emit(format_event(event))
            outcome = event
    return outcome if job_id is not None else None


async def _watch_partitions(consumer: Any, prefix: str, job_id: str | None) -> list[Any]:
    """The partitions to read: all of them, or the one per topic the job's key hashes to."""
    from aiokafka.partitioner import DefaultPartitioner
    from aiokafka.structs import TopicPartition

    existing = await consumer.topics()
    chosen = []
    for logical in WATCH_TOPICS:
        topic = topic_name(logical, prefix)
        partitions = sorted(consumer.partitions_for_topic(topic) or ()) if topic in existing else []
        if not partitions:
            raise InputError(
                f"topic {topic} does not exist on the cluster yet",
                "start a worker or `polydub stack up` (both create the topics), then watch again",
            )
        if job_id is None:
            chosen += [TopicPartition(topic, p) for p in partitions]
        else:
            # Producers key every event by job id with Kafka's default (murmur2) partitioner.
            chosen.append(TopicPartition(topic, DefaultPartitioner()(job_id.encode(), partitions, partitions)))
    return chosen


async def _poll(consumer: Any, job_id: str | None, timeout_ms: int) -> list[DubStatus | DubCompleted | DubFailed]:
    """Decoded events of one poll, in time order, only the job's when one is watched."""
    from schemas.serialization import EventDecodeError, decode_event

    batches = await consumer.getmany(timeout_ms=timeout_ms)
    events = []
    for records in batches.values():
        for record in records:
            try:
                event = decode_event(record.value)
            except EventDecodeError as exc:
                log.warning("skipped an event that does not parse",
                            extra={"topic": record.topic, "offset": record.offset, "error": str(exc)})
                continue
            if isinstance(event, DubStatus | DubCompleted | DubFailed) and (job_id is None or event.job_id == job_id):
                events.append(event)
    return sorted(events, key=lambda e: e.occurred_at)


# --- status ----------------------------------------------------------------------------


@dataclass
class JobStatus:
    """A job as its objects in the store describe it."""

    job_id: str
    state: str  # submitted | running | completed | failed
    stage: str | None
    progress: float
    target_lang: str | None = None
    engines: dict[str, str] = field(default_factory=dict)
    media: dict[str, Any] = field(default_factory=dict)
    n_segments: int = 0
    source_uri: str | None = None
    chunks_total: int = 0
    chunks_done: dict[str, int] = field(default_factory=dict)
    chunks: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    qc: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    #: When the newest of the job's objects was written (epoch seconds): its last sign of life.
    updated_at: float | None = None


def read_status(store: ObjectStore, job_id: str) -> JobStatus:
    """Everything the store knows about the job; raises :class:`InputError` for an unknown job."""
    from handlers.runtime.jobstate import JobState
    from schemas.registry import CHUNK_STAGES, STAGE_BY_NAME, job_progress

    state = JobState(store, keys.validate_job_id(job_id))
    try:
        manifest = state.read_json("manifest.json")
    except ObjectNotFound:
        if (uploaded := store.last_written(f"{UPLOAD_PREFIX}/{job_id}/")) is not None:
            return JobStatus(job_id, "submitted", "ingest", 0.0, updated_at=uploaded)
        raise InputError(
            f"no job {job_id} in the object store ({store.root_uri})",
            "check the job id, and that POLYDUB_OBJECT_STORE / POLYDUB_S3_BUCKET name the deployment's store",
        ) from None
    status = JobStatus(
        job_id,
        "running",
        "chunking",
        job_progress({"ingest": 1.0}),
        target_lang=manifest.get("target_lang"),
        engines=dict(manifest.get("engines") or {}),
        media=dict(manifest.get("media") or {}),
        n_segments=len(manifest.get("segments") or ()),
        source_uri=store.uri(manifest["source_key"]) if manifest.get("source_key") else None,
    )
    # One listing of the job answers its last sign of life, the chunk markers and the outputs.
    written = store.listing(state.key(""))
    status.updated_at = max(written.values(), default=None)
    try:
        plan = state.read_json("plan.json")
    except ObjectNotFound:
        plan = None
    if plan is not None:
        n = len(plan["chunks"])
        status.chunks_total = n
        chunks_prefix = state.key("chunks/")
        markers = [k for k in written if k.startswith(chunks_prefix) and k.endswith(f"/{keys.DONE_MARKER}")]
        status.chunks_done = {s: sum(1 for k in markers if k.endswith(f"/{s}/{keys.DONE_MARKER}")) for s in CHUNK_STAGES}
        status.chunks = [
            {"index": row.chunk_index, "stage": row.stage, "timings_s": row.timings_s, "attempts": row.attempts}
            for row in state.rows(n)
        ]
        status.progress = job_progress({"ingest": 1.0, "chunking": 1.0,
                                        **{s: status.chunks_done[s] / max(1, n) for s in CHUNK_STAGES}})
        pending = [s for s in CHUNK_STAGES if status.chunks_done[s] < n]
        status.stage = pending[0] if pending else "merging"
    if state.is_marked("merged"):
        status.stage = "qc"
        status.progress = 1.0 - STAGE_BY_NAME["qc"].progress_weight
    output_prefix = state.key("output/")
    status.outputs = {key.rsplit("/", 1)[-1]: store.uri(key) for key in sorted(written) if key.startswith(output_prefix)}
    if store.exists(keys.qc_key(job_id)):
        report = orjson.loads(store.get_bytes(keys.qc_key(job_id)))
        checks = report.get("checks", [])
        status.qc = {
            "passed": all(c["passed"] for c in checks if c.get("gate")),
            "failed_checks": [c["name"] for c in checks if c.get("gate") and not c["passed"]],
            "warnings": [f"{c['name']}: {c['reason']}" for c in checks if not c.get("gate") and not c["passed"]],
        }
    if state.is_marked("completed"):
        status.state, status.stage, status.progress = "completed", None, 1.0
    elif state.is_marked("failed"):
        status.state = "failed"
        try:
            status.failure = dict(state.read_json("state/failed"))
        except (ObjectNotFound, ValueError):
            status.failure = {"reason": "the job is marked failed without a reason"}
        status.stage = status.failure.get("stage") or status.stage
    return status


def render_status(status: JobStatus, *, stalled_after_s: float, now: float | None = None) -> str:
    """``polydub status`` output: the state first, details after.

    A job still under way says which stage it waits for and since when; past
    ``stalled_after_s`` without a change it says so, and where to look.
    """
    lines = [f"job       {status.job_id}"]
    if status.state == "running":
        chunks = ""
        if status.stage in status.chunks_done:
            chunks = f" ({status.chunks_done[status.stage]}/{status.chunks_total} chunks)"
        lines.append(f"state     running: {status.stage}{chunks}")
    elif status.state == "submitted":
        lines.append("state     submitted: inputs uploaded, waiting for ingest")
    elif status.state == "failed":
        lines.append(f"state     FAILED in {status.stage or '?'}")
    else:
        lines.append("state     completed")
    lines.append(f"progress  {status.progress * 100:.0f}%")
    if status.state in ("running", "submitted") and status.updated_at is not None:
        lines += _waiting_lines(status.stage or "?", status.updated_at, stalled_after_s,
                                time.time() if now is None else now)
    if status.media:
        m = status.media
        lines.append(
            f"input     {m.get('duration_s', 0):.1f} s  {m.get('width')}x{m.get('height')} @ {m.get('fps', 0):g} fps  "
            f"{status.n_segments} segment(s) -> {status.target_lang}   {status.source_uri or ''}".rstrip()
        )
    if status.engines:
        lines.append("engines   " + "  ".join(f"{k}={v}" for k, v in status.engines.items()))
    if status.chunks_total:
        done = "  ".join(f"{s} {n}/{status.chunks_total}" for s, n in status.chunks_done.items())
        lines.append(f"chunks    {status.chunks_total}: {done}")
        for chunk in status.chunks:
            timings = "  ".join(f"{s} {t:.1f}s" for s, t in chunk["timings_s"].items())
            lines.append(f"  chunk {chunk['index']:<3} {chunk['stage']:<10} {timings}".rstrip())
    for name, uri in sorted(status.outputs.items()):
        lines.append(f"output    {name:<18} {uri}")
    if status.qc is not None:
        verdict = "passed" if status.qc["passed"] else "FAILED: " + ", ".join(status.qc["failed_checks"])
        lines.append(f"qc        {verdict}")
        lines += [f"  warning: {w}" for w in status.qc["warnings"]]
    if status.failure is not None:
        f = status.failure
        code = f"[{f['code']} {str(f.get('code_name', '')).lower()}] " if "code" in f else ""
        lines.append(f"failure   {code}{f.get('reason', '')}")
        if f.get("fix"):
            lines.append(f"fix       {f['fix']}")
    return "\n".join(lines)


def _waiting_lines(stage: str, since: float, stalled_after_s: float, now: float) -> list[str]:
    """What a job under way waits for and since when; a hint of where to look once it stalls."""
    idle_s = max(0.0, now - since)
    stamp = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    idle = format_duration(round(idle_s * NS_PER_S))
    lines = [f"waiting   for {stage} since {stamp} ({idle} ago)"]
    if idle_s >= stalled_after_s:
        lines.append(f"STALLED   nothing of this job changed for {idle} (POLYDUB_STATUS_STALLED_AFTER_S "
                     f"{stalled_after_s:g} s): is a worker consuming {stage}? see `polydub stack status`, the "
                     "workers' /healthz and their logs for this job id")
    return lines


def status_json(status: JobStatus) -> str:
    return orjson.dumps(asdict(status), option=orjson.OPT_INDENT_2).decode()


def print_lines(line: str) -> None:
    """``emit`` for :func:`follow` that shows each line at once, even into a pipe."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


__all__ = [
    "JobStatus",
    "Submission",
    "WatchTimeout",
    "follow",
    "format_event",
    "kafka_unreachable",
    "new_job_id",
    "print_lines",
    "read_status",
    "render_status",
    "status_json",
    "submit_job",
    "upload_keys",
]
