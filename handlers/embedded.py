"""``polydub run``: the whole pipeline in one process, over a real broker.

Starts a private Kafka-compatible broker (Tansu, memory storage) on a free
loopback port, uses a local folder as the object store and runs the engines in
process, then runs every stage's subscriber, exactly as workers would, and
follows the job's ``dub.status`` events with a progress bar until
``dub.completed`` or ``dub.failed``.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handlers.app import ALL_STAGES, RETRY_RELAY, build_broker, start_broker
from handlers.client import job_events, media_submitted
from handlers.progress import JobProgress
from handlers.runtime import keys
from handlers.runtime.settings import Settings
from handlers.runtime.telemetry import start_span
from schemas.errors import InputError, PolydubError
from schemas.events import DubCompleted, DubFailed, DubStatus, EngineChoice, SpeakerVoice

EMBEDDED_SESSION_TIMEOUT_MS = 3000
#: In the names of the files ``polydub run`` keeps when QC fails the dub.
QC_FAILED_TAG = "qc-failed"


@dataclass(frozen=True)
class RunResult:
    job_id: str
    outcome: DubCompleted | DubFailed
    output: Path | None
    qc_report: Path | None


class JobFailed(PolydubError):
    """The job ended with ``dub.failed``; the CLI exits non-zero with its reason."""

    def __init__(self, failed: DubFailed) -> None:
        super().__init__(f"job {failed.job_id} failed in {failed.stage}: {failed.reason}", failed.fix)
        self.code = failed.status
        self.failed = failed


async def run_job(
    video: Path,
    subtitles: Path,
    target_lang: str,
    output: Path,
    engines: EngineChoice,
    settings: Settings,
    *,
    progress: bool = True,
    timeout_s: float | None = None,
    voices: Mapping[str, SpeakerVoice] | None = None,
) -> RunResult:
    """Dub ``video`` end to end on this machine; raises :class:`JobFailed` on ``dub.failed``."""
    from handlers.inputs import validate_inputs
    from handlers.localstack import ensure_topics, start_embedded_broker

    # Fail fast, before any server starts, on the mistakes a person can fix.
    refuse_overwriting_inputs(output, target_lang, (video, subtitles))
    validate_inputs(video, subtitles, settings)
    job_id = f"run-{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="polydub-run-") as tmp:
        server = start_embedded_broker(Path(tmp) / "broker")
        try:
            local = settings.model_copy(update={
                "bootstrap_servers": server.bootstrap_servers,
                "object_store": "local",
                "inference": "local",
                "topic_prefix": "",
                # A private broker with one member per group: a short session
                # makes Tansu's first-join window short, nothing else.
                "consumer_session_timeout_ms": EMBEDDED_SESSION_TIMEOUT_MS,
            })
            await ensure_topics(local)
            return await _run(job_id, video, subtitles, target_lang, output, engines, local,
                              progress=progress, timeout_s=timeout_s, voices=voices)
        finally:
            server.stop()


async def _run(job_id: str, video: Path, subtitles: Path, target_lang: str, output: Path,
               engines: EngineChoice, settings: Settings, *, progress: bool,
               timeout_s: float | None, voices: Mapping[str, SpeakerVoice] | None) -> RunResult:
    broker, deps = build_broker(settings, ALL_STAGES + (RETRY_RELAY,), service_name="polydub-run")
    bar = _ProgressBar(enabled=progress)
    submitted = media_submitted(job_id, video.resolve().as_uri(), subtitles.resolve().as_uri(), target_lang,
                                engines, voices)
    async with broker:
        await start_broker(broker)
        with start_span("job", job_id=job_id, target_lang=target_lang):
            await deps.publisher.publish(submitted)
        try:
            outcome = await _outcome(settings, job_id, bar, timeout_s)
        finally:
            bar.close()
    await deps.inference.close()

    if isinstance(outcome, DubFailed):
        if outcome.candidate_video_uri is not None:
            # QC judged a finished video and failed it: keep it for a person to hear
            # what failed, under a name that cannot pass for the delivered output.
            candidate = qc_failed_path(output)
            _copy_outputs(deps.store, outcome.candidate_video_uri, outcome.candidate_subtitles_uri,
                          candidate, target_lang)
            report = _copy_report(deps.store, job_id, candidate)
            raise _with_candidate(JobFailed(outcome), candidate, report)
        report = _copy_report(deps.store, job_id, output)
        raise JobFailed(outcome) if report is None else _with_report(JobFailed(outcome), report)
    _copy_outputs(deps.store, outcome.output_video_uri, outcome.subtitles_uri, output, target_lang)
    return RunResult(job_id, outcome, output, _copy_report(deps.store, job_id, output))


def output_paths(output: Path, target_lang: str) -> tuple[Path, ...]:
    """Every file ``polydub run`` may write for ``output``: the video, a QC-failed copy, subtitles, QC report."""
    return (output, qc_failed_path(output), output.with_suffix(f".{target_lang}.srt"),
            output.with_suffix(".qc.json"), output.with_suffix(".qc.html"))


def refuse_overwriting_inputs(output: Path, target_lang: str, inputs: tuple[Path, ...]) -> None:
    """Refuse an output that would overwrite an input (``-o`` equal to the video, say), before any work.

    Compared as resolved paths and, for existing files, as the same file (links, case-folding disks).
    """
    for written in output_paths(output, target_lang):
        for given in inputs:
            same = written.resolve() == given.resolve()
            if not same and written.exists() and given.exists():
                same = written.samefile(given)
            if same:
                raise InputError(
                    f"the output {written} would overwrite the input {given}",
                    "choose another -o path (by default polydub writes VIDEO.LANG.mp4 beside the video)",
                )


def qc_failed_path(output: Path) -> Path:
    """Where ``polydub run`` keeps a video that failed QC: ``OUT.qc-failed.mp4`` beside ``OUT.mp4``."""
    return output.with_name(f"{output.stem}.{QC_FAILED_TAG}{output.suffix}")


def _copy_outputs(store: Any, video_uri: str, subtitles_uri: str | None, video: Path, target_lang: str) -> None:
    """The video and its ``.LANG.srt`` from the store to ``video`` and beside it."""
    video.parent.mkdir(parents=True, exist_ok=True)
    store.get_file(_key(store, video_uri), video)
    if subtitles_uri is not None:
        store.get_file(_key(store, subtitles_uri), video.with_suffix(f".{target_lang}.srt"))


def _key(store: Any, uri: str) -> str:
    key = store.key_of(uri)
    if key is None:
        raise PolydubError(f"the job's output {uri} is outside this run's store ({store.root_uri})",
                           "rerun with --verbose and report it: the embedded run writes every output there")
    return str(key)


async def _outcome(settings: Settings, job_id: str, bar: _ProgressBar, timeout_s: float | None) -> DubCompleted | DubFailed:
    """Follow the job (the one follower ``polydub watch`` uses too) until it completes or fails."""
    async for event in job_events(settings, job_id, timeout_s=timeout_s):
        if isinstance(event, DubStatus):
            bar.update(event)
        else:
            return event
    raise PolydubError(f"the events of job {job_id} ended without an outcome", "rerun with --verbose")


def _copy_report(store: Any, job_id: str, output: Path) -> Path | None:
    """``OUT.qc.json`` (and the page for people, ``OUT.qc.html``) beside the output, when QC got that far."""
    if not store.exists(keys.qc_key(job_id)):
        return None
    path = output.with_suffix(".qc.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(store.get_bytes(keys.qc_key(job_id)))
    page = keys.output_key(job_id, "qc.html")
    if store.exists(page):
        output.with_suffix(".qc.html").write_bytes(store.get_bytes(page))
    return path


def _with_report(error: JobFailed, report: Path) -> JobFailed:
    error.fix = f"{error.fix or 'see the QC report'}: {report}"
    return error


def _with_candidate(error: JobFailed, candidate: Path, report: Path | None) -> JobFailed:
    where = f"the video that failed is kept as {candidate}"
    error.fix = f"{where}; see the QC report for each failed check: {report}" if report else where
    return error


class _ProgressBar:
    """A one-line progress bar on stderr, driven by ``dub.status``."""

    def __init__(self, enabled: bool) -> None:
        self._bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}] {postfix}")
        self._enabled = enabled
        self._job = JobProgress()

    def update(self, status: DubStatus) -> None:
        self._job.update(status)
        text, percent = self._job.describe(status), self._job.fraction * 100
        if self._bar is not None:
            self._bar.n = max(self._bar.n, round(percent, 1))
            self._bar.set_postfix_str(text)
            self._bar.refresh()
        elif self._enabled:
            sys.stderr.write(f"[{percent:5.1f}%] {text}\n")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def summarize(result: RunResult) -> str:
    """What ``polydub run`` prints on success."""
    assert isinstance(result.outcome, DubCompleted)
    qc = result.outcome.qc
    lines = [f"dubbed video: {result.output}", f"QC report:    {result.qc_report}",
             f"QC: {'passed' if qc.passed else 'FAILED'}"]
    lines += [f"  warning: {w}" for w in qc.warnings]
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in result.outcome.stage_timings_s.items())
    if timings:
        lines.append(f"stage time: {timings}")
    return "\n".join(lines)


__all__ = ["JobFailed", "RunResult", "qc_failed_path", "run_job", "summarize"]
