"""Korean text front end: numbers, units, times and Latin letters in Hangul, as a Korean reads them.

Hangul passes through. What a subtitle writes in digits or Latin letters is rewritten in
Hangul, because a TTS voice cannot know which of Korean's two number systems a digit
takes, and eSpeak's Korean voice reads every digit string as a Sino-Korean number and
switches to its English voice for Latin letters:

* **Sino-Korean** numerals (일, 이, 삼, 십, 백, 천, 만, 억, 조) for dates, money, minutes,
  seconds, measurements, percentages, decimals and bare numbers:
  ``2024년`` -> ``이천이십사 년``, ``5,000원`` -> ``오천 원``, ``30분`` -> ``삼십 분``,
  ``3.5%`` -> ``삼 점 오 퍼센트``, ``10km`` -> ``십 킬로미터``; the months 6 and 10 drop
  a consonant (``유월``, ``시월``).
* **native** numerals (한, 두, 세, 네, 다섯, ..., 스무, ..., 아흔아홉) before the native
  counters (:data:`NATIVE_COUNTERS`: 개, 명, 시 for the hour, 살, 번 for times, 마리, 잔,
  권, 사람, 시간, ...): ``사과 2개`` -> ``사과 두 개``, ``20살`` -> ``스무 살``,
  ``3시 30분`` -> ``세 시 삼십 분``; above 99 the hundreds stay Sino-Korean
  (``120명`` -> ``백스무 명``); ``1번째`` is ``첫 번째``. Hours past 12 (24-hour clock)
  and counters read as labels (``3번 출구``, ``20대``) are Sino-Korean.
* **digit by digit** (0 is 공) for telephone numbers and codes: ``010-1234-5678`` ->
  ``공일공 일이삼사 오육칠팔``.
* times ``15:30``, dates ``2024-03-15``, currency signs (``$5`` -> ``오 달러``), ranges
  (``3~5개`` -> ``세 개에서 다섯 개``) and minus signs are rewritten first.
* Latin: a few common words in their Korean spelling (:data:`LATIN_WORDS`), acronyms and
  lone capitals by the Korean names of the letters (``AI`` -> ``에이아이``); other Latin
  words are left to the engine.

Counters are separated from their number by a space (Korean spacing); particles stay
attached (``2는`` -> ``이는``).
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
    RANGE_SIGN,
    UPPER_RUN_RE,
    clock_parts,
    collapse_whitespace,
    date_parts,
    fold_width,
    is_digit_code,
    read_code_groups,
    read_decimal,
    read_digits,
    spell_letters,
    strip_digit_grouping,
    unit_re,
    words_re,
)

__all__ = [
    "CODE_DIGITS", "LATIN_WORDS", "LETTER_NAMES", "NATIVE_COUNTERS", "SINO_DIGITS", "native", "normalize", "sino",
]

# ----------------------------------------------------------------- the two number systems

SINO_DIGITS = "영일이삼사오육칠팔구"
#: Powers of ten inside a group of four digits, and the group names (10^4 each).
_SINO_SMALL_UNITS = ("", "십", "백", "천")
_SINO_GROUP_UNITS = ("", "만", "억", "조", "경")
_GROUP = 10_000
#: Above this (10^20 - 1) there is no group name left: read digit by digit.
MAX_SINO = _GROUP ** len(_SINO_GROUP_UNITS) - 1
#: Digits of a telephone number or code: 0 is 공 there, not 영.
CODE_DIGITS = "공일이삼사오육칠팔구"

_NATIVE_ONES = ("", "하나", "둘", "셋", "넷", "다섯", "여섯", "일곱", "여덟", "아홉")
#: The forms before a counter (관형사): 한 개, 두 명, 세 시, 네 살.
_NATIVE_ONES_BEFORE_COUNTER = ("", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉")
_NATIVE_TENS = ("", "열", "스물", "서른", "마흔", "쉰", "예순", "일흔", "여든", "아흔")
#: 스물 loses its ㄹ before a counter when it stands alone: 스무 살 (but 스물한 살).
_TWENTY_BEFORE_COUNTER = "스무"
#: Native numerals exist for 1..99; hundreds and more are Sino-Korean even before counters.
MAX_NATIVE = 99
#: The hour is native from 1 to 12; a 24-hour time past noon is read Sino-Korean (십오 시).
MAX_NATIVE_HOUR = 12
_HOUR = "시"
#: The decimal point, spaced: 삼 점 오.
_POINT = " 점 "
_MINUS = "마이너스"
#: Months whose number drops its final consonant before 월: 유월 (not 육월), 시월 (not 십월).
_MONTH_NAMES = {6: "유", 10: "시"}
_MONTH = "월"


def _below_group(n: int) -> str:
    """1..9999 in Sino-Korean; the 일 before 십, 백, 천 is not said (십오, 백, 천이)."""
    words = []
    for power in (3, 2, 1, 0):
        digit = n // 10**power % 10
        if digit == 0:
            continue
        head = "" if power and digit == 1 else SINO_DIGITS[digit]
        words.append(head + _SINO_SMALL_UNITS[power])
    return "".join(words)


def sino(n: int) -> str:
    """Integer -> Sino-Korean: 2024 -> 이천이십사, 15000 -> 만 오천 (spaced by groups of 10^4,
    as Korean writes them; 만, not 일만)."""
    if n < 0:
        return f"{_MINUS} {sino(-n)}"
    if n == 0:
        return SINO_DIGITS[0]
    if n > MAX_SINO:
        return read_digits(str(n), SINO_DIGITS)
    groups = []
    for k in range(len(_SINO_GROUP_UNITS)):
        n, group = divmod(n, _GROUP)
        if group:
            head = "" if group == 1 and k == 1 else _below_group(group)
            groups.append(head + _SINO_GROUP_UNITS[k])
        if not n:
            break
    return " ".join(reversed(groups))


def native(n: int, before_counter: bool = True) -> str:
    """1..99 in native numerals: 2 -> 두 (before a counter) or 둘, 20 -> 스무 / 스물, 21 -> 스물한."""
    if not 1 <= n <= MAX_NATIVE:
        raise ValueError(f"native Korean numerals cover 1..{MAX_NATIVE}, got {n}; read larger numbers with sino()")
    tens, ones = divmod(n, 10)
    if ones == 0:
        return _TWENTY_BEFORE_COUNTER if before_counter and tens == 2 else _NATIVE_TENS[tens]
    ones_words = _NATIVE_ONES_BEFORE_COUNTER if before_counter else _NATIVE_ONES
    return _NATIVE_TENS[tens] + ones_words[ones]


def _sino_decimal(number: str) -> str:
    """3.5 -> 삼 점 오."""
    return read_decimal(number, sino, _POINT, SINO_DIGITS)


def _native_count(n: int) -> str:
    """A count before a native counter: 2 -> 두, 120 -> 백스무, 100 -> 백, 0 -> 영."""
    if n == 0:
        return sino(n)
    hundreds, rest = divmod(n, MAX_NATIVE + 1)
    head = sino(n - rest) if hundreds else ""
    return head + (native(rest) if rest else "")


# ----------------------------------------------------------------- counters

#: Counters that take native numerals (두 개, 세 명, 네 시, 다섯 살, 여섯 번).
NATIVE_COUNTERS = (
    "개", "명", "사람", "마리", "잔", "권", "병", "장", "대", "살", "시", "시간", "번", "번째", "째",
    "달", "배", "가지", "군데", "곳", "벌", "켤레", "송이", "그루", "자루", "채", "척", "줄", "알", "쌍",
    "그릇", "조각", "봉지", "상자", "바퀴", "걸음", "모금", "방울", "끼", "통", "차례", "마디",
)
#: Words that begin like a native counter but are Sino-Korean after a number (3개월, 5달러).
_SINO_LOOKALIKES = (
    "개월", "개국", "개년", "시즌", "시리즈", "달러", "장면", "대학", "대회", "번지", "번호", "배송",
    "배터리", "알림", "통화", "줄기", "시청", "시장",
)
#: After 번 (times), these nouns make the number a label, read Sino-Korean (3번 출구 = exit three).
_TIMES_COUNTER = "번"
_NUMBERED_NOUNS = ("출구", "버스", "선", "게이트", "트랙", "홈", "방", "타자", "문제", "채널", "좌석", "선수")
#: Counters that read Sino-Korean; listed so the number is spaced from them (이천이십사 년).
SINO_COUNTERS = (
    "년", "월", "일", "원", "분", "초", "층", "호", "회", "도", "세", "인분", "개월", "주", "주일", "학년",
    "번지", "위", "등", "퍼센트", "달러", "엔", "유로", "파운드", "위안",
)
#: 번째/째 after 1 is 첫 (첫 번째, 첫째), not 한.
_ORDINAL_COUNTERS = ("번째", "째")
_FIRST = "첫"
#: 대 after a round ten is an age group (20대 = one's twenties), read Sino-Korean.
_DECADE_COUNTER = "대"

#: Latin unit symbols after a number -> their Korean names.
UNITS: Mapping[str, str] = {
    "km": "킬로미터", "m": "미터", "cm": "센티미터", "mm": "밀리미터", "kg": "킬로그램", "g": "그램",
    "mg": "밀리그램", "t": "톤", "L": "리터", "l": "리터", "ml": "밀리리터", "mL": "밀리리터",
    "GB": "기가바이트", "MB": "메가바이트", "TB": "테라바이트", "KB": "킬로바이트", "kB": "킬로바이트",
    "Hz": "헤르츠", "kHz": "킬로헤르츠", "MHz": "메가헤르츠", "GHz": "기가헤르츠", "W": "와트", "kW": "킬로와트",
    "V": "볼트", "ms": "밀리초", "h": "시간", "min": "분", "°C": "도", "°F": "도", "°": "도", "%": "퍼센트",
}
#: Speed is said with 시속 first: 60km/h -> 시속 육십 킬로미터.
_SPEED_RE = re.compile(r"(?:시속\s?)?(" + DECIMAL + r")\s?km/h")
_PER_HOUR = "시속"
#: Currency signs -> the currency's name, said after the amount.
CURRENCY_NAMES: Mapping[str, str] = {"$": "달러", "€": "유로", "£": "파운드", "¥": "엔", "₩": "원"}
_RANGE_WORD = "에서"

_COUNTER_WORDS = words_re(NATIVE_COUNTERS + SINO_COUNTERS + tuple(UNITS.values()))
_UNIT_RE = unit_re(UNITS)
_RANGE_RE = re.compile(r"(" + DECIMAL + r")" + RANGE_SIGN + r"(" + DECIMAL + r")( ?)(" + _COUNTER_WORDS + r")?")
#: A number, with the ordinal prefix 제 (제3회 = the third) when written.
_NUMBER_RE = re.compile(r"((?<![가-힣])제 ?)?(" + DECIMAL + r")( ?)")
_NATIVE_COUNTER_RE = re.compile(r"(?:" + words_re(NATIVE_COUNTERS) + r")")
_SPACED_COUNTER_RE = re.compile(r"(?:" + _COUNTER_WORDS + r")")


def _native_counter(after: str) -> str | None:
    """The native counter that ``after`` (the text after a number) starts with, if any."""
    if after.startswith(_SINO_LOOKALIKES):
        return None
    m = _NATIVE_COUNTER_RE.match(after)
    return m.group(0) if m else None


def _read_number(m: re.Match[str]) -> str:
    prefix, number, space = m.group(1), m.group(2), m.group(3)
    after = m.string[m.end():]
    if "." in number:
        words = _sino_decimal(number)
    elif is_digit_code(number) and not _SPACED_COUNTER_RE.match(after):
        words = read_digits(number, CODE_DIGITS)
    else:
        n = int(number)
        counter = None if prefix else _native_counter(after)
        if after.startswith(_MONTH) and not prefix:
            return _MONTH_NAMES.get(n, sino(n)) + space  # 삼월, 유월: a month's name is one word
        if counter == _HOUR and n > MAX_NATIVE_HOUR:
            counter = None
        if counter == _TIMES_COUNTER and after[len(counter):].lstrip().startswith(_NUMBERED_NOUNS):
            counter = None
        if counter == _DECADE_COUNTER and n % 10 == 0:
            counter = None
        if counter in _ORDINAL_COUNTERS and n == 1:
            words = _FIRST
        elif counter:
            words = _native_count(n)
        else:
            words = sino(n)
    if prefix:
        words = f"제 {words}"
    # Korean spaces a counter from its number; a particle (는, 이, 에) stays attached.
    spaced = bool(space) or bool(_SPACED_COUNTER_RE.match(after))
    return words + (" " if spaced else "")


def _read_range(m: re.Match[str]) -> str:
    """3~5개 -> 3개에서 5개 (each end with the counter, as it is said); the numbers are read later."""
    low, high, space, counter = m.group(1), m.group(2), m.group(3), m.group(4) or ""
    return f"{low}{space}{counter}{_RANGE_WORD} {high}{space}{counter}"


def _read_date(m: re.Match[str]) -> str:
    year, month, day = date_parts(m)
    return f"{int(year)}년 {month}월 {day}일"


def _read_clock(m: re.Match[str]) -> str:
    hour, minute, second = clock_parts(m)
    return f"{hour}시" + (f" {minute}분" if minute is not None else "") + (f" {second}초" if second else "")


#: Common Latin words in their usual Korean spelling (the rest of the Latin words: see below).
LATIN_WORDS: Mapping[str, str] = {
    "YouTube": "유튜브", "Google": "구글", "iPhone": "아이폰", "Netflix": "넷플릭스", "Wi-Fi": "와이파이",
    "OK": "오케이", "email": "이메일", "e-mail": "이메일", "Facebook": "페이스북", "Instagram": "인스타그램",
}
_LATIN_WORDS_RE = re.compile(r"(?<![A-Za-z])(" + words_re(LATIN_WORDS) + r")(?![A-Za-z])")
#: Latin letters by their Korean names (AI -> 에이아이, TV -> 티브이).
LETTER_NAMES: Mapping[str, str] = {
    "A": "에이", "B": "비", "C": "씨", "D": "디", "E": "이", "F": "에프", "G": "지", "H": "에이치", "I": "아이",
    "J": "제이", "K": "케이", "L": "엘", "M": "엠", "N": "엔", "O": "오", "P": "피", "Q": "큐", "R": "알",
    "S": "에스", "T": "티", "U": "유", "V": "브이", "W": "더블유", "X": "엑스", "Y": "와이", "Z": "제트",
}


def normalize(text: str) -> str:
    """Korean text as a speech engine should read it (see the module docstring)."""
    text = strip_digit_grouping(fold_width(text))
    text = DATE_RE.sub(_read_date, text)
    text = CLOCK_RE.sub(_read_clock, text)
    text = PHONE_RE.sub(lambda m: read_code_groups(m.group(0), CODE_DIGITS), text)
    text = CURRENCY_RE.sub(lambda m: f"{m.group(2)}{CURRENCY_NAMES[m.group(1)]}", text)
    text = _SPEED_RE.sub(lambda m: f"{_PER_HOUR} {m.group(1)}{UNITS['km']}", text)
    text = _UNIT_RE.sub(lambda m: f"{m.group(1)}{UNITS[m.group(2)]}", text)
    text = _RANGE_RE.sub(_read_range, text)
    text = NEGATIVE_RE.sub(f" {_MINUS} ", text)
    text = _NUMBER_RE.sub(_read_number, text)
    text = _LATIN_WORDS_RE.sub(lambda m: LATIN_WORDS[m.group(1)], text)
    text = UPPER_RUN_RE.sub(lambda m: spell_letters(m.group(0), LETTER_NAMES), text)
    return collapse_whitespace(text)
