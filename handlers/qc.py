"""qc: ``job.merged`` -> ``dub.completed`` or ``dub.failed`` (QC failed).

The data step measures the delivered files (:mod:`handlers.quality.measure`),
judges them (:mod:`handlers.quality.verdicts`, thresholds per engine set from
:mod:`handlers.quality.thresholds`) and writes the report: ``qc.json`` (this
stage's record) and a page for people, ``qc.html``, under ``jobs/{id}/output/``.

A failed *gate* fails the job with ``QC_FAILED`` and the list of failed checks;
anything else failed is a warning; a summary rides in the completion event.
``dub.completed`` is emitted at most once per job (the ``completed`` marker),
with an event id derived from the job, so even a duplicate after a crash is
recognisably the same delivery.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from handlers.quality.measure import JobMedia, asr_languages, measure_job
from handlers.quality.page import render_html
from handlers.quality.report import build_report
from handlers.quality.thresholds import Thresholds
from handlers.quality.verdicts import Check, evaluate_checks
from handlers.runtime import keys
from handlers.runtime.bus import failure_event_id
from handlers.runtime.jobstate import JobState
from handlers.runtime.stagekit import JobStage, StageDeps
from schemas.events import DubCompleted, DubFailed, DubStatus, JobMerged, QCSummary
from schemas.status import StatusCode

COMPLETION_NAMESPACE = uuid.UUID("5b0c6d1e-8f1a-4a8e-9a57-2f0f3c1d7e10")
QC_HTML = "qc.html"


def completion_event_id(job_id: str) -> str:
    """The one ``event_id`` a job's ``dub.completed`` ever has."""
    return str(uuid.uuid5(COMPLETION_NAMESPACE, job_id))


class QCStage(JobStage[JobMerged]):
    """Measure the merged dub and gate its delivery."""

    name = "qc"
    consumes = JobMerged
    # The verdict's markers end the job: a redelivered job.merged delivers nothing twice.
    skip_if_marked = ("completed", "failed")
    record = "output/qc.json"

    def __init__(self, deps: StageDeps) -> None:
        super().__init__(deps)
        # A misconfigured recogniser folder stops the worker at start, not a job an hour later.
        asr_languages(self.settings)

    async def work(self, event: JobMerged, state: JobState) -> dict[str, Any]:
        manifest = await self.manifest(event.job_id)
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
        spoken_by = sorted({v for row in rows for v in row.details["synthesis"]["versions"]})
        if spoken_by:
            versions["tts"] = "; ".join(spoken_by)  # which voice and checkpoint actually spoke
        # Speakers the conversion could not give their own voice (each chunk notes it; listed once).
        fallbacks = sorted({n for row in rows for n in row.details.get("conversion", {}).get("fallbacks", [])})
        report = build_report(state.job_id, manifest, measurements, checks, thresholds, timings, versions,
                              input_fixes=fallbacks)
        page = keys.output_key(event.job_id, QC_HTML)
        await self.run_blocking(self.store.put_bytes, page, render_html(report).encode("utf-8"))
        prefix = manifest.get("output_prefix_key")
        if report["passed"] and prefix is not None:
            report["delivered"] = await self.run_blocking(self._deliver, event, prefix)
        return report

    def _deliver(self, event: JobMerged, prefix: str) -> dict[str, str]:
        """Copy the deliverables under the submission's ``output_prefix`` (checked at ingest).

        Same names as in the job's folder, so a redelivery rewrites the same objects."""
        delivered: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="polydub-deliver-") as tmp:
            for field, uri in (("output_video_uri", event.output_video_uri), ("dub_audio_uri", event.dub_audio_uri),
                               ("subtitles_uri", event.subtitles_uri)):
                key = self.key_of(uri)
                local = self.store.get_file(key, Path(tmp) / key.rsplit("/", 1)[-1])
                target = prefix + key.rsplit("/", 1)[-1]
                self.store.put_file(target, local)
                delivered[field] = self.store.uri(target)
        return delivered

    def next_events(self, event: JobMerged, report: dict[str, Any]) -> list[DubCompleted | DubFailed]:
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
            return [DubFailed(event_id=failure_event_id(event.job_id), job_id=event.job_id,
                              status=StatusCode.QC_FAILED, stage="qc",
                              reason=failure_reason(report), fix="see the QC report for each failed check",
                              failed_checks=failed, qc=summary, candidate_video_uri=event.output_video_uri,
                              candidate_subtitles_uri=event.subtitles_uri)]
        delivered = report.get("delivered", {})
        return [DubCompleted(
            event_id=completion_event_id(event.job_id),
            job_id=event.job_id,
            output_video_uri=delivered.get("output_video_uri", event.output_video_uri),
            dub_audio_uri=delivered.get("dub_audio_uri", event.dub_audio_uri),
            subtitles_uri=delivered.get("subtitles_uri", event.subtitles_uri),
            qc=summary,
            stage_timings_s=report["stage_timings_s"],
            engine_versions=report["engine_versions"],
        )]

    async def after_publish(self, state: JobState, report: dict[str, Any]) -> None:
        """The verdict's marker, after its event: a crash in between publishes it again, never loses it."""
        if report["passed"]:
            await self.run_blocking(state.mark, "completed")
        else:
            await self.run_blocking(state.mark, "failed", {"stage": self.name, "reason": failure_reason(report)})

    def done_status(self, event: JobMerged, report: dict[str, Any]) -> DubStatus | None:
        return self.status(event.job_id, self.info.done, 1.0, message="delivered") if report["passed"] else None

    def _load(self, state: JobState, manifest: dict[str, Any], event: JobMerged,
              tmp: Path) -> tuple[JobMedia, list[Any]]:
        plan = state.read_json("plan.json")
        chunks = plan["chunks"]
        rows = state.rows(len(chunks))
        dub, rate = self.get_audio(self.key_of(event.dub_audio_uri))
        before = None if event.unconverted_dub_uri is None else self.get_audio(self.key_of(event.unconverted_dub_uri))[0]
        mix, mix_rate = self.get_audio(self.key_of(event.mix_uri), keep_channels=True)
        video = tmp / "dubbed.mp4"
        self.store.get_file(self.key_of(event.output_video_uri), video)
        # A segment's fit from the chunk that owns it (neighbours also speak it as context).
        fits: dict[int, dict[str, Any]] = {}
        for chunk, row in zip(chunks, rows):
            owned = set(chunk["segment_indices"])
            for fit in row.details["synthesis"]["segment_fits"]:
                if fit["segment_index"] in owned or fit["segment_index"] not in fits:
                    fits[fit["segment_index"]] = fit
        references = {label: self.get_audio(key) for label, key in manifest["speakers"].items()}
        media = JobMedia(job_id=state.job_id, manifest=manifest, chunks=chunks, fits=fits, dub=dub,
                         dub_before=before, rate=rate, mix=mix, mix_rate=mix_rate, video=video,
                         references=references)
        return media, rows


def failure_reason(report: dict[str, Any]) -> str:
    """The failed gates and why, for ``dub.failed`` and the job's failure marker."""
    return "; ".join(f"{c['name']}: {c['reason']}" for c in report["checks"] if c["gate"] and not c["passed"])
