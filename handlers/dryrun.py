"""``polydub run --dry-run``: validate the inputs and show the chunk plan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from handlers.inputs import JobInputs, validate_inputs
from handlers.plan import ChunkPlan, plan_chunks
from handlers.runtime.settings import Settings


@dataclass(frozen=True)
class JobPlan:
    inputs: JobInputs
    plan: ChunkPlan


def plan_job(video: Path, subtitles: Path, settings: Settings) -> JobPlan:
    inputs = validate_inputs(video, subtitles, settings)
    plan = plan_chunks(
        inputs.segments,
        duration_s=inputs.media.duration_s,
        chunk_seconds=settings.chunk_seconds,
        overlap_s=settings.chunk_overlap_seconds,
    )
    return JobPlan(inputs, plan)


def describe_plan(job: JobPlan, target_lang: str) -> str:
    media = job.inputs.media
    lines = [
        f"video: {media.duration_s:.2f}s, {media.width}x{media.height} @ {media.fps:.3f} fps, "
        f"audio {media.audio_rate} Hz x{media.audio_channels}",
        f"subtitles: {len(job.inputs.segments)} segments in {target_lang}",
        f"plan: {len(job.plan.chunks)} chunk(s), {job.plan.overlap_s:.1f}s shared context",
    ]
    for chunk in job.plan.chunks:
        lines.append(
            f"  chunk {chunk.index}: window {chunk.start_s:7.2f}-{chunk.end_s:7.2f}s "
            f"core {chunk.core_start_s:7.2f}-{chunk.core_end_s:7.2f}s "
            f"segments {list(chunk.segment_indices)}"
        )
    lines.extend(f"warning: {w}" for w in job.plan.warnings)
    return "\n".join(lines)
