"""Mandarin text front end: digits, times, units and Latin letters as a Mandarin speaker reads them.

Chinese characters pass through. Digits are rewritten in Chinese numerals, because the
same digits are read three ways and only the context tells which:

* **as a number** (十, 百, 千, 万, 亿, with 零 for a gap): ``1,500元`` -> ``一千五百元``,
  ``10km`` -> ``十公里``, ``3.5`` -> ``三点五``, ``50%`` -> ``百分之五十``, ``-5`` ->
  ``负五``, ``1/2`` -> ``二分之一``; 2 before a measure word is 两 (``2个`` -> ``两个``,
  ``2点`` -> ``两点``; but ``第2个`` -> ``第二个``, ``2月`` -> ``二月``);
* **digit by digit** for years and codes: ``2024年`` -> ``二零二四年``, ``90年代`` ->
  ``九零年代``, telephone numbers and long digit strings with 幺 for 1, as they are
  dictated (``138-1234-5678`` -> ``幺三八 幺二三四 五六七八``);
* **clock times** ``15:30`` -> ``十五点三十分`` (``3:05`` -> ``三点零五分``), dates
  ``2024-03-15`` -> ``二零二四年三月十五日``, currency signs (``$5`` -> ``五美元``),
  ranges (``3~5个`` -> ``三到五个``).

Latin acronyms are spelt letter by letter (``AI`` -> ``A I``): Mandarin speakers say
English letter names, and a space-separated capital is what every engine reads as a
letter (eSpeak's Mandarin voice says it with its English letter names).

Full-width digits and signs are folded to ASCII first; Chinese punctuation (，。！？) is
kept, so the engines still pause on it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .common import (
    CLOCK_RE,
    CURRENCY_RE,
    DATE_RE,
    DECIMAL,
    NEGATIVE_RE,
    PHONE_RE,
    RANGE_RE,
    UPPER_RUN_RE,
    clock_parts,
    collapse_whitespace,
    date_parts,
    fold_width,
    is_digit_code,
    read_code_groups,
    read_decimal,
    read_digits,
    strip_digit_grouping,
    unit_re,
    words_re,
)

__all__ = ["CODE_DIGITS", "CURRENCY_NAMES", "DIGITS", "MEASURE_WORDS", "UNITS", "cardinal", "normalize"]

DIGITS = "零一二三四五六七八九"
#: Digits as dictated (telephone numbers, codes): 1 is 幺 (yāo), unmistakable from 七.
CODE_DIGITS = "零幺二三四五六七八九"
#: Powers of ten inside a group of four digits, and the group names (10^4 each).
_SMALL_UNITS = ("", "十", "百", "千")
_GROUP_UNITS = ("", "万", "亿", "万亿")
_GROUP = 10_000
#: Above this (10^16 - 1) read digit by digit.
MAX_CARDINAL = _GROUP ** len(_GROUP_UNITS) - 1
#: The power of ten named 千, and the smallest group value with all four places (1000).
_THOUSANDS = 3
_SMALL_UNITS_SPAN = 10**_THOUSANDS
_ONE_TEN = "一十"
_TWO = "两"
#: The decimal point and the hour of a clock time are the same word: 三点五, 三点.
_POINT = "点"
_MINUTES = "分"
_SECONDS = "秒"
_MINUS = "负"
_PERCENT = "百分之"
_FRACTION = "分之"
_ORDINAL_PREFIX = "第"
_RANGE_WORD = "到"

#: Measure words (and units) before which the number 2 is 两: 两个, 两点, 两公里.
MEASURE_WORDS = (
    "个", "位", "只", "条", "张", "本", "件", "次", "天", "岁", "斤", "块", "瓶", "杯", "辆", "台", "家", "双",
    "种", "名", "点", "小时", "分钟", "秒", "周", "年", "倍", "遍", "回", "份", "碗", "套", "把", "支", "头",
    "匹", "座", "栋", "人", "元", "毛", "公里", "米", "公斤", "克", "升", "星期", "顿", "口", "棵", "根", "片",
)
#: Latin unit symbols after a number -> their Chinese names.
UNITS: Mapping[str, str] = {
    "km/h": "公里每小时", "km": "公里", "m": "米", "cm": "厘米", "mm": "毫米", "kg": "公斤", "g": "克",
    "mg": "毫克", "t": "吨", "L": "升", "l": "升", "ml": "毫升", "mL": "毫升", "Hz": "赫兹", "kHz": "千赫",
    "MHz": "兆赫", "GHz": "吉赫", "W": "瓦", "kW": "千瓦", "V": "伏", "ms": "毫秒", "h": "小时",
    "min": "分钟", "°C": "摄氏度", "°F": "华氏度", "°": "度",
}
#: Currency signs -> the currency's name, said after the amount (¥ in Chinese text is 元).
CURRENCY_NAMES: Mapping[str, str] = {"$": "美元", "€": "欧元", "£": "英镑", "¥": "元", "₩": "韩元"}

_UNIT_RE = unit_re(UNITS)
#: A year is read digit by digit: four digits before 年, two before 年代 (the nineties).
_YEAR_RE = re.compile(r"(?<![\d.])(\d{4})(?=年)|(?<![\d.])(\d{2})(?=年代)")
_PERCENT_RE = re.compile(r"(-?" + DECIMAL + r")\s?%")
_FRACTION_RE = re.compile(r"(?<![\d/])(\d+)/(\d+)(?![\d/])")
_NUMBER_RE = re.compile(r"(" + DECIMAL + r")")
_MEASURE_RE = re.compile(r"\s?(?:" + words_re(MEASURE_WORDS) + r")")


def _below_group(n: int) -> str:
    """1..9999, one 零 for each gap of zeros between digits (一千零五, 一百零一); a leading 2
    before 千 is 两 (两千, 一万两千), as it is said."""
    words = []
    gap = False
    for power in (3, 2, 1, 0):
        digit = n // 10**power % 10
        if digit == 0:
            gap = gap or bool(words)
            continue
        if gap:
            words.append(DIGITS[0])
            gap = False
        name = _TWO if digit == 2 and power == _THOUSANDS and not words else DIGITS[digit]
        words.append(name + _SMALL_UNITS[power])
    return "".join(words)


def cardinal(n: int) -> str:
    """Integer -> Chinese numerals: 1500 -> 一千五百, 10 -> 十, 110 -> 一百一十, 10500 ->
    一万零五百, 20000 -> 两万."""
    if n < 0:
        return _MINUS + cardinal(-n)
    if n == 0:
        return DIGITS[0]
    if n > MAX_CARDINAL:
        return read_digits(str(n), DIGITS)
    groups: list[int] = []
    while n:
        n, group = divmod(n, _GROUP)
        groups.append(group)
    words: list[str] = []
    gap = False
    for k in reversed(range(len(groups))):
        group = groups[k]
        if group == 0:
            gap = gap or bool(words)
            continue
        if words and (gap or group < _SMALL_UNITS_SPAN):
            words.append(DIGITS[0])  # 一万零五百, 一亿零五
        gap = False
        head = _TWO if group == 2 and k else _below_group(group)
        words.append(head + _GROUP_UNITS[k])
    text = "".join(words)
    # 10..19 at the very start are 十.., not 一十.. (but 一百一十 keeps its 一).
    return text[1:] if text.startswith(_ONE_TEN) else text


def _decimal(number: str) -> str:
    """3.5 -> 三点五."""
    return read_decimal(number, cardinal, _POINT, DIGITS)


def _read_number(m: re.Match[str]) -> str:
    number = m.group(1)
    if "." in number:
        return _decimal(number)
    if is_digit_code(number) and not _MEASURE_RE.match(m.string, m.end()):
        return read_digits(number, CODE_DIGITS)
    n = int(number)
    ordinal = m.string[:m.start()].endswith(_ORDINAL_PREFIX)
    if n == 2 and not ordinal and _MEASURE_RE.match(m.string, m.end()):
        return _TWO
    return cardinal(n)


def _read_clock(m: re.Match[str]) -> str:
    """15:30 -> 十五点三十分, 2:00 -> 两点, 3:05 -> 三点零五分."""
    hour, minute, second = clock_parts(m)
    text = (_TWO if hour == 2 else cardinal(hour)) + _POINT
    if minute is not None:
        text += (DIGITS[0] if minute < 10 else "") + cardinal(minute) + _MINUTES
    return text + (cardinal(second) + _SECONDS if second else "")


def _read_date(m: re.Match[str]) -> str:
    year, month, day = date_parts(m)
    return f"{read_digits(year, DIGITS)}年{cardinal(month)}月{cardinal(day)}日"


def _read_percent(m: re.Match[str]) -> str:
    number = m.group(1)
    sign, number = (_MINUS, number[1:]) if number.startswith("-") else ("", number)
    return sign + _PERCENT + _decimal(number)


def normalize(text: str) -> str:
    """Mandarin text as a speech engine should read it (see the module docstring)."""
    text = strip_digit_grouping(fold_width(text))
    text = DATE_RE.sub(_read_date, text)
    text = CLOCK_RE.sub(_read_clock, text)
    text = PHONE_RE.sub(lambda m: read_code_groups(m.group(0), CODE_DIGITS), text)
    text = CURRENCY_RE.sub(lambda m: f"{m.group(2)}{CURRENCY_NAMES[m.group(1)]}", text)
    text = _PERCENT_RE.sub(_read_percent, text)
    text = _UNIT_RE.sub(lambda m: f"{m.group(1)}{UNITS[m.group(2)]}", text)
    text = _YEAR_RE.sub(lambda m: read_digits(m.group(1) or m.group(2), DIGITS), text)
    text = _FRACTION_RE.sub(lambda m: f"{cardinal(int(m.group(2)))}{_FRACTION}{cardinal(int(m.group(1)))}", text)
    text = RANGE_RE.sub(_RANGE_WORD, text)
    text = NEGATIVE_RE.sub(_MINUS, text)
    text = _NUMBER_RE.sub(_read_number, text)
    text = UPPER_RUN_RE.sub(lambda m: " ".join(m.group(0)), text)
    return collapse_whitespace(text)
