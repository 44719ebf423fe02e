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
from handlers.runtime.jobstate import ChunkRow, JobState
from handlers.runtime.stagekit import JobStage
from handlers.runtime.vad import speech_probability_function
from schemas.events import ChunkPlanned, DubStatus, JobAccepted


class ChunkingStage(JobStage[JobAccepted]):
    """Cut the job's timeline into chunks and fan them out."""

    name = "chunking"
    consumes = JobAccepted
    record = "plan.json"

    async def work(self, event: JobAccepted, state: JobState) -> dict[str, Any]:
        return await self.run_blocking(self._plan, state)

    def next_events(self, event: JobAccepted, plan: dict[str, Any]) -> list[ChunkPlanned]:
        chunks = plan["chunks"]
        return [
            ChunkPlanned(
                job_id=event.job_id,
                chunk_index=chunk["index"],
                n_chunks=len(chunks),
                manifest_uri=event.manifest_uri,
                start_s=chunk["start_s"],
                end_s=chunk["end_s"],
                segment_indices=list(chunk["segment_indices"]),
            )
            for chunk in chunks
        ]

    def done_status(self, event: JobAccepted, plan: dict[str, Any]) -> DubStatus:
        n = len(plan["chunks"])
        return self.status(event.job_id, self.info.done, 1.0, chunks_done=0, chunks_total=n,
                           message=f"{n} chunk(s)")

    def _plan(self, state: JobState) -> dict[str, Any]:
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
        for chunk in plan.chunks:
            state.write_row(ChunkRow(chunk_index=chunk.index))
        return {
            "duration_s": plan.duration_s,
            "overlap_s": plan.overlap_s,
            "warnings": list(plan.warnings),
            "chunks": [asdict(c) for c in plan.chunks],
        }


class _Span:
    __slots__ = ("start_s", "end_s")

    def __init__(self, start_s: float, end_s: float) -> None:
        self.start_s = start_s
        self.end_s = end_s
