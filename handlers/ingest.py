"""ingest: ``media.submitted`` -> ``job.accepted`` (or ``dub.failed``, input rejected).

Validates everything a person could have got wrong before any model runs, so a
bad submission fails in seconds with a reason, not an hour later. Copies the
source into the job's folder (later stages never touch the submitter's
storage), extracts the soundtrack at the pipeline rate, and cuts a reference
clip per speaker from the source speech when none was given.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from handlers.inputs import JobInputs, validate_inputs
from handlers.runtime import keys
from handlers.runtime.admission import (
    check_file_size,
    check_media_limits,
    check_segment_limits,
    check_source_uri,
    fetch_http,
    output_prefix_key,
)
from handlers.runtime.jobstate import JobState
from handlers.runtime.media import decode_audio
from handlers.runtime.served import check_served
from handlers.runtime.stagekit import JobStage
from handlers.runtime.subtitles import Segment, subtitle_format
from handlers.runtime.voices import check_voice_names, resolve_voices
from schemas.errors import InputError, ObjectNotFound
from schemas.events import DubFailed, JobAccepted, MediaSubmitted
from schemas.status import StatusCode

DEFAULT_SPEAKER = "default"
# Longest reference clip cut per speaker; VALL-E X prompts stop at 15 s, and WORLD
# statistics are stable well before that.
REFERENCE_MAX_S = 15.0
#: The job's first submission (its event id and body): the idempotency record of the job id.
SUBMISSION_RECORD = "submission.json"
RESUBMISSION_NAMESPACE = uuid.UUID("8c2f4a61-3b7e-4d0a-a5c9-1e6b9d2f7c43")
log = logging.getLogger(__name__)


class IngestStage(JobStage[MediaSubmitted]):
    """Validate a submission, copy its media into the store, write the manifest."""

    name = "ingest"
    consumes = MediaSubmitted
    skip_if_marked = ("completed", "failed")  # a resubmission of a finished job: nothing to redo
    record = "manifest.json"

    async def handle(self, event: MediaSubmitted, attempt: int) -> None:
        """The job id is the idempotency key: one body per id, one job per body.

        A redelivery of the accepted event (same ``event_id``) goes through the
        template, which republishes from the record (at-least-once). Another event
        with the same body is the same job: when the job is already under way or
        done, nothing is redone or republished (progress never runs backwards). A
        different body under a used id is refused with its own ``dub.failed``,
        without touching the job that owns the id.
        """
        state = self.job(event.job_id)
        body = submission_body(event)
        try:
            recorded = await self.run_blocking(state.read_json, SUBMISSION_RECORD)
        except ObjectNotFound:
            recorded = None
        if recorded is None:
            await self.run_blocking(state.write_json, SUBMISSION_RECORD,
                                    {"event_id": event.event_id, "body": body})
        elif recorded["body"] != body:
            await self.publisher.publish(_refused_resubmission(event, recorded["body"], body))
            log.warning("refused a different submission under a used job id", extra={"job_id": event.job_id})
            return
        elif recorded["event_id"] != event.event_id and await self.run_blocking(self._under_way, state):
            log.info("duplicate submission of a job under way or done: nothing redone",
                     extra={"job_id": event.job_id, "event_id": event.event_id})
            return
        await super().handle(event, attempt)

    def _under_way(self, state: JobState) -> bool:
        return state.any_marked(("completed", "failed")) or self.store.exists(state.key(self.record))

    async def work(self, event: MediaSubmitted, state: JobState) -> dict[str, Any]:
        # The engines first: a job that cannot run fails in a second, before any media moves.
        await check_served(event.engines.model_dump(), self.settings, self.inference)
        check_voice_names(event.engines.vc, event.voices, self.settings)
        return await self.run_blocking(self._ingest, event)

    def next_events(self, event: MediaSubmitted, manifest: dict[str, Any]) -> list[JobAccepted]:
        return [JobAccepted(
            job_id=event.job_id,
            manifest_uri=self.store.uri(keys.manifest_key(event.job_id)),
            source_uri=self.store.uri(manifest["source_key"]),
            duration_s=manifest["media"]["duration_s"],
            n_segments=len(manifest["segments"]),
            target_lang=event.target_lang,
            engines=event.engines,
        )]

    def _ingest(self, event: MediaSubmitted) -> dict[str, Any]:
        state = self.job(event.job_id)
        output_prefix = self._check_submission(event)
        with tempfile.TemporaryDirectory(prefix="polydub-ingest-") as tmp:
            work = Path(tmp)
            video = self._fetch(event.source_uri, work / "source")
            try:
                if event.subtitles.uri is not None:
                    fmt = event.subtitles.format or subtitle_format(event.subtitles.uri)
                    subs_path = self._fetch(event.subtitles.uri, work / f"subtitles.{fmt}",
                                            self.settings.max_subtitle_bytes, "POLYDUB_MAX_SUBTITLE_BYTES",
                                            "subtitles")
                    inputs = validate_inputs(video, subs_path, self.settings)
                else:
                    inputs = validate_inputs(video, _inline_segments(event), self.settings)
                check_media_limits(inputs.media, self.settings, event.source_uri)
                if event.subtitles.uri is not None:  # inline segments were checked before any fetch
                    check_segment_limits(inputs.segments, self.settings)
            except InputError as exc:
                named = _naming_uri(exc, video, event.source_uri)
                if event.subtitles.uri is not None:  # the subtitles' temporary copy too
                    named = _naming_uri(named, work / f"subtitles.{fmt}", event.subtitles.uri)
                raise named from exc
            voices = resolve_voices(event.engines.vc, event.voices,
                                    (s.speaker or DEFAULT_SPEAKER for s in inputs.segments), self.settings)
            source_key = keys.source_key(event.job_id, "video")
            self.store.put_file(source_key, video)
            rate = self.settings.sample_rate
            audio = decode_audio(video, rate)
            audio_key = state.key("source/audio.wav")
            self.put_audio(audio_key, audio, rate)
            speakers = self._speaker_references(event, inputs, audio, work)
            # Every speaker's speech together: the voice conversion falls back on it for a
            # speaker whose own clip is too short to estimate a voice from.
            track_reference_key = state.key("source/speech_reference.wav")
            self.put_audio(track_reference_key,
                           _cut_reference(audio, rate, list(inputs.segments))[: int(REFERENCE_MAX_S * rate)], rate)

        return {
            "job_id": event.job_id,
            "source_key": source_key,
            "audio_key": audio_key,
            "media": _media_dict(inputs),
            "segments": [
                {"index": i, "start_s": s.start_s, "end_s": s.end_s, "text": s.text,
                 "speaker": s.speaker or DEFAULT_SPEAKER}
                for i, s in enumerate(inputs.segments)
            ],
            "target_lang": event.target_lang,
            "source_lang": event.source_lang,
            "engines": event.engines.model_dump(),
            "speakers": speakers,
            "track_reference": track_reference_key,
            "voices": voices,
            # What was changed in the user's subtitles so they could be dubbed (QC shows it).
            "input_fixes": list(inputs.fixes),
            "output_prefix": event.output_prefix,
            # The store folder qc delivers the outputs to (None: the job's own output folder).
            "output_prefix_key": output_prefix,
            "sample_rate": self.settings.sample_rate,
        }

    def _speaker_references(self, event: MediaSubmitted, inputs: JobInputs, audio: np.ndarray,
                            work: Path) -> dict[str, str]:
        """One reference clip per speaker label: given, or cut from the source speech."""
        rate = self.settings.sample_rate
        state = self.job(event.job_id)
        labels = sorted({s.speaker or DEFAULT_SPEAKER for s in inputs.segments})
        unknown = sorted(set(event.speaker_references) - set(labels))
        if unknown:
            raise InputError(
                f"speaker_references name speakers {unknown} that no subtitle segment uses "
                f"(segments use {labels})",
                "label the segments with those speakers or drop the extra references",
            )
        refs: dict[str, str] = {}
        for label in labels:
            key = state.key(f"speakers/{label}.wav")
            if label in event.speaker_references:
                uri = event.speaker_references[label]
                path = self._fetch(uri, work / f"ref-{label}", what=f"speaker reference {label!r}")
                try:
                    clip = decode_audio(path, rate)
                except InputError as exc:
                    reason = _naming_uri(exc, path, uri).reason
                    raise InputError(f"speaker reference {label!r}: {reason}", exc.fix) from exc
            else:
                spans = [s for s in inputs.segments if (s.speaker or DEFAULT_SPEAKER) == label]
                clip = _cut_reference(audio, rate, spans)
            self.put_audio(key, clip[: int(REFERENCE_MAX_S * rate)], rate)
            refs[label] = key
        return refs

    def _check_submission(self, event: MediaSubmitted) -> str | None:
        """Every URI and inline size of the event against the deployment's rules, before any fetch.

        Returns the output prefix's key (``None``: the job's own folder)."""
        check_source_uri(event.source_uri, self.store, self.settings, "source")
        if event.subtitles.uri is not None:
            check_source_uri(event.subtitles.uri, self.store, self.settings, "subtitles")
        else:
            check_segment_limits(_inline_segments(event), self.settings)
        for label, uri in event.speaker_references.items():
            check_source_uri(uri, self.store, self.settings, f"speaker reference {label!r}")
        return None if event.output_prefix is None else output_prefix_key(event.output_prefix, self.store)

    def _fetch(self, uri: str, dest: Path, limit: int | None = None, setting: str = "POLYDUB_MAX_SOURCE_BYTES",
               what: str = "source") -> Path:
        """Bring a submitted URI (admitted by :meth:`_check_submission`) to a local file, bounded in size."""
        root = self.store.root_uri
        limit = self.settings.max_source_bytes if limit is None else limit
        try:
            if (key := self.store.key_of(uri)) is not None:
                self.store.get_file(key, dest)
            elif uri.startswith("file://"):
                path = Path(urllib.request.url2pathname(uri[len("file://"):]))
                if not path.exists():
                    raise InputError(f"{uri} does not exist", "check the path and that this worker can read it")
                check_file_size(path, limit, setting, what, uri)
                shutil.copyfile(path, dest)
            elif uri.startswith(("http://", "https://")):
                fetch_http(uri, dest, self.settings, limit, setting, what)
            else:
                raise InputError(
                    f"cannot read {uri}: it is neither in this deployment's store ({root}) "
                    "nor a file:// or http(s):// URI",
                    f"upload it under {root} first (polydub submit does this)",
                )
        except ObjectNotFound as exc:
            raise InputError(f"{uri} does not exist in the object store", "upload it, then resubmit") from exc
        except OSError as exc:
            raise InputError(f"cannot read {uri}: {exc}", "check the URI is reachable from the workers") from exc
        check_file_size(dest, limit, setting, what, uri)
        return dest


def submission_body(event: MediaSubmitted) -> dict[str, Any]:
    """What a submission asks for: the event without what differs between two sends of it."""
    return event.model_dump(mode="json", exclude={"event_id", "occurred_at", "status"})


def _refused_resubmission(event: MediaSubmitted, used: dict[str, Any], body: dict[str, Any]) -> DubFailed:
    """The ``dub.failed`` for a different body under a used job id; the same refusal has the same event id."""
    differing = sorted(k for k in used.keys() | body.keys() if used.get(k) != body.get(k))
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return DubFailed(
        event_id=str(uuid.uuid5(RESUBMISSION_NAMESPACE, f"{event.job_id}/{digest}")),
        job_id=event.job_id,
        status=StatusCode.INPUT_REJECTED,
        stage="ingest",
        reason=f"job id {event.job_id!r} is already used by another submission (this one differs in "
               f"{', '.join(differing)}); this submission is refused and the job that owns the id goes on "
               "unchanged",
        fix="submit under a new job id (the job id is the idempotency key), or resend exactly the first body",
    )


def _naming_uri(error: InputError, path: Path, uri: str) -> InputError:
    """``error`` naming the submitted ``uri`` instead of this worker's temporary copy at ``path``."""
    return InputError(error.reason.replace(str(path), uri), error.fix)


def _cut_reference(audio: np.ndarray, rate: int, spans: list[Segment]) -> np.ndarray:
    pieces = [audio[int(s.start_s * rate): int(s.end_s * rate)] for s in spans]
    clip = np.concatenate(pieces) if pieces else audio
    return clip if clip.size else audio


def _inline_segments(event: MediaSubmitted) -> list[Segment]:
    """Inline segments get the same validation as a file; "line" is the segment's number."""
    assert event.subtitles.segments is not None
    return [
        Segment(index=i + 1, start_s=s.start_s, end_s=s.end_s, text=s.text, speaker=s.speaker, line=i + 1)
        for i, s in enumerate(event.subtitles.segments)
    ]


def _media_dict(inputs: JobInputs) -> dict[str, Any]:
    m = inputs.media
    return {
        "duration_s": m.duration_s,
        "fps": float(m.fps),
        "width": m.width,
        "height": m.height,
        "audio_rate": m.audio_rate,
        "audio_channels": m.audio_channels,
        # The source's channel positions (None: unlabelled); merging keeps them.
        "audio_layout": m.audio_layout,
    }

