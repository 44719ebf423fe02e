"""conversion: ``chunk.synthesized`` -> ``chunk.converted``.

Moves each dubbed segment toward its speaker's voice with the job's VC model.
Segments are converted one speaker at a time, each batch in one inference
call; a speaker's statistics (for WORLD: F0 and envelope; for RVC: their
register) are computed once per job from the reference clip, stored beside
it, and sent instead of the clip from then on. Engines with named voices (RVC)
also get the speaker's voice and pitch shift, as ingest resolved them into the
manifest. With ``vc = none`` the stage passes the speech through.

A speaker whose reference the model cannot use (WORLD: too little voiced
speech) is a condition of the input, not a failure: the speaker is converted
toward the whole soundtrack's speech instead, or, when that is unusable too,
keeps the TTS voice. The choice is stored beside the statistics (so every
chunk and redelivery makes the same one) and noted in the chunk's row, from
where QC lists it in the report; the job never fails or retries for it.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from typing import Any

import numpy as np

from handlers.runtime import keys
from handlers.runtime.jobstate import ChunkRow
from handlers.runtime.stagekit import ChunkOutput, ChunkStage
from schemas.errors import ObjectNotFound, UnusableInputError
from schemas.events import ChunkConverted, ChunkSynthesized, SegmentFit
from schemas.registry import EngineInfo
from serving.interfaces import VC

#: A speaker converted toward the whole soundtrack's speech (its own reference was unusable).
FALLBACK_TRACK = "track"
#: A speaker left unconverted (no reference was usable).
FALLBACK_NONE = "none"


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
        fallbacks: list[str] = []
        for speaker, fits in sorted(by_speaker.items()):
            spans = [_span(fit, window_start, rate, track.size) for fit in fits]
            pieces = [track[a:b] for a, b in spans]
            converted, note = await self._convert_speaker(event.job_id, manifest, choice, speaker, pieces, rate)
            if note is not None:
                fallbacks.append(note)
            for (a, b), wave in zip(spans, converted):
                out[a:b] = wave[: b - a]
        key = keys.chunk_output_key(event.job_id, event.chunk_index, self.name, "speech.wav")
        await self.run_blocking(self.put_audio, key, out, rate)
        return ChunkOutput(key, {"fallbacks": fallbacks} if fallbacks else {})

    async def _convert_speaker(self, job_id: str, manifest: dict[str, Any], choice: EngineInfo, speaker: str,
                               pieces: list[np.ndarray], rate: int) -> tuple[list[np.ndarray], str | None]:
        """One inference call for all of one speaker's segments in this chunk, and the fallback
        note when the speaker's own reference could not be used (``None``: it could)."""
        assert choice.model is not None
        stem = f"{keys.job_prefix(job_id)}speakers/{speaker}.{choice.name}"
        stats_key = f"{stem}.npy"
        fallback_key = f"{stem}.fallback.json"
        fallback = await self.run_blocking(self._load_fallback, fallback_key)
        if fallback is not None and fallback["mode"] == FALLBACK_NONE:
            return pieces, fallback["note"]
        note = None if fallback is None else fallback["note"]
        stats = await self.run_blocking(self._load_stats, stats_key)
        if stats is not None:
            return await self._convert(choice.model, manifest, speaker, pieces, rate, {"TARGET_STATS": stats}), note
        # The model returns the statistics it estimated (already rounded to the
        # float32 it will receive next time), so later chunks and redeliveries
        # convert identically from the cached copy.
        problems: list[str] = []
        references = [(manifest["speakers"][speaker], None)]
        if manifest.get("track_reference"):
            references.append((manifest["track_reference"], FALLBACK_TRACK))
        for reference_key, mode in references:
            reference, _ = await self.run_blocking(self.get_audio, reference_key)
            try:
                out = await self.inference.infer_items(choice.model, VC, self._items(
                    manifest, speaker, pieces, rate, {"REFERENCE": reference}))
            except UnusableInputError as exc:
                problems.append(exc.reason)
                continue
            if mode is not None:  # the note first: a crash before the stats recomputes the same choice
                note = (f"speaker {speaker!r}: {problems[0]}; converted toward the whole soundtrack's "
                        "speech instead (give a longer reference clip for that speaker)")
                await self.run_blocking(self._save_fallback, fallback_key, mode, note)
            if "TARGET_STATS" in out[0]:
                await self.run_blocking(self._save_stats, stats_key, out[0]["TARGET_STATS"])
            return [item["WAVEFORM"].astype(np.float32) for item in out], note
        note = (f"speaker {speaker!r}: {problems[0]}; no reference was usable, so that speaker keeps the "
                "synthetic voice (give a longer reference clip for that speaker)")
        await self.run_blocking(self._save_fallback, fallback_key, FALLBACK_NONE, note)
        return pieces, note

    async def _convert(self, model: str, manifest: dict[str, Any], speaker: str, pieces: list[np.ndarray],
                       rate: int, target: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = await self.inference.infer_items(model, VC, self._items(manifest, speaker, pieces, rate, target))
        return [item["WAVEFORM"].astype(np.float32) for item in out]

    @staticmethod
    def _items(manifest: dict[str, Any], speaker: str, pieces: list[np.ndarray], rate: int,
               target: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        return [{"WAVEFORM": piece, "SAMPLE_RATE": np.int32(rate), **target, **_voice_inputs(manifest, speaker)}
                for piece in pieces]

    def _load_fallback(self, key: str) -> dict[str, str] | None:
        try:
            return dict(json.loads(self.store.get_bytes(key)))
        except ObjectNotFound:
            return None

    def _save_fallback(self, key: str, mode: str, note: str) -> None:
        self.store.put_bytes(key, json.dumps({"mode": mode, "note": note}, sort_keys=True).encode())

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
