"""English text front end (engines.text.en): the readings every engine gets, and FastPitch's
``english_cleaners_v2`` built on the same rules."""

from __future__ import annotations

import pytest

from engines.espeak.library import text_to_phonemes
from engines.espeak.tts import EspeakTTS
from engines.fastpitch.text import CLEANERS, SymbolSet, TextProcessor
from engines.text import SPEECH_LANGUAGES, normalize_for_speech
from engines.text.en import cardinal, english_cleaners_v2, ordinal

#: Subtitle-like lines and how they are read aloud (case and punctuation kept).
READINGS = [
    ("Meet me at 3:30 pm.", "Meet me at three thirty p.m."),
    ("Call me at 10:00, OK?", "Call me at ten o'clock, O.K.?"),
    ("It costs $5.99.", "It costs five dollars, ninety nine cents."),
    ("I'll pay £20 for it.", "I'll pay twenty pounds for it."),
    ("A $3 million deal.", "A three million dollars deal."),
    ("We sold 10,000 copies in 2023.", "We sold ten thousand copies in twenty twenty three."),
    ("He was born in 1984.", "He was born in nineteen eighty four."),
    ("The 1990s were great.", "The nineteen nineties were great."),
    ("The FBI agent arrived on the 21st.", "The F.B.I. agent arrived on the twenty-first."),
    ("AI is everywhere.", "A.I. is everywhere."),
    ("Chapter No. 3 of 10", "Chapter Number three of ten"),
    ("50% off!", "fifty percent off!"),
    ("2 + 2 = 4", "two plus two equals four"),
    ("½ cup of tea", "half cup of tea"),
    # units are named on the speech path (FastPitch's training text kept the symbols)
    ("It's 3.5 km away.", "It's three point five kilometers away."),
    ("It weighs 1 kg.", "It weighs one kilogram."),
    ("Only 5GB left.", "Only five gigabytes left."),
    ("It's 20°C outside.", "It's twenty degrees Celsius outside."),
    ("Drive at 60 mph.", "Drive at sixty miles per hour."),
    # characters with no English reading are left out
    ("A 🎵 song", "A song"),
]


@pytest.mark.parametrize("text, expected", READINGS)
def test_english_readings(text: str, expected: str) -> None:
    assert normalize_for_speech(text, "en") == expected


@pytest.mark.parametrize("text, expected", [
    ("I have 3 cats.", "i have three cats."),
    ("Mr. and Mrs. Smith met Dr. Jones on Baker St. near St. Paul's.",
     "mister and misess smith met doctor jones on baker street near saint paul's."),
    ("It weighs 3.75 kg.", "it weighs three point seven five kg."),
    ("The 21st and the 2nd time.", "the twenty-first and the second time."),
    ("Born in 1984, moved in 2005, left in 1900 and in 2010.",
     "born in nineteen eighty four, moved in two thousand five, left in nineteen hundred "
     "and in twenty ten."),
    ("It cost $1,250.50, then $1 and $0.99.",
     "it cost one thousand two hundred and fifty dollars, fifty cents, then one dollar and "
     "ninety nine cents."),
    ("A $3.5 million deal.", "a three point five million dollars deal."),
    ("We have 10,000 fans and 101 dogs.", "we have ten thousand fans and one hundred and one dogs."),
    ("Meet at 3:30 pm, not 10:00.", "meet at three thirty p.m., not ten o'clock."),
    ("The FBI raided NVIDIA.", "the f.b.i. raided n.vidia."),
    ("STOP RIGHT THERE", "stop right there"),
    ("50% of No. 7 & co.", "fifty percent of number seven and company"),
    ("Café “naïve” — ok…", "cafe naive - ok..."),
    ("The 1980s and 7s.", "the nineteen eighties and sevens."),
])
def test_english_normalisation(text: str, expected: str) -> None:
    cleaned, unknown = english_cleaners_v2(text)
    assert cleaned == expected
    assert unknown == []


def test_number_words() -> None:
    assert cardinal(0) == "zero"
    assert cardinal(115) == "one hundred and fifteen"
    assert cardinal(1_000_005) == "one million and five"
    assert cardinal(2_340_000) == "two million three hundred and forty thousand"
    assert ordinal(3) == "third" and ordinal(40) == "fortieth" and ordinal(112) == "one hundred and twelfth"


def test_fastpitch_cleans_with_the_shared_rules() -> None:
    # one implementation: FastPitch's cleaner is the front end's, not a copy
    assert CLEANERS["english_cleaners_v2"] is english_cleaners_v2
    assert SymbolSet.english_basic().cleaners == "english_cleaners_v2"
    line = "The FBI paid $5.99 at 3:30 pm on the 21st."
    assert TextProcessor().normalize(line) == normalize_for_speech(line, "en").lower()


def test_unknown_language_says_which_are_supported() -> None:
    assert SPEECH_LANGUAGES == ("en", "ja", "ko", "zh")
    with pytest.raises(ValueError, match="no text front end for language 'fr'; supported languages: en, ja, ko, zh"):
        normalize_for_speech("Bonjour", "fr")


def test_espeak_speaks_the_reading() -> None:
    tts = EspeakTTS()
    assert tts.speech_text("Only 5GB left.", "en") == "Only five gigabytes left."
    assert tts.phonemes("Only 5GB left.", "en") == text_to_phonemes("Only five gigabytes left.", "en-us")
    # a voice without a front end keeps eSpeak's own rules
    assert EspeakTTS().speech_text(" 5GB ", "xx") == "5GB"
