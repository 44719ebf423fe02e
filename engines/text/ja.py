"""Japanese text front end: kanji, numerals and Latin words read as katakana, through OpenJTalk.

Why: a Japanese subtitle mixes kanji, kana, Arabic digits and Latin words, and a kanji's
reading depends on the word around it (今日 is キョー, 日 alone ニチ or ヒ), which only a
morphological dictionary knows. eSpeak NG's Japanese voice reads kana only (it says
"Chinese letter" for every kanji), so the line goes through OpenJTalk (the
``pyopenjtalk-plus`` wheel, MIT, whose dictionary ships inside it: nothing is downloaded)
and comes out as the pronunciation in katakana: ``今日は良い天気ですね。`` ->
``キョーワ ヨイ テンキデスネ。``. That is the reading, not the spelling: the particle は is
ワ, long vowels are ー (eSpeak lengthens the vowel before it), and numbers take their
sound changes (``3本`` -> ``サンボン``, ``6本`` -> ``ロッポン``, ``1人`` -> ``ヒトリ``).

What OpenJTalk reads right by itself (checked): dates and counters (``2024年3月15日`` ->
``ニセンニジューヨネン サンガツ ジューゴニチ``), ``3人``, ``15時30分``, ``1,500円``,
``3.5%``, ``10km``, ``100MB``; telephone numbers digit by digit; Latin words in their
katakana loanword form (``AI`` -> ``エーアイ``, ``YouTube`` -> ``ユーチューブ``, ``OK``
-> ``オーケイ``), unknown ones spelt by letter names (``xyz`` -> ``エックスワイゼット``).
What it gets wrong is rewritten first into the way a Japanese writer would put it:

* clock times ``10:30`` (read ジュー、サンジュー) -> ``10時30分``; ISO dates
  ``2024-03-15`` -> ``2024年3月15日``;
* currency signs before the amount (``$100`` read as a pause and ヒャク) -> ``100ドル``;
* data sizes (``5GB`` read as "5G" ファイブジー and a letter), litres, hours and
  milliseconds, temperatures (``20°C``) -> their Japanese unit words;
* ranges ``10~20人`` -> ``10から20人`` (any wave dash between two words), minus signs
  ``-5度`` -> ``マイナス5度``.

Punctuation: sentence ends (。！？) and commas (、) are kept, so the engine's pauses
survive; other separators (・, ／, －, ：) become a comma pause; brackets, quotes and
symbols with no reading (♪, emoji) are dropped. Words are separated by spaces at
OpenJTalk's accent-phrase boundaries (``キョーワ ヨイ テンキデスネ``): eSpeak gives word
timings per phrase and drops the end of one very long unspaced word (over ~200 bytes).

The reading of 何 (ナニ or ナン) is predicted by a small ONNX model inside the wheel when
``onnxruntime`` is installed; without it OpenJTalk's own dictionary reading is used
(``何時`` -> ``ナンジ``), not the wheel's fallback, which always says ナニ.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from .common import (
    CLOCK_RE,
    CURRENCY_RE,
    DATE_RE,
    NEGATIVE_RE,
    clock_parts,
    collapse_whitespace,
    date_parts,
    unit_re,
)

__all__ = ["CURRENCY_NAMES", "UNITS", "kana_reading", "normalize", "rewrite_notation"]

#: Currency signs -> the currency's name, said after the amount.
CURRENCY_NAMES: Mapping[str, str] = {"$": "ドル", "€": "ユーロ", "£": "ポンド", "¥": "円", "₩": "ウォン"}
#: Latin unit symbols OpenJTalk misreads after a number -> the Japanese unit word (the
#: units it reads right, km, kg, cm, mm, ml, MB, Hz, ..., are left to it).
UNITS: Mapping[str, str] = {
    "GB": "ギガバイト", "TB": "テラバイト", "KB": "キロバイト", "kB": "キロバイト", "MB": "メガバイト",
    "L": "リットル", "h": "時間", "ms": "ミリ秒", "min": "分", "°C": "度", "°F": "度", "°": "度",
}
_RANGE_WORD = "から"
#: A wave dash between two words is "from ... to" in Japanese, numbers or not: 10〜20人,
#: 5歳〜10歳, 東京〜大阪. A trailing one (よろしく〜) is a drawl, left to the symbol rules.
_RANGE_RE = re.compile(r"(?<=[^\s~〜])\s?[~〜]\s?(?=[^\s~〜])")
_MINUS = "マイナス"
_UNIT_RE = unit_re(UNITS)

#: OpenJTalk's part of speech for symbols and punctuation, for numerals, and the node of
#: a decimal point (テン): a number's nodes stay one word.
_POS_SYMBOL = "記号"
_GROUP_NUMERAL = "数"
_DECIMAL_POINT = "．"
#: ``chain_flag`` of a node that continues the accent phrase before it.
_CHAINED = 1
#: The accent mark OpenJTalk writes into some pronunciations; not a sound.
_ACCENT_MARK = "’"
#: Sentence punctuation kept as written (pauses), by what OpenJTalk hands back.
_SENTENCE_MARKS = {"。": "。", "！": "！", "？": "？", "!": "！", "?": "？"}
#: Symbols OpenJTalk leaves without a reading that have an everyday one.
_SYMBOL_READINGS = {"＝": "イコール", "=": "イコール"}
_COMMA = "、"
_COMMA_MARKS = frozenset("、，,")
#: Unicode categories of symbols dropped without a pause: brackets and quotes, spaces,
#: and pictographs such as ♪ or emoji (So), which have no reading.
_SILENT_CATEGORIES = frozenset({"Ps", "Pe", "Pi", "Pf", "Zs", "So", "Sk"})
_KATAKANA_RE = re.compile(r"[\u30a1-\u30fa\u30fc]+")
#: A comma next to another mark, or at the ends, is noise left by dropped symbols.
_PAUSE_RUN_RE = re.compile(r"、*([。！？])[、。！？]*|、{2,}")

_openjtalk: ModuleType | None = None
_openjtalk_lock = threading.Lock()


def _load_openjtalk() -> ModuleType:
    """Import pyopenjtalk once, on the first Japanese line (it maps a ~300 MB dictionary).

    The wheel prints a notice to stdout at import when onnxruntime is missing; it is
    swallowed here (the module docstring says what that changes).
    """
    global _openjtalk
    with _openjtalk_lock:
        if _openjtalk is None:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    import pyopenjtalk
            except ImportError as exc:  # a broken install, not something a user can fix
                raise ImportError(
                    "Japanese text needs pyopenjtalk-plus (a polydub dependency): pip install pyopenjtalk-plus"
                ) from exc
            _openjtalk = pyopenjtalk
        return _openjtalk


@functools.cache
def _has_onnxruntime() -> bool:
    """Whether the wheel's 何 model can run (see the module docstring)."""
    return importlib.util.find_spec("onnxruntime") is not None


def _read_clock(m: re.Match[str]) -> str:
    hour, minute, second = clock_parts(m)
    return f"{hour}時" + (f"{minute}分" if minute is not None else "") + (f"{second}秒" if second else "")


def _read_date(m: re.Match[str]) -> str:
    year, month, day = date_parts(m)
    return f"{int(year)}年{month}月{day}日"


def rewrite_notation(text: str) -> str:
    """NFKC, then the notations OpenJTalk misreads, rewritten as Japanese writes them.

    NFKC first: it folds full-width Latin and digits, half-width katakana, ℃ and circled
    digits to the forms the rules (and OpenJTalk's dictionary) expect.
    """
    text = unicodedata.normalize("NFKC", text)
    text = DATE_RE.sub(_read_date, text)
    text = CLOCK_RE.sub(_read_clock, text)
    text = CURRENCY_RE.sub(lambda m: f"{m.group(2)}{CURRENCY_NAMES[m.group(1)]}", text)
    text = _UNIT_RE.sub(lambda m: f"{m.group(1)}{UNITS[m.group(2)]}", text)
    text = _RANGE_RE.sub(_RANGE_WORD, text)
    return NEGATIVE_RE.sub(_MINUS, text)


def _symbol_reading(string: str, pron: str) -> str:
    """What a symbol node says: kept punctuation, its own reading (Ａ エイ, ＆ アンド),
    a comma pause for separators, or nothing."""
    if string in _SENTENCE_MARKS:
        return _SENTENCE_MARKS[string]
    if string in _COMMA_MARKS:
        return _COMMA
    if string in _SYMBOL_READINGS:
        return _SYMBOL_READINGS[string]
    if _KATAKANA_RE.fullmatch(pron):
        return pron
    if unicodedata.category(string[0]) in _SILENT_CATEGORIES:
        return ""
    return _COMMA


def kana_reading(nodes: Sequence[Mapping[str, Any]]) -> str:
    """OpenJTalk's analysis (``run_frontend`` nodes) -> katakana, a space between accent
    phrases (numerals stay one word), punctuation as the module docstring says."""
    words: list[str] = []
    previous_numeral = False
    for node in nodes:
        string, pron = str(node["string"]), str(node["pron"]).replace(_ACCENT_MARK, "")
        numeral = node["pos_group1"] == _GROUP_NUMERAL or string == _DECIMAL_POINT
        if node["pos"] == _POS_SYMBOL:
            reading = _symbol_reading(string, pron)
            if reading and not _KATAKANA_RE.fullmatch(reading):
                if words:
                    words[-1] += reading  # punctuation ends the word before it
                previous_numeral = False
                continue
        else:
            reading = pron
        if not reading:
            continue
        if words and (node["chain_flag"] == _CHAINED or (numeral and previous_numeral)) \
                and not words[-1].endswith((*_SENTENCE_MARKS.values(), _COMMA)):
            words[-1] += reading
        else:
            words.append(reading)
        previous_numeral = numeral
    text = _PAUSE_RUN_RE.sub(lambda m: m.group(1) or _COMMA, " ".join(words))
    return collapse_whitespace(text.strip(_COMMA + " "))


def normalize(text: str) -> str:
    """Japanese text as a speech engine should read it: katakana (see the module docstring)."""
    text = rewrite_notation(text)
    if not text.strip():
        return ""
    openjtalk = _load_openjtalk()
    nodes = openjtalk.run_frontend(text, predict_nani=_has_onnxruntime())
    return kana_reading(nodes)
