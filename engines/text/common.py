"""Notation shared by the language front ends: what a written number, time or code looks like.

The four languages read these differently, but they write them the same way (Arabic
digits, ``15:30``, ``2024-03-15``, ``$5``, ``10km``, ``010-1234-5678``, ``AI``), so the
patterns that find them live here once and each language module decides how to say what
they found. Nothing here knows a language; every function is pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "CLOCK_RE",
    "CURRENCY_RE",
    "DATE_RE",
    "DECIMAL",
    "NEGATIVE_RE",
    "PHONE_RE",
    "RANGE_RE",
    "RANGE_SIGN",
    "UPPER_RUN_RE",
    "clock_parts",
    "collapse_whitespace",
    "date_parts",
    "fold_width",
    "is_digit_code",
    "read_code_groups",
    "read_decimal",
    "read_digits",
    "spell_letters",
    "strip_digit_grouping",
    "unit_re",
    "words_re",
]

#: Full-width forms (U+FF01..U+FF5E) sit this far above their ASCII twins.
_FULLWIDTH_OFFSET = 0xFEE0
#: Full-width characters folded to ASCII: digits, Latin letters and the signs that
#: belong to numbers. CJK punctuation (，。！？：) stays as written, because it is the
#: sentence punctuation of ko/zh text and the speech engines pause on it; a ``：`` or
#: ``．`` between digits is folded by :func:`fold_width` itself.
_FOLDED_FULLWIDTH = "0123456789%$+-~/" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz"
#: Signs with their own code points, read like their ASCII forms.
_SIGN_FOLDS = {"\uffe5": "¥", "\uffe6": "₩", "\uffe1": "£", "\u2103": "°C", "\u2109": "°F",
               "\u3000": " ", "\u00a0": " ", "\u2212": "-", "\u301c": "~"}
_WIDTH_TABLE = {ord(c) + _FULLWIDTH_OFFSET: c for c in _FOLDED_FULLWIDTH} | {ord(k): v for k, v in _SIGN_FOLDS.items()}
#: Full-width separators folded only between two digits ("15：30", "3．5", "1，500").
_DIGIT_SEPARATOR_RE = re.compile(r"(?<=\d)([：．，／－])(?=\d)")

#: A decimal number as written: digits, optionally a point and more digits.
DECIMAL = r"\d+(?:\.\d+)?"
#: ``1,500`` / ``12,345,678``: commas every three digits (and nothing else) group thousands.
_GROUPED_RE = re.compile(r"(?<![\d,.])\d{1,3}(?:,\d{3})+(?![\d,])")
#: ``15:30`` / ``9:05`` / ``15:30:20``; not a part of a longer ``1:2:3:4`` run.
CLOCK_RE = re.compile(r"(?<![\d:])([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?(?![\d:])")
#: ``2024-03-15``, ``2024/3/15``, ``2024.3.15``: year first, one separator kind.
DATE_RE = re.compile(r"(?<![\d.])(\d{4})([-/.])(0?[1-9]|1[0-2])\2(0?[1-9]|[12]\d|3[01])(?![\d.])")
#: ``$5``, ``€ 20.50``, ``¥1000``, ``₩5000``, ``£3``: a currency sign before an amount.
CURRENCY_RE = re.compile(r"([$€£¥₩])\s?(" + DECIMAL + ")")
#: Telephone-style digit groups: three hyphen-joined groups (``010-1234-5678``,
#: ``0120-123-456``, ``138-1234-5678``) or two behind a leading zero (``02-1234567``).
#: Dates look alike (``2024-03-15``): read them first (:data:`DATE_RE`).
PHONE_RE = re.compile(r"(?<![\d.-])(?:\d{2,4}-\d{2,4}-\d{3,4}|0\d{1,3}-\d{3,8})(?![\d.-])")
#: The sign between two numbers of a range: ``3~5``, ``10〜20`` (a hyphen stays a hyphen:
#: it also joins telephone groups and words).
RANGE_SIGN = r"\s?[~〜]\s?"
RANGE_RE = re.compile(r"(?<=\d)" + RANGE_SIGN + r"(?=-?\d)")
#: A minus sign before a number ("-5", "(-3)", "降到了-5度"), not a hyphen after a Latin
#: letter or digit ("COVID-19", "3-5"). CJK and Hangul may touch it: they write no spaces.
NEGATIVE_RE = re.compile(r"(?<![A-Za-z0-9.)])-(?=\d)")
#: Runs of capital letters (acronyms and lone capitals: "AI", "GPU", "A"), not part of a
#: longer Latin word ("YouTube" is a word, not the acronyms "Y" and "T").
UPPER_RUN_RE = re.compile(r"(?<![A-Za-z])[A-Z]+(?![A-Za-z])")

#: Digit strings at least this long, without thousands commas, are codes (telephone,
#: account, order numbers), read digit by digit (ko and zh keep a quantity when a counter
#: or measure word follows: 1000000원, 1000000元).
CODE_MIN_DIGITS = 7
#: ... and so are shorter strings with a leading zero, from this length on.
CODE_MIN_ZERO_DIGITS = 3
_WHITESPACE_RE = re.compile(r"\s+")


def collapse_whitespace(text: str) -> str:
    """Runs of whitespace -> one space; trimmed."""
    return _WHITESPACE_RE.sub(" ", text).strip()


def fold_width(text: str) -> str:
    """Full-width digits, Latin letters and number signs -> ASCII, so one set of patterns
    finds ``２０２４年`` and ``2024年`` alike; CJK punctuation is kept (see
    ``_FOLDED_FULLWIDTH``)."""
    folded = text.translate(_WIDTH_TABLE)
    return _DIGIT_SEPARATOR_RE.sub(lambda m: chr(ord(m.group(1)) - _FULLWIDTH_OFFSET), folded)


def strip_digit_grouping(text: str) -> str:
    """``1,500`` -> ``1500``: thousands commas carry no sound; a comma elsewhere stays."""
    return _GROUPED_RE.sub(lambda m: m.group(0).replace(",", ""), text)


def is_digit_code(digits: str) -> bool:
    """Whether a digit string reads as a code (digit by digit) rather than a quantity:
    a leading zero on :data:`CODE_MIN_ZERO_DIGITS` or more digits ("007", "0120"; a written
    "03" is the number 3) or :data:`CODE_MIN_DIGITS` or more digits ("01012345678")."""
    return len(digits) >= CODE_MIN_DIGITS or (len(digits) >= CODE_MIN_ZERO_DIGITS and digits[0] == "0")


def words_re(words: Iterable[str]) -> str:
    """Alternation of ``words``, longest first (so "km/h" wins over "km", "개월" over "개")."""
    return "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))


def unit_re(units: Mapping[str, str]) -> re.Pattern[str]:
    """A number followed by one of the Latin unit symbols in ``units`` ("10km", "5 kg").

    The unit must end the Latin run ("5 kgs" is not kg), so words that start like a unit
    are left alone. Groups: the number, the unit as written.
    """
    return re.compile(r"(" + DECIMAL + r")\s?(" + words_re(units) + r")(?![A-Za-z])")


def spell_letters(letters: str, names: Mapping[str, str]) -> str:
    """Each Latin letter by its name in ``names`` (keys upper case): ``spell_letters("AI",
    ko.LETTER_NAMES)`` -> ``"에이아이"``. Characters without a name stay."""
    return "".join(names.get(ch.upper(), ch) for ch in letters)


def read_digits(digits: str, names: str) -> str:
    """Digits one by one, ``names[d]`` for digit ``d``: ("010", "공일공이삼사오육칠팔구") -> 공일공."""
    return "".join(names[int(d)] for d in digits)


def read_code_groups(code: str, names: str) -> str:
    """A hyphenated code (:data:`PHONE_RE`) digit by digit, its groups spaced as dictated."""
    return " ".join(read_digits(group, names) for group in code.split("-"))


def read_decimal(number: str, integer: Callable[[int], str], point: str, names: str) -> str:
    """``3.5`` -> integer(3) + point + 5 by ``names``: the whole part as a number, the
    decimals digit by digit, as ko and zh say them (삼 점 오, 三点五)."""
    whole, _, fraction = number.partition(".")
    words = integer(int(whole))
    return f"{words}{point}{read_digits(fraction, names)}" if fraction else words


def clock_parts(m: re.Match[str]) -> tuple[int, int | None, int | None]:
    """(hour, minute, second) of a :data:`CLOCK_RE` match, ``None`` for what is not said:
    the minutes of a full hour (15:00 is "15 o'clock") and zero seconds."""
    hour, minute = int(m.group(1)), int(m.group(2))
    second = int(m.group(3)) if m.group(3) else 0
    return hour, (minute if minute or second else None), (second or None)


def date_parts(m: re.Match[str]) -> tuple[str, int, int]:
    """(year as written, month, day) of a :data:`DATE_RE` match."""
    return m.group(1), int(m.group(3)), int(m.group(4))
