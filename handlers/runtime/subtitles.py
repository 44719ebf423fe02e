"""Subtitles in and out: SRT and WebVTT parsing, validation and writing.

The target-language subtitles are the dub's script and its timing: each cue's
text is what the dub says and its span is the slot the speech must fit. So the
parser is forgiving about the many dialects found in the wild (BOMs, CRLF,
``.`` or ``,`` decimal marks, missing hours, styling tags) but strict about
anything that would change what is said or when, and every error names the
line a person has to fix.

Speakers: a WebVTT voice span ``<v Name>`` or a ``NAME:`` / ``Name:`` prefix
at the start of a line (one to :data:`MAX_SPEAKER_WORDS` words, each upper-case
or capitalised) becomes the segment's ``speaker`` and is removed from the text;
segments with one label share one cloned voice. A cue holds one voice: when a
cue names several speakers the first one is kept (split the cue to give each
line its own voice).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from schemas.errors import InputError

SubtitleFormat = Literal["srt", "vtt"]

#: ISO 639-2 (terminology) code of each target language: what MP4/QuickTime language
#: tags hold (``zho``, not the bibliographic ``chi``).
ISO_639_2 = {"ko": "kor", "en": "eng", "ja": "jpn", "zh": "zho"}

# Fixes this small come from millisecond rounding in subtitle tools (an end a
# millisecond past the next start or the video's end): made without a warning.
ROUNDING_S = 0.001
#: The default bound on a trimmed overlap between one speaker's consecutive cues
#: (``Settings.subtitle_max_overlap_s`` is the configured one).
DEFAULT_MAX_OVERLAP_S = 0.5
# Longest speaker label recognised in a ``NAME:`` prefix, so an ordinary
# sentence containing a colon is not mistaken for one.
MAX_SPEAKER_WORDS = 3
MAX_SPEAKER_CHARS = 40
# How many problems one validation error lists; the rest are counted.
MAX_REPORTED_PROBLEMS = 5
# How much of an offending line an error message quotes.
QUOTE_CHARS = 60

_SECONDS_PER_MINUTE = 60
_MINUTES_PER_HOUR = 60
_MS_PER_SECOND = 1000

_SRT_TIMING_EXAMPLE = "00:00:01,000 --> 00:00:02,500"
_VTT_TIMING_EXAMPLE = "00:00:01.000 --> 00:00:02.500"
_TIMING_FIX = (
    "write each cue as an optional number line, a timing line 'START --> END' "
    "(HH:MM:SS,mmm), then its text, with one blank line between cues"
)

# HH:MM:SS,mmm with optional hours and either decimal mark; the fraction is
# read as a decimal fraction of a second ("1,5" is 1.5 s).
_TIMESTAMP = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[.,](\d{1,9}))?"
_TIMING_RE = re.compile(rf"^\s*{_TIMESTAMP}\s*-->\s*{_TIMESTAMP}(?:\s+(.*))?\s*$")
_LINE_BREAK_RE = re.compile(r"\r\n|\r|\n")
_VOICE_RE = re.compile(r"<v(?:\.[^\s>]*)?[ \t]+([^>]*)>")
_ASS_OVERRIDE_RE = re.compile(r"\{\\[^}]*\}")
_TAG_RE = re.compile(r"</?[A-Za-z][^<>]*>|<\d[\d:.]*>")
_SPEAKER_RE = re.compile(
    r"^(?P<name>[^\W\d_][\w'’.\-]*(?: [^\W\d_][\w'’.\-]*)*)\s*:(?:\s+|$)(?P<rest>.*)$"
)
_VTT_SKIPPED_BLOCKS = ("NOTE", "STYLE", "REGION")
_BOM = "\ufeff"


@dataclass(frozen=True)
class Segment:
    """One cue: a slot on the video's timeline and the text the dub says in it.

    ``index`` is the cue's 1-based position in its file and ``line`` the line
    number of its timing line, both kept so errors point at the source.
    """

    index: int
    start_s: float
    end_s: float
    text: str
    speaker: str | None = None
    line: int = 0

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


# --- helpers -------------------------------------------------------------------


def _quote(text: str) -> str:
    """An offending line for an error message, shortened if long."""
    text = text.strip()
    return repr(text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "...")


def _error(line: int, problem: str, fix: str = _TIMING_FIX) -> InputError:
    return InputError(f"subtitles line {line}: {problem}", fix)


def _lines(text: str) -> list[str]:
    """Lines of ``text`` without a BOM, splitting on CRLF, CR or LF only.

    (``str.splitlines`` would also split on form feeds and Unicode separators
    that may legitimately sit inside cue text.)
    """
    return _LINE_BREAK_RE.split(text.removeprefix(_BOM))


def _blocks(lines: Sequence[str], first: int = 0) -> list[list[tuple[int, str]]]:
    """Runs of non-blank lines as ``(1-based line number, line)``, blank lines between."""
    blocks: list[list[tuple[int, str]]] = []
    current: list[tuple[int, str]] = []
    for number, line in enumerate(lines[first:], start=first + 1):
        if line.strip():
            current.append((number, line))
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


def _seconds(groups: Sequence[str | None], line: int, raw: str) -> float:
    """``(hours, minutes, seconds, fraction)`` strings -> seconds, exact to the digit."""
    hours, minutes, seconds, fraction = groups
    h, m, s = int(hours or 0), int(minutes or 0), int(seconds or 0)
    if m >= _MINUTES_PER_HOUR or s >= _SECONDS_PER_MINUTE:
        raise _error(
            line,
            f"minutes and seconds must be below 60 in {_quote(raw)}",
            "write times as HH:MM:SS,mmm with MM and SS from 00 to 59",
        )
    digits = fraction or ""
    scale = int(10 ** len(digits))
    whole = (h * _MINUTES_PER_HOUR + m) * _SECONDS_PER_MINUTE + s
    return (whole * scale + int(digits or 0)) / scale


def _parse_timing(line: int, raw: str) -> tuple[float, float] | None:
    """Start and end of a timing line, or None when ``raw`` is not one."""
    match = _TIMING_RE.match(raw)
    if match is None:
        return None
    groups = match.groups()
    return _seconds(groups[0:4], line, raw), _seconds(groups[4:8], line, raw)


def _expected_timing(line: int, raw: str, example: str) -> InputError:
    return _error(line, f"expected a timing line like '{example}', got {_quote(raw)}")


def _speaker_prefix(line: str) -> tuple[str, str] | None:
    """``("NAME", rest)`` when ``line`` starts with an upper-case or capitalised name and a colon."""
    match = _SPEAKER_RE.match(line)
    if match is None:
        return None
    name = match.group("name")
    words = name.split(" ")
    if len(words) > MAX_SPEAKER_WORDS or len(name) > MAX_SPEAKER_CHARS:
        return None
    if not all(word[0].isupper() for word in words):
        return None
    return name, match.group("rest")


def _clean_text(lines: Iterable[str], unescape: bool) -> tuple[str, str | None]:
    """Cue text without markup, and the speaker it names (voice span first, then prefix)."""
    raw = "\n".join(lines)
    speaker: str | None = None
    voice = _VOICE_RE.search(raw)
    if voice is not None and voice.group(1).strip():
        speaker = voice.group(1).strip()
    raw = _TAG_RE.sub("", _ASS_OVERRIDE_RE.sub("", raw))
    if unescape:
        raw = html.unescape(raw)
    kept: list[str] = []
    from_prefix = speaker is None
    for line in raw.split("\n"):
        line = line.strip()
        if from_prefix:
            prefixed = _speaker_prefix(line)
            if prefixed is not None:
                name, line = prefixed[0], prefixed[1].strip()
                speaker = speaker or name
        if line:
            kept.append(line)
    return "\n".join(kept), speaker


# --- parsing -------------------------------------------------------------------


def _cue(
    block: Sequence[tuple[int, str]], index: int, labelled: bool, example: str, unescape: bool
) -> Segment:
    """One cue block: an optional label line (number or identifier), timing, text."""
    (number, timing_line), text = block[0], block[1:]
    if labelled:
        if not text:
            raise _expected_timing(number + 1, "", example)
        (number, timing_line), text = text[0], text[1:]
    timing = _parse_timing(number, timing_line)
    if timing is None:
        raise _expected_timing(number, timing_line, example)
    body, speaker = _clean_text((line for _, line in text), unescape=unescape)
    return Segment(index, timing[0], timing[1], body, speaker, line=number)


def parse_srt(text: str) -> list[Segment]:
    """Parse SubRip text into segments, in file order (see :func:`validate_segments`).

    Accepts a BOM, CRLF or CR line ends, cues without a number line, ``.`` as
    the decimal mark, missing hours and trailing position coordinates.
    """
    segments: list[Segment] = []
    for block in _blocks(_lines(text)):
        number, first = block[0]
        labelled = _TIMING_RE.match(first) is None
        if labelled and not first.strip().isdigit():
            raise _error(
                number,
                f"expected a cue number or a timing line like '{_SRT_TIMING_EXAMPLE}', "
                f"got {_quote(first)}",
                _TIMING_FIX + "; cue text may not contain blank lines",
            )
        segments.append(_cue(block, len(segments) + 1, labelled, _SRT_TIMING_EXAMPLE, unescape=False))
    return segments


def parse_vtt(text: str) -> list[Segment]:
    """Parse WebVTT text into segments, in file order (see :func:`validate_segments`).

    Skips the header block and NOTE, STYLE and REGION blocks; ignores cue
    identifiers and cue settings; reads ``<v Name>`` as the speaker; strips
    styling tags and decodes HTML entities (``&amp;``).
    """
    lines = _lines(text)
    header = lines[0] if lines else ""
    if not (header == "WEBVTT" or header.startswith(("WEBVTT ", "WEBVTT\t"))):
        raise _error(
            1,
            f"expected the header 'WEBVTT', got {_quote(header)}",
            "start a WebVTT file with a line reading WEBVTT, or give an SRT file",
        )
    # The header runs to the first blank line, unless a timing line shows up
    # first (a missing blank line after the header, common in hand-made files).
    body_start = 1
    while body_start < len(lines) and lines[body_start].strip():
        if "-->" in lines[body_start]:
            break
        body_start += 1

    segments: list[Segment] = []
    for block in _blocks(lines, first=body_start):
        first = block[0][1]
        labelled = "-->" not in first  # a cue identifier; the timing line follows
        if labelled and first.split(maxsplit=1)[0] in _VTT_SKIPPED_BLOCKS:
            continue
        segments.append(_cue(block, len(segments) + 1, labelled, _VTT_TIMING_EXAMPLE, unescape=True))
    return segments


_PARSERS = {"srt": parse_srt, "vtt": parse_vtt}
_SUFFIXES: dict[str, SubtitleFormat] = {".srt": "srt", ".vtt": "vtt", ".webvtt": "vtt"}
_UNSUPPORTED_SUFFIXES = frozenset(
    {".ass", ".ssa", ".sub", ".sbv", ".ttml", ".dfxp", ".xml", ".scc", ".stl", ".smi", ".sami"}
)


def _read_text(path: Path) -> str:
    """A subtitle file's text: UTF-8 (with or without BOM) or UTF-16 with BOM."""
    if not path.exists():
        raise InputError(f"subtitle file {path} does not exist", "check the --subs path")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a subtitle file", "give the .srt or .vtt file itself")
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            f"subtitle file {path} is not UTF-8 text (line {line} holds byte 0x{data[exc.start]:02x})",
            "save the subtitles as UTF-8",
        ) from exc


def _looks_like_path(value: str) -> bool:
    """A one-line string naming a file (by existing or by its suffix), not subtitle text."""
    if "\n" in value or "\r" in value or "-->" in value:
        return False
    path = Path(value)
    if path.suffix.lower() in _SUFFIXES or path.suffix.lower() in _UNSUPPORTED_SUFFIXES:
        return True
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long to be a path: it is text
        return False


def subtitle_format(path_or_uri: str | Path) -> SubtitleFormat:
    """The format a file's (or URI's) suffix names, SRT when it names none: the one guess by name.

    A ``WEBVTT`` header still wins when the text is parsed (:func:`parse_subtitles`).
    """
    name = str(path_or_uri).split("?", 1)[0]
    return _SUFFIXES.get(Path(name).suffix.lower(), "srt")


def parse_subtitles(path_or_text: Path | str, fmt: SubtitleFormat | None = None) -> list[Segment]:
    """Parse a subtitle file or subtitle text, SRT or WebVTT.

    ``path_or_text`` is a :class:`~pathlib.Path`, a string naming a file, or
    the subtitle text itself. The format is ``fmt`` if given; otherwise a
    ``WEBVTT`` header means WebVTT whatever the file is called (mislabelled
    files are common), then a ``.srt``/``.vtt`` suffix decides, then SRT is
    assumed. Formats polydub does not read (ASS, TTML, ...) are refused by
    suffix with a message saying so.
    """
    if fmt is not None and fmt not in _PARSERS:
        raise InputError(f"unknown subtitle format {fmt!r}", "use 'srt' or 'vtt'")
    suffix_fmt: SubtitleFormat | None = None
    if isinstance(path_or_text, Path) or _looks_like_path(path_or_text):
        path = Path(path_or_text)
        suffix = path.suffix.lower()
        if fmt is None and suffix in _UNSUPPORTED_SUFFIXES:
            raise InputError(
                f"subtitle file {path} is in a format polydub does not read ({suffix})",
                "convert it to SubRip (.srt) or WebVTT (.vtt), e.g. `ffmpeg -i IN OUT.srt`",
            )
        text = _read_text(path)
        suffix_fmt = _SUFFIXES.get(suffix)
    else:
        text = path_or_text
    chosen: SubtitleFormat
    if fmt is not None:
        chosen = fmt
    elif text.removeprefix(_BOM).startswith("WEBVTT"):
        chosen = "vtt"
    else:
        chosen = suffix_fmt or "srt"
    return _PARSERS[chosen](text)


# --- validation ----------------------------------------------------------------


def _span(segment: Segment) -> str:
    return f"{_srt_time(segment.start_s)} --> {_srt_time(segment.end_s)}"


@dataclass(frozen=True)
class FittedSegments:
    """Segments that can be dubbed, and the fixes made to get them (each a sentence naming its line).

    The fixes travel into the job's manifest and its QC report, so a person
    sees what was changed in their file instead of a refusal.
    """

    segments: list[Segment]
    fixes: list[str]


def _refuse(problems: list[str]) -> InputError:
    shown = problems[:MAX_REPORTED_PROBLEMS]
    more = len(problems) - len(shown)
    reason = "subtitles " + "; ".join(shown)
    if more:
        reason += f"; and {more} more problem{'s' if more > 1 else ''}"
    return InputError(
        reason,
        "fix those cues: each needs text and an end after its start, must start before the "
        "video's end, and may overlap the same speaker's next cue by a short moment at most "
        "(POLYDUB_SUBTITLE_MAX_OVERLAP_S)",
    )


def fit_segments(
    segments: Iterable[Segment],
    video_duration_s: float | None = None,
    max_overlap_s: float = DEFAULT_MAX_OVERLAP_S,
) -> FittedSegments:
    """Segments sorted by start, with what subtitle files get wrong all the time fixed, not refused.

    Fixed, each with a line in :attr:`FittedSegments.fixes`: a cue that runs
    past the video's end is clipped to it, one that starts at or after it is
    dropped (there is no picture to dub it on), and a cue overlapping the same
    speaker's next cue by at most ``max_overlap_s`` ends where the next begins
    (one voice cannot say two lines at once; a person rounding times made it).
    Cues of *different* speakers may overlap: both voices are dubbed and mixed.
    Refused, naming the line of each problem (up to :data:`MAX_REPORTED_PROBLEMS`),
    is only what cannot be dubbed: no cues, empty text, an end not after the
    start, a start before 0, an overlap of one speaker beyond the bound, and no
    cue left inside the video.
    """
    ordered = sorted(segments, key=lambda s: (s.start_s, s.end_s, s.index))
    if not ordered:
        raise InputError(
            "the subtitles hold no cues, so there is nothing to dub",
            "give subtitles with at least one timed line of text",
        )
    problems: list[str] = []
    fixes: list[tuple[int, str]] = []  # (line, fix): listed in the file's order
    dropped: list[tuple[int, str]] = []
    fitted: list[Segment] = []
    for segment in ordered:
        where = f"line {segment.line} ({_span(segment)})"
        if not segment.text.strip():
            problems.append(f"{where}: the cue has no text")
        if segment.start_s < 0:
            problems.append(f"{where}: the cue starts before 0")
        if segment.end_s <= segment.start_s:
            kind = "zero" if segment.end_s == segment.start_s else "negative"
            problems.append(f"{where}: the cue has a {kind} duration; its end must come after its start")
        if video_duration_s is not None and segment.end_s > segment.start_s:
            if segment.start_s >= video_duration_s:
                dropped.append((segment.line,
                                f"{where}: the cue starts at or after the video's end ({video_duration_s:.3f}s)"))
                continue
            if segment.end_s > video_duration_s:
                if segment.end_s - video_duration_s > ROUNDING_S:
                    fixes.append((segment.line, f"{where}: the cue ran past the video's end "
                                                f"({video_duration_s:.3f}s); it was clipped to end there"))
                segment = replace(segment, end_s=video_duration_s)
        fitted.append(segment)
    fixes.extend((line, f"{text}; it was dropped") for line, text in dropped)
    if not fitted and not problems:
        problems.extend(text for _, text in dropped)

    latest: dict[str | None, int] = {}  # per speaker: the position of its cue reaching furthest so far
    for position, segment in enumerate(fitted):
        before = latest.get(segment.speaker)
        if before is not None and segment.start_s < fitted[before].end_s:
            earlier = fitted[before]
            overlap = earlier.end_s - segment.start_s
            # Trimmable: a short overlap that leaves the earlier cue a slot of its own.
            if overlap <= max_overlap_s + ROUNDING_S and segment.start_s > earlier.start_s:
                if overlap > ROUNDING_S:
                    fixes.append((earlier.line, f"line {earlier.line} ({_span(earlier)}): the cue overlapped "
                                                f"the same speaker's next cue at line {segment.line} by "
                                                f"{overlap:.3f}s; it now ends at {_srt_time(segment.start_s)}"))
                fitted[before] = replace(earlier, end_s=segment.start_s)
            else:
                problems.append(
                    f"line {segment.line} ({_span(segment)}): the cue overlaps the same speaker's cue at line "
                    f"{earlier.line} ({_span(earlier)}) by {overlap:.3f}s, more than the "
                    f"{max_overlap_s:.3f}s that is trimmed"
                )
        if before is None or segment.end_s > fitted[before].end_s:
            latest[segment.speaker] = position

    if problems:
        raise _refuse(problems)
    return FittedSegments(fitted, [text for _, text in sorted(fixes, key=lambda fix: fix[0])])


def validate_segments(
    segments: Iterable[Segment],
    video_duration_s: float | None = None,
    max_overlap_s: float = DEFAULT_MAX_OVERLAP_S,
) -> list[Segment]:
    """The segments of :func:`fit_segments`, for callers that need no record of the fixes."""
    return fit_segments(segments, video_duration_s, max_overlap_s).segments


# --- writing -------------------------------------------------------------------


def _split_time(seconds: float) -> tuple[int, int, int, int]:
    total_ms = max(round(seconds * _MS_PER_SECOND), 0)
    total_s, ms = divmod(total_ms, _MS_PER_SECOND)
    total_m, s = divmod(total_s, _SECONDS_PER_MINUTE)
    h, m = divmod(total_m, _MINUTES_PER_HOUR)
    return h, m, s, ms


def _srt_time(seconds: float) -> str:
    h, m, s, ms = _split_time(seconds)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def _vtt_time(seconds: float) -> str:
    h, m, s, ms = _split_time(seconds)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def _text_lines(text: str) -> list[str]:
    """Cue text as non-blank lines: a blank line would end the cue early."""
    lines = [line.strip() for line in text.split("\n")]
    return [line.replace("-->", "->") for line in lines if line]


def language_tag(lang: str) -> str:
    """The ISO 639-2 tag of a target language (``ko`` -> ``kor``), for container metadata."""
    return ISO_639_2[lang]


def cue_lines(segment: Segment, *, with_speakers: bool = True) -> list[str]:
    """The lines a viewer reads for ``segment``, as the .srt and the MP4's subtitle track show them.

    With ``with_speakers`` a labelled segment's first line is ``Speaker: text``,
    the form :func:`parse_srt` reads back; labels that form would not read back
    as a speaker (lower-case ones) are left out.
    """
    lines = _text_lines(segment.text)
    if with_speakers and segment.speaker and lines:
        labelled = f"{segment.speaker}: {lines[0]}"
        # Only a label parse_srt reads back as a speaker; any other (say
        # "spk_0") would turn into words the dub speaks.
        if _speaker_prefix(labelled) == (segment.speaker, lines[0]):
            lines[0] = labelled
    return lines


def to_srt(segments: Iterable[Segment], *, with_speakers: bool = True) -> str:
    """SubRip text of ``segments``, numbered from 1 in the order given.

    Each cue's lines are :func:`cue_lines`; SubRip has no other place for a
    speaker label than the first line.
    """
    cues = []
    for number, segment in enumerate(segments, start=1):
        lines = cue_lines(segment, with_speakers=with_speakers)
        timing = f"{_srt_time(segment.start_s)} --> {_srt_time(segment.end_s)}"
        cues.append("\n".join([str(number), timing, *lines]))
    return "\n\n".join(cues) + "\n" if cues else ""


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(segments: Iterable[Segment], *, with_speakers: bool = True) -> str:
    """WebVTT text of ``segments``; speakers as voice spans ``<v Name>``."""
    cues = ["WEBVTT"]
    for number, segment in enumerate(segments, start=1):
        lines = [_vtt_escape(line) for line in _text_lines(segment.text)]
        if with_speakers and segment.speaker and lines:
            name = segment.speaker.replace(">", "")
            lines[0] = f"<v {name}>{lines[0]}"
        timing = f"{_vtt_time(segment.start_s)} --> {_vtt_time(segment.end_s)}"
        cues.append("\n".join([str(number), timing, *lines]))
    return "\n\n".join(cues) + "\n"


__all__ = [
    "ISO_639_2",
    "FittedSegments",
    "Segment",
    "SubtitleFormat",
    "cue_lines",
    "fit_segments",
    "language_tag",
    "parse_srt",
    "parse_subtitles",
    "parse_vtt",
    "to_srt",
    "to_vtt",
    "validate_segments",
]
