"""Japanese text front end (engines.text.ja): kanji, numerals and Latin words to katakana, and
what eSpeak makes of it."""

from __future__ import annotations

import re

import pytest

from engines.espeak.library import ESPEAK_SAMPLE_RATE, synth_raw, text_to_phonemes
from engines.espeak.tts import EspeakTTS
from engines.text import normalize_for_speech

#: The line eSpeak alone reads as a string of "Chinese letter"s.
KANJI_LINE = "今日は良い天気ですね。東京駅で会いましょう。"
KANJI_READING = "キョーワ ヨイ テンキデスネ。 トーキョーエキデ アイマショー。"
#: eSpeak's IPA for the English words "Chinese" / "Japanese" (its name for a kanji / kana
#: it cannot read), and the marker of a switch to its English voice.
CHINESE_LETTER = "tʃˈaɪniːz"
ENGLISH_SWITCH = "(en)"

#: Subtitle-like lines and what they sound like, in katakana.
READINGS = [
    (KANJI_LINE, KANJI_READING),
    ("2024年3月15日に、3人で来ました。", "ニセンニジューヨネン サンガツ ジューゴニチニ、 サンニンデ キマシタ。"),
    ("15時30分に会いましょう。", "ジューゴジ サンジュップンニ アイマショー。"),
    ("この本は1,500円です。", "コノ ホンワ センゴヒャクエンデス。"),
    ("売上は3.5%増えました。", "ウリアゲワ サンテンゴパーセント フエマシタ。"),
    ("鉛筆を3本と6本ください。", "エンピツヲ サンボント ロッポン クダサイ。"),
    ("1人で来ました。", "ヒトリデ キマシタ。"),
    ("今何時ですか。", "イマ ナンジデスカ。"),
    # Latin words: loanword readings, acronyms by letter names
    ("AIとYouTubeでOKです。", "エーアイト ユーチューブデ オーケイデス。"),
    ("NHKのニュース", "エヌエイチケイノ ニュース"),
    ("ＡＩ", "エーアイ"),
    # notations OpenJTalk misreads, rewritten first
    ("10:30に出発します。", "ジュージ サンジュップンニ シュッパツシマス。"),
    ("2024-03-15に公開", "ニセンニジューヨネン サンガツ ジューゴニチニ コーカイ"),
    ("$100払いました。", "ヒャクドル ハライマシタ。"),
    ("容量は5GBです。", "ヨーリョーワ ゴギガバイトデス。"),
    ("気温は20°Cです。", "キオンワ ニジュードデス。"),
    ("10〜20人が来ます。", "ジューカラ ニジューニンガ キマス。"),
    ("5歳〜10歳の子ども", "ゴサイカラ ジュッサイノ コドモ"),
    ("気温は-5度まで下がる。", "キオンワ マイナス ゴドマデ サガル。"),
    ("電話番号は090-1234-5678です。", "デンワバンゴーワ ゼロキューゼロ、 イチニーサンヨン、 ゴーロクナナハチデス。"),
    # punctuation: sentence marks kept, quotes dropped, separators become a pause
    ("「こんにちは」と言った！本当？", "コンニチワ ト イッタ！ ホントー？"),
    ("ジョン・スミスさん", "ジョン、 スミスサン"),
    ("はい。。。", "ハイ。"),
    ("♪♪", ""),
]
#: What a reading may contain: katakana, the long-vowel mark, spaces and kept punctuation.
_READING_RE = re.compile(r"[\u30a1-\u30fa\u30fc 。、！？]*")


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS()


@pytest.mark.parametrize("text, expected", READINGS)
def test_japanese_readings(text: str, expected: str) -> None:
    reading = normalize_for_speech(text, "ja")
    assert reading == expected
    assert _READING_RE.fullmatch(reading), f"not plain katakana: {reading!r}"


def test_espeak_reads_the_kanji_line_instead_of_spelling_it(tts: EspeakTTS) -> None:
    # eSpeak alone: one English "Chinese letter" per kanji ...
    alone = text_to_phonemes(KANJI_LINE, "ja")
    assert alone.count(CHINESE_LETTER) >= 8
    # ... through the front end: Japanese phonemes only, exactly those of the katakana reading
    spoken = tts.phonemes(KANJI_LINE, "ja")
    assert CHINESE_LETTER not in spoken and ENGLISH_SWITCH not in spoken
    assert spoken == text_to_phonemes(KANJI_READING, "ja")
    assert spoken.count(" | ") == 1  # the 。 between the sentences is still a clause break


def test_espeak_speaks_the_kanji_line_as_long_as_its_kana(tts: EspeakTTS) -> None:
    kanji = tts.synthesize_one(KANJI_LINE, "ja")
    kana = tts.synthesize_one("きょうは よい てんきですね。 とうきょうえきで あいましょう。", "ja")
    assert kanji.duration_s == pytest.approx(kana.duration_s, rel=0.1)
    spelt = len(synth_raw(KANJI_LINE, "ja", 175, 50, 50, 100, 1).samples) / ESPEAK_SAMPLE_RATE
    assert spelt > 1.5 * kanji.duration_s  # "Chinese letter" x 8 takes far longer
    assert [w.text for w in kanji.words][:3] == ["キョーワ", "ヨイ", "テンキデスネ"]


def test_symbols_only_line_is_refused_by_espeak(tts: EspeakTTS) -> None:
    with pytest.raises(ValueError, match="no ja reading"):
        tts.synthesize_one("♪♪", "ja")
