"""Mandarin text front end (engines.text.zh): Chinese numerals, 两, years and codes digit by digit,
times, units, acronyms, and that the readings reach eSpeak."""

from __future__ import annotations

import pytest

from engines.espeak.library import text_to_phonemes
from engines.espeak.tts import EspeakTTS
from engines.text import normalize_for_speech
from engines.text.zh import cardinal

#: Subtitle-like lines and how a Mandarin speaker reads them.
READINGS = [
    # measure words; 2 before one is 两, except as an ordinal or a month
    ("我买了3个苹果。", "我买了三个苹果。"),
    ("他有2个孩子。", "他有两个孩子。"),
    ("第2名是他。", "第二名是他。"),
    ("2月14日是情人节。", "二月十四日是情人节。"),
    ("需要3~5天。", "需要三到五天。"),
    # years and codes digit by digit
    ("2024年是龙年。", "二零二四年是龙年。"),
    ("90年代的音乐", "九零年代的音乐"),
    ("我的电话是13812345678。", "我的电话是幺三八幺二三四五六七八。"),
    ("请拨打138-1234-5678。", "请拨打幺三八 幺二三四 五六七八。"),
    # times
    ("会议在15:30开始。", "会议在十五点三十分开始。"),
    ("我们3点见面吧。", "我们三点见面吧。"),
    ("现在是2:30。", "现在是两点三十分。"),
    ("3:05出发", "三点零五分出发"),
    ("１５：３０见", "十五点三十分见"),
    ("2024-03-15出发", "二零二四年三月十五日出发"),
    # quantities, money, percentages, units
    ("价格上涨了3.5%。", "价格上涨了百分之三点五。"),
    ("打五折，也就是50%。", "打五折，也就是百分之五十。"),
    ("这件衣服1,500元。", "这件衣服一千五百元。"),
    ("这本书$20。", "这本书二十美元。"),
    ("我每天跑10km。", "我每天跑十公里。"),
    ("他跑了2.5公里。", "他跑了二点五公里。"),
    ("今天20°C。", "今天二十摄氏度。"),
    ("气温降到了-5度。", "气温降到了负五度。"),
    ("人口有14亿。", "人口有十四亿。"),
    ("奖金1000000元", "奖金一百万元"),
    ("三分之一就是1/3。", "三分之一就是三分之一。"),
    # Latin acronyms spelt
    ("AI改变了世界。", "A I改变了世界。"),
    ("我用GPU训练模型。", "我用G P U训练模型。"),
    ("iPhone15很贵。", "iPhone十五很贵。"),
    # Chinese alone passes through, punctuation kept
    ("你今天好吗？", "你今天好吗？"),
]


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS()


@pytest.mark.parametrize("text, expected", READINGS)
def test_mandarin_readings(text: str, expected: str) -> None:
    assert normalize_for_speech(text, "zh") == expected


@pytest.mark.parametrize("n, words", [
    (0, "零"), (10, "十"), (11, "十一"), (20, "二十"), (101, "一百零一"), (110, "一百一十"),
    (1005, "一千零五"), (1050, "一千零五十"), (1500, "一千五百"), (2000, "两千"), (10_500, "一万零五百"),
    (20_000, "两万"), (100_010, "十万零一十"), (100_000_001, "一亿零一"), (120_000_000, "一亿两千万"),
])
def test_cardinals(n: int, words: str) -> None:
    assert cardinal(n) == words


@pytest.mark.parametrize("written, said", [
    ("我有2个苹果", "我有两个苹果"),
    ("2024年", "二零二四年"),
    ("15:30", "十五点三十分"),
])
def test_number_readings_reach_espeak(tts: EspeakTTS, written: str, said: str) -> None:
    spoken = tts.phonemes(written, "zh")
    assert spoken == text_to_phonemes(said, "cmn")
    assert spoken != text_to_phonemes(written, "cmn")  # eSpeak alone reads it otherwise
