"""Subtitle parsing, validation and writing: the dialects, the errors, the round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers.runtime.subtitles import (
    Segment,
    fit_segments,
    parse_srt,
    parse_subtitles,
    parse_vtt,
    to_srt,
    to_vtt,
    validate_segments,
)
from schemas.errors import InputError

GOOD_SRT = """\
1
00:00:01,000 --> 00:00:02,500
Hello there.

2
00:00:03,000 --> 00:00:05,250
<i>Two lines</i>
of <b>text</b>.

3
00:01:02.5 --> 01:00:03,007 X1:100 X2:200 Y1:10 Y2:20
{\\an8}Moved to the top.
"""

GOOD_VTT = """\
WEBVTT - a title
Kind: captions
Language: en

NOTE
This is a comment,
spanning lines.

STYLE
::cue { color: yellow }

intro
00:01.000 --> 00:02.500 align:start position:10%
<v Roger Bingham>We are in New York City

00:00:03.000 --> 00:00:04.000
<v.loud Neil>Fish &amp; <c.yellow>chips</c> <00:00:03.500>now

00:00:04.000 --> 00:00:05.000
No voice here.
"""


def test_good_srt() -> None:
    segs = parse_srt(GOOD_SRT)
    assert [(s.index, s.start_s, s.end_s) for s in segs] == [
        (1, 1.0, 2.5),
        (2, 3.0, 5.25),
        (3, 62.5, 3603.007),
    ]
    assert segs[0].text == "Hello there."
    assert segs[1].text == "Two lines\nof text."
    assert segs[2].text == "Moved to the top."
    assert [s.line for s in segs] == [2, 6, 11]
    assert all(s.speaker is None for s in segs)


def test_good_vtt_with_voices() -> None:
    segs = parse_vtt(GOOD_VTT)
    assert [(s.start_s, s.end_s) for s in segs] == [(1.0, 2.5), (3.0, 4.0), (4.0, 5.0)]
    assert [s.speaker for s in segs] == ["Roger Bingham", "Neil", None]
    assert segs[0].text == "We are in New York City"
    assert segs[1].text == "Fish & chips now"
    assert segs[0].line == 13  # the timing line, after header, NOTE, STYLE and the id


def test_name_prefixes_become_speakers() -> None:
    text = (
        "1\n00:00:01,000 --> 00:00:02,000\nJOHN: Where were you?\n\n"
        "2\n00:00:02,000 --> 00:00:03,000\nMary Jane: At home.\n\n"
        "3\n00:00:03,000 --> 00:00:04,000\nDR. SMITH:\nSit down.\n\n"
        "4\n00:00:04,000 --> 00:00:05,000\nwell: not a name, and 10:30 is a time\n\n"
        "5\n00:00:05,000 --> 00:00:06,000\n민수: 안녕하세요\n"
    )
    segs = parse_srt(text)
    assert [s.speaker for s in segs] == ["JOHN", "Mary Jane", "DR. SMITH", None, None]
    assert [s.text for s in segs] == [
        "Where were you?",
        "At home.",
        "Sit down.",
        "well: not a name, and 10:30 is a time",
        "민수: 안녕하세요",
    ]


def test_crlf_and_bom() -> None:
    srt = "\ufeff" + GOOD_SRT.replace("\n", "\r\n")
    assert [(s.start_s, s.end_s, s.text) for s in parse_srt(srt)] == [
        (s.start_s, s.end_s, s.text) for s in parse_srt(GOOD_SRT)
    ]
    vtt = "\ufeff" + GOOD_VTT.replace("\n", "\r\n")
    assert [s.speaker for s in parse_subtitles(vtt)] == ["Roger Bingham", "Neil", None]


def test_srt_cues_without_numbers() -> None:
    segs = parse_srt("00:00:01,000 --> 00:00:02,000\nOne\n\n00:00:02,000 --> 00:00:03,000\nTwo\n")
    assert [s.text for s in segs] == ["One", "Two"]


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03 -> 00:00:04\nbad\n", 6, "timing line"),
        ("1\n00:00:01,000 --> 00:00:02,000\nok\n\nstray text\n", 5, "cue number or a timing line"),
        ("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:61,000 --> 00:00:62,000\nx\n", 6, "below 60"),
        ("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n", 6, "timing line"),
    ],
)
def test_srt_parse_errors_name_the_line(text: str, line: int, expected: str) -> None:
    with pytest.raises(InputError) as err:
        parse_srt(text)
    assert f"subtitles line {line}:" in err.value.reason
    assert expected in err.value.reason
    assert err.value.fix


def test_srt_error_quotes_the_line_and_example() -> None:
    with pytest.raises(InputError) as err:
        parse_srt("1\nfrom one to two seconds\nhi\n")
    reason = err.value.reason
    assert reason.startswith("subtitles line 2: expected a timing line like '00:00:01,000 --> 00:00:02,500'")
    assert "'from one to two seconds'" in reason


def test_vtt_parse_errors_name_the_line() -> None:
    with pytest.raises(InputError) as err:
        parse_vtt("1\n00:00:01.000 --> 00:00:02.000\nno header\n")
    assert "subtitles line 1:" in err.value.reason and "WEBVTT" in err.value.reason
    with pytest.raises(InputError) as err:
        parse_vtt("WEBVTT\n\ncue-id\n00:01.000 to 00:02.000\ntext\n")
    assert "subtitles line 4: expected a timing line" in err.value.reason


def test_parse_subtitles_detects_the_format(tmp_path: Path) -> None:
    srt = tmp_path / "subs.srt"
    srt.write_text(GOOD_SRT, encoding="utf-8")
    vtt = tmp_path / "subs.vtt"
    vtt.write_text(GOOD_VTT, encoding="utf-8")
    mislabelled = tmp_path / "really_vtt.srt"
    mislabelled.write_text(GOOD_VTT, encoding="utf-8")
    utf16 = tmp_path / "utf16.srt"
    utf16.write_bytes(GOOD_SRT.encode("utf-16"))
    assert len(parse_subtitles(srt)) == 3
    assert len(parse_subtitles(str(srt))) == 3
    assert parse_subtitles(vtt)[0].speaker == "Roger Bingham"
    assert parse_subtitles(mislabelled)[1].speaker == "Neil"
    assert parse_subtitles(utf16)[1].text == "Two lines\nof text."
    assert len(parse_subtitles(GOOD_SRT)) == 3
    assert len(parse_subtitles(GOOD_SRT, fmt="srt")) == 3


def test_parse_subtitles_file_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        parse_subtitles(tmp_path / "missing.srt")
    with pytest.raises(InputError, match="does not exist"):
        parse_subtitles(str(tmp_path / "missing.vtt"))
    ass = tmp_path / "subs.ass"
    ass.write_text("[Script Info]\n", encoding="utf-8")
    with pytest.raises(InputError, match="format polydub does not read"):
        parse_subtitles(ass)
    latin = tmp_path / "latin.srt"
    latin.write_bytes("1\n00:00:01,000 --> 00:00:02,000\nCaf\u00e9\n".encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8.*line 3") as err:
        parse_subtitles(latin)
    assert "UTF-8" in (err.value.fix or "")


def _seg(index: int, start: float, end: float, text: str = "text", line: int | None = None) -> Segment:
    return Segment(index, start, end, text, None, line=line if line is not None else index * 4 - 2)


def test_validate_sorts_and_returns() -> None:
    segs = [_seg(2, 3.0, 4.0), _seg(1, 1.0, 2.0), _seg(3, 4.0, 5.0)]
    assert [s.index for s in validate_segments(segs, video_duration_s=6.0)] == [1, 2, 3]


def test_validate_overlap_names_both_cues() -> None:
    segs = [_seg(1, 1.0, 3.0, line=2), _seg(2, 2.0, 4.0, line=6)]
    with pytest.raises(InputError) as err:
        validate_segments(segs)
    reason = err.value.reason
    assert "line 6" in reason and "line 2" in reason and "overlaps" in reason


def test_validate_overlap_with_an_earlier_long_cue() -> None:
    segs = [_seg(1, 0.0, 10.0, line=2), _seg(2, 1.0, 2.0, line=6), _seg(3, 5.0, 6.0, line=10)]
    with pytest.raises(InputError) as err:
        validate_segments(segs)
    assert "line 10" in err.value.reason and "cue at line 2" in err.value.reason


def test_validate_trims_millisecond_overlaps_and_clamps_the_end() -> None:
    segs = [_seg(1, 1.0, 2.0005), _seg(2, 2.0, 3.0), _seg(3, 3.5, 5.25)]
    out = validate_segments(segs, video_duration_s=5.0)
    assert out[0].end_s == 2.0
    assert out[2].end_s == 5.0


@pytest.mark.parametrize(
    ("seg", "expected"),
    [
        (_seg(1, 2.0, 2.0, line=7), "zero duration"),
        (_seg(1, 3.0, 2.0, line=7), "negative duration"),
        (_seg(1, 1.0, 2.0, text="  ", line=7), "no text"),
        (_seg(1, 10.5, 11.0, line=7), "after the video's end"),
    ],
)
def test_validate_rejects_bad_cues_with_their_line(seg: Segment, expected: str) -> None:
    with pytest.raises(InputError) as err:
        validate_segments([seg], video_duration_s=10.0)
    assert "line 7" in err.value.reason
    assert expected in err.value.reason
    assert err.value.fix


def test_validate_rejects_no_segments() -> None:
    with pytest.raises(InputError, match="no cues"):
        validate_segments([])
    with pytest.raises(InputError, match="no cues"):
        validate_segments(parse_srt("\ufeff\r\n\r\n"))


def test_validate_lists_several_problems() -> None:
    segs = parse_srt("1\n00:00:02,000 --> 00:00:01,000\nbackwards\n\n2\n00:00:05,000 --> 00:00:06,000\n\n")
    with pytest.raises(InputError) as err:
        validate_segments(segs)
    assert "line 2" in err.value.reason and "line 6" in err.value.reason


def test_srt_round_trip() -> None:
    segs = validate_segments(parse_srt(GOOD_SRT) + [Segment(4, 3604.0, 3605.5, "Bye.", "ANNA", 0)])
    back = parse_srt(to_srt(segs))
    assert [(s.start_s, s.end_s, s.text, s.speaker) for s in back] == [
        (s.start_s, s.end_s, s.text, s.speaker) for s in segs
    ]


def test_srt_writer_leaves_out_labels_it_cannot_read_back() -> None:
    text = to_srt([Segment(1, 0.0, 1.0, "Hello.", "spk_0", 0)])
    assert "spk_0" not in text
    assert parse_srt(text)[0].text == "Hello."


def test_vtt_round_trip() -> None:
    segs = parse_vtt(GOOD_VTT) + [Segment(4, 5.0, 6.0, "a < b & c", "spk_1", 0)]
    text = to_vtt(segs)
    assert text.startswith("WEBVTT\n\n")
    back = parse_subtitles(text)
    assert [(s.start_s, s.end_s, s.text, s.speaker) for s in back] == [
        (s.start_s, s.end_s, s.text, s.speaker) for s in segs
    ]


def _spk(index: int, start: float, end: float, speaker: str | None) -> Segment:
    return Segment(index, start, end, "text", speaker, line=index * 4 - 2)


def test_fit_trims_a_short_overlap_of_one_speaker_with_a_warning() -> None:
    fitted = fit_segments([_spk(1, 1.0, 3.3, "ANNA"), _spk(2, 3.0, 4.0, "ANNA")], max_overlap_s=0.5)
    assert [(s.start_s, s.end_s) for s in fitted.segments] == [(1.0, 3.0), (3.0, 4.0)]
    assert len(fitted.fixes) == 1
    assert "line 2" in fitted.fixes[0] and "line 6" in fitted.fixes[0] and "0.300s" in fitted.fixes[0]


def test_fit_refuses_an_overlap_of_one_speaker_beyond_the_bound() -> None:
    with pytest.raises(InputError) as err:
        fit_segments([_spk(1, 1.0, 3.3, "ANNA"), _spk(2, 3.0, 4.0, "ANNA")], max_overlap_s=0.2)
    assert "line 6" in err.value.reason and "0.300s" in err.value.reason
    assert "POLYDUB_SUBTITLE_MAX_OVERLAP_S" in (err.value.fix or "")


def test_fit_keeps_overlaps_of_different_speakers() -> None:
    segs = [_spk(1, 1.0, 4.0, "ANNA"), _spk(2, 2.0, 5.0, "BEN"), _spk(3, 4.2, 6.0, "ANNA")]
    fitted = fit_segments(segs, video_duration_s=10.0)
    assert [(s.start_s, s.end_s, s.speaker) for s in fitted.segments] == [
        (1.0, 4.0, "ANNA"), (2.0, 5.0, "BEN"), (4.2, 6.0, "ANNA")]
    assert fitted.fixes == []


def test_fit_clips_cues_past_the_end_and_drops_those_after_it() -> None:
    segs = [_spk(1, 1.0, 2.0, None), _spk(2, 8.0, 12.0, None), _spk(3, 10.5, 11.0, None)]
    fitted = fit_segments(segs, video_duration_s=10.0)
    assert [(s.start_s, s.end_s) for s in fitted.segments] == [(1.0, 2.0), (8.0, 10.0)]
    assert len(fitted.fixes) == 2
    assert "line 6" in fitted.fixes[0] and "clipped" in fitted.fixes[0]
    assert "line 10" in fitted.fixes[1] and "dropped" in fitted.fixes[1]


def test_fit_refuses_what_cannot_be_dubbed_even_among_fixable_cues() -> None:
    segs = [_spk(1, 1.0, 2.2, None), _spk(2, 2.0, 3.0, None), _spk(3, 4.0, 3.5, None)]
    with pytest.raises(InputError) as err:
        fit_segments(segs, video_duration_s=10.0)
    assert "line 10" in err.value.reason and "negative duration" in err.value.reason


def test_fit_refuses_an_overlap_that_would_leave_no_slot() -> None:
    with pytest.raises(InputError, match="overlaps"):
        fit_segments([_spk(1, 1.0, 1.2, None), _spk(2, 1.0, 2.0, None)])


def test_synthesis_lets_overlapping_speakers_speak_their_whole_slots() -> None:
    """Another speaker's cue inside a slot does not cut its speech short; the same speaker's next cue does."""
    from handlers.synthesis import _next_start

    segments = [{"start_s": 1.0, "end_s": 4.0, "speaker": "ANNA"}, {"start_s": 2.0, "end_s": 5.0, "speaker": "BEN"},
                {"start_s": 4.5, "end_s": 6.0, "speaker": "ANNA"}, {"start_s": 7.0, "end_s": 8.0, "speaker": "BEN"}]
    assert _next_start(segments[0], segments, 10.0) == 4.5  # BEN's overlapping cue is ignored
    assert _next_start(segments[1], segments, 10.0) == 7.0  # ANNA's 4.5 starts inside BEN's slot
    assert _next_start(segments[3], segments, 10.0) == 10.0
