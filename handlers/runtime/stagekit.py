"""The stage template: the delivery chores every stage shares, so a stage module writes only its data step.

A stage is constructed with a :class:`StageDeps` (settings, object store,
inference client, publisher) and keeps nothing else between events. Two
templates own everything around the data step, the same way for every stage:

* :class:`JobStage` (once per job: ingest, chunking, merging, qc). The guard
  (a job marked ``failed``, or a marker that ends the stage, skips the event);
  skip-if-finished (the stage's *record*, a JSON document in the job's state,
  exists: nothing is recomputed and the next events are published again from
  it); otherwise the data step :meth:`JobStage.work`, whose result the template
  records before publishing what follows; then the status.
* :class:`ChunkStage` (once per chunk: synthesis, conversion, lipsync). The
  guard; skip-if-finished (the chunk's ``_done`` marker for the stage, written
  last, so a crash before it redoes the work); the engine ``none`` (one meaning
  everywhere: the stage passes its input through, recorded like any output);
  otherwise the data step :meth:`ChunkStage.work`; the template records the
  output and details in the chunk's row, writes the marker, publishes the next
  event built from the row (so a redelivery publishes exactly what the first
  delivery did) and the chunk's status.

Publishing after recording gives at-least-once: a crash in between is
redelivered, finds the record and publishes again (downstream is idempotent).
Every object-store call runs off the event loop (:meth:`StageBase.run_blocking`),
so consumers keep heartbeating while media is read and written.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np

from handlers.runtime.bus import Publisher
from handlers.runtime.inference import InferenceClient
from handlers.runtime.jobstate import ChunkRow, JobState
from handlers.runtime.objectstore import ObjectStore
from handlers.runtime.settings import Settings
from handlers.runtime.wav import decode_wav, encode_wav, mono
from schemas.errors import InputError, ObjectNotFound, PolydubError
from schemas.events import DubFailed, DubStatus, Envelope
from schemas.registry import (
    CHUNK_STAGES,
    STAGE_BY_NAME,
    STAGE_NAMES,
    EngineInfo,
    StageInfo,
    engine,
    job_progress,
    progress_at,
)
from schemas.serialization import decode_event, encode_event
from schemas.status import StatusCode

T = TypeVar("T")
E = TypeVar("E", bound=Envelope)
# Write-once job documents (manifest, plan) kept in memory per stage instance.
DOCUMENT_CACHE_SIZE = 128
log = logging.getLogger(__name__)


#: The job marker of a failed job (``jobs/{id}/state/failed``).
FAILED = "failed"


class JobFailures:
    """A job's one failure: recorded in the store before its ``dub.failed`` goes out, announced once.

    The ``failed`` marker is written first, holding the ``dub.failed`` it
    announces and ``published: false``; then the event is published; then the
    marker says ``published: true``. A store or broker outage (or a crash) at
    any step leaves the delivery uncommitted or a marker that the next delivery
    of any of the job's events finishes (:meth:`resume`) with the same event
    (same ``event_id``). So a job never gets two different ``dub.failed``, and
    a failure is never lost; a job already completed gets none (it has its
    outcome). Markers without the flag (QC's verdict, published first) count
    as announced.
    """

    def __init__(self, store: ObjectStore, publisher: Publisher) -> None:
        self.store = store
        self.publisher = publisher

    async def __call__(self, event: Envelope, error: PolydubError, failed: DubFailed) -> None:
        """The bus's ``on_failure`` hook: record, then announce (unless the job has its outcome)."""
        state = JobState(self.store, event.job_id)
        if await asyncio.to_thread(state.is_marked, "completed"):
            log.warning("a late failure of a completed job is not announced", extra={"reason": error.reason})
            return
        marker = await asyncio.to_thread(self._marker, state)
        if marker is None:
            marker = {**error.as_dict(), "stage": failed.stage, "event": encode_event(failed).decode(),
                      "published": False}
            await asyncio.to_thread(state.write_json, f"state/{FAILED}", marker)
        await self._announce(state, marker)

    async def resume(self, state: JobState) -> None:
        """Announce the job's recorded failure if that did not happen yet (a guard calls this)."""
        marker = await asyncio.to_thread(self._marker, state)
        if marker is not None:
            await self._announce(state, marker)

    @staticmethod
    def _marker(state: JobState) -> dict[str, Any] | None:
        try:
            return dict(state.read_json(f"state/{FAILED}"))
        except ObjectNotFound:
            return None

    async def _announce(self, state: JobState, marker: dict[str, Any]) -> None:
        if marker.get("published", True) or "event" not in marker:
            return
        await self.publisher.publish(decode_event(marker["event"].encode(), DubFailed))
        await asyncio.to_thread(state.write_json, f"state/{FAILED}", {**marker, "published": True})


@dataclass
class StageDeps:
    settings: Settings
    store: ObjectStore
    inference: InferenceClient
    publisher: Publisher


class StageBase:
    """Plumbing for one stage: its dependencies, the job's documents, media in the store."""

    name: ClassVar[str] = ""
    consumes: ClassVar[type[Envelope]]

    def __init__(self, deps: StageDeps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.store = deps.store
        self.inference = deps.inference
        self.publisher = deps.publisher
        self._documents: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def info(self) -> StageInfo:
        """This stage's entry in the registry (order, progress weight, engine kind)."""
        return STAGE_BY_NAME[self.name]

    async def handle(self, event: Any, attempt: int) -> None:
        """One delivery of ``event`` (the templates below implement it)."""
        raise NotImplementedError

    def job(self, job_id: str) -> JobState:
        return JobState(self.store, job_id)

    async def manifest(self, job_id: str) -> dict[str, Any]:
        """The job's manifest (written once by ingest)."""
        return await self._write_once_document(job_id, "manifest.json")

    async def plan(self, job_id: str) -> dict[str, Any]:
        """The job's chunk plan (written once by chunking)."""
        return await self._write_once_document(job_id, "plan.json")

    async def _write_once_document(self, job_id: str, name: str) -> dict[str, Any]:
        """Documents that never change once written are cached per stage instance."""
        cached = self._documents.get((job_id, name))
        if cached is None:
            cached = await self.run_blocking(self.job(job_id).read_json, name)
            self._documents[(job_id, name)] = cached
            while len(self._documents) > DOCUMENT_CACHE_SIZE:
                self._documents.pop(next(iter(self._documents)))
        return cached

    async def run_blocking(self, func: Callable[..., T], *args: Any) -> T:
        """Media and store work off the event loop, so consumers keep heartbeating."""
        return await asyncio.to_thread(func, *args)

    # --- media in the store ---------------------------------------------------------

    def put_audio(self, key: str, audio: np.ndarray, rate: int) -> str:
        """Store ``audio`` as a float WAV whose bytes depend only on the samples; returns its URI."""
        self.store.put_bytes(key, encode_wav(audio, rate))
        return self.store.uri(key)

    def get_audio(self, key: str, *, keep_channels: bool = False) -> tuple[np.ndarray, int]:
        """A stored WAV as mono float32 and its rate; ``keep_channels`` keeps ``(samples, channels)``.

        Speech work wants mono; the mix is multichannel and QC meters it as it is.
        """
        audio, rate = decode_wav(self.store.get_bytes(key), self.store.uri(key))
        return (audio if keep_channels else mono(audio)), rate

    def key_of(self, uri: str) -> str:
        """The store key behind a URI an event carries (events point into this store)."""
        key = self.store.key_of(uri)
        if key is None:
            raise InputError(
                f"{uri} is not in this deployment's object store ({self.store.root_uri})",
                "events must point into the configured store; check POLYDUB_S3_BUCKET",
            )
        return key

    def local_copy(self, key: str) -> Path:
        """A local file with the object's content, cached per host for reuse by chunks.

        Objects under ``jobs/`` are written once under deterministic keys, so a
        cached copy never goes stale. The cache is per store (its root URI):
        the same job id in another bucket or folder is another object.
        """
        store_dir = hashlib.sha256(self.store.root_uri.encode()).hexdigest()[:16]
        cache = Path(tempfile.gettempdir()) / "polydub-cache" / store_dir / key
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            # Per process and thread: two stages of one process may fetch the same object.
            partial = cache.with_name(f"{cache.name}.{os.getpid()}.{threading.get_ident()}.partial")
            self.store.get_file(key, partial)
            partial.replace(cache)
        return cache

    # --- progress -------------------------------------------------------------------

    def status(self, job_id: str, status: StatusCode, fraction: float, *, chunks_done: int | None = None,
               chunks_total: int = 0, message: str | None = None) -> DubStatus:
        """A ``dub.status`` of this stage, ``fraction`` of the way through it."""
        return DubStatus(job_id=job_id, status=status, stage=self.name, chunks_done=chunks_done,
                         chunks_total=chunks_total, progress=progress_at(self.name, fraction), message=message)


class JobStage(StageBase, Generic[E]):
    """A stage that runs once per job; subclasses write :meth:`work` and :meth:`next_events`."""

    #: Job markers that end this stage's business with the job (a redelivery does nothing).
    skip_if_marked: ClassVar[tuple[str, ...]] = (FAILED,)
    #: The job document (relative to ``jobs/{id}/``) that records this stage's result.
    record: ClassVar[str]

    async def handle(self, event: E, attempt: int) -> None:
        state = self.job(event.job_id)
        if await self.run_blocking(state.any_marked, self.skip_if_marked):
            await JobFailures(self.store, self.publisher).resume(state)
            return
        try:
            result = await self.run_blocking(state.read_json, self.record)
        except ObjectNotFound:
            result = await self.work(event, state)
            if result is None:
                return
            await self.run_blocking(state.write_json, self.record, result)
        for follow in self.next_events(event, result):
            await self.publisher.publish(follow)
        await self.after_publish(state, result)
        done = self.done_status(event, result)
        if done is not None:
            await self.publisher.publish(done)

    @abstractmethod
    async def work(self, event: E, state: JobState) -> dict[str, Any] | None:
        """The data step: the stage's result to record, or ``None`` when it has nothing to do yet."""

    @abstractmethod
    def next_events(self, event: E, result: dict[str, Any]) -> Sequence[Envelope]:
        """What follows, built from the recorded result only (so redeliveries publish the same)."""

    async def after_publish(self, state: JobState, result: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Markers that must follow the publish (the terminal stage's verdict)."""

    def done_status(self, event: E, result: dict[str, Any]) -> DubStatus | None:
        """The status once the stage is done with the job (``None``: it publishes none)."""
        return self.status(event.job_id, self.info.done, 1.0)


@dataclass(frozen=True)
class ChunkOutput:
    """What a chunk stage's data step made: its output object (``None``: none) and details for its row."""

    key: str | None
    details: dict[str, Any] = field(default_factory=dict)


class ChunkStage(StageBase, Generic[E]):
    """A stage that runs once per chunk; subclasses write :meth:`work`, :meth:`passthrough`, :meth:`next_event`."""

    async def handle(self, event: E, attempt: int) -> None:
        state = self.job(event.job_id)
        if await self.run_blocking(state.is_marked, FAILED):
            await JobFailures(self.store, self.publisher).resume(state)
            return
        manifest = await self.manifest(event.job_id)
        choice = self.engine_of(manifest)
        index = int(event.chunk_index)  # type: ignore[attr-defined]
        row = await self.run_blocking(state.read_row, index)
        if not await self.run_blocking(state.is_done, self.name, index):
            started = time.perf_counter()
            if choice is not None and choice.model is None:
                output = ChunkOutput(self.passthrough(event))
            else:
                output = await self.work(event, manifest, choice)
            details = {**output.details, **({"engine": choice.name} if choice is not None else {})}
            row = await self.run_blocking(self._record, state, row, output.key, time.perf_counter() - started,
                                          details)
        await self.publisher.publish(self.next_event(event, manifest, row))
        await self.publisher.publish(self.chunk_status(event))

    def engine_of(self, manifest: dict[str, Any]) -> EngineInfo | None:
        """The job's engine for this stage (``None`` for a stage without one)."""
        kind = self.info.engine_kind
        return None if kind is None else engine(kind, manifest["engines"][kind])

    @abstractmethod
    async def work(self, event: E, manifest: dict[str, Any], choice: EngineInfo | None) -> ChunkOutput:
        """The data step for one chunk with the job's engine (never ``none``)."""

    def passthrough(self, event: E) -> str | None:
        """The output key when the engine is ``none``: the stage's input, unchanged (``None``: no object)."""
        raise InputError(f"{self.name} has no engine 'none'", "choose one of its engines")

    @abstractmethod
    def next_event(self, event: E, manifest: dict[str, Any], row: ChunkRow) -> Envelope:
        """The next event, from the chunk's recorded row only."""

    def output_uri(self, row: ChunkRow) -> str | None:
        """The URI of this stage's recorded output of the chunk (``None`` if it made none)."""
        key = row.outputs.get(self.name)
        return None if key is None else self.store.uri(key)

    def _record(self, state: JobState, row: ChunkRow, key: str | None, seconds: float,
                details: dict[str, Any]) -> ChunkRow:
        """The output and details in the chunk's row, then the done marker (written last)."""
        row.stage = self.name
        if key is not None:
            row.outputs[self.name] = key
        row.timings_s[self.name] = seconds
        row.details[self.name] = details
        state.write_row(row)
        state.mark_done(self.name, row.chunk_index)
        return row

    def chunk_status(self, event: E) -> DubStatus:
        """This chunk's ``dub.status``. Its ``progress`` is what this one event proves: ingest
        and chunking done, and this chunk through every chunk stage up to this one; followers
        that see all of a job's statuses count the chunks (``handlers.progress``)."""
        n = int(event.n_chunks)  # type: ignore[attr-defined]
        planned = STAGE_NAMES[: STAGE_NAMES.index(CHUNK_STAGES[0])]  # the job-level stages that made the chunks
        through = CHUNK_STAGES[: CHUNK_STAGES.index(self.name) + 1]
        proven = {**dict.fromkeys(planned, 1.0), **{s: 1.0 / n for s in through}}
        return DubStatus(job_id=event.job_id, status=self.info.done, stage=self.name,
                         chunk_index=int(event.chunk_index), chunks_total=n,  # type: ignore[attr-defined]
                         progress=job_progress(proven))
