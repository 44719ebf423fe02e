"""Every measurement QC makes on one job, the model ones through the inference client.

Measures the delivered files, not the pipeline's intentions: the output video's
duration and streams, speech in every subtitle slot and where it sits in time,
clipping, loudness and true peak of the mix, the voice against each speaker's
reference (after and before voice conversion, so the gain is visible), the lips
in the *output* video against the dub per chunk, and, when an ASR model is
configured, intelligibility. What needs a model goes through the inference
client (``speaker_encoder``, ``av_sync``, ``asr``); the rest is
:mod:`handlers.quality.signals`.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handlers.quality.measurements import (
    ChunkSync,
    Intelligibility,
    LoudnessStats,
    Measurements,
    OutputInfo,
    SegmentTiming,
    SegmentTranscript,
    SpeakerSimilarity,
)
from handlers.quality.signals import (
    av_offset,
    clipped_samples,
    loudness_series,
    peak_dbfs,
    segment_timings,
    true_peak_dbfs,
    waveform_series,
)
from handlers.quality.text import edit_distance, error_metric, tokens
from handlers.runtime.frames import audio_for_frames, window_frame_range
from handlers.runtime.inference import InferenceClient
from handlers.runtime.media import iter_frames, probe
from handlers.runtime.mix import loudness_profile
from handlers.runtime.settings import Settings
from schemas.errors import InputError
from serving.interfaces import ASR, AV_SYNC, SPEAKER
from serving.specs import scalar

SPEAKER_MODEL = "speaker_encoder"
AV_SYNC_MODEL = "av_sync"
ASR_MODEL = "asr"
#: Segments sent to the ASR model per call (bounds the request; any served ASR batches).
ASR_SEGMENTS_PER_CALL = 8


@dataclass
class JobMedia:
    """What QC measures, loaded from the store (or built by a test).

    ``dub`` is the dub voice alone on the job's timeline at the pipeline rate;
    ``dub_before`` the same before voice conversion (``None`` without VC);
    ``references`` each speaker's reference clip with its rate.
    """

    job_id: str
    manifest: dict[str, Any]
    chunks: list[dict[str, Any]]
    fits: dict[int, dict[str, Any]]
    dub: np.ndarray
    dub_before: np.ndarray | None
    rate: int
    mix: np.ndarray
    mix_rate: int
    video: Path
    references: dict[str, tuple[np.ndarray, int]]


async def measure_job(media: JobMedia, inference: InferenceClient, settings: Settings) -> Measurements:
    """Every measurement QC makes on one job; model work goes through ``inference``."""
    manifest = media.manifest
    fps = float(manifest["media"]["fps"])
    duration = float(manifest["media"]["duration_s"])
    info = await asyncio.to_thread(probe, media.video)
    timing = await asyncio.to_thread(
        segment_timings, media.dub, media.rate, manifest["segments"], media.fits, duration,
        settings.qc_timing_tolerance_s,
    )
    loudness, series = await asyncio.to_thread(_levels, media)
    speakers = await measure_speakers(inference, timing, media)
    sync = await measure_sync(inference, media, fps, settings.lipsync_frames_per_call, settings.qc_av_search_ms / 1000)
    intelligibility = await measure_intelligibility(inference, settings, timing, media)
    return Measurements(
        source_duration_s=duration,
        fps=fps,
        output=OutputInfo(duration_s=info.duration_s, has_video=info.has_video, has_audio=info.has_audio,
                          video_codec=info.video_codec, audio_codec=info.audio_codec),
        segments=timing,
        loudness=loudness,
        speakers=speakers,
        sync=sync,
        intelligibility=intelligibility,
        series=series,
    )


def _levels(media: JobMedia) -> tuple[LoudnessStats, dict[str, Any]]:
    mix_lufs, momentary = loudness_profile(media.mix, media.mix_rate)
    dub_lufs, _ = loudness_profile(media.dub, media.rate)
    stats = LoudnessStats(
        mix_lufs=mix_lufs,
        dub_lufs=dub_lufs,
        true_peak_dbtp=true_peak_dbfs(media.mix),
        mix_clipped=clipped_samples(media.mix),
        mix_samples=int(media.mix.size),
        dub_clipped=clipped_samples(media.dub),
        dub_samples=int(media.dub.size),
        dub_peak_dbfs=peak_dbfs(media.dub),
    )
    series = {"waveform": waveform_series(media.mix, media.mix_rate), "loudness": loudness_series(momentary)}
    return stats, series


def _speech_of(track: np.ndarray, rate: int, spans: list[tuple[float, float]]) -> np.ndarray:
    pieces = [track[max(0, int(a * rate)): int(math.ceil(b * rate))] for a, b in spans]
    return np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, dtype=np.float32)


async def measure_speakers(inference: InferenceClient, timing: list[SegmentTiming],
                           media: JobMedia) -> list[SpeakerSimilarity]:
    """Per speaker: cosine of the dub's embedding (after and before VC) to the reference's.

    The speaker's measured speech spans are joined into one clip per side, so each
    similarity rests on all of the speaker's speech, not on one short segment.
    """
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for seg in timing:
        if seg.speech_start_s is not None and seg.speech_end_s is not None:
            spans[seg.speaker].append((seg.speech_start_s, seg.speech_end_s))
    results = []
    for speaker in sorted(spans):
        if speaker not in media.references:
            continue
        reference, ref_rate = media.references[speaker]
        clips = [(reference, ref_rate), (_speech_of(media.dub, media.rate, spans[speaker]), media.rate)]
        if media.dub_before is not None:
            clips.append((_speech_of(media.dub_before, media.rate, spans[speaker]), media.rate))
        out = await inference.infer_items(SPEAKER_MODEL, SPEAKER, [
            {"WAVEFORM": clip, "SAMPLE_RATE": np.int32(rate)} for clip, rate in clips])
        emb = np.stack([item["EMBEDDING"] for item in out]).astype(np.float64)
        results.append(SpeakerSimilarity(
            speaker=speaker,
            after=float(emb[0] @ emb[1]),
            before=float(emb[0] @ emb[2]) if len(clips) > 2 else None,
            speech_s=clips[1][0].size / media.rate,
        ))
    return results


def _take(frames: Iterator[np.ndarray], n: int) -> list[np.ndarray]:
    out = []
    for frame in frames:
        out.append(frame)
        if len(out) == n:
            break
    return out


async def measure_sync(inference: InferenceClient, media: JobMedia, fps: float, frames_per_call: int,
                       search_s: float) -> list[ChunkSync]:
    """Per chunk of the output video: the offset between the lips and the dub's level.

    One decoding pass over the delivered video; each chunk's own (core) frames go to
    ``av_sync`` in slices of ``frames_per_call`` with the dub of the same span, and the
    per-frame signals are joined per chunk before the offset search, so a chunk gets one
    offset however it was sliced.
    """
    frames = iter_frames(media.video)
    max_lag = max(1, int(round(search_s * fps)))
    position = 0
    results = []
    for chunk in media.chunks:
        first, last = window_frame_range(chunk["core_start_s"], chunk["core_end_s"], fps)
        mouth: list[np.ndarray] = []
        levels: list[np.ndarray] = []
        faces = 0
        if position < first:
            await asyncio.to_thread(_take, frames, first - position)
            position = first
        while position < last:
            batch = await asyncio.to_thread(_take, frames, min(frames_per_call, last - position))
            if not batch:
                break
            clip = audio_for_frames(media.dub, media.rate, position / fps, len(batch), fps)
            (out,) = await inference.infer_items(AV_SYNC_MODEL, AV_SYNC, [{
                "FRAMES": np.stack(batch), "AUDIO": clip, "SAMPLE_RATE": np.int32(media.rate),
                "FPS": np.float32(fps)}])
            mouth.append(out["MOUTH_SIGNAL"].astype(np.float64))
            levels.append(out["AUDIO_LEVEL_DB"].astype(np.float64))
            faces += int(scalar(out, "FACE_FRAMES"))
            position += len(batch)
        m = np.concatenate(mouth) if mouth else np.zeros(0)
        lv = np.concatenate(levels) if levels else np.zeros(0)
        offset, r, usable = av_offset(m, lv, fps, max_lag) if m.size else (None, None, 0)
        results.append(ChunkSync(chunk_index=int(chunk["index"]), start_s=float(chunk["core_start_s"]),
                                 end_s=float(chunk["core_end_s"]), frames=int(m.size), face_frames=faces,
                                 speech_frames=usable, offset_s=offset, correlation=r))
    return results


def check_asr_path(settings: Settings) -> Path | None:
    """The configured ASR model path, or ``None``; a path that does not exist is an error."""
    path = settings.qc_asr_model_path
    if path is None:
        return None
    if not Path(path).exists():
        raise InputError(
            f"POLYDUB_QC_ASR_MODEL_PATH is {path}, which does not exist",
            "point it at the ASR checkpoint served as model `asr`, or unset it to skip the intelligibility check",
        )
    return Path(path)


async def measure_intelligibility(inference: InferenceClient, settings: Settings, timing: list[SegmentTiming],
                                  media: JobMedia) -> Intelligibility:
    """Re-transcribe each segment's dub with the served ``asr`` model; WER (en) or CER (ko, ja, zh).

    The job's rate is corpus-level (all edits over all reference tokens), so short
    segments do not weigh as much as long ones.
    """
    if check_asr_path(settings) is None:
        return Intelligibility(measured=False, reason="skipped: no ASR model configured")
    lang = media.manifest["target_lang"]
    texts = {s["index"]: s["text"] for s in media.manifest["segments"]}
    clips = [_speech_of(media.dub, media.rate, [(s.speech_start_s, s.speech_end_s)
                                                  if s.speech_start_s is not None and s.speech_end_s is not None
                                                  else (s.slot_start_s, s.slot_end_s)]) for s in timing]
    heard: list[str] = []
    for begin in range(0, len(clips), ASR_SEGMENTS_PER_CALL):
        part = clips[begin: begin + ASR_SEGMENTS_PER_CALL]
        out = await inference.infer_items(ASR_MODEL, ASR, [
            {"WAVEFORM": clip, "SAMPLE_RATE": np.int32(media.rate), "LANG": lang} for clip in part])
        heard += [str(scalar(item, "TEXT")) for item in out]
    segments, edits, total = [], 0, 0
    for seg, hypothesis in zip(timing, heard):
        ref, hyp = tokens(texts[seg.index], lang), tokens(hypothesis, lang)
        distance = edit_distance(ref, hyp)
        edits, total = edits + distance, total + len(ref)
        segments.append(SegmentTranscript(seg.index, texts[seg.index], hypothesis,
                                          distance / len(ref) if ref else float(bool(hyp))))
    metric = error_metric(lang)
    return Intelligibility(measured=True, reason=f"{metric} by {ASR_MODEL}", metric=metric,
                           error_rate=edits / total if total else 0.0, segments=segments)
