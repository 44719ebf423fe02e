"""qc: ``job.merged`` -> ``dub.completed`` or ``dub.failed`` (QC failed).

Measures the delivered files, not the pipeline's intentions: the output video's
duration and streams, speech in every subtitle slot and where it sits in time, clipping,
loudness and true peak of the mix, the voice against each speaker's reference (after
and before voice conversion, so the gain is visible), the lips in the *output* video
against the dub per chunk, and, when an ASR model is configured, intelligibility.
Measurements that need a model go through the inference client (``speaker_encoder``,
``av_sync``, ``asr``); the rest, and every verdict, is pure code in
:mod:`handlers.qc_checks`.

A failed *gate* fails the job with ``QC_FAILED`` and the list of failed checks;
anything else failed is a warning. The full report goes to ``jobs/{id}/output/qc.json``
and a page for people to ``jobs/{id}/output/qc.html`` (:mod:`handlers.qc_report`); a
summary rides in the completion event. ``dub.completed`` is emitted at most once per job
(the ``completed`` marker), with an event id derived from the job, so even a duplicate
after a crash is recognisably the same delivery.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handlers.lipsync import window_frame_range
from handlers.qc_checks import (
    Check,
    ChunkSync,
    Intelligibility,
    LoudnessStats,
    Measurements,
    OutputInfo,
    SegmentTiming,
    SegmentTranscript,
    SpeakerSimilarity,
    Thresholds,
    av_offset,
    clipped_samples,
    edit_distance,
    error_metric,
    evaluate_checks,
    loudness_series,
    peak_dbfs,
    segment_timings,
    tokens,
    true_peak_dbfs,
    waveform_series,
)
from handlers.qc_report import render_html
from handlers.runtime import keys
from handlers.runtime.errors import InputError
from handlers.runtime.inference import InferenceClient
from handlers.runtime.jobstate import JobState
from handlers.runtime.media import iter_frames, probe
from handlers.runtime.mix import loudness_profile, overlap_add
from handlers.runtime.settings import Settings
from handlers.runtime.stagekit import StageBase, StageDeps
from schemas.events import DubCompleted, DubFailed, JobMerged, QCSummary
from schemas.status import StatusCode
from serving.interfaces import ASR, AV_SYNC, SPEAKER
from serving.specs import scalar

__all__ = ["Check", "JobMedia", "QCStage", "build_report", "check_asr_path", "completion_event_id",
           "evaluate_checks", "measure_job"]

COMPLETION_NAMESPACE = uuid.UUID("5b0c6d1e-8f1a-4a8e-9a57-2f0f3c1d7e10")
QC_HTML = "qc.html"
SPEAKER_MODEL = "speaker_encoder"
AV_SYNC_MODEL = "av_sync"
ASR_MODEL = "asr"
#: Segments sent to the ASR model per call (bounds the request; any served ASR batches).
ASR_SEGMENTS_PER_CALL = 8


def completion_event_id(job_id: str) -> str:
    """The one ``event_id`` a job's ``dub.completed`` ever has."""
    return str(uuid.uuid5(COMPLETION_NAMESPACE, job_id))


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


class QCStage(StageBase):
    """Measure the merged dub and gate its delivery."""

    name = "qc"
    consumes = JobMerged

    def __init__(self, deps: StageDeps) -> None:
        super().__init__(deps)
        # A misconfigured ASR path stops the worker at start, not a job an hour later.
        check_asr_path(self.settings)

    async def handle(self, event: JobMerged, attempt: int) -> None:
        state = self.job(event.job_id)
        if state.is_marked("completed") or state.is_marked("failed"):
            return
        manifest = await self.manifest(event.job_id)
        report = await self._evaluate(state, manifest, event)
        checks = [Check(**c) for c in report["checks"]]
        failed = [c.name for c in checks if c.gate and not c.passed]
        summary = QCSummary(
            passed=not failed,
            failed_checks=failed,
            warnings=[f"{c.name}: {c.reason}" for c in checks if not c.passed and not c.gate],
            metrics={c.name: c.value for c in checks if c.value is not None and np.isfinite(c.value)},
            report_uri=self.store.uri(keys.qc_key(event.job_id)),
        )
        if failed:
            reasons = "; ".join(f"{c.name}: {c.reason}" for c in checks if c.name in failed)
            # Publish first: a crash before the marker redelivers and publishes again
            # (a duplicate failure), where the other order could lose the failure.
            await self.publisher.publish(
                DubFailed(job_id=event.job_id, status=StatusCode.QC_FAILED, stage="qc", reason=reasons,
                          fix="see the QC report for each failed check", failed_checks=failed, qc=summary)
            )
            await self.run_blocking(state.mark, "failed", {"stage": self.name, "reason": reasons})
            return
        await self.publisher.publish(
            DubCompleted(
                event_id=completion_event_id(event.job_id),
                job_id=event.job_id,
                output_video_uri=event.output_video_uri,
                dub_audio_uri=event.dub_audio_uri,
                subtitles_uri=event.subtitles_uri,
                qc=summary,
                stage_timings_s=report["stage_timings_s"],
                engine_versions=report["engine_versions"],
            )
        )
        await self.run_blocking(state.mark, "completed")
        await self.emit_status(event.job_id, StatusCode.COMPLETED, 1.0, message="delivered")

    async def _evaluate(self, state: JobState, manifest: dict[str, Any], event: JobMerged) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="polydub-qc-") as tmp:
            media, rows = await self.run_blocking(self._load, state, manifest, event, Path(tmp))
            measurements = await measure_job(media, self.inference, self.settings)
        thresholds = Thresholds.for_job(self.settings, manifest["engines"])
        checks = evaluate_checks(measurements, thresholds)
        timings: dict[str, float] = {}
        for row in rows:
            for stage, seconds in row.timings_s.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
        versions = {kind: str(name) for kind, name in manifest["engines"].items()}
        spoken_by = sorted({v for row in rows for v in row.details.get("tts_versions", [])})
        if spoken_by:
            versions["tts"] = "; ".join(spoken_by)  # which voice and checkpoint actually spoke
        report = build_report(state.job_id, manifest, measurements, checks, thresholds, timings, versions)
        await self.run_blocking(self._write, state.job_id, report)
        return report

    def _load(self, state: JobState, manifest: dict[str, Any], event: JobMerged,
              tmp: Path) -> tuple[JobMedia, list[Any]]:
        plan = state.read_json("plan.json")
        chunks = plan["chunks"]
        rows = state.rows(len(chunks))
        dub, rate = self.get_audio(self.key_of(event.dub_audio_uri))
        mix, mix_rate = self.get_audio(keys.output_key(state.job_id, "mix.wav"))
        video = tmp / "dubbed.mp4"
        self.store.get_file(self.key_of(event.output_video_uri), video)
        # A segment's fit from the chunk that owns it (neighbours also speak it as context).
        fits: dict[int, dict[str, Any]] = {}
        for chunk, row in zip(chunks, rows):
            owned = set(chunk["segment_indices"])
            for fit in row.details.get("segment_fits", []):
                if fit["segment_index"] in owned or fit["segment_index"] not in fits:
                    fits[fit["segment_index"]] = fit
        before = None
        if any("conversion" in row.outputs for row in rows):
            pieces = []
            for chunk, row in zip(chunks, rows):
                audio, _ = self.get_audio(row.outputs["synthesis"])
                pieces.append((int(round(chunk["start_s"] * rate)), audio))
            before = overlap_add(pieces, dub.size)
        references = {label: self.get_audio(key) for label, key in manifest["speakers"].items()}
        media = JobMedia(job_id=state.job_id, manifest=manifest, chunks=chunks, fits=fits, dub=dub,
                         dub_before=before, rate=rate, mix=mix, mix_rate=mix_rate, video=video,
                         references=references)
        return media, rows

    def _write(self, job_id: str, report: dict[str, Any]) -> None:
        self.store.put_bytes(keys.qc_key(job_id), _json(report))
        self.store.put_bytes(keys.output_key(job_id, QC_HTML), render_html(report).encode("utf-8"))


# --- measuring ------------------------------------------------------------------------


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
            a = int(round(position / fps * media.rate))
            b = max(a + 1, int(round((position + len(batch)) / fps * media.rate)))
            clip = np.zeros(b - a, dtype=np.float32)
            piece = media.dub[a:b]
            clip[: piece.size] = piece
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


# --- the report -----------------------------------------------------------------------


def build_report(job_id: str, manifest: dict[str, Any], m: Measurements, checks: list[Check],
                 thresholds: Thresholds, stage_timings: dict[str, float],
                 engine_versions: dict[str, str] | None = None) -> dict[str, Any]:
    """The full QC report (``qc.json``): verdict, every check, per-segment and per-chunk rows."""
    failed = [c.name for c in checks if c.gate and not c.passed]
    return {
        "job_id": job_id,
        "passed": not failed,
        "failed_checks": failed,
        "warnings": [c.name for c in checks if not c.gate and not c.passed],
        "target_lang": manifest["target_lang"],
        "engines": manifest["engines"],
        "thresholds": asdict(thresholds),
        "checks": [asdict(c) for c in checks],
        "media": {
            "source_duration_s": m.source_duration_s,
            "output_duration_s": m.output.duration_s,
            "fps": m.fps,
            "video_codec": m.output.video_codec,
            "audio_codec": m.output.audio_codec,
        },
        "loudness": asdict(m.loudness) | {"target_lufs": thresholds.loudness_target_lufs},
        "segments": [asdict(s) | {"text": manifest["segments"][s.index]["text"]} for s in m.segments],
        "speakers": [asdict(s) for s in m.speakers],
        "chunks": [asdict(c) for c in m.sync],
        "intelligibility": asdict(m.intelligibility),
        "series": m.series,
        "stage_timings_s": stage_timings,
        "engine_versions": engine_versions or {kind: str(name) for kind, name in manifest["engines"].items()},
    }


def _json(document: Any) -> bytes:
    import orjson

    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
