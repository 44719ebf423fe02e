"""The chunk plan: how a job's timeline is cut into windows the stages work on.

Why chunks: a handler call must stay short (minutes of video would hold a
consumer past its session timeout and a model past its memory), and chunks of
one job run in parallel across workers. Why shared context: each chunk is
rendered ``overlap/2`` seconds beyond each of its cuts, so neighbouring windows
share ``overlap`` seconds that merging crossfades instead of butting two
renders together. Why cuts in silence: a cut inside speech would split a
subtitle segment between two renders, so cuts fall only in gaps between
segments, at the gap's least speech-like point by the VAD.

Windows: cut points ``c_0 = 0 < c_1 < ... < c_n = duration`` give chunk ``i``
the core ``[c_i, c_{i+1}]`` and the window ``[c_i - overlap/2, c_{i+1} +
overlap/2]`` clipped to the timeline; each window is at most ``chunk_seconds``
long. A segment longer than that gets an oversized chunk of its own (with a
warning in the plan): cutting speech is worse than one long call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# Grid on which the least speech-like point of a gap is searched.
CUT_SEARCH_STEP_S = 0.02
# Weight of "stay near the gap's middle" against the VAD's speech probability.
MIDDLE_PREFERENCE = 0.05

SpeechProbability = Callable[[np.ndarray], np.ndarray]
"""``speech_probability(times_s)`` -> the VAD's speech probability at each time."""


class TimedText(Protocol):
    """What the planner needs of a subtitle segment."""

    @property
    def start_s(self) -> float: ...

    @property
    def end_s(self) -> float: ...


@dataclass(frozen=True)
class PlannedChunk:
    """One chunk: the core it owns, the window it renders, its segments."""

    index: int
    core_start_s: float
    core_end_s: float
    start_s: float
    end_s: float
    segment_indices: tuple[int, ...]

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class ChunkPlan:
    chunks: tuple[PlannedChunk, ...]
    duration_s: float
    overlap_s: float
    warnings: tuple[str, ...] = ()


def plan_chunks(
    segments: Sequence[TimedText],
    duration_s: float,
    chunk_seconds: float,
    overlap_s: float,
    speech_probability: SpeechProbability | None = None,
) -> ChunkPlan:
    """Cut ``[0, duration_s]`` into chunks; every segment lands in exactly one."""
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    if chunk_seconds <= 2 * overlap_s:
        raise ValueError(
            f"chunk_seconds ({chunk_seconds}) must exceed twice the overlap ({overlap_s}); "
            "raise POLYDUB_CHUNK_SECONDS or lower POLYDUB_CHUNK_OVERLAP_SECONDS"
        )
    spans = sorted((s.start_s, s.end_s) for s in segments)
    gaps = _gaps(spans, duration_s)
    # An interior core may use the window minus both half-overlaps.
    core_limit = chunk_seconds - overlap_s
    min_core = max(overlap_s, CUT_SEARCH_STEP_S)

    cuts = [0.0]
    warnings: list[str] = []
    while duration_s - cuts[-1] > core_limit + (overlap_s / 2):
        pos = cuts[-1]
        lo, hi = pos + min_core, pos + core_limit
        usable = [(max(a, lo), min(b, hi), a, b) for a, b in gaps if b >= lo and a <= hi]
        if usable:
            a, b, gap_a, gap_b = usable[-1]
            cuts.append(_quietest(a, b, (gap_a + gap_b) / 2, speech_probability))
            continue
        # Speech runs past the limit: end this chunk at the first gap after it.
        later = [a for a, _ in gaps if a > hi]
        if not later:
            break
        warnings.append(
            f"speech runs without a pause from {pos:.2f}s to {later[0]:.2f}s, longer than a "
            f"chunk ({core_limit:.2f}s); that stretch gets one oversized chunk"
        )
        cuts.append(later[0])
    cuts.append(duration_s)

    half = overlap_s / 2
    last = len(cuts) - 2
    chunks = []
    for i in range(len(cuts) - 1):
        core_start, core_end = cuts[i], cuts[i + 1]
        members = tuple(
            j
            for j, seg in enumerate(segments)
            if core_start <= (seg.start_s + seg.end_s) / 2 < core_end
            or (i == last and (seg.start_s + seg.end_s) / 2 >= core_end)
        )
        chunks.append(
            PlannedChunk(
                index=i,
                core_start_s=core_start,
                core_end_s=core_end,
                start_s=0.0 if i == 0 else max(0.0, core_start - half),
                end_s=duration_s if i == last else min(duration_s, core_end + half),
                segment_indices=members,
            )
        )
    return ChunkPlan(tuple(chunks), duration_s, overlap_s, tuple(warnings))


def _gaps(spans: list[tuple[float, float]], duration_s: float) -> list[tuple[float, float]]:
    """Stretches of the timeline no segment covers, in order."""
    gaps = []
    cursor = 0.0
    for start, end in spans:
        if start > cursor:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < duration_s:
        gaps.append((cursor, duration_s))
    return gaps


def _quietest(a: float, b: float, middle: float, speech_probability: SpeechProbability | None) -> float:
    """The least speech-like point of ``[a, b]``, nearest the gap's middle on ties."""
    if b - a < CUT_SEARCH_STEP_S:
        return (a + b) / 2
    times = np.arange(a, b + 1e-9, CUT_SEARCH_STEP_S)
    width = max(b - a, CUT_SEARCH_STEP_S)
    cost = MIDDLE_PREFERENCE * np.abs(times - np.clip(middle, a, b)) / width
    if speech_probability is not None:
        cost = cost + np.asarray(speech_probability(times), dtype=np.float64)
    return float(times[int(np.argmin(cost))])
