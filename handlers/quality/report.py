"""The QC report document (``qc.json``) and its page, from a job's measurements or its stored files.

``qc.json`` holds the verdict, every check, per-segment and per-chunk rows and
the plot series; the page for people (:mod:`handlers.quality.page`) is
rendered from that document alone, so ``polydub report`` can re-render any
job's page from its stored files at any time.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from handlers.quality.measurements import Measurements
from handlers.quality.page import render_html
from handlers.quality.signals import loudness_series, waveform_series
from handlers.quality.thresholds import Thresholds
from handlers.quality.verdicts import Check
from handlers.runtime import keys
from handlers.runtime.mix import loudness_profile
from handlers.runtime.objectstore import ObjectStore
from handlers.runtime.settings import Settings
from schemas.errors import InputError, ObjectNotFound


def build_report(job_id: str, manifest: dict[str, Any], m: Measurements, checks: list[Check],
                 thresholds: Thresholds, stage_timings: dict[str, float],
                 engine_versions: dict[str, str] | None = None,
                 input_fixes: list[str] | None = None) -> dict[str, Any]:
    """The full QC report (``qc.json``): verdict, every check, per-segment and per-chunk rows.

    ``input_fixes`` lists what the pipeline changed or fell back on because of the input
    (a clipped cue, a speaker dubbed without voice conversion); the manifest's own
    subtitle fixes come first. They pass no verdict, but a person must see them.
    """
    failed = [c.name for c in checks if c.gate and not c.passed]
    return {
        "job_id": job_id,
        "passed": not failed,
        "failed_checks": failed,
        "warnings": [c.name for c in checks if not c.gate and not c.passed],
        "input_fixes": [*manifest.get("input_fixes", []), *(input_fixes or [])],
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
            "audio_layout": m.output.audio_layout,
            "audio_rate": m.output.audio_rate,
            "subtitle_codec": m.output.subtitle_codec,
            "subtitle_language": m.output.subtitle_language,
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


def load_report(store: ObjectStore, job_id: str) -> dict[str, Any]:
    """A job's ``qc.json`` from the store, with plot series recomputed from ``mix.wav`` if absent."""
    import orjson

    from handlers.runtime.media import channel_names, default_layout
    from handlers.runtime.wav import decode_wav

    try:
        report = orjson.loads(store.get_bytes(keys.qc_key(job_id)))
    except ObjectNotFound as exc:
        raise InputError(f"job {job_id} has no QC report in the object store",
                         "check the job id (and POLYDUB_OBJECT_STORE); QC runs after merging") from exc
    if not report.get("series") or "segments" not in report:
        if "segments" not in report:
            raise InputError(f"the QC report of job {job_id} predates the measurements the page shows",
                             "rerun the job to measure it again")
        key = keys.output_key(job_id, "mix.wav")
        audio, rate = decode_wav(store.get_bytes(key), store.uri(key))
        # The mix is in its soundtrack's layout; a WAV only says how many channels.
        width = 1 if audio.ndim == 1 else audio.shape[1]
        _, momentary = loudness_profile(audio, rate, channel_names(default_layout(width)))
        report["series"] = {"waveform": waveform_series(audio, rate), "loudness": loudness_series(momentary)}
    return report


def write_job_report(settings: Settings, job_id: str, out_dir: Path, store_dir: Path | None = None) -> Path:
    """Render ``OUT_DIR/{job}.qc.html`` (and the ``qc.json`` beside it) from the job's stored files.

    ``store_dir`` reads a local object-store folder instead of the configured store (a
    copy of a finished job, or ``polydub run``'s ``.polydub/store``).
    """
    from handlers.runtime.keys import validate_job_id
    from handlers.runtime.objectstore import open_store

    validate_job_id(job_id)
    if store_dir is not None:
        if not store_dir.is_dir():
            raise InputError(f"no object-store folder at {store_dir}", "pass the folder that holds jobs/")
        settings = settings.model_copy(update={"object_store": "local", "local_store_dir": store_dir})
    store = open_store(settings)
    report = load_report(store, job_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / f"{job_id}.qc.html"
    page.write_text(render_html(report), encoding="utf-8")
    (out_dir / f"{job_id}.qc.json").write_bytes(store.get_bytes(keys.qc_key(job_id)))
    return page
