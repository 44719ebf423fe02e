"""conversion: ``chunk.synthesized`` -> ``chunk.converted``.

Moves each dubbed segment toward its speaker's voice with the job's VC model.
Segments are converted one speaker at a time, each batch in one inference
call; a speaker's statistics (for WORLD: F0 and envelope) are computed once
per job from the reference clip, stored beside it, and sent instead of the
clip from then on. With ``vc = none`` the stage passes the speech through.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from typing import Any

import numpy as np

from handlers.runtime import keys
from handlers.runtime.errors import ObjectNotFound
from handlers.runtime.jobstate import JobState
from handlers.runtime.stagekit import StageBase
from schemas.events import ChunkConverted, ChunkSynthesized, SegmentFit
from schemas.status import StatusCode
from serving.interfaces import VC


def vc_model_name(engine: str) -> str:
    return f"vc_{engine}"


class ConversionStage(StageBase):
    """Convert the chunk's speech to the original speakers' voices."""

    name = "conversion"
    consumes = ChunkSynthesized

    async def handle(self, event: ChunkSynthesized, attempt: int) -> None:
        state = self.job(event.job_id)
        if state.is_marked("failed"):
            return
        manifest = await self.manifest(event.job_id)
        engine = manifest["engines"]["vc"]
        if engine == "none":
            audio_uri = event.audio_uri
            await self.run_blocking(state.mark_done, self.name, event.chunk_index)
        elif (done_key := (await self.finished_output(state, event.chunk_index))[0]) is not None:
            audio_uri = self.store.uri(done_key)
        else:
            audio_uri = await self._convert(event, manifest, state, engine)
        await self.publisher.publish(
            ChunkConverted(
                job_id=event.job_id,
                chunk_index=event.chunk_index,
                n_chunks=event.n_chunks,
                audio_uri=audio_uri,
                engine=engine,
            )
        )
        await self.emit_chunk_status(event.job_id, StatusCode.CONVERTED, event.n_chunks)

    async def _convert(self, event: ChunkSynthesized, manifest: dict[str, Any], state: JobState,
                       engine: str) -> str:
        started = time.perf_counter()
        track, rate = await self.run_blocking(self.get_audio, self.key_of(event.audio_uri))
        window_start = (await self.plan(event.job_id))["chunks"][event.chunk_index]["start_s"]
        by_speaker: dict[str, list[SegmentFit]] = defaultdict(list)
        for fit in event.segment_fits:
            by_speaker[manifest["segments"][fit.segment_index]["speaker"]].append(fit)
        out = track.copy()
        for speaker, fits in sorted(by_speaker.items()):
            spans = [_span(fit, window_start, rate, track.size) for fit in fits]
            pieces = [track[a:b] for a, b in spans]
            converted = await self._convert_speaker(event.job_id, manifest, engine, speaker, pieces, rate)
            for (a, b), wave in zip(spans, converted):
                out[a:b] = wave[: b - a]
        key = keys.chunk_output_key(event.job_id, event.chunk_index, self.name, "speech.wav")
        uri = await self.run_blocking(self.put_audio, key, out, rate)
        await self.record_chunk(state, event.chunk_index, key, time.perf_counter() - started, vc=engine)
        return uri

    async def _convert_speaker(self, job_id: str, manifest: dict[str, Any], engine: str, speaker: str,
                               pieces: list[np.ndarray], rate: int) -> list[np.ndarray]:
        """One inference call for all of one speaker's segments in this chunk."""
        stats_key = f"{keys.job_prefix(job_id)}speakers/{speaker}.{engine}.npy"
        stats = await self.run_blocking(self._load_stats, stats_key)
        if stats is not None:
            target: dict[str, np.ndarray] = {"TARGET_STATS": stats}
        else:
            # The model returns the statistics it estimated (already rounded to the
            # float32 it will receive next time), so later chunks and redeliveries
            # convert identically from the cached copy.
            reference, _ = await self.run_blocking(self.get_audio, manifest["speakers"][speaker])
            target = {"REFERENCE": reference}
        items = [{"WAVEFORM": piece, "SAMPLE_RATE": np.int32(rate), **target} for piece in pieces]
        out = await self.inference.infer_items(vc_model_name(engine), VC, items)
        if stats is None and "TARGET_STATS" in out[0]:
            await self.run_blocking(self._save_stats, stats_key, out[0]["TARGET_STATS"])
        return [item["WAVEFORM"].astype(np.float32) for item in out]

    def _load_stats(self, key: str) -> np.ndarray | None:
        try:
            return np.load(io.BytesIO(self.store.get_bytes(key)))
        except ObjectNotFound:
            return None

    def _save_stats(self, key: str, stats: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(stats, dtype=np.float32))
        self.store.put_bytes(key, buffer.getvalue())


def _span(fit: SegmentFit, window_start: float, rate: int, size: int) -> tuple[int, int]:
    """Samples of the track holding one segment's speech (clipped to the window)."""
    start = int(round((fit.slot_start_s - window_start) * rate))
    end = min(size, start + int(round(fit.speech_s * rate)))
    start = max(0, start)
    return start, max(start, end)
