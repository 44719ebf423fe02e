"""chunking: ``job.accepted`` -> one ``chunk.planned`` per chunk.

Plans the timeline (see :mod:`handlers.plan`) with cut points in the quietest
part of pauses by the VAD, writes ``plan.json`` and a row per chunk, then fans
out. A redelivery re-reads the written plan instead of planning again, so the
chunks a job started with never change under it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from handlers.plan import plan_chunks
from handlers.runtime.errors import ObjectNotFound
from handlers.runtime.jobstate import ChunkRow
from handlers.runtime.stagekit import StageBase
from handlers.runtime.vad import speech_probability_function
from schemas.events import ChunkPlanned, JobAccepted
from schemas.status import StatusCode


class ChunkingStage(StageBase):
    """Cut the job's timeline into chunks and fan them out."""

    name = "chunking"
    consumes = JobAccepted

    async def handle(self, event: JobAccepted, attempt: int) -> None:
        state = self.job(event.job_id)
        if state.is_marked("failed"):
            return
        try:
            plan = state.read_json("plan.json")
        except ObjectNotFound:
            plan = await self.run_blocking(self._plan, event.job_id)
        chunks = plan["chunks"]
        for chunk in chunks:
            await self.publisher.publish(
                ChunkPlanned(
                    job_id=event.job_id,
                    chunk_index=chunk["index"],
                    n_chunks=len(chunks),
                    manifest_uri=event.manifest_uri,
                    start_s=chunk["start_s"],
                    end_s=chunk["end_s"],
                    segment_indices=list(chunk["segment_indices"]),
                )
            )
        await self.emit_status(event.job_id, StatusCode.CHUNKED, 1.0, 0, len(chunks),
                               message=f"{len(chunks)} chunk(s)")

    def _plan(self, job_id: str) -> dict[str, Any]:
        state = self.job(job_id)
        manifest = state.read_json("manifest.json")
        audio, rate = self.get_audio(manifest["audio_key"])
        segments = [_Span(s["start_s"], s["end_s"]) for s in manifest["segments"]]
        plan = plan_chunks(
            segments,
            duration_s=manifest["media"]["duration_s"],
            chunk_seconds=self.settings.chunk_seconds,
            overlap_s=self.settings.chunk_overlap_seconds,
            speech_probability=speech_probability_function(audio, rate),
        )
        document = {
            "duration_s": plan.duration_s,
            "overlap_s": plan.overlap_s,
            "warnings": list(plan.warnings),
            "chunks": [asdict(c) for c in plan.chunks],
        }
        for chunk in plan.chunks:
            state.write_row(ChunkRow(chunk_index=chunk.index))
        state.write_json("plan.json", document)
        return document


class _Span:
    __slots__ = ("start_s", "end_s")

    def __init__(self, start_s: float, end_s: float) -> None:
        self.start_s = start_s
        self.end_s = end_s
