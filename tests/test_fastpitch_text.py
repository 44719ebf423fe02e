"""FastPitch text front end: symbol sets, ARPAbet, errors (English normalisation: test_text_en.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engines.fastpitch.text import ARPABET_SYMBOLS, SymbolSet, TextProcessor

CMUDICT_SAMPLE = """\
;;; a tiny CMUdict-format file
HELLO  HH AH0 L OW1
HELLO(1)  HH EH0 L OW1
WORLD  W ER1 L D
CAT  K AE1 T
READ  R IY1 D
READ(1)  R EH1 D
LIVE  L IH1 V
DOG  D AO1 G
BAD  B AE1 D XX1
"""


@pytest.fixture()
def cmudict(tmp_path: Path) -> Path:
    path = tmp_path / "cmudict-0.7b"
    path.write_text(CMUDICT_SAMPLE, encoding="latin-1")
    return path


def test_english_basic_layout_is_published() -> None:
    s = SymbolSet.english_basic()
    assert len(s) == 148 and len(ARPABET_SYMBOLS) == 84
    ids = s.symbol_to_id
    assert (ids["_"], ids["-"], ids["!"], ids["'"], ids[" "]) == (0, 1, 2, 3, 11)
    assert (ids["A"], ids["Z"], ids["a"], ids["z"]) == (12, 37, 38, 63)
    assert (ids["@AA"], ids["@AA0"], ids["@B"], ids["@ZH"]) == (64, 65, 88, 147)
    assert "".join(s.symbols[2:12]) == "!'(),.:;? "
    assert s.pad_id == 0
    assert len(SymbolSet.english_basic_lowercase()) == 123


def test_encode_and_decode_round_trip() -> None:
    tp = TextProcessor()
    ids = tp.encode("Hi, Bob!")
    s = SymbolSet.english_basic().symbol_to_id
    assert ids == [s[c] for c in "hi, bob!"]
    assert tp.decode(ids) == "hi, bob!"


def test_unknown_characters_are_reported_with_positions() -> None:
    tp = TextProcessor()
    with pytest.raises(ValueError) as info:
        tp.encode("Hi 你好 # there 🎵")
    message = str(info.value)
    assert "'你' (U+4F60) at input position 3" in message
    assert "'好' (U+597D) at input position 4" in message
    assert "'🎵' (U+1F3B5) at input position 14" in message
    assert "'#' (U+0023) at normalized position" in message
    assert "on_unknown='drop'" in message


def test_unknown_characters_dropped_only_on_request(caplog: pytest.LogCaptureFixture) -> None:
    tp = TextProcessor(on_unknown="drop")
    with caplog.at_level(logging.WARNING, logger="engines.fastpitch.text"):
        ids = tp.encode("Hi 你 there")
    assert tp.decode(ids) == "hi there"
    assert "U+4F60" in caplog.text


def test_inline_arpabet_braces() -> None:
    tp = TextProcessor()
    ids = tp.encode("Say {HH AH0 L OW1} twice.")
    s = SymbolSet.english_basic().symbol_to_id
    phones = [s["@HH"], s["@AH0"], s["@L"], s["@OW1"]]
    assert ids[4:8] == phones
    assert tp.decode(ids) == "say {HH AH0 L OW1} twice."
    with pytest.raises(ValueError, match="'QQ1'"):
        tp.encode("{HH QQ1}")


def test_arpabet_from_pronunciation_file(cmudict: Path, tmp_path: Path) -> None:
    tp = TextProcessor(cmudict_path=cmudict)
    # one pronunciation -> phones; ambiguous (HELLO, READ) and unknown (THE) stay letters;
    # plural / possessive fall back to the base word + Z, as published
    assert tp.normalize("Hello world, the cat's dogs read.") == \
        "hello {W ER1 L D}, the {K AE1 T Z} {D AO1 G Z} read."
    ids = tp.encode("world")
    s = SymbolSet.english_basic().symbol_to_id
    assert ids == [s["@W"], s["@ER1"], s["@L"], s["@D"]]
    first = TextProcessor(cmudict_path=cmudict, ambiguous="first")
    assert first.normalize("hello") == "{HH AH0 L OW1}"
    heteronyms = tmp_path / "heteronyms"
    heteronyms.write_text("live\n", encoding="utf-8")
    het = TextProcessor(cmudict_path=cmudict, heteronyms_path=heteronyms)
    assert het.normalize("live dog") == "live {D AO1 G}"
    with pytest.raises(FileNotFoundError, match="nope.dict"):
        TextProcessor(cmudict_path=tmp_path / "nope.dict")


def test_custom_symbol_set_from_file(tmp_path: Path) -> None:
    # Korean as jamo (NFD splits syllables), plus multi-character pinyin-like phones.
    symbols = ["_", " ", ".", "ᄋ", "ᅡ", "ᆫ", "ᄂ", "ᅧ", "ᆼ", "ni3", "hao3"]
    path = tmp_path / "symbols.txt"
    path.write_text("\n".join(symbols) + "\n", encoding="utf-8")
    s = SymbolSet.from_file(path, unicode_form="NFD")
    assert s.name == "symbols" and s.pad_id == 0 and len(s) == 11
    tp = TextProcessor(s)
    assert tp.encode("안녕.") == [3, 4, 5, 6, 7, 8, 2]
    assert tp.encode("{ni3 hao3} 안") == [9, 10, 1, 3, 4, 5]
    assert tp.encode("ni3") == [9]  # greedy longest match on plain text too
    with pytest.raises(ValueError, match=r"'ᄒ' \(U\+1112\) at normalized position 0"):
        tp.encode("하")
    with pytest.raises(ValueError, match="ARPAbet"):
        TextProcessor(s, cmudict_path=path)


def test_symbol_file_errors(tmp_path: Path) -> None:
    dupes = tmp_path / "dupes.txt"
    dupes.write_text("_\na\nb\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match="duplicate.*'a' at 1 and 3"):
        SymbolSet.from_file(dupes)
    blank = tmp_path / "blank.txt"
    blank.write_text("_\n\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line"):
        SymbolSet.from_file(blank)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        SymbolSet.from_file(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown symbol set"):
        SymbolSet.from_name("klingon_basic")
