"""conversion: ``chunk.synthesized`` -> ``chunk.converted``.

Moves each dubbed segment toward its speaker's voice with the job's VC model.
Segments are converted one speaker at a time, each batch in one inference
call; a speaker's statistics (for WORLD: F0 and envelope; for RVC: their
register) are computed once per job from the reference clip, stored beside
it, and sent instead of the clip from then on. Engines with named voices (RVC)
also get the speaker's voice and pitch shift, as ingest resolved them into the
manifest. With ``vc = none`` the stage passes the speech through.
"""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import numpy as np

from handlers.runtime import keys
from handlers.runtime.jobstate import ChunkRow
from handlers.runtime.stagekit import ChunkOutput, ChunkStage
from schemas.errors import ObjectNotFound
from schemas.events import ChunkConverted, ChunkSynthesized, SegmentFit
from schemas.registry import EngineInfo
from serving.interfaces import VC


class ConversionStage(ChunkStage[ChunkSynthesized]):
    """Convert the chunk's speech to the original speakers' voices."""

    name = "conversion"
    consumes = ChunkSynthesized

    def passthrough(self, event: ChunkSynthesized) -> str:
        return self.key_of(event.audio_uri)

    def next_event(self, event: ChunkSynthesized, manifest: dict[str, Any], row: ChunkRow) -> ChunkConverted:
        return ChunkConverted(
            job_id=event.job_id,
            chunk_index=event.chunk_index,
            n_chunks=event.n_chunks,
            audio_uri=str(self.output_uri(row)),
            engine=row.details[self.name]["engine"],
        )

    async def work(self, event: ChunkSynthesized, manifest: dict[str, Any],
                   choice: EngineInfo | None) -> ChunkOutput:
        assert choice is not None and choice.model is not None
        track, rate = await self.run_blocking(self.get_audio, self.key_of(event.audio_uri))
        window_start = (await self.plan(event.job_id))["chunks"][event.chunk_index]["start_s"]
        by_speaker: dict[str, list[SegmentFit]] = defaultdict(list)
        for fit in event.segment_fits:
            by_speaker[manifest["segments"][fit.segment_index]["speaker"]].append(fit)
        out = track.copy()
        for speaker, fits in sorted(by_speaker.items()):
            spans = [_span(fit, window_start, rate, track.size) for fit in fits]
            pieces = [track[a:b] for a, b in spans]
            converted = await self._convert_speaker(event.job_id, manifest, choice, speaker, pieces, rate)
            for (a, b), wave in zip(spans, converted):
                out[a:b] = wave[: b - a]
        key = keys.chunk_output_key(event.job_id, event.chunk_index, self.name, "speech.wav")
        await self.run_blocking(self.put_audio, key, out, rate)
        return ChunkOutput(key)

    async def _convert_speaker(self, job_id: str, manifest: dict[str, Any], choice: EngineInfo, speaker: str,
                               pieces: list[np.ndarray], rate: int) -> list[np.ndarray]:
        """One inference call for all of one speaker's segments in this chunk."""
        assert choice.model is not None
        stats_key = f"{keys.job_prefix(job_id)}speakers/{speaker}.{choice.name}.npy"
        stats = await self.run_blocking(self._load_stats, stats_key)
        if stats is not None:
            target: dict[str, np.ndarray] = {"TARGET_STATS": stats}
        else:
            # The model returns the statistics it estimated (already rounded to the
            # float32 it will receive next time), so later chunks and redeliveries
            # convert identically from the cached copy.
            reference, _ = await self.run_blocking(self.get_audio, manifest["speakers"][speaker])
            target = {"REFERENCE": reference}
        items = [{"WAVEFORM": piece, "SAMPLE_RATE": np.int32(rate), **target, **_voice_inputs(manifest, speaker)}
                 for piece in pieces]
        out = await self.inference.infer_items(choice.model, VC, items)
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


def _voice_inputs(manifest: dict[str, Any], speaker: str) -> dict[str, Any]:
    """The speaker's named voice and pitch shift, for engines with voices (ingest resolved them)."""
    choice = manifest.get("voices", {}).get(speaker)
    if choice is None:
        return {}
    inputs: dict[str, Any] = {"VOICE": choice["voice"]}
    if choice.get("pitch_shift") is not None:
        inputs["PITCH_SHIFT"] = np.float32(choice["pitch_shift"])
    return inputs


def _span(fit: SegmentFit, window_start: float, rate: int, size: int) -> tuple[int, int]:
    """Samples of the track holding one segment's speech (clipped to the window)."""
    start = int(round((fit.slot_start_s - window_start) * rate))
    end = min(size, start + int(round(fit.speech_s * rate)))
    start = max(0, start)
    return start, max(start, end)
