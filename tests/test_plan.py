"""The chunk planner: limits, shared context, cuts in silence, full coverage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from handlers.plan import plan_chunks


@dataclass(frozen=True)
class Seg:
    start_s: float
    end_s: float


def _regular(n: int, every: float = 3.0, speech: float = 2.0) -> list[Seg]:
    return [Seg(i * every + 0.5, i * every + 0.5 + speech) for i in range(n)]


def test_short_clip_is_one_chunk() -> None:
    plan = plan_chunks(_regular(2), duration_s=7.0, chunk_seconds=10, overlap_s=1)
    assert len(plan.chunks) == 1
    only = plan.chunks[0]
    assert (only.start_s, only.end_s, only.segment_indices) == (0.0, 7.0, (0, 1))


def test_windows_respect_the_limit_and_share_the_overlap() -> None:
    segs = _regular(40)  # two minutes of regular speech
    plan = plan_chunks(segs, duration_s=120.0, chunk_seconds=10, overlap_s=1)
    assert len(plan.chunks) >= 12
    for chunk in plan.chunks:
        assert chunk.duration_s <= 10.0 + 1e-9
    for left, right in zip(plan.chunks, plan.chunks[1:]):
        assert left.core_end_s == right.core_start_s
        assert left.end_s - right.start_s == pytest.approx(1.0)
    assert plan.chunks[0].start_s == 0.0 and plan.chunks[-1].end_s == 120.0
    assert not plan.warnings


def test_every_segment_in_exactly_one_chunk_and_never_cut() -> None:
    segs = _regular(40)
    plan = plan_chunks(segs, duration_s=120.0, chunk_seconds=10, overlap_s=1)
    owned = [i for c in plan.chunks for i in c.segment_indices]
    assert sorted(owned) == list(range(len(segs)))
    for chunk in plan.chunks:
        for i in chunk.segment_indices:
            assert chunk.core_start_s <= segs[i].start_s and segs[i].end_s <= chunk.core_end_s


def test_cut_goes_to_the_quietest_point_of_the_gap() -> None:
    segs = [Seg(0.5, 7.0), Seg(9.5, 12.0)]
    # The VAD hears a cough at 8.0 s and silence around 9.0 s.
    prob = lambda t: np.where(np.abs(t - 9.0) < 0.2, 0.0, 0.6)  # noqa: E731
    plan = plan_chunks(segs, duration_s=12.0, chunk_seconds=10, overlap_s=1, speech_probability=prob)
    assert len(plan.chunks) == 2
    assert abs(plan.chunks[0].core_end_s - 9.0) < 0.21
    # Without the VAD the cut is the gap's middle.
    plain = plan_chunks(segs, duration_s=12.0, chunk_seconds=10, overlap_s=1)
    assert plain.chunks[0].core_end_s == pytest.approx(8.25, abs=0.02)


def test_speech_longer_than_a_chunk_gets_an_oversized_chunk_with_a_warning() -> None:
    segs = [Seg(0.5, 2.0), Seg(2.5, 17.0), Seg(18.0, 19.0)]
    plan = plan_chunks(segs, duration_s=20.0, chunk_seconds=10, overlap_s=1)
    assert any("oversized" in w for w in plan.warnings)
    owner = [c for c in plan.chunks if 1 in c.segment_indices][0]
    assert owner.core_start_s <= 2.5 and owner.core_end_s >= 17.0


def test_long_silent_tail_is_split_into_empty_chunks() -> None:
    plan = plan_chunks([Seg(0.5, 2.0)], duration_s=60.0, chunk_seconds=10, overlap_s=1)
    assert all(c.duration_s <= 10.0 + 1e-9 for c in plan.chunks)
    assert plan.chunks[0].segment_indices == (0,)
    assert all(c.segment_indices == () for c in plan.chunks[1:])


def test_bad_settings_are_explained() -> None:
    with pytest.raises(ValueError, match="POLYDUB_CHUNK_SECONDS"):
        plan_chunks([], duration_s=5.0, chunk_seconds=1.5, overlap_s=1)
    with pytest.raises(ValueError, match="duration must be positive"):
        plan_chunks([], duration_s=0.0, chunk_seconds=10, overlap_s=1)
