"""Fuzzing the parsers that read what other people wrote: events off the wire, subtitle files.

Each parser either returns a value or raises its one documented error, whatever the
input; a crash of another kind would be a worker crash or a 150 internal error where
the user should have read what is wrong. Bounded: a fixed number of examples, no
deadline per example (these machines are shared), a few seconds in all.
"""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.runtime.subtitles import Segment, parse_srt, parse_vtt, to_srt, to_vtt, validate_segments
from schemas.errors import InputError
from schemas.events import Envelope, MediaSubmitted
from schemas.serialization import EventDecodeError, decode_event

#: Examples per property: enough to reach the odd corners, few enough for the quick suite.
EXAMPLES = 300
#: Derandomised, so CI runs the same examples every time and a red run can be rerun; explore
#: further by hand with ``pytest tests/test_fuzz.py --hypothesis-seed=N`` after dropping it.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

#: A valid submission, the seed the mutations start from.
VALID_SUBMISSION: dict[str, Any] = {
    "job_id": "job-fuzz", "event_type": "media.submitted", "target_lang": "ko",
    "source_uri": "s3://polydub/inputs/job-fuzz/video.mp4",
    "subtitles": {"uri": "s3://polydub/inputs/job-fuzz/subs.srt", "format": "srt"},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _decodes_or_refuses(raw: bytes | str) -> None:
    try:
        event = decode_event(raw)
    except EventDecodeError as exc:
        assert str(exc), "a refusal must say why"
    else:
        assert isinstance(event, Envelope)


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_are_an_event_or_a_decode_error(raw: bytes) -> None:
    _decodes_or_refuses(raw)


@FUZZ
@given(st.sampled_from(sorted(VALID_SUBMISSION) + ["engines", "voices", "output_prefix", "speaker_references"]),
       json_values)
def test_a_submission_with_any_field_replaced_is_accepted_or_refused_by_name(field: str, value: Any) -> None:
    _decodes_or_refuses(json.dumps({**VALID_SUBMISSION, field: value}))


def test_the_seed_submission_is_valid() -> None:
    assert isinstance(decode_event(json.dumps(VALID_SUBMISSION), MediaSubmitted), MediaSubmitted)


def _cues_or_input_error(parse: Any, text: str) -> None:
    """Parse, then validate as ingest does (the parser keeps every cue so validation can name them all)."""
    try:
        segments = validate_segments(parse(text))
    except InputError as exc:
        assert exc.reason and exc.fix is not None, "a refused subtitle file names the problem and the fix"
    else:
        assert all(s.end_s > s.start_s >= 0 and s.text.strip() for s in segments)


timing_lines = st.builds(
    lambda h, m, s, ms, sep, h2, m2, s2, ms2: f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d} --> {h2:02d}:{m2:02d}:{s2:02d}{sep}{ms2:03d}",
    st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 9999), st.sampled_from([",", ".", ":"]),
    st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 9999),
)
#: Text that looks like a subtitle file: numbers, timings, cue text, blank lines, headers, in any order.
subtitle_like = st.lists(
    st.one_of(timing_lines, st.integers(-5, 500).map(str), st.text(max_size=30), st.just(""),
              st.sampled_from(["WEBVTT", "NOTE a comment", "STYLE", "<v Ann>Hello", "- Bob: hi", "-->"])),
    max_size=25,
).map("\n".join)


@FUZZ
@given(st.one_of(st.text(max_size=300), subtitle_like))
def test_any_text_is_cues_or_an_input_error_as_srt(text: str) -> None:
    _cues_or_input_error(parse_srt, text)


@FUZZ
@given(st.one_of(st.text(max_size=300), subtitle_like.map(lambda body: "WEBVTT\n\n" + body)))
def test_any_text_is_cues_or_an_input_error_as_vtt(text: str) -> None:
    _cues_or_input_error(parse_vtt, text)


words = st.text(alphabet=string.ascii_letters + string.digits + " ,.!?'가나다今日天气", min_size=1, max_size=40).filter(
    lambda t: t.strip() != "")


@st.composite
def cue_lists(draw: st.DrawFn) -> list[Segment]:
    """Ordered cues on a millisecond grid, as a subtitle file can hold them."""
    starts = sorted(draw(st.lists(st.integers(0, 3_600_000), min_size=1, max_size=8, unique=True)))
    segments = []
    for i, start in enumerate(starts):
        room = (starts[i + 1] if i + 1 < len(starts) else start + 10_000) - start
        length = draw(st.integers(1, max(1, room)))
        segments.append(Segment(index=i + 1, start_s=start / 1000, end_s=(start + length) / 1000, text=draw(words)))
    return segments


@FUZZ
@given(cue_lists())
def test_written_cues_read_back_the_same_in_both_formats(segments: list[Segment]) -> None:
    for write, parse in ((to_srt, parse_srt), (to_vtt, parse_vtt)):
        back = parse(write(segments))
        assert [(round(s.start_s, 3), round(s.end_s, 3)) for s in back] == [
            (round(s.start_s, 3), round(s.end_s, 3)) for s in segments], write.__name__
        assert [" ".join(s.text.split()) for s in back] == [" ".join(s.text.split()) for s in segments], write.__name__
