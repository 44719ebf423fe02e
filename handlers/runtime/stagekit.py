"""What every stage handler shares: its dependencies and the small chores around them.

A stage is constructed with a :class:`StageDeps` (settings, object store,
inference client, publisher) and keeps nothing else between events. The
helpers here move audio and JSON between the object store and numpy, emit
``dub.status``, and map store URIs back to keys, so each stage module reads as
its own job only.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import soundfile as sf
from scipy.io import wavfile

from handlers.runtime.bus import Publisher
from handlers.runtime.errors import InputError
from handlers.runtime.inference import InferenceClient
from handlers.runtime.jobstate import ChunkRow, JobState
from handlers.runtime.objectstore import ObjectStore
from handlers.runtime.settings import Settings
from schemas.events import DubStatus
from schemas.status import StatusCode

T = TypeVar("T")

# Share of a job's progress bar given to each stage; chunk stages split theirs by chunk.
PROGRESS_WEIGHTS: dict[str, float] = {
    "ingest": 0.04,
    "chunking": 0.02,
    "synthesis": 0.30,
    "conversion": 0.20,
    "lipsync": 0.30,
    "merging": 0.10,
    "qc": 0.04,
}
STAGE_ORDER = tuple(PROGRESS_WEIGHTS)
# Write-once job documents (manifest, plan) kept in memory per stage instance.
DOCUMENT_CACHE_SIZE = 128


@dataclass
class StageDeps:
    settings: Settings
    store: ObjectStore
    inference: InferenceClient
    publisher: Publisher


def job_progress(stage: str, fraction_of_stage: float) -> float:
    """Whole-job progress when ``stage`` is ``fraction_of_stage`` done."""
    before = sum(PROGRESS_WEIGHTS[s] for s in STAGE_ORDER[: STAGE_ORDER.index(stage)])
    return min(1.0, before + PROGRESS_WEIGHTS[stage] * max(0.0, min(1.0, fraction_of_stage)))


class StageBase:
    """Plumbing for one stage; subclasses set ``name``/``consumes`` and write ``handle``."""

    name: str = ""

    def __init__(self, deps: StageDeps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.store = deps.store
        self.inference = deps.inference
        self.publisher = deps.publisher
        self._documents: dict[tuple[str, str], dict[str, Any]] = {}

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

    # --- audio in the store ------------------------------------------------------

    def put_audio(self, key: str, audio: np.ndarray, rate: int) -> str:
        """Store ``audio`` as a 32-bit float WAV whose bytes depend only on the samples.

        Written by scipy, not libsndfile: libsndfile adds a ``PEAK`` chunk with
        the wall-clock time to float WAVs, so a redelivered event would rewrite
        the "same" object with different bytes.
        """
        buffer = io.BytesIO()
        wavfile.write(buffer, rate, np.ascontiguousarray(audio, dtype=np.float32))
        self.store.put_bytes(key, buffer.getvalue())
        return self.store.uri(key)

    def get_audio(self, key: str) -> tuple[np.ndarray, int]:
        audio, rate = sf.read(io.BytesIO(self.store.get_bytes(key)), dtype="float32", always_2d=False)
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        return audio.astype(np.float32), int(rate)

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

    # --- chunk rows --------------------------------------------------------------

    async def finished_output(self, state: JobState, index: int) -> tuple[str | None, ChunkRow]:
        """This stage's output key for the chunk if it already finished (a redelivery), and the row.

        Finished means the output is recorded in the row *and* the done marker exists:
        the marker is written last, so a crash in between redoes the work.
        """
        row = await self.run_blocking(state.read_row, index)
        if self.name in row.outputs and await self.run_blocking(state.is_done, self.name, index):
            return row.outputs[self.name], row
        return None, row

    async def record_chunk(self, state: JobState, index: int, key: str | None, seconds: float,
                           **details: Any) -> None:
        """Record this stage's output of a chunk in its row, then write the done marker."""

        def write() -> None:
            row = state.read_row(index)
            row.stage = self.name
            if key is not None:
                row.outputs[self.name] = key
            row.timings_s[self.name] = seconds
            row.details.update(details)
            state.write_row(row)
            state.mark_done(self.name, index)

        await self.run_blocking(write)

    # --- progress ----------------------------------------------------------------

    async def emit_status(self, job_id: str, status: StatusCode, fraction: float,
                          chunks_done: int = 0, chunks_total: int = 0, message: str | None = None) -> None:
        await self.publisher.publish(
            DubStatus(
                job_id=job_id,
                status=status,
                stage=self.name,  # type: ignore[arg-type]
                chunks_done=chunks_done,
                chunks_total=chunks_total,
                progress=job_progress(self.name, fraction),
                message=message,
            )
        )

    async def emit_chunk_status(self, job_id: str, status: StatusCode, n_chunks: int) -> None:
        done = await self.run_blocking(self.job(job_id).count_done, self.name)
        await self.emit_status(job_id, status, done / n_chunks, done, n_chunks)

