"""Korean text front end (engines.text.ko): Sino-Korean vs native numerals, units, Latin letters,
and that the readings reach eSpeak."""

from __future__ import annotations

import re

import pytest

from engines.espeak.library import text_to_phonemes
from engines.espeak.tts import EspeakTTS
from engines.text import normalize_for_speech
from engines.text.ko import native, sino

#: Subtitle-like lines and how a Korean speaker reads them.
READINGS = [
    # native numerals before native counters
    ("회의는 3시 30분에 시작해요.", "회의는 세 시 삼십 분에 시작해요."),
    ("사과 2개 주세요.", "사과 두 개 주세요."),
    ("동생은 20살이에요.", "동생은 스무 살이에요."),
    ("학생 120명이 왔어요.", "학생 백스무 명이 왔어요."),
    ("커피 2잔하고 케이크 1조각이요.", "커피 두 잔하고 케이크 한 조각이요."),
    ("고양이 3마리가 있어요.", "고양이 세 마리가 있어요."),
    ("책 3권을 샀어요.", "책 세 권을 샀어요."),
    ("24시간 영업해요.", "스물네 시간 영업해요."),
    ("세 번 말했잖아요. 3번!", "세 번 말했잖아요. 세 번!"),
    ("1번째 질문입니다.", "첫 번째 질문입니다."),
    # Sino-Korean: dates, money, minutes, percentages, units, labels
    ("2024년 6월 10일에 만나요.", "이천이십사 년 유월 십 일에 만나요."),
    ("10월 3일은 개천절이에요.", "시월 삼 일은 개천절이에요."),
    ("가격은 5,000원입니다.", "가격은 오천 원입니다."),
    ("30분만 기다려 주세요.", "삼십 분만 기다려 주세요."),
    ("물가가 3.5% 올랐어요.", "물가가 삼 점 오 퍼센트 올랐어요."),
    ("오늘 10km를 달렸어요.", "오늘 십 킬로미터를 달렸어요."),
    ("시속 60km/h로 달려요.", "시속 육십 킬로미터로 달려요."),
    ("3개월 동안 공부했어요.", "삼 개월 동안 공부했어요."),
    ("3번 출구로 나오세요.", "삼 번 출구로 나오세요."),
    ("20대 청년들", "이십 대 청년들"),
    ("제3회 대회입니다.", "제 삼 회 대회입니다."),
    ("그는 30세입니다.", "그는 삼십 세입니다."),
    ("1억 2천만 원", "일억 이천만 원"),
    # notations
    ("15:30에 출발합니다.", "십오 시 삼십 분에 출발합니다."),
    ("전화번호는 010-1234-5678이에요.", "전화번호는 공일공 일이삼사 오육칠팔이에요."),
    ("$20이면 충분해요.", "이십 달러이면 충분해요."),
    ("3~5개 정도 필요해요.", "세 개에서 다섯 개 정도 필요해요."),
    ("기온이 -5도까지 내려갔어요.", "기온이 마이너스 오 도까지 내려갔어요."),
    ("１２３개", "백스물세 개"),
    # Latin: acronyms by letter names, common words in Hangul
    ("AI 기술이 발전했어요.", "에이아이 기술이 발전했어요."),
    ("TV를 켜 주세요.", "티브이를 켜 주세요."),
    ("USB 2개", "유에스비 두 개"),
    ("YouTube에서 봤어요.", "유튜브에서 봤어요."),
    # Hangul alone passes through
    ("여러분, 좋은 아침이에요.", "여러분, 좋은 아침이에요."),
]


#: Stress marks, word spaces and liaison hyphens in eSpeak's IPA: kept out of comparisons
#: of what is said (eSpeak reads "20" as two words, 이 십, and "이십" as one).
_PROSODY_RE = re.compile(r"[ˈˌ\s-]")


def sounds(phonemes: str) -> str:
    return _PROSODY_RE.sub("", phonemes)


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS()


@pytest.mark.parametrize("text, expected", READINGS)
def test_korean_readings(text: str, expected: str) -> None:
    assert normalize_for_speech(text, "ko") == expected


def test_number_words() -> None:
    assert [sino(n) for n in (0, 10, 15, 100, 1000, 10_000, 15_000, 12_345, 100_000_000)] == [
        "영", "십", "십오", "백", "천", "만", "만 오천", "만 이천삼백사십오", "일억"]
    assert [native(n) for n in (1, 2, 3, 4, 20, 21, 99)] == ["한", "두", "세", "네", "스무", "스물한", "아흔아홉"]
    assert [native(n, before_counter=False) for n in (1, 2, 20)] == ["하나", "둘", "스물"]
    with pytest.raises(ValueError, match="1..99"):
        native(100)


@pytest.mark.parametrize("written, said, digit_reading", [
    ("사과 2개", "사과 두 개", "사과 이 개"),
    ("3시 30분", "세 시 삼십 분", "삼 시 삼십 분"),
    ("20살", "스무 살", "이십 살"),
])
def test_native_numbers_reach_espeak(tts: EspeakTTS, written: str, said: str, digit_reading: str) -> None:
    spoken = tts.phonemes(written, "ko")
    assert spoken == text_to_phonemes(said, "ko")
    # eSpeak alone reads the digits Sino-Korean: the wrong number system
    alone = sounds(text_to_phonemes(written, "ko"))
    assert alone == sounds(text_to_phonemes(digit_reading, "ko")) != sounds(spoken)


def test_acronyms_stay_in_the_korean_voice(tts: EspeakTTS) -> None:
    assert "(en)" in text_to_phonemes("AI 기술", "ko")  # eSpeak alone switches to English
    assert "(en)" not in tts.phonemes("AI 기술", "ko")
