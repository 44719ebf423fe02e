"""qc: ``job.merged`` -> ``dub.completed`` or ``dub.failed`` (QC failed).

Measures the delivered files, not the pipeline's intentions: the output
video's duration against the source, speech present in every subtitle slot,
clipping and loudness of the mix, how segments fit their slots. Every check
yields a verdict with a reason a person can act on; a failed *gate* fails the
job, anything else is a warning. The full report goes to
``jobs/{id}/output/qc.json``; a summary rides in the completion event.
``dub.completed`` is emitted at most once per job (the ``completed`` marker),
with an event id derived from the job, so even a duplicate after a crash is
recognisably the same delivery.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handlers.runtime import keys
from handlers.runtime.jobstate import JobState
from handlers.runtime.media import probe
from handlers.runtime.mix import integrated_loudness
from handlers.runtime.stagekit import StageBase
from schemas.events import DubCompleted, DubFailed, JobMerged, QCSummary
from schemas.status import StatusCode

# A slot "has speech" when the dub's RMS over it reaches this level (dBFS).
SPEECH_RMS_DBFS = -45.0
# Samples at or above this magnitude count as clipped.
CLIP_LEVEL = 0.999
# Loudness may miss its target by this much before QC warns (LU).
LOUDNESS_TOLERANCE_LU = 1.0
COMPLETION_NAMESPACE = uuid.UUID("5b0c6d1e-8f1a-4a8e-9a57-2f0f3c1d7e10")


@dataclass
class Check:
    """One measurement, its verdict and why."""

    name: str
    passed: bool
    gate: bool
    value: float | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def completion_event_id(job_id: str) -> str:
    """The one ``event_id`` a job's ``dub.completed`` ever has."""
    return str(uuid.uuid5(COMPLETION_NAMESPACE, job_id))


class QCStage(StageBase):
    """Measure the merged dub and gate its delivery."""

    name = "qc"
    consumes = JobMerged

    async def handle(self, event: JobMerged, attempt: int) -> None:
        state = self.job(event.job_id)
        if state.is_marked("completed") or state.is_marked("failed"):
            return
        manifest = await self.manifest(event.job_id)
        report = await self.run_blocking(self._evaluate, state, manifest, event)
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
            await self.run_blocking(state.mark, "failed", {"stage": self.name, "reason": reasons})
            await self.publisher.publish(
                DubFailed(job_id=event.job_id, status=StatusCode.QC_FAILED, stage="qc", reason=reasons,
                          fix="see the QC report for each failed check", failed_checks=failed, qc=summary)
            )
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

    def _evaluate(self, state: JobState, manifest: dict[str, Any], event: JobMerged) -> dict[str, Any]:
        plan = state.read_json("plan.json")
        rows = state.rows(len(plan["chunks"]))
        dub, rate = self.get_audio(self.key_of(event.dub_audio_uri))
        mix, mix_rate = self.get_audio(keys.output_key(state.job_id, "mix.wav"))
        with tempfile.TemporaryDirectory(prefix="polydub-qc-") as tmp:
            video = Path(tmp) / "out.mp4"
            self.store.get_file(self.key_of(event.output_video_uri), video)
            info = probe(video)
        fits = {f["segment_index"]: f for row in rows for f in row.details.get("segment_fits", [])}
        checks = evaluate_checks(
            manifest=manifest,
            fits=fits,
            dub=dub,
            rate=rate,
            mix=mix,
            mix_rate=mix_rate,
            output_duration_s=info.duration_s,
            output_has_audio=info.has_audio,
            output_has_video=info.has_video,
            target_lufs=self.settings.loudness_target_lufs,
        )
        timings: dict[str, float] = {}
        for row in rows:
            for stage, seconds in row.timings_s.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
        engines = manifest["engines"]
        report = {
            "job_id": state.job_id,
            "checks": [asdict(c) for c in checks],
            "stage_timings_s": timings,
            "engine_versions": {kind: str(name) for kind, name in engines.items()},
        }
        state.store.put_bytes(keys.qc_key(state.job_id), _json(report))
        return report


def evaluate_checks(*, manifest: dict[str, Any], fits: dict[int, dict[str, Any]], dub: np.ndarray, rate: int,
                    mix: np.ndarray, mix_rate: int, output_duration_s: float, output_has_audio: bool,
                    output_has_video: bool, target_lufs: float) -> list[Check]:
    """Every QC check over the delivered media; pure, so tests can feed it defects."""
    fps = float(manifest["media"]["fps"])
    source_duration = float(manifest["media"]["duration_s"])
    checks: list[Check] = []

    drift = abs(output_duration_s - source_duration)
    checks.append(Check(
        "duration", drift <= 1.0 / fps + 1e-6, True, drift,
        f"output is {output_duration_s:.3f}s, source {source_duration:.3f}s (tolerance one frame, {1 / fps:.3f}s)",
    ))
    checks.append(Check(
        "streams", output_has_audio and output_has_video, True, None,
        "output has " + ", ".join(n for n, ok in (("video", output_has_video), ("audio", output_has_audio)) if ok)
        + " stream(s); both are required",
    ))

    silent = []
    for seg in manifest["segments"]:
        a, b = int(seg["start_s"] * rate), int(seg["end_s"] * rate)
        piece = dub[a:b]
        rms_db = 20 * np.log10(np.sqrt(np.mean(piece.astype(np.float64) ** 2)) + 1e-12) if piece.size else -np.inf
        if rms_db < SPEECH_RMS_DBFS:
            silent.append(seg["index"])
    checks.append(Check(
        "speech_present", not silent, True, float(len(manifest["segments"]) - len(silent)),
        "every segment has speech" if not silent else f"segments {silent} have no speech in their slot",
        {"silent_segments": silent},
    ))

    clipped = int(np.sum(np.abs(mix) >= CLIP_LEVEL))
    checks.append(Check(
        "clipping", clipped == 0, True, float(clipped),
        "no clipped samples" if clipped == 0 else f"{clipped} samples of the mix are clipped",
    ))

    loudness = integrated_loudness(mix, mix_rate)
    off = abs(loudness - target_lufs) if np.isfinite(loudness) else float("inf")
    checks.append(Check(
        "loudness", off <= LOUDNESS_TOLERANCE_LU, False, loudness,
        f"mix is {loudness:.1f} LUFS, target {target_lufs:.1f} LUFS",
    ))

    within = []
    overflow = []
    for seg in manifest["segments"]:
        fit = fits.get(seg["index"])
        if fit is None:
            continue
        slot = seg["end_s"] - seg["start_s"]
        if fit["speech_s"] <= slot + 1.0 / fps:
            within.append(seg["index"])
        else:
            overflow.append({"segment": seg["index"], "over_s": round(fit["speech_s"] - slot, 3)})
    share = len(within) / max(1, len(manifest["segments"]))
    checks.append(Check(
        "timing", not overflow, False, share,
        f"{len(within)} of {len(manifest['segments'])} segments fit their slot"
        + (f"; {len(overflow)} spill into the following pause" if overflow else ""),
        {"overflow": overflow},
    ))
    return checks


def _json(document: Any) -> bytes:
    import orjson

    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
