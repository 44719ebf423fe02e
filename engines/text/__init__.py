"""Text front end shared by every TTS engine: a subtitle line -> what a speaker of its
language would say.

Why one front end: a subtitle is written, not spoken. ``15:30``, ``$5``, ``2개``, ``AI``,
``今日`` each have a reading that depends on the language (and, for Korean and Japanese
numbers, on the word after them), and no engine knows it by itself: eSpeak NG spells
kanji as "Chinese letter", reads every Korean digit string as a Sino-Korean number and
switches voices for Latin letters; neural models only speak well what looks like their
training text. So every engine (eSpeak, FastPitch, VALL-E X) sends its text through
:func:`normalize_for_speech` before its own symbols, and a reading fixed here is fixed
for all of them.

One module per language, each documenting its rules and checks:
:mod:`engines.text.en` (numbers, currency, times, ordinals, abbreviations, acronyms; also
FastPitch's ``english_cleaners_v2``), :mod:`engines.text.ja` (kanji and everything else
to katakana through OpenJTalk), :mod:`engines.text.ko` (Sino-Korean vs native numerals by
counter, Latin letters in Hangul), :mod:`engines.text.zh` (Chinese numerals, 两, years
and codes digit by digit, acronyms spelt). :mod:`engines.text.common` holds the patterns
they share (how a time, date, code or currency amount is written). Pure Python; the
Japanese module loads its dictionary on the first Japanese line.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

from . import en, ja, ko, zh

__all__ = ["SPEECH_LANGUAGES", "normalize_for_speech"]

_NORMALIZERS: MappingProxyType[str, Callable[[str], str]] = MappingProxyType(
    {"en": en.normalize, "ja": ja.normalize, "ko": ko.normalize, "zh": zh.normalize}
)
#: Language codes with a front end (polydub's target languages).
SPEECH_LANGUAGES: tuple[str, ...] = tuple(sorted(_NORMALIZERS))


def normalize_for_speech(text: str, lang: str) -> str:
    """``text`` as a speaker of ``lang`` would read it aloud: digits, signs, units and Latin
    letters written out in the language's words (katakana for Japanese).

    The result may be empty (a line of symbols with no reading, such as "♪♪"); an engine
    decides whether that is an error. Raises ValueError for a language without a front end.
    """
    if lang not in _NORMALIZERS:
        raise ValueError(
            f"no text front end for language {lang!r}; supported languages: {', '.join(SPEECH_LANGUAGES)}"
        )
    return _NORMALIZERS[lang](text)
