"""What QC measured on one job: plain rows, the input of the verdicts and of the report.

The measuring lives in :mod:`handlers.quality.signals` (pure signal code) and
:mod:`handlers.quality.measure` (what needs a model, through the inference
client); the verdicts over these rows in :mod:`handlers.quality.verdicts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SegmentTiming:
    """Where one segment's dubbed speech is, against its subtitle slot (seconds)."""

    index: int
    speaker: str
    slot_start_s: float
    slot_end_s: float
    next_start_s: float
    speech_start_s: float | None
    speech_end_s: float | None
    speech_in_slot_s: float
    start_offset_s: float | None
    end_offset_s: float | None
    overflow_s: float
    speedup: float | None
    longest_gap_s: float
    on_time: bool


@dataclass
class SpeakerSimilarity:
    """Cosine of GE2E embeddings: the dub vs the speaker's reference, after and before VC."""

    speaker: str
    after: float
    before: float | None
    speech_s: float


@dataclass
class ChunkSync:
    """Audio-visual offset of one chunk of the delivered video.

    ``offset_s`` > 0: the lips move after the sound (the picture is late).
    """

    chunk_index: int
    start_s: float
    end_s: float
    frames: int
    face_frames: int
    speech_frames: int
    offset_s: float | None
    correlation: float | None


@dataclass
class OutputInfo:
    """What the delivered file holds, and (``expected_*``) what it should hold where the job says.

    The expectations are ``None`` for jobs whose manifest predates recording the source's
    channel layout (their output was mono, without a subtitle track).
    """

    duration_s: float
    has_video: bool
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    audio_layout: str | None = None
    audio_rate: int | None = None
    subtitle_codec: str | None = None
    subtitle_language: str | None = None
    expected_audio_layout: str | None = None
    expected_subtitle_language: str | None = None


@dataclass
class SegmentTranscript:
    """One segment re-transcribed: the subtitle, what was heard in the delivered dub and before VC.

    ``scored`` is the subtitle as scored (read aloud, case and punctuation dropped); the
    ``*_before`` fields are ``None`` when the job had no voice conversion.
    """

    index: int
    reference: str
    scored: str
    hypothesis: str
    error_rate: float
    hypothesis_before: str | None = None
    error_rate_before: float | None = None


@dataclass
class Intelligibility:
    """Re-transcription of the dub against the subtitles, or why it was skipped.

    ``error_rate`` is the delivered dub's (after voice conversion), ``error_rate_before``
    the synthesised speech's (``None`` without voice conversion); both corpus-level.
    """

    measured: bool
    reason: str
    metric: str = ""
    error_rate: float | None = None
    error_rate_before: float | None = None
    segments: list[SegmentTranscript] = field(default_factory=list)


@dataclass
class LoudnessStats:
    mix_lufs: float
    dub_lufs: float
    true_peak_dbtp: float
    mix_clipped: int
    mix_samples: int
    dub_clipped: int
    dub_samples: int
    dub_peak_dbfs: float


@dataclass
class Measurements:
    """Everything QC measured on one job, the input of :func:`evaluate_checks`."""

    source_duration_s: float
    fps: float
    output: OutputInfo
    segments: list[SegmentTiming]
    loudness: LoudnessStats
    speakers: list[SpeakerSimilarity]
    sync: list[ChunkSync]
    intelligibility: Intelligibility
    #: Plot data for the human report (waveform, loudness over time); not judged.
    series: dict[str, Any] = field(default_factory=dict)
