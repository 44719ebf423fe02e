"""QC measurements that need no model: pure functions of arrays and plain data.

Tests feed them media with known defects. Speech activity and timing of each
segment in the dub track, clipping (flat tops), sample and true peak, the plot
series of the report, and the audio-visual offset search over a chunk's
per-frame mouth and level signals (those come from the ``av_sync`` model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.signal import resample_poly

from engines.dsp import frame_rms
from handlers.quality.measurements import SegmentTiming
from handlers.runtime.mix import LOUDNESS_FLOOR_LUFS, MOMENTARY_BLOCK_S, MOMENTARY_HOP_S

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
#: Clipping leaves flat tops: this many consecutive samples of the same magnitude ...
FLAT_TOP_RUN = 4
#: ... equal within this relative distance (float32 exactness; even a 10 Hz sine changes
#: more than this between neighbouring samples at its crest) ...
FLAT_TOP_TOLERANCE = 1e-6
#: ... at no less than this share of the track's peak, count as clipped. Only loud flat
#: runs matter: clipping happens at the top of the range, wherever that was scaled to.
FLAT_TOP_MIN_SHARE_OF_PEAK = 0.5
#: True peak is measured on the signal oversampled this many times (ITU-R BS.1770-4 annex 2).
TRUE_PEAK_OVERSAMPLE = 4
#: Oversampling runs block-wise, so memory stays bounded for hour-long mixes ...
TRUE_PEAK_BLOCK = 1 << 18
#: ... with this many samples of context on each side (covers resample_poly's filter).
TRUE_PEAK_MARGIN = 64
#: Points of each plotted series kept in the report (waveform buckets, loudness values).
SERIES_POINTS = 1200
#: Audio levels below this are clipped before correlating with the mouth signal: digital
#: silence between segments would otherwise dominate the correlation.
AV_LEVEL_FLOOR_DB = -60.0
#: Fewest frames with a face and speech that give an offset worth reporting.
MIN_SYNC_FRAMES = 10


def activity_levels(audio: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
    """RMS level (dBFS) per :data:`ACTIVITY_FRAME_S` frame, and the frame length in seconds."""
    return 20.0 * np.log10(frame_rms(audio, rate, ACTIVITY_FRAME_S) + 1e-12), ACTIVITY_FRAME_S


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
        # Speech synthesis had to cut at the next segment (it did not fit at the speed-up bound).
        cut = float(fit.get("cut_s", 0.0)) if fit else 0.0
        if idx.size:
            speech_start, speech_end = float(idx[0] * frame_s), float((idx[-1] + 1) * frame_s)
            inner = active[idx[0]: idx[-1] + 1]
            gap = _longest_false_run(inner) * frame_s
            prev_end = speech_end
            start_offset, end_offset = speech_start - start, speech_end - end
            overflow = max(0.0, laid_end - next_start) + cut
        else:
            speech_start = speech_end = start_offset = end_offset = None
            gap, overflow = 0.0, max(0.0, laid_end - next_start) + cut
        # On time: starts with its slot and ends before the next segment's slot (speech may
        # spill into the silence after its own slot; that is how long lines fit at the bound).
        on_time = (
            start_offset is not None and end_offset is not None
            and abs(start_offset) <= tolerance_s and overflow <= frame_s
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


def clipped_samples(audio: np.ndarray) -> int:
    """Samples in flat-topped runs: at least :data:`FLAT_TOP_RUN` equal loud magnitudes in a row.

    Why flat tops and not "at full scale": the pipeline's tracks are float, so a sample
    above 1.0 is an over that normalisation later removes, not a clip, while clipping that
    happened upstream and was scaled down afterwards (as loudness normalisation does)
    sits below 1.0. What clipping always leaves is a run of identical crest values, which
    natural float audio practically never repeats. ``(samples, channels)`` audio is
    counted channel by channel (a run lies along one channel's time axis).
    """
    if np.ndim(audio) == 2:
        return sum(clipped_samples(np.asarray(audio)[:, c]) for c in range(np.shape(audio)[1]))
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
    """Peak of the signal oversampled ``oversample`` times, in dBTP (-inf for silence).

    ``(samples, channels)`` audio: the highest channel's (each oversampled on its own).
    """
    if np.ndim(audio) == 2:
        return max((true_peak_dbfs(np.asarray(audio)[:, c], oversample) for c in range(np.shape(audio)[1])),
                   default=float("-inf"))
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
    """Min and max per bucket, enough to draw the waveform at report resolution.

    ``(samples, channels)`` audio is drawn as the envelope of all its channels.
    """
    x = np.asarray(audio, dtype=np.float32)
    low, high = (x.min(axis=1), x.max(axis=1)) if x.ndim == 2 else (x, x)
    n = max(1, min(points, low.size))
    bucket = max(1, low.size // n)

    def buckets(v: np.ndarray) -> np.ndarray:
        return v[: bucket * n].reshape(n, bucket) if v.size >= n else v.reshape(-1, 1)

    return {
        "hop_s": bucket / rate,
        "min": np.round(buckets(low).min(axis=1), 4).tolist(),
        "max": np.round(buckets(high).max(axis=1), 4).tolist(),
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
