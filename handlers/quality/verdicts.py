"""QC's verdicts: one :class:`Check` per question, over the measurements and the thresholds.

Every check yields a :class:`Check`: passed or not, whether it *gates* delivery
(a failed gate fails the job with ``QC_FAILED``; anything else failed is a
warning), the headline value and a reason a person can act on. Pure: tests feed
measurements with known defects and check each verdict and its reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from handlers.quality.measurements import ChunkSync, Measurements, SegmentTranscript
from handlers.quality.signals import MIN_SPEECH_S
from handlers.quality.thresholds import Thresholds
from handlers.runtime.media import MIN_SOUNDTRACK_RATE, SUBTITLE_CODEC

#: A chunk whose frames show a face less than this share of the time is flagged "no face".
MIN_FACE_SHARE = 0.5
#: Error rates are ratios of small counts: a rate equal to its limit passes despite float rounding.
RATE_EPSILON = 1e-9
#: Segments named in an intelligibility reason (the report lists them all).
MAX_LISTED = 5


@dataclass
class Check:
    """One measurement, its verdict and why."""

    name: str
    passed: bool
    gate: bool
    value: float | None
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


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
        _intelligibility_loss(m, t),
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
    elif o.expected_audio_layout is not None and o.audio_layout != o.expected_audio_layout:
        problems.append(f"soundtrack is {o.audio_layout or 'unlabelled'}, not the source's {o.expected_audio_layout}")
    elif o.expected_audio_layout is not None and (o.audio_rate or 0) < MIN_SOUNDTRACK_RATE:
        problems.append(f"soundtrack is {o.audio_rate} Hz, below {MIN_SOUNDTRACK_RATE} Hz")
    wanted = o.expected_subtitle_language
    if wanted is not None and (o.subtitle_codec != SUBTITLE_CODEC or o.subtitle_language != wanted):
        problems.append(f"no {SUBTITLE_CODEC} subtitle track tagged {wanted}")
    layout = "" if o.audio_layout is None else f" ({o.audio_layout}, {o.audio_rate} Hz)"
    subtitles = "" if o.subtitle_codec is None else f", {o.subtitle_codec} subtitles ({o.subtitle_language})"
    reason = (f"H.264 video and AAC audio{layout}{subtitles}" if not problems
              else "; ".join(problems) + " (H.264 + AAC in the source's layout required)")
    return Check("streams", not problems, True, None, reason,
                 {"video_codec": o.video_codec, "audio_codec": o.audio_codec, "audio_layout": o.audio_layout,
                  "audio_rate": o.audio_rate, "subtitle_codec": o.subtitle_codec,
                  "subtitle_language": o.subtitle_language})


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
    """Share of segments on time, and no speech lost; segments without speech are ``speech_present``'s.

    Fails when too few segments start with their slot, and whenever a segment's speech
    did not fit even at the speed-up bound with the silence after it (it was cut at the
    next segment, or runs into it): the listener loses words there, whatever the share.
    """
    timed = [s for s in m.segments if s.speech_start_s is not None]
    late = [s for s in timed if not s.on_time]
    lost = [s for s in m.segments if s.overflow_s > 0 and not s.on_time]
    n = len(timed)
    share = (n - len(late)) / n if n else 1.0
    ends = [s for s in timed if s.end_offset_s is not None and abs(s.end_offset_s) <= t.end_tolerance_s]
    end_share = len(ends) / n if n else 1.0
    ok = share >= t.timing_min_share and not lost
    parts = []
    for s in late[:5]:
        if s.overflow_s > 0:
            parts.append(f"{s.index} (does not fit: {s.overflow_s:.2f} s more than its slot and the silence "
                         f"after it, at {s.speedup or 1.0:.2f}x)")
        else:
            parts.append(f"{s.index} (starts {s.start_offset_s:+.2f} s from its slot)")
    more = f" and {len(late) - 5} more" if len(late) > 5 else ""
    untimed = len(m.segments) - n
    reason = (f"{n - len(late)} of {n} segments with speech on time (start within {t.timing_tolerance_s:.2f} s, "
              f"end before the next segment), {share:.0%}; at least {t.timing_min_share:.0%} required"
              + (f"; {len(lost)} segment(s) do not fit even at the {t.max_speedup:.2f}x bound" if lost else "")
              + (f"; off: {', '.join(parts)}{more}" if late else "")
              + f"; {end_share:.0%} end within {t.end_tolerance_s * 1000:.0f} ms of their slot's end"
              + (f"; {untimed} without speech not timed" if untimed else ""))
    return Check("timing", ok, True, share, reason,
                 {"off_time": [s.index for s in late], "lost": [{"segment": s.index, "seconds": round(s.overflow_s, 3)} for s in lost],
                  "ends_within_tolerance_share": end_share})


#: Rounding slack of a measured speed-up against the bound (sample-exact lengths, float32 rates).
SPEEDUP_SLACK = 1e-3


def _speedup(m: Measurements, t: Thresholds) -> Check:
    """The speed-up bound holds for every engine: a segment sped up past it fails the job."""
    fast = [(s.index, s.speedup) for s in m.segments
            if s.speedup is not None and s.speedup > t.max_speedup * (1 + SPEEDUP_SLACK)]
    top = max((s.speedup for s in m.segments if s.speedup is not None), default=1.0)
    reason = (f"largest speed-up {top:.2f}x, within the bound of {t.max_speedup:.2f}x (POLYDUB_MAX_SPEEDUP)"
              if not fast else f"speech sped up beyond the bound of {t.max_speedup:.2f}x in segment(s) "
              + ", ".join(f"{i} ({v:.2f}x)" for i, v in fast)
              + ": the TTS engine did not hold POLYDUB_MAX_SPEEDUP")
    return Check("speedup", not fast, True, top, reason, {"fast": [i for i, _ in fast]})


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
    """The dub must say the subtitle's words: error rate before and after voice conversion each within the limit."""
    i = m.intelligibility
    if not i.measured or i.error_rate is None:
        return Check("intelligibility", True, False, None, i.reason)
    metric, before, after = i.metric.upper(), i.error_rate_before, i.error_rate
    limit = t.max_wer
    bad_after = after > limit + RATE_EPSILON
    bad_before = before is not None and before > limit + RATE_EPSILON
    measured = (f"{metric} {after:.1%} of the delivered dub against the subtitles"
                + (f", {before:.1%} before voice conversion" if before is not None else "")
                + f" (limit {limit:.0%})")
    if bad_after or bad_before:
        which = ("the delivered dub and the synthesised speech are" if bad_after and bad_before
                 else "the delivered dub is" if bad_after else "the synthesised speech (before voice conversion) is")
        worst = sorted((s for s in i.segments if max(s.error_rate, s.error_rate_before or 0.0) > limit),
                       key=lambda s: -max(s.error_rate, s.error_rate_before or 0.0))
        listed = ", ".join(f"{s.index} ({_heard(s)})" for s in worst[:MAX_LISTED])
        more = f" and {len(worst) - MAX_LISTED} more" if len(worst) > MAX_LISTED else ""
        reason = f"{which} not intelligible: {measured}" + (f"; worst segment(s) {listed}{more}" if worst else "")
    else:
        reason = measured
    return Check("intelligibility", not (bad_after or bad_before), True, after, reason,
                 {"metric": i.metric, "after": after, "before": before, "limit": limit})


def _intelligibility_loss(m: Measurements, t: Thresholds) -> Check:
    """Voice conversion must not make the dub much harder to understand than the speech it was given."""
    i = m.intelligibility
    if not i.measured or i.error_rate is None:
        return Check("intelligibility_loss", True, False, None, i.reason)
    if i.error_rate_before is None:
        return Check("intelligibility_loss", True, False, None,
                     "skipped: no voice conversion, so no speech before it to compare")
    metric, before, after = i.metric.upper(), i.error_rate_before, i.error_rate
    rise = after - before
    ok = rise <= t.max_wer_increase + RATE_EPSILON
    reason = (f"{metric} {before:.1%} before voice conversion, {after:.1%} after "
              f"({100 * rise:+.1f} points; limit +{100 * t.max_wer_increase:.0f} points)")
    if not ok:
        lost = sorted((s for s in i.segments if s.error_rate_before is not None and s.error_rate > s.error_rate_before),
                      key=lambda s: s.error_rate_before - s.error_rate)
        listed = ", ".join(f"{s.index} ({_heard(s)})" for s in lost[:MAX_LISTED])
        reason = ("voice conversion made the dub harder to understand: " + reason
                  + (f"; segment(s) that lost words: {listed}" if lost else ""))
    return Check("intelligibility_loss", ok, True, rise, reason,
                 {"metric": i.metric, "before": before, "after": after, "limit": t.max_wer_increase})


def _heard(s: SegmentTranscript) -> str:
    """One segment's rates and what was heard, for a reason.

    ``"0% -> 67%, heard 'good morning everyone' before VC and 'learning everyone' after, for
    'good morning everyone'"`` (without VC: ``"67%, heard 'learning everyone' for ..."``).
    """
    if s.error_rate_before is None:
        return f"{s.error_rate:.0%}, heard {s.hypothesis!r} for {s.scored!r}"
    return (f"{s.error_rate_before:.0%} -> {s.error_rate:.0%}, heard {s.hypothesis_before!r} before VC and "
            f"{s.hypothesis!r} after, for {s.scored!r}")


def _numbers(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values)
