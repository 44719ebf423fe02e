"""Validation of a job's inputs, shared by the ingest stage and ``polydub run``.

Both must reject the same things with the same words, so the checks live here
once: the video must exist and carry both a video and an audio stream whose
channel layout the dubbed MP4 can carry, the subtitles must parse and fit the
video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from handlers.runtime.media import MediaInfo, probe, soundtrack_layout
from handlers.runtime.settings import Settings, get_settings
from handlers.runtime.subtitles import Segment, fit_segments, parse_subtitles
from schemas.errors import InputError


@dataclass(frozen=True)
class JobInputs:
    """A probed video and its validated target-language segments.

    ``fixes`` are the changes made to the subtitles so they could be dubbed
    (a clipped last cue, a trimmed overlap), one sentence each; they go into
    the manifest and the QC report.
    """

    media: MediaInfo
    segments: tuple[Segment, ...]
    fixes: tuple[str, ...] = ()


def validate_inputs(video: Path, subtitles: Path | list[Segment], settings: Settings | None = None) -> JobInputs:
    """Probe the video, parse (a file) and validate the subtitles, or raise :class:`InputError`.

    ``settings`` give the bounds (the overlap trimmed, the shortest clip); the
    process's settings when omitted.
    """
    settings = settings or get_settings()
    media = probe(video)
    if not media.has_video:
        raise InputError(
            f"{video} has no video stream",
            "polydub dubs videos; give a file with a video and an audio stream",
        )
    if not media.has_audio:
        raise InputError(
            f"{video} has no audio stream, so there is no speaker to dub",
            "give the original video with its soundtrack",
        )
    if media.duration_s < settings.min_clip_s:
        raise InputError(
            f"{video} is {media.duration_s:.2f} s long, shorter than the {settings.min_clip_s:.2f} s "
            "polydub dubs (no room for a dubbed line)",
            "give a longer clip (or lower POLYDUB_MIN_CLIP_S)",
        )
    assert media.audio_channels is not None  # every audio stream has a channel count
    soundtrack_layout(media.audio_layout, media.audio_channels)  # the output keeps it, or it fails now
    if isinstance(subtitles, Path):
        if not subtitles.exists():
            raise InputError(f"subtitle file {subtitles} does not exist", "check the --subs path")
        subtitles = parse_subtitles(subtitles)
    fitted = fit_segments(subtitles, video_duration_s=media.duration_s,
                          max_overlap_s=settings.subtitle_max_overlap_s)
    return JobInputs(media=media, segments=tuple(fitted.segments), fixes=tuple(fitted.fixes))
