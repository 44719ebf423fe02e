"""QC measurements that need no model, and the verdicts over all measurements.

Everything here is a pure function of arrays and plain data, so tests can feed it media
with known defects and check each verdict and its reason. What needs a model (speaker
embeddings, the mouth signal of the delivered video) is measured in :mod:`handlers.qc`
through the inference client and arrives here as :class:`SpeakerSimilarity` and
:class:`ChunkSync` rows.

Every check yields a :class:`Check`: passed or not, whether it *gates* delivery (a failed
gate fails the job with ``QC_FAILED``; anything else failed is a warning), the headline
value and a reason a person can act on. Thresholds come from settings through
:class:`Thresholds`, which also picks the speaker-similarity floor by engine set:
reference engines (eSpeak + WORLD) are held to a floor that catches gross mismatches,
neural voice conversion to the research target.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from handlers.runtime.mix import LOUDNESS_FLOOR_LUFS, MOMENTARY_BLOCK_S, MOMENTARY_HOP_S
from handlers.runtime.settings import Settings

# --- speech activity ------------------------------------------------------------------
#: Analysis frame for speech activity (non-overlapping), in seconds: fine enough to time a
#: syllable onset, coarse enough that a voiced frame always holds a pitch period or more.
ACTIVITY_FRAME_S = 0.01
#: A frame of the dub track is speech when its RMS reaches this level (dBFS). The dub
#: track holds the dub voice alone (no background), so a fixed floor is reliable.
SPEECH_RMS_DBFS = -45.0
#: A segment "has speech" when at least this much of its slot is active, in seconds.
MIN_SPEECH_S = 0.1
#: How far before its slot a segment's speech is looked for (an early start), in seconds.
SEARCH_BEFORE_S = 0.5

# --- clipping -------------------------------------------------------------------------
#: Clipping leaves flat tops: this many consecutive samples of the same magnitude ...
FLAT_TOP_RUN = 4
#: ... equal within this relative distance (float32 exactness; even a 10 Hz sine changes
#: more than this between neighbouring samples at its crest) ...
FLAT_TOP_TOLERANCE = 1e-6
#: ... at no less than this share of the track's peak, count as clipped. Only loud flat
#: runs matter: clipping happens at the top of the range, wherever that was scaled to.
FLAT_TOP_MIN_SHARE_OF_PEAK = 0.5

# --- loudness -------------------------------------------------------------------------
#: True peak is measured on the signal oversampled this many times (ITU-R BS.1770-4 annex 2).
TRUE_PEAK_OVERSAMPLE = 4
#: Oversampling runs block-wise, so memory stays bounded for hour-long mixes ...
TRUE_PEAK_BLOCK = 1 << 18
#: ... with this many samples of context on each side (covers resample_poly's filter).
TRUE_PEAK_MARGIN = 64
#: Points of each plotted series kept in the report (waveform buckets, loudness values).
SERIES_POINTS = 1200

# --- audio-visual sync ----------------------------------------------------------------
#: Audio levels below this are clipped before correlating with the mouth signal: digital
#: silence between segments would otherwise dominate the correlation.
AV_LEVEL_FLOOR_DB = -60.0
#: Fewest frames with a face and speech that give an offset worth reporting.
MIN_SYNC_FRAMES = 10
#: A chunk whose frames show a face less than this share of the time is flagged "no face".
MIN_FACE_SHARE = 0.5

# --- intelligibility ------------------------------------------------------------------
#: Languages scored by character error rate (no spaces between words), the rest by words.
CHARACTER_LANGUAGES = frozenset({"ko", "ja", "zh"})

# --- engine sets ----------------------------------------------------------------------
#: Voice conversion engines that are neural (held to the research target).
NEURAL_VC = frozenset({"rvc"})
#: TTS engines that clone the reference voice themselves (zero-shot), without VC.
CLONING_TTS = frozenset({"vallex"})


@dataclass
class Check:
    """One measurement, its verdict and why."""

    name: str
    passed: bool
    gate: bool
    value: float | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Thresholds:
    """Every limit QC applies, resolved from settings for one job's engines."""

    engine_set: str
    similarity_min: float
    similarity_gates: bool
    timing_tolerance_s: float
    timing_min_share: float
    speedup_warn: float
    max_silence_gap_s: float
    max_clipped_share: float
    loudness_target_lufs: float
    loudness_tolerance_lu: float
    true_peak_ceiling_dbfs: float
    true_peak_tolerance_db: float
    av_offset_max_s: float
    av_search_s: float
    av_min_correlation: float
    av_gates: bool
    asr_max_error_rate: float

    @classmethod
    def for_job(cls, settings: Settings, engines: dict[str, str]) -> Thresholds:
        """Thresholds for a job made with ``engines`` (``{"tts": .., "vc": .., "lipsync": ..}``).

        Why per engine set: GE2E similarity of eSpeak voices converted by WORLD lands at
        0.53-0.79 against a source clip, while neural VC is expected to reach 0.85. Without
        voice conversion and without a cloning TTS the dub keeps the TTS voice by the
        user's choice, so similarity is reported but only warns. Without lip sync the
        output shows the source's lips, so AV sync only warns too.
        """
        engine_set = voice_engine_set(engines)
        vc = engines.get("vc", "none")
        return cls(
            engine_set=engine_set,
            similarity_min=(settings.qc_similarity_min_neural if engine_set == "neural"
                            else settings.qc_similarity_min_reference),
            similarity_gates=vc != "none" or engines.get("tts") in CLONING_TTS,
            timing_tolerance_s=settings.qc_timing_tolerance_s,
            timing_min_share=settings.qc_timing_min_share,
            speedup_warn=settings.qc_speedup_warn,
            max_silence_gap_s=settings.qc_max_silence_gap_s,
            max_clipped_share=settings.qc_max_clipped_share,
            loudness_target_lufs=settings.loudness_target_lufs,
            loudness_tolerance_lu=settings.qc_loudness_tolerance_lu,
            true_peak_ceiling_dbfs=settings.true_peak_dbfs,
            true_peak_tolerance_db=settings.qc_true_peak_tolerance_db,
            av_offset_max_s=settings.qc_av_offset_max_ms / 1000.0,
            av_search_s=settings.qc_av_search_ms / 1000.0,
            av_min_correlation=settings.qc_av_min_correlation,
            av_gates=engines.get("lipsync", "none") != "none",
            asr_max_error_rate=settings.qc_asr_max_error_rate,
        )


def voice_engine_set(engines: dict[str, str]) -> str:
    """``"neural"`` when the voice comes from neural VC or a cloning TTS, else ``"reference"``."""
    vc = engines.get("vc", "none")
    if vc in NEURAL_VC or (vc == "none" and engines.get("tts") in CLONING_TTS):
        return "neural"
    return "reference"


# --- measurement rows -----------------------------------------------------------------


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
    """What the delivered file holds."""

    duration_s: float
    has_video: bool
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None


@dataclass
class SegmentTranscript:
    index: int
    reference: str
    hypothesis: str
    error_rate: float


@dataclass
class Intelligibility:
    """Re-transcription of the dub against the subtitles, or why it was skipped."""

    measured: bool
    reason: str
    metric: str = ""
    error_rate: float | None = None
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


# --- speech activity and timing -------------------------------------------------------


def activity_levels(audio: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
    """RMS level (dBFS) per :data:`ACTIVITY_FRAME_S` frame, and the frame length in seconds."""
    hop = max(1, int(round(ACTIVITY_FRAME_S * rate)))
    n = audio.size // hop
    frames = np.asarray(audio[: n * hop], dtype=np.float64).reshape(n, hop)
    rms = np.sqrt(np.mean(frames**2, axis=1)) if n else np.zeros(0)
    return 20.0 * np.log10(rms + 1e-12), hop / rate


def segment_timings(dub: np.ndarray, rate: int, segments: Sequence[dict[str, Any]],
                    fits: dict[int, dict[str, Any]], duration_s: float,
                    tolerance_s: float) -> list[SegmentTiming]:
    """Measure each segment's speech span in the dub track against its slot.

    Why measured, not taken from the segment fits: the fits say what synthesis meant to
    lay down; a shifted, dropped or truncated dub only shows in the audio. Each segment's
    speech is looked for from a little before its slot (an early start) up to the next
    segment's slot, never before the previous segment's speech ended. Overflow into the
    next segment comes from the laid span in the fits, because speech running straight
    into the next segment's speech cannot be told apart acoustically; a dub that drifted
    late shows as a start offset instead.
    """
    levels, frame_s = activity_levels(dub, rate)
    active = levels >= SPEECH_RMS_DBFS
    ordered = sorted(segments, key=lambda s: s["start_s"])
    out: list[SegmentTiming] = []
    prev_end = 0.0
    for i, seg in enumerate(ordered):
        start, end = float(seg["start_s"]), float(seg["end_s"])
        next_start = float(ordered[i + 1]["start_s"]) if i + 1 < len(ordered) else duration_s
        a = int(math.floor(max(start - SEARCH_BEFORE_S, prev_end, 0.0) / frame_s))
        b = min(active.size, int(math.floor(next_start / frame_s)))
        idx = np.flatnonzero(active[a:b]) + a if b > a else np.zeros(0, dtype=np.int64)
        slot_a, slot_b = int(math.floor(start / frame_s)), min(active.size, int(math.ceil(end / frame_s)))
        in_slot = float(active[slot_a:slot_b].sum()) * frame_s if slot_b > slot_a else 0.0
        fit = fits.get(int(seg["index"]))
        laid_end = float(fit["slot_start_s"]) + float(fit["speech_s"]) if fit else start
        if idx.size:
            speech_start, speech_end = float(idx[0] * frame_s), float((idx[-1] + 1) * frame_s)
            inner = active[idx[0]: idx[-1] + 1]
            gap = _longest_false_run(inner) * frame_s
            prev_end = speech_end
            start_offset, end_offset = speech_start - start, speech_end - end
            overflow = max(0.0, laid_end - next_start)
        else:
            speech_start = speech_end = start_offset = end_offset = None
            gap, overflow = 0.0, max(0.0, laid_end - next_start)
        on_time = (
            start_offset is not None and end_offset is not None
            and abs(start_offset) <= tolerance_s and end_offset <= tolerance_s and overflow <= frame_s
        )
        out.append(SegmentTiming(
            index=int(seg["index"]), speaker=str(seg.get("speaker", "default")),
            slot_start_s=start, slot_end_s=end, next_start_s=next_start,
            speech_start_s=speech_start, speech_end_s=speech_end, speech_in_slot_s=in_slot,
            start_offset_s=start_offset, end_offset_s=end_offset, overflow_s=overflow,
            speedup=float(fit["speedup"]) if fit else None, longest_gap_s=gap, on_time=on_time,
        ))
    return out


def _longest_false_run(flags: np.ndarray) -> int:
    """Length of the longest run of False in a boolean array."""
    if flags.size == 0 or flags.all():
        return 0
    padded = np.concatenate(([True], flags.astype(bool), [True]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return int(np.max(edges[1::2] - edges[::2])) if edges.size else 0


# --- levels ---------------------------------------------------------------------------


def clipped_samples(audio: np.ndarray) -> int:
    """Samples in flat-topped runs: at least :data:`FLAT_TOP_RUN` equal loud magnitudes in a row.

    Why flat tops and not "at full scale": the pipeline's tracks are float, so a sample
    above 1.0 is an over that normalisation later removes, not a clip, while clipping that
    happened upstream and was scaled down afterwards (as loudness normalisation does)
    sits below 1.0. What clipping always leaves is a run of identical crest values, which
    natural float audio practically never repeats.
    """
    x = np.abs(np.asarray(audio, dtype=np.float32).reshape(-1))
    if x.size < FLAT_TOP_RUN:
        return 0
    peak = float(x.max())
    if peak <= 0:
        return 0
    loud = x >= FLAT_TOP_MIN_SHARE_OF_PEAK * peak
    same = np.abs(np.diff(x)) <= FLAT_TOP_TOLERANCE * x[1:]
    pair = same & loud[1:] & loud[:-1]
    padded = np.concatenate(([False], pair, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    clipped = 0
    for begin, stop in zip(edges[::2], edges[1::2]):
        if stop - begin + 1 >= FLAT_TOP_RUN:  # n equal pairs in a row join n + 1 samples
            clipped += int(stop - begin + 1)
    return clipped


def peak_dbfs(audio: np.ndarray) -> float:
    """Sample peak in dBFS (-inf for silence); above 0 means float overs."""
    peak = float(np.max(np.abs(audio))) if np.size(audio) else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def true_peak_dbfs(audio: np.ndarray, oversample: int = TRUE_PEAK_OVERSAMPLE) -> float:
    """Peak of the signal oversampled ``oversample`` times, in dBTP (-inf for silence)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    peak = 0.0
    for begin in range(0, x.size, TRUE_PEAK_BLOCK):
        lo, hi = max(0, begin - TRUE_PEAK_MARGIN), min(x.size, begin + TRUE_PEAK_BLOCK + TRUE_PEAK_MARGIN)
        up = resample_poly(x[lo:hi], oversample, 1)
        keep = up[(begin - lo) * oversample: (min(x.size, begin + TRUE_PEAK_BLOCK) - lo) * oversample]
        if keep.size:
            peak = max(peak, float(np.max(np.abs(keep))))
    return 20.0 * math.log10(peak) if peak > 0 else float("-inf")


def waveform_series(audio: np.ndarray, rate: int, points: int = SERIES_POINTS) -> dict[str, Any]:
    """Min and max per bucket, enough to draw the waveform at report resolution."""
    x = np.asarray(audio, dtype=np.float32)
    n = max(1, min(points, x.size))
    bucket = max(1, x.size // n)
    usable = x[: bucket * n].reshape(n, bucket) if x.size >= n else x.reshape(-1, 1)
    return {
        "hop_s": bucket / rate,
        "min": np.round(usable.min(axis=1), 4).tolist(),
        "max": np.round(usable.max(axis=1), 4).tolist(),
    }


def loudness_series(momentary: np.ndarray, points: int = SERIES_POINTS) -> dict[str, Any]:
    """The momentary loudness, thinned to at most ``points`` values (max per bucket)."""
    if momentary.size == 0:
        return {"hop_s": MOMENTARY_HOP_S, "block_s": MOMENTARY_BLOCK_S, "lufs": []}
    step = max(1, int(math.ceil(momentary.size / points)))
    n = int(math.ceil(momentary.size / step))
    padded = np.full(n * step, LOUDNESS_FLOOR_LUFS)
    padded[: momentary.size] = momentary
    return {"hop_s": MOMENTARY_HOP_S * step, "block_s": MOMENTARY_BLOCK_S,
            "lufs": np.round(padded.reshape(n, step).max(axis=1), 2).tolist()}


# --- audio-visual sync ----------------------------------------------------------------


def av_offset(mouth: np.ndarray, level_db: np.ndarray, fps: float,
              max_lag_frames: int) -> tuple[float | None, float | None, int]:
    """Offset (s) that best aligns the mouth signal with the dub level, its correlation, frames used.

    Pearson correlation over frames with a face, at every lag within ``max_lag_frames``;
    the peak is refined between frames with a parabola through its neighbours, so an
    offset below one frame (40 ms at 25 fps) is still resolved. A positive offset means
    the lips move after the sound. ``(None, None, n)`` when fewer than
    :data:`MIN_SYNC_FRAMES` frames with a face and varying speech remain.
    """
    m = np.asarray(mouth, dtype=np.float64).reshape(-1)
    a = np.clip(np.asarray(level_db, dtype=np.float64).reshape(-1), AV_LEVEL_FLOOR_DB, 0.0)
    if m.size != a.size:
        raise ValueError(f"signals differ in length: {m.size} mouth frames vs {a.size} audio frames")
    usable = int(np.sum(np.isfinite(m) & (a > AV_LEVEL_FLOOR_DB)))
    scores: dict[int, float] = {}
    for lag in range(-max_lag_frames, max_lag_frames + 1):
        mm = m[lag:] if lag >= 0 else m[:lag]
        aa = a[: a.size - lag] if lag >= 0 else a[-lag:]
        ok = np.isfinite(mm) & np.isfinite(aa)
        if ok.sum() < MIN_SYNC_FRAMES or np.std(mm[ok]) == 0 or np.std(aa[ok]) == 0:
            continue
        scores[lag] = float(np.corrcoef(mm[ok], aa[ok])[0, 1])
    if not scores or usable < MIN_SYNC_FRAMES:
        return None, None, usable
    best = max(scores, key=lambda k: scores[k])
    delta = 0.0
    if best - 1 in scores and best + 1 in scores:
        left, mid, right = scores[best - 1], scores[best], scores[best + 1]
        curve = left - 2.0 * mid + right
        if curve < 0:
            delta = float(np.clip(0.5 * (left - right) / curve, -0.5, 0.5))
    return (best + delta) / fps, scores[best], usable


# --- intelligibility ------------------------------------------------------------------

_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions) between token lists."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp))
        previous = current
    return previous[-1]


def error_metric(lang: str) -> str:
    """``"cer"`` for ko/ja/zh (words are not space separated there), ``"wer"`` otherwise."""
    return "cer" if lang in CHARACTER_LANGUAGES else "wer"


def tokens(text: str, lang: str) -> list[str]:
    """Normalised tokens: NFKC, case-folded, punctuation dropped; characters or words by language."""
    clean = _PUNCTUATION.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    if error_metric(lang) == "cer":
        return [c for c in clean if not c.isspace()]
    return clean.split()


def error_rate(reference: str, hypothesis: str, lang: str) -> float:
    """WER (en) or CER (ko, ja, zh) of ``hypothesis`` against ``reference``.

    Edit distance over the reference's length; an empty reference scores 0 when the
    hypothesis is empty too, else 1.
    """
    ref, hyp = tokens(reference, lang), tokens(hypothesis, lang)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


# --- verdicts -------------------------------------------------------------------------


def evaluate_checks(m: Measurements, t: Thresholds) -> list[Check]:
    """Every QC verdict over the measurements; pure, so tests can feed it defects."""
    return [
        _duration(m),
        _streams(m),
        _speech_present(m),
        _silence_gaps(m, t),
        _clipping(m, t),
        _headroom(m),
        _loudness(m, t),
        _true_peak(m, t),
        _timing(m, t),
        _speedup(m, t),
        _similarity(m, t),
        _av_sync(m, t),
        _faces(m, t),
        _intelligibility(m, t),
    ]


def _duration(m: Measurements) -> Check:
    frame = 1.0 / m.fps
    drift = m.output.duration_s - m.source_duration_s
    ok = abs(drift) <= frame + 1e-6
    reason = (f"output is {m.output.duration_s:.3f} s, source {m.source_duration_s:.3f} s"
              + ("" if ok else f": {abs(drift):.3f} s {'longer' if drift > 0 else 'shorter'}")
              + f" (tolerance one frame, {frame:.3f} s)")
    return Check("duration", ok, True, abs(drift), reason,
                 {"output_s": m.output.duration_s, "source_s": m.source_duration_s})


def _streams(m: Measurements) -> Check:
    o = m.output
    problems = []
    if not o.has_video:
        problems.append("no video stream")
    elif o.video_codec != "h264":
        problems.append(f"video is {o.video_codec}, not H.264")
    if not o.has_audio:
        problems.append("no audio stream")
    elif o.audio_codec != "aac":
        problems.append(f"audio is {o.audio_codec}, not AAC")
    reason = "H.264 video and AAC audio" if not problems else "; ".join(problems) + " (H.264 + AAC required)"
    return Check("streams", not problems, True, None, reason,
                 {"video_codec": o.video_codec, "audio_codec": o.audio_codec})


def _speech_present(m: Measurements) -> Check:
    silent = [s.index for s in m.segments if s.speech_in_slot_s < MIN_SPEECH_S]
    reason = ("every segment has speech in its slot" if not silent
              else f"segment(s) {_numbers(silent)} have no speech in their slot")
    return Check("speech_present", not silent, True, float(len(m.segments) - len(silent)), reason,
                 {"silent_segments": silent})


def _silence_gaps(m: Measurements, t: Thresholds) -> Check:
    gaps = [{"segment": s.index, "gap_s": round(s.longest_gap_s, 3)} for s in m.segments
            if s.longest_gap_s > t.max_silence_gap_s]
    longest = max((s.longest_gap_s for s in m.segments), default=0.0)
    reason = (f"no silence longer than {t.max_silence_gap_s:.2f} s inside any segment's speech" if not gaps
              else "speech drops out inside segment(s) "
              + ", ".join(f"{g['segment']} ({g['gap_s']:.2f} s)" for g in gaps)
              + f"; limit {t.max_silence_gap_s:.2f} s")
    return Check("silence_gaps", not gaps, True, longest, reason, {"gaps": gaps})


def _clipping(m: Measurements, t: Thresholds) -> Check:
    lo = m.loudness
    share_mix = lo.mix_clipped / max(1, lo.mix_samples)
    share_dub = lo.dub_clipped / max(1, lo.dub_samples)
    worst = max(share_mix, share_dub)
    ok = worst <= t.max_clipped_share
    if lo.mix_clipped == 0 and lo.dub_clipped == 0:
        reason = "no clipped samples in the mix or the dub track"
    else:
        reason = (f"{lo.dub_clipped} clipped samples in the dub track ({share_dub:.3%}), "
                  f"{lo.mix_clipped} in the mix ({share_mix:.3%}); limit {t.max_clipped_share:.3%}")
    return Check("clipping", ok, True, worst, reason,
                 {"mix_clipped": lo.mix_clipped, "dub_clipped": lo.dub_clipped})


def _headroom(m: Measurements) -> Check:
    """Float overs in the dub track: harmless in the mix (normalised), a clip in a fixed-point export."""
    peak = m.loudness.dub_peak_dbfs
    ok = not peak > 0.0
    shown = f"{peak:+.1f} dBFS" if math.isfinite(peak) else "silent"
    reason = (f"dub track peaks at {shown}" if ok else
              f"dub track peaks at {shown}, above full scale: the float WAV keeps it and the mix is "
              "normalised under the ceiling, but a fixed-point export of dub.wav would clip")
    return Check("dub_headroom", ok, False, peak if math.isfinite(peak) else None, reason)


def _loudness(m: Measurements, t: Thresholds) -> Check:
    lufs = m.loudness.mix_lufs
    if not math.isfinite(lufs):
        return Check("loudness", False, True, None, "the mix is silent: no loudness to measure",
                     {"target_lufs": t.loudness_target_lufs})
    off = lufs - t.loudness_target_lufs
    ok = abs(off) <= t.loudness_tolerance_lu
    reason = (f"mix is {lufs:.1f} LUFS, target {t.loudness_target_lufs:.1f} LUFS"
              + ("" if ok else f": {abs(off):.1f} LU too {'loud' if off > 0 else 'quiet'}")
              + f" (tolerance {t.loudness_tolerance_lu:.1f} LU); dub track {m.loudness.dub_lufs:.1f} LUFS")
    return Check("loudness", ok, True, lufs, reason,
                 {"target_lufs": t.loudness_target_lufs, "dub_lufs": m.loudness.dub_lufs})


def _true_peak(m: Measurements, t: Thresholds) -> Check:
    tp = m.loudness.true_peak_dbtp
    limit = t.true_peak_ceiling_dbfs + t.true_peak_tolerance_db
    ok = tp <= limit
    shown = f"{tp:.1f} dBTP" if math.isfinite(tp) else "silent"
    reason = (f"true peak of the mix is {shown}, ceiling {t.true_peak_ceiling_dbfs:.1f} dBTP"
              + ("" if ok else f" (fails above {limit:.1f} dBTP)"))
    return Check("true_peak", ok, True, tp if math.isfinite(tp) else None, reason)


def _timing(m: Measurements, t: Thresholds) -> Check:
    """Share of segments on time; segments without speech are ``speech_present``'s to report."""
    timed = [s for s in m.segments if s.speech_start_s is not None]
    late = [s for s in timed if not s.on_time]
    n = len(timed)
    share = (n - len(late)) / n if n else 1.0
    ok = share >= t.timing_min_share
    parts = []
    for s in late[:5]:
        if s.overflow_s > 0:
            parts.append(f"{s.index} (runs {s.overflow_s:.2f} s into the next segment)")
        elif abs(s.start_offset_s or 0.0) > t.timing_tolerance_s:
            parts.append(f"{s.index} (starts {s.start_offset_s:+.2f} s from its slot)")
        else:
            parts.append(f"{s.index} (ends {s.end_offset_s:+.2f} s after its slot)")
    more = f" and {len(late) - 5} more" if len(late) > 5 else ""
    untimed = len(m.segments) - n
    reason = (f"{n - len(late)} of {n} segments with speech on time (within {t.timing_tolerance_s:.2f} s), "
              f"{share:.0%}; at least {t.timing_min_share:.0%} required"
              + (f"; off: {', '.join(parts)}{more}" if late else "")
              + (f"; {untimed} without speech not timed" if untimed else ""))
    return Check("timing", ok, True, share, reason, {"off_time": [s.index for s in late]})


def _speedup(m: Measurements, t: Thresholds) -> Check:
    fast = [(s.index, s.speedup) for s in m.segments if s.speedup is not None and s.speedup > t.speedup_warn]
    top = max((s.speedup for s in m.segments if s.speedup is not None), default=1.0)
    reason = (f"largest speed-up {top:.2f}x (warns above {t.speedup_warn:.2f}x)" if not fast
              else "speech sped up beyond " + f"{t.speedup_warn:.2f}x in segment(s) "
              + ", ".join(f"{i} ({v:.2f}x)" for i, v in fast) + ": it may be hard to follow")
    return Check("speedup", not fast, False, top, reason, {"fast": [i for i, _ in fast]})


def _similarity(m: Measurements, t: Thresholds) -> Check:
    if not m.speakers:
        return Check("speaker_similarity", False, t.similarity_gates, None, "no speaker's speech could be measured")
    low = [s for s in m.speakers if s.after < t.similarity_min]
    worst = min(s.after for s in m.speakers)
    described = ", ".join(
        f"{s.speaker} {s.after:.2f}" + (f" (before VC {s.before:.2f})" if s.before is not None else "")
        for s in m.speakers
    )
    reason = (f"similarity to the speaker's reference: {described}; "
              f"{t.engine_set} engines need at least {t.similarity_min:.2f}")
    if low:
        reason = f"voice does not match speaker(s) {', '.join(s.speaker for s in low)}: " + reason
    if not t.similarity_gates:
        reason += " (voice conversion is off: reported, not gated)"
    return Check("speaker_similarity", not low, t.similarity_gates, worst, reason,
                 {"minimum": t.similarity_min, "engine_set": t.engine_set})


def _av_sync(m: Measurements, t: Thresholds) -> Check:
    measured = [c for c in m.sync if _sync_measurable(c, t)]
    off = [c for c in measured if abs(c.offset_s or 0.0) > t.av_offset_max_s]
    worst = max((abs(c.offset_s or 0.0) for c in measured), default=None)
    bound_ms = t.av_offset_max_s * 1000
    if not measured:
        reason = "no chunk had a face and speech to measure lip sync on"
    elif off:
        reason = ("lips out of sync with the dub in chunk(s) "
                  + ", ".join(f"{c.chunk_index} ({1000 * (c.offset_s or 0.0):+.0f} ms)" for c in off)
                  + f"; bound ±{bound_ms:.0f} ms (+: picture late)")
    else:
        reason = f"{len(measured)} chunk(s) in sync, worst {1000 * (worst or 0.0):.0f} ms (bound ±{bound_ms:.0f} ms)"
    if not t.av_gates:
        reason += " (lip sync is off: reported, not gated)"
    return Check("av_sync", not off, t.av_gates, worst, reason,
                 {"out_of_sync": [c.chunk_index for c in off], "bound_s": t.av_offset_max_s})


def _sync_measurable(c: ChunkSync, t: Thresholds) -> bool:
    """A chunk's offset counts when it shows a face and its lips follow the dub at all."""
    return (c.offset_s is not None and c.frames > 0 and c.face_frames / c.frames >= MIN_FACE_SHARE
            and (c.correlation or 0.0) >= t.av_min_correlation)


def _faces(m: Measurements, t: Thresholds) -> Check:
    no_face = [c.chunk_index for c in m.sync if c.frames and c.face_frames / c.frames < MIN_FACE_SHARE]
    weak = [c.chunk_index for c in m.sync if c.chunk_index not in no_face and c.offset_s is not None
            and (c.correlation or 0.0) < t.av_min_correlation]
    problems = []
    if no_face:
        problems.append(f"no face found in chunk(s) {_numbers(no_face)}")
    if weak:
        problems.append(f"lips do not follow the dub in chunk(s) {_numbers(weak)} "
                        f"(correlation below {t.av_min_correlation:.2f})")
    reason = "; ".join(problems) if problems else f"a face with moving lips in all {len(m.sync)} chunk(s)"
    return Check("faces", not problems, False, float(len(m.sync) - len(no_face)), reason,
                 {"no_face": no_face, "weak": weak})


def _intelligibility(m: Measurements, t: Thresholds) -> Check:
    i = m.intelligibility
    if not i.measured or i.error_rate is None:
        return Check("intelligibility", True, False, None, i.reason)
    ok = i.error_rate <= t.asr_max_error_rate
    reason = (f"{i.metric.upper()} {i.error_rate:.1%} of the re-transcribed dub against the subtitles "
              f"(limit {t.asr_max_error_rate:.0%})")
    return Check("intelligibility", ok, True, i.error_rate, reason, {"metric": i.metric})


def _numbers(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)
