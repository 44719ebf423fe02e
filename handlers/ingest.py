"""ingest: ``media.submitted`` -> ``job.accepted`` (or ``dub.failed``, input rejected).

Validates everything a person could have got wrong before any model runs, so a
bad submission fails in seconds with a reason, not an hour later. Copies the
source into the job's folder (later stages never touch the submitter's
storage), extracts the soundtrack at the pipeline rate, and cuts a reference
clip per speaker from the source speech when none was given.
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from handlers.inputs import JobInputs, validate_inputs
from handlers.runtime import keys
from handlers.runtime.jobstate import JobState
from handlers.runtime.media import decode_audio
from handlers.runtime.served import check_served
from handlers.runtime.stagekit import JobStage
from handlers.runtime.subtitles import Segment, subtitle_format
from handlers.runtime.voices import check_voice_names, resolve_voices
from schemas.errors import InputError, ObjectNotFound
from schemas.events import JobAccepted, MediaSubmitted

DEFAULT_SPEAKER = "default"
# Longest reference clip cut per speaker; VALL-E X prompts stop at 15 s, and WORLD
# statistics are stable well before that.
REFERENCE_MAX_S = 15.0


class IngestStage(JobStage[MediaSubmitted]):
    """Validate a submission, copy its media into the store, write the manifest."""

    name = "ingest"
    consumes = MediaSubmitted
    skip_if_marked = ("completed", "failed")  # a resubmission of a finished job: nothing to redo
    record = "manifest.json"

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
        with tempfile.TemporaryDirectory(prefix="polydub-ingest-") as tmp:
            work = Path(tmp)
            video = self._fetch(event.source_uri, work / "source")
            try:
                if event.subtitles.uri is not None:
                    fmt = event.subtitles.format or subtitle_format(event.subtitles.uri)
                    subs_path = self._fetch(event.subtitles.uri, work / f"subtitles.{fmt}")
                    inputs = validate_inputs(video, subs_path)
                else:
                    inputs = validate_inputs(video, _inline_segments(event))
            except InputError as exc:
                raise _naming_uri(exc, video, event.source_uri) from exc
            voices = resolve_voices(event.engines.vc, event.voices,
                                    (s.speaker or DEFAULT_SPEAKER for s in inputs.segments), self.settings)
            source_key = keys.source_key(event.job_id, "video")
            self.store.put_file(source_key, video)
            rate = self.settings.sample_rate
            audio = decode_audio(video, rate)
            audio_key = state.key("source/audio.wav")
            self.put_audio(audio_key, audio, rate)
            speakers = self._speaker_references(event, inputs, audio, work)

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
            "voices": voices,
            "output_prefix": event.output_prefix,
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
                path = self._fetch(uri, work / f"ref-{label}")
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

    def _fetch(self, uri: str, dest: Path) -> Path:
        """Bring a submitted URI to a local file (the job's store, a local path, or HTTP)."""
        root = self.store.root_uri
        try:
            if (key := self.store.key_of(uri)) is not None:
                self.store.get_file(key, dest)
            elif uri.startswith("file://"):
                path = Path(urllib.request.url2pathname(uri[len("file://"):]))
                if not path.exists():
                    raise InputError(f"{uri} does not exist", "check the path and that this worker can read it")
                shutil.copyfile(path, dest)
            elif uri.startswith(("http://", "https://")):
                with urllib.request.urlopen(uri, timeout=60) as response, dest.open("wb") as out:
                    shutil.copyfileobj(response, out)
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
        return dest


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

