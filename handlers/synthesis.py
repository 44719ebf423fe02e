"""synthesis: ``chunk.planned`` -> ``chunk.synthesized``.

Speaks every subtitle segment in the chunk's window with the job's TTS model (one
batched inference call per chunk, so Triton's dynamic batcher can group the
chunks of many jobs) and lays the speech on a silent track covering the
chunk's window. Timing: the model fits the speech into the slot itself (rate
first, then a time-stretch, together at most ``POLYDUB_MAX_SPEEDUP``,
:mod:`serving.fitting`); what still does not fit spills into the silence
before the next segment, and what does not fit there either is cut with a
fade at the next segment's start (recorded as ``cut_s``; QC fails the job's
timing naming the segment). How each segment was fitted travels in the
event, for conversion and QC.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engines.dsp import resample
from handlers.runtime import keys
from handlers.runtime.jobstate import ChunkRow
from handlers.runtime.stagekit import ChunkOutput, ChunkStage
from schemas.events import ChunkPlanned, ChunkSynthesized, SegmentFit
from schemas.registry import EngineInfo
from serving.interfaces import TTS
from serving.specs import scalar

# Fade applied where speech had to be cut at the next segment's start.
OVERFLOW_FADE_S = 0.02


class SynthesisStage(ChunkStage[ChunkPlanned]):
    """Speak the chunk's segments in the target language, fitted to their slots."""

    name = "synthesis"
    consumes = ChunkPlanned

    def next_event(self, event: ChunkPlanned, manifest: dict[str, Any], row: ChunkRow) -> ChunkSynthesized:
        recorded = row.details[self.name]
        return ChunkSynthesized(
            job_id=event.job_id,
            chunk_index=event.chunk_index,
            n_chunks=event.n_chunks,
            audio_uri=str(self.output_uri(row)),
            engine=recorded["engine"],
            segment_fits=[SegmentFit(**f) for f in recorded["segment_fits"]],
        )

    async def work(self, event: ChunkPlanned, manifest: dict[str, Any], choice: EngineInfo | None) -> ChunkOutput:
        assert choice is not None and choice.model is not None
        rate = self.settings.sample_rate
        window = int(round((event.end_s - event.start_s) * rate))
        track = np.zeros(window, dtype=np.float32)
        # Besides its own segments the chunk speaks any neighbour's segment that
        # reaches into its window, so the shared context holds the same speech in
        # both chunks and merging can crossfade it (engines are deterministic).
        owned = set(event.segment_indices)
        segments = [
            s for s in manifest["segments"]
            if s["index"] in owned or (s["end_s"] > event.start_s and s["start_s"] < event.end_s)
        ]
        fits: list[SegmentFit] = []
        versions: set[str] = set()
        if segments:
            waves, versions = await self._speak(segments, manifest["target_lang"], choice.model)
            for seg, (wave, speedup) in zip(segments, waves):
                next_start = _next_start(seg, manifest["segments"], manifest["media"]["duration_s"])
                offset = int(round((seg["start_s"] - event.start_s) * rate))
                room = int(round((next_start - seg["start_s"]) * rate))
                speech = _fit_into(wave, room, rate)
                _add_clipped(track, speech, offset)
                fits.append(
                    SegmentFit(
                        segment_index=seg["index"],
                        slot_start_s=seg["start_s"],
                        slot_end_s=seg["end_s"],
                        speech_s=speech.size / rate,
                        speedup=speedup,
                        cut_s=(wave.size - speech.size) / rate,
                    )
                )
        key = keys.chunk_output_key(event.job_id, event.chunk_index, self.name, "speech.wav")
        await self.run_blocking(self.put_audio, key, track, rate)
        return ChunkOutput(key, {"segment_fits": [f.model_dump() for f in fits], "versions": sorted(versions)})

    async def _speak(self, segments: list[dict[str, Any]], lang: str,
                     model: str) -> tuple[list[tuple[np.ndarray, float]], set[str]]:
        """One batched TTS call for the chunk's segments; waves at the pipeline rate, and
        the engine/voice/checkpoint descriptions the model reported (for the QC report)."""
        items = [{"TEXT": s["text"], "LANG": lang, "MAX_DURATION": np.float32(s["end_s"] - s["start_s"]),
                  "MAX_SPEEDUP": np.float32(self.settings.max_speedup)} for s in segments]
        spoken = await self.inference.infer_items(model, TTS, items)
        result = []
        for out in spoken:
            wave = resample(out["WAVEFORM"], int(scalar(out, "SAMPLE_RATE")), self.settings.sample_rate)
            result.append((wave, float(scalar(out, "SPEEDUP"))))
        return result, {str(scalar(out, "VERSION")) for out in spoken}


def _next_start(seg: dict[str, Any], segments: list[dict[str, Any]], duration_s: float) -> float:
    """Where ``seg``'s speech must stop at the latest: the next cue of its speaker, or any cue after its slot.

    Another speaker's cue starting inside the slot is an overlap the subtitles
    meant (two people talking at once): both are spoken and the track adds them,
    so it does not cut this speech short.
    """
    return min((s["start_s"] for s in segments if s["start_s"] > seg["start_s"]
                and (s["speaker"] == seg["speaker"] or s["start_s"] >= seg["end_s"])), default=duration_s)


def _add_clipped(track: np.ndarray, speech: np.ndarray, offset: int) -> None:
    """Add ``speech`` at ``offset``; parts outside the window (context segments) are cut."""
    a, b = max(0, offset), min(track.size, offset + speech.size)
    if b > a:
        track[a:b] += speech[a - offset: b - offset]


def _fit_into(wave: np.ndarray, room: int, rate: int) -> np.ndarray:
    """Cut speech that would run into the next segment, with a short fade."""
    if wave.size <= room:
        return wave
    cut = wave[: max(room, 0)].copy()
    fade = min(cut.size, int(OVERFLOW_FADE_S * rate))
    if fade:
        cut[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return cut

