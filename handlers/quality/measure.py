"""Every measurement QC makes on one job, the model ones through the inference client.

Measures the delivered files, not the pipeline's intentions: the output video's
duration and streams, speech in every subtitle slot and where it sits in time,
clipping, loudness and true peak of the mix, the voice against each speaker's
reference (after and before voice conversion, so the gain is visible), the lips
in the *output* video against the dub per chunk, and intelligibility: each
segment re-transcribed, after and before voice conversion (English ships; other
languages when a recogniser is configured). What needs a model goes through the inference
client (``speaker_encoder``, ``av_sync``, ``asr``); the rest is
:mod:`handlers.quality.signals`.
"""

from __future__ import annotations

import asyncio
import logging
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
from handlers.quality.text import edit_distance, error_metric, normalize_for_scoring, tokens
from handlers.runtime.frames import audio_for_frames, window_frame_range
from handlers.runtime.inference import InferenceClient
from handlers.runtime.media import MediaInfo, channel_names, default_layout, iter_frames, probe, soundtrack_layout
from handlers.runtime.mix import loudness_profile
from handlers.runtime.settings import Settings
from handlers.runtime.subtitles import language_tag
from schemas.errors import InputError, UnusableInputError
from serving.interfaces import ASR, AV_SYNC, SPEAKER, asr_model_languages
from serving.specs import scalar

log = logging.getLogger(__name__)
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
    loudness, series = await asyncio.to_thread(_levels, media, _mix_channels(media.mix, info))
    speakers = await measure_speakers(inference, timing, media)
    sync = await measure_sync(inference, media, fps, settings.lipsync_frames_per_call, settings.qc_av_search_ms / 1000)
    intelligibility = await measure_intelligibility(inference, settings, timing, media)
    return Measurements(
        source_duration_s=duration,
        fps=fps,
        output=_output_info(info, manifest),
        segments=timing,
        loudness=loudness,
        speakers=speakers,
        sync=sync,
        intelligibility=intelligibility,
        series=series,
    )


def _output_info(info: MediaInfo, manifest: dict[str, Any]) -> OutputInfo:
    """The delivered file's streams, and the soundtrack and subtitle track the job should have given it."""
    source = manifest["media"]
    recorded = "audio_layout" in source  # manifests from before the layout was kept: mono, no track
    return OutputInfo(
        duration_s=info.duration_s, has_video=info.has_video, has_audio=info.has_audio,
        video_codec=info.video_codec, audio_codec=info.audio_codec, audio_layout=info.audio_layout,
        audio_rate=info.audio_rate, subtitle_codec=info.subtitle_codec, subtitle_language=info.subtitle_language,
        expected_audio_layout=soundtrack_layout(source["audio_layout"], source["audio_channels"]) if recorded else None,
        expected_subtitle_language=language_tag(manifest["target_lang"]) if recorded else None,
    )


def _mix_channels(mix: np.ndarray, info: MediaInfo) -> tuple[str, ...]:
    """The mix's channel names: the delivered soundtrack's layout, as the viewer's player routes it."""
    width = 1 if mix.ndim == 1 else mix.shape[1]
    layout = info.audio_layout if info.audio_layout is not None and info.audio_channels == width else None
    return channel_names(layout or default_layout(width))


def _levels(media: JobMedia, channels: tuple[str, ...]) -> tuple[LoudnessStats, dict[str, Any]]:
    """Loudness (BS.1770 over the mix's channels), peaks and clipping of the mix and the dub track."""
    mix_lufs, momentary = loudness_profile(media.mix, media.mix_rate, channels)
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
        try:
            out = await inference.infer_items(SPEAKER_MODEL, SPEAKER, [
                {"WAVEFORM": clip, "SAMPLE_RATE": np.int32(rate)} for clip, rate in clips])
        except UnusableInputError as exc:
            # A reference (or dub) with too little speech to embed: that speaker's voice cannot be
            # measured, which the report shows as a missing row; the QC verdict is not retried for it.
            log.warning("speaker similarity not measured", extra={"speaker": speaker, "reason": exc.reason})
            continue
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


def asr_languages(settings: Settings) -> frozenset[str]:
    """Languages the served ``asr`` model recognises with these settings.

    English ships (the PocketSphinx wheel's model); every subfolder of
    ``POLYDUB_QC_ASR_MODELS_DIR`` adds its language. A folder that does not exist is an
    error, so a misconfigured deployment stops at start, not on a job an hour later.
    """
    try:
        return frozenset(asr_model_languages(settings.qc_asr_models_dir))
    except ValueError as exc:
        raise InputError(
            f"POLYDUB_QC_ASR_MODELS_DIR is {settings.qc_asr_models_dir}, which is not a folder",
            "point it at a folder with one PocketSphinx model per language code (ko/, ja/, zh/), "
            "or unset it to measure English only",
        ) from exc


def _segment_span(seg: SegmentTiming) -> tuple[float, float]:
    """Where a segment's speech is (its slot when none was found)."""
    if seg.speech_start_s is not None and seg.speech_end_s is not None:
        return seg.speech_start_s, seg.speech_end_s
    return seg.slot_start_s, seg.slot_end_s


async def _transcribe(inference: InferenceClient, track: np.ndarray, rate: int, timing: list[SegmentTiming],
                      lang: str) -> list[str]:
    """What the ``asr`` model hears in each segment's span of ``track``."""
    clips = [_speech_of(track, rate, [_segment_span(s)]) for s in timing]
    parts = [clips[begin: begin + ASR_SEGMENTS_PER_CALL] for begin in range(0, len(clips), ASR_SEGMENTS_PER_CALL)]
    outs = await asyncio.gather(*(inference.infer_items(ASR_MODEL, ASR, [
        {"WAVEFORM": clip, "SAMPLE_RATE": np.int32(rate), "LANG": lang} for clip in part]) for part in parts))
    return [str(scalar(item, "TEXT")) for out in outs for item in out]


def _corpus_rate(edits: list[int], lengths: list[int]) -> float:
    """All edits over all reference tokens: short segments weigh as little as they say."""
    total = sum(lengths)
    return sum(edits) / total if total else 0.0


def _segment_rate(distance: int, ref: list[str], hyp: list[str]) -> float:
    return distance / len(ref) if ref else float(bool(hyp))


async def measure_intelligibility(inference: InferenceClient, settings: Settings, timing: list[SegmentTiming],
                                  media: JobMedia) -> Intelligibility:
    """Re-transcribe each segment of the delivered dub, and of the speech before voice conversion,
    with the served ``asr`` model; WER (en) or CER (ko, ja, zh) against the subtitles.

    Both tracks are cut at the segment spans measured on the delivered dub (conversion keeps
    the timing), so the two rates differ only by what conversion did to the words. The
    job's rates are corpus-level (all edits over all reference tokens).
    """
    lang = media.manifest["target_lang"]
    if not settings.qc_asr:
        return Intelligibility(measured=False, reason="skipped: POLYDUB_QC_ASR is off")
    if lang not in asr_languages(settings):
        return Intelligibility(
            measured=False,
            reason=f"skipped: no speech recogniser ships for {lang} (the shipped one is English); set "
                   f"POLYDUB_QC_ASR_MODELS_DIR to a folder with a PocketSphinx model for {lang} in {lang}/",
        )
    texts = {s["index"]: s["text"] for s in media.manifest["segments"]}
    heard = await _transcribe(inference, media.dub, media.rate, timing, lang)
    heard_before = (None if media.dub_before is None
                    else await _transcribe(inference, media.dub_before, media.rate, timing, lang))
    segments, edits, edits_before, lengths = [], [], [], []
    for i, (seg, hypothesis) in enumerate(zip(timing, heard)):
        ref, hyp = tokens(texts[seg.index], lang), tokens(hypothesis, lang)
        distance = edit_distance(ref, hyp)
        edits.append(distance)
        lengths.append(len(ref))
        row = SegmentTranscript(seg.index, texts[seg.index], normalize_for_scoring(texts[seg.index], lang),
                                hypothesis, _segment_rate(distance, ref, hyp))
        if heard_before is not None:
            hyp_before = tokens(heard_before[i], lang)
            distance_before = edit_distance(ref, hyp_before)
            edits_before.append(distance_before)
            row.hypothesis_before = heard_before[i]
            row.error_rate_before = _segment_rate(distance_before, ref, hyp_before)
        segments.append(row)
    metric = error_metric(lang)
    return Intelligibility(measured=True, reason=f"{metric} by {ASR_MODEL} ({lang})", metric=metric,
                           error_rate=_corpus_rate(edits, lengths),
                           error_rate_before=None if heard_before is None else _corpus_rate(edits_before, lengths),
                           segments=segments)
