"""English text front end: how an English subtitle is read aloud.

Two users, one set of rules:

* every TTS engine, through :func:`engines.text.normalize_for_speech` (``lang="en"``),
  gets :func:`normalize`: numbers, currency, times, ordinals, fractions, unit symbols
  (:func:`expand_units`), abbreviations and acronyms spelled out as words, case and
  punctuation kept (eSpeak reads "F.B.I." as letters and uses case to tell "US" from "us");
* FastPitch's published LJSpeech checkpoints were trained on text run through NVIDIA's
  ``english_cleaners_v2``; :func:`english_cleaners_v2` is :func:`expand_for_speech` plus
  what that training text looked like (lower case, no quotation marks, brackets as
  parentheses, "/" as a space), because a model only speaks well what looks like its
  training text.

The rules reproduce ``english_cleaners_v2``: transliterate to ASCII, expand times, split
letter/digit runs, spell numbers, expand abbreviations, spell acronyms letter by letter
(written from their description; the published code depends on ``inflect``, which this
project does not use). Deliberate differences, all documented at the rule that
implements them:

* decimals are read digit by digit after "point" ("3.14" -> "three point one
  four"; published: "three point fourteen");
* Roman numerals are not converted (the published rule turns all-caps words
  such as "MIX" or "CIV" into numbers);
* acronyms are not spelled out when the whole text is upper case (shouted
  subtitles would otherwise become "S.T.O.P.");
* cardinal numbers never carry hyphens or commas ("twenty one", as the
  published integer rule produces; its currency rule kept inflect's hyphens).

:func:`fold_to_ascii` reports characters it cannot transliterate instead of
dropping them, so the caller can surface them to the user (FastPitch's encoder does;
:func:`normalize` leaves them out, since a speech engine cannot say them either).
"""

from __future__ import annotations

import re
import unicodedata

from .common import collapse_whitespace, words_re

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10 ** 12, "trillion"), (10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}
#: Numbers above this are read digit by digit: no one says "quadrillion" in a subtitle.
MAX_CARDINAL = 10 ** 15 - 1

#: Currency symbol -> unit name (plural adds "s"), as published.
CURRENCY_UNITS = {"$": "dollar", "£": "pound", "€": "euro", "₩": "won"}
#: Magnitude words allowed after a currency amount; one-letter forms expand.
_MAGNITUDES = {"trillion": "trillion", "billion": "billion", "million": "million",
               "thousand": "thousand", "hundred": "hundred", "m": "million",
               "b": "billion", "t": "trillion"}

#: Abbreviation -> expansion (matched case-insensitively, followed by "."): the
#: published list, minus "st" which :func:`expand_abbreviations` reads in context.
ABBREVIATIONS = {
    "mrs": "misess", "ms": "miss", "mr": "mister", "dr": "doctor",
    "co": "company", "jr": "junior", "maj": "major", "gen": "general", "drs": "doctors",
    "rev": "reverend", "lt": "lieutenant", "hon": "honorable", "sgt": "sergeant",
    "capt": "captain", "esq": "esquire", "ltd": "limited", "col": "colonel", "ft": "fort",
    "sen": "senator", "etc": "et cetera",
}
#: Upper-case words read as words, not spelled (published exception list).
ACRONYM_EXCEPTIONS = {"NVIDIA": "N.VIDIA"}

#: Characters with no NFKD decomposition to ASCII that still have an obvious
#: ASCII reading. Anything else outside ASCII is reported as unknown.
_ASCII_REPLACEMENTS = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u00ab": '"', "\u00bb": '"', "\u2039": "'", "\u203a": "'",
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2212": "-", "\u2026": "...", "\u00a0": " ", "\u00df": "ss", "\u00e6": "ae",
    "\u00c6": "AE", "\u0153": "oe", "\u0152": "OE", "\u00f8": "o", "\u00d8": "O",
    "\u0142": "l", "\u0141": "L", "\u0111": "d", "\u0110": "D", "\u00fe": "th",
    "\u00de": "Th", "\u00f0": "d", "\u00d0": "D", "\u0131": "i", "\u00b0": " degrees ",
    "\u00bd": "\u00bd", "\u00bc": "\u00bc", "\u00be": "\u00be",  # kept for the fraction rule
    "\u00a3": "\u00a3", "\u20ac": "\u20ac", "\u20a9": "\u20a9",  # kept for the currency rule
}
#: Signs read aloud as words (part of the reading, so every engine says them).
_SPOKEN_SIGNS = {
    "_": " ",     # an underscore joins words ("file_name"); FastPitch's pad symbol, too
    "+": " plus ",
    "=": " equals ",
}
#: What FastPitch's training text did not contain, mapped to what it did: english_basic
#: has no quotation marks, square brackets or backticks. Characters absent here and from
#: the symbol set are reported as unknown by the encoder.
_TRAINING_TEXT_REPLACEMENTS = {
    '"': "",      # quotation marks are not pronounced; english_basic has none
    "[": "(", "]": ")",
    "`": "'",
    "/": " ",     # published: compatibility with english_basic
}


def fold_to_ascii(text: str) -> tuple[str, list[tuple[int, str]]]:
    """Transliterate to ASCII; return the result and (index, char) it could not map.

    Currency signs and vulgar fractions are kept (later rules read them).
    """
    out: list[str] = []
    unknown: list[tuple[int, str]] = []
    for i, ch in enumerate(text):
        if ord(ch) < 128:
            out.append(ch)
            continue
        if ch in _ASCII_REPLACEMENTS:
            out.append(_ASCII_REPLACEMENTS[ch])
            continue
        decomposed = unicodedata.normalize("NFKD", ch)
        base = "".join(c for c in decomposed if not unicodedata.combining(c))
        if base and all(ord(c) < 128 for c in base):
            out.append(base)
        elif unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue  # stray combining mark / format char (ZWJ, BOM): nothing to read
        elif ch.isspace():
            out.append(" ")
        else:
            unknown.append((i, ch))
    return "".join(out), unknown


# --------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------


def _below_thousand(n: int) -> str:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words.append(f"{_ONES[hundreds]} hundred")
        if rest:
            words.append("and")  # British / inflect "andword" style, as published
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens] if not ones else f"{_TENS[tens]} {_ONES[ones]}")
    elif rest or not hundreds:
        words.append(_ONES[rest])
    return " ".join(words)


def cardinal(n: int) -> str:
    """Integer -> words: 1234 -> "one thousand two hundred and thirty four"."""
    if n < 0:
        return "minus " + cardinal(-n)
    if n > MAX_CARDINAL:
        return " ".join(_ONES[int(d)] for d in str(n))
    if n < 1000:
        return _below_thousand(n)
    words: list[str] = []
    for value, name in _SCALES:
        if n >= value:
            count, n = divmod(n, value)
            words.append(f"{cardinal(count)} {name}")
    if n:
        # "one thousand and five", like inflect's andword for a tail below 100.
        words.append(("and " if n < 100 else "") + _below_thousand(n))
    return " ".join(words)


def ordinal(n: int) -> str:
    """Integer -> ordinal words; the last two words hyphenate as published ("twenty-first")."""
    words = cardinal(n).split(" ")
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        last = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    words[-1] = last
    if len(words) >= 2 and words[-2] in _TENS[2:]:
        words[-2:] = [f"{words[-2]}-{words[-1]}"]
    return " ".join(words)


def _year_or_number(n: int) -> str:
    """The published integer rule: years read in pairs between 1000 and 3000."""
    if _is_round_hundreds(n):
        return _hundreds_or_cardinal(n)                       # 1500 -> fifteen hundred
    if 1000 < n < 3000:
        if n == 2000:
            return "two thousand"
        if 2000 < n < 2010:
            return f"two thousand {cardinal(n % 100)}"        # 2005 -> two thousand five
        hi, lo = divmod(n, 100)
        tail = f"oh {_ONES[lo]}" if lo < 10 else cardinal(lo)
        return f"{cardinal(hi)} {tail}"                      # 1984, 1905 -> nineteen oh five
    return cardinal(n)


def _is_round_hundreds(n: int) -> bool:
    return 1000 < n < 10000 and n % 100 == 0 and n % 1000 != 0


def _hundreds_or_cardinal(n: int) -> str:
    """Amounts of money: "fifteen hundred" for 1500, otherwise the plain cardinal."""
    return f"{cardinal(n // 100)} hundred" if _is_round_hundreds(n) else cardinal(n)


def _pluralize_number_words(words: str) -> str:
    # "1980s" -> "nineteen eighties", "7s" -> "sevens", "6s" -> "sixes"
    if words.endswith("y"):
        return words[:-1] + "ies"
    if words.endswith("x"):
        return words + "es"
    return words + "s"


_COMMA_NUMBER_RE = re.compile(r"([0-9][0-9,]+[0-9])")
_CURRENCY_RE = re.compile(
    r"([$€£₩])\s?([0-9.,]*[0-9]+)(?:\s?(" + "|".join(_MAGNITUDES) + r")(?=[^a-zA-Z]|$))?",
    re.IGNORECASE)
_DECIMAL_RE = re.compile(r"([0-9]+)\.([0-9]+)")
_ORDINAL_RE = re.compile(r"\b([0-9]+)(st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER_RE = re.compile(r"([0-9]+)('s|s)?")
_TIME_RE = re.compile(r"\b([01]?[0-9]|2[0-3])(?::([0-5][0-9]))?\s*([AaPp])\.?[Mm]\b\.?")
_CLOCK_RE = re.compile(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\b")
_LETTER_DIGIT_RE = re.compile(r"(?<=[A-Za-z])(?=[0-9])|(?<=[0-9])(?=[A-Za-z])")
_FRACTION_RE = re.compile(r"([0-9])?\s?([½¼¾])")
_FRACTIONS = {"½": ("half", "a half"), "¼": ("a quarter", "a quarter"),
              "¾": ("three quarters", "three quarters")}


def _expand_currency(m: re.Match[str]) -> str:
    unit = CURRENCY_UNITS[m.group(1)]
    quantity = m.group(2).replace(",", "")
    magnitude = m.group(3)
    if magnitude:
        amount = expand_numbers(quantity)
        return f"{amount} {_MAGNITUDES[magnitude.lower()]} {unit}s"
    parts = quantity.split(".")
    if len(parts) > 2:
        return f"{expand_numbers(quantity)} {unit}s"
    whole = int(parts[0]) if parts[0] else 0
    cents_text = parts[1] if len(parts) > 1 else ""
    cents = int(cents_text) if cents_text else 0
    if len(cents_text) == 1:
        cents *= 10  # "$1.5" is one dollar fifty
    main = f"{_hundreds_or_cardinal(whole)} {unit}{'' if whole == 1 else 's'}"
    sub = f"{cardinal(cents)} cent{'' if cents == 1 else 's'}"
    if whole and cents:
        return f"{main}, {sub}"
    if cents:
        return sub
    return main if whole else f"zero {unit}s"


def _expand_time(m: re.Match[str]) -> str:
    hour, minute, ampm = m.group(1), m.group(2), m.group(3).lower()
    spoken = hour if not minute or int(minute) == 0 else f"{hour} {_minutes(minute)}"
    return f"{spoken} {ampm}.m."


def _minutes(minute: str) -> str:
    value = int(minute)
    return f"oh {value}" if value < 10 else str(value)


def _expand_clock(m: re.Match[str]) -> str:
    hour, minute = m.group(1), m.group(2)
    if int(minute) == 0:
        # 24-hour times on the hour read as "fourteen hundred", 12-hour as "two o'clock".
        return f"{hour} hundred" if int(hour) > 12 else f"{hour} o'clock"
    return f"{hour} {_minutes(minute)}"


def _expand_fraction(m: re.Match[str]) -> str:
    alone, after_number = _FRACTIONS[m.group(2)]
    return f"{m.group(1)} and {after_number}" if m.group(1) else alone


def _expand_plain_number(m: re.Match[str]) -> str:
    words = _year_or_number(int(m.group(1)))
    return _pluralize_number_words(words) if m.group(2) else words


def expand_currency(text: str) -> str:
    """"$1.50" -> "one dollar, fifty cents"; "$3 million" -> "three million dollars"."""
    return _CURRENCY_RE.sub(_expand_currency, text)


def expand_numbers(text: str) -> str:
    """Spell out every digit run: commas, currency, decimals, ordinals, years, integers."""
    text = _COMMA_NUMBER_RE.sub(lambda m: m.group(1).replace(",", ""), text)
    text = expand_currency(text)
    # Decimals are read digit by digit after "point" (published: as a number).
    text = _DECIMAL_RE.sub(
        lambda m: f"{m.group(1)} point {' '.join(_ONES[int(d)] for d in m.group(2))}", text)
    text = _ORDINAL_RE.sub(lambda m: ordinal(int(m.group(1))), text)
    return _NUMBER_RE.sub(_expand_plain_number, text)


# --------------------------------------------------------------------------
# abbreviations, acronyms, english_cleaners_v2
# --------------------------------------------------------------------------

_ABBREVIATION_RES = [(re.compile(rf"\b{abbr}\.", re.IGNORECASE), full)
                     for abbr, full in ABBREVIATIONS.items()]
_NO_PERIOD_RE = re.compile(r"\b(N|n)o\.(?=\s?[0-9])")
_PERCENT_RE = re.compile(r"\s?%")
_SAINT_RE = re.compile(r"\bSt\.(?=\s?[A-Z])")
_STREET_RE = re.compile(r"\b[Ss]t\.")
_URL_RE = re.compile(r"([a-zA-Z])\.(com|gov|org|net|edu)\b")
_ACRONYM_RE = re.compile(r"\b([a-z]*[A-Z][A-Z]+)(s?)(\.?)")


def expand_number_abbreviation(text: str) -> str:
    """"No. 5" -> "number 5". Must run before numbers are spelled (the published
    cleaner ran it after, so it never fired)."""
    return _NO_PERIOD_RE.sub(lambda m: "Number" if m.group(1) == "N" else "number", text)


def expand_abbreviations(text: str) -> str:
    """Mr. -> mister, Dr. -> doctor, St. -> saint/street, %, &, @, URLs.

    "St." before a capitalised word is "saint" (St. Louis); elsewhere it is
    "street" (Baker St.). The published list always says "saint".
    """
    text = _SAINT_RE.sub("saint", text)
    text = _STREET_RE.sub("street", text)
    text = _PERCENT_RE.sub(" percent", text)
    text = text.replace("&", " and ").replace("@", " at ")
    text = _URL_RE.sub(lambda m: f"{m.group(1)} dot {m.group(2)}", text)
    for regex, full in _ABBREVIATION_RES:
        text = regex.sub(full, text)
    return text


def _spell_acronym(m: re.Match[str]) -> str:
    word, plural, period = m.group(1), m.group(2), m.group(3)
    spelled = ACRONYM_EXCEPTIONS.get(word, ".".join(word) + ".")
    if plural:
        spelled += "'s"
    if period and not spelled.endswith("."):
        spelled += "."
    return spelled


def spell_acronyms(text: str) -> str:
    """"FBI" -> "F.B.I." so the model says the letters; skipped for all-caps text."""
    if not any(c.islower() for c in text):
        return text  # shouting, not acronyms
    return _ACRONYM_RE.sub(_spell_acronym, text)


def expand_for_speech(text: str) -> tuple[str, list[tuple[int, str]]]:
    """Every English reading rule, case kept; return the text with the input characters
    it could not map (left out of the text)."""
    # Fold first so reported positions index the caller's text (currency signs
    # and fractions survive folding for the rules below).
    text, unknown = fold_to_ascii(text)
    text = expand_currency(text)
    text = _FRACTION_RE.sub(_expand_fraction, text)
    text = _TIME_RE.sub(_expand_time, text)
    text = _CLOCK_RE.sub(_expand_clock, text)
    text = _LETTER_DIGIT_RE.sub(_split_letters_digits, text)
    text = expand_number_abbreviation(text)
    text = expand_numbers(text)
    text = expand_abbreviations(text)
    text = spell_acronyms(text)
    for src, dst in _SPOKEN_SIGNS.items():
        text = text.replace(src, dst)
    return collapse_whitespace(text), unknown


#: Unit symbols after a number -> (singular, plural) names. Speech only: FastPitch's
#: training text kept the symbols (its cleaners leave "3.75 kg" as is), engines without
#: that training read "kg" as letters.
UNITS: dict[str, tuple[str, str]] = {
    "km/h": ("kilometer per hour", "kilometers per hour"), "mph": ("mile per hour", "miles per hour"),
    "km": ("kilometer", "kilometers"), "m": ("meter", "meters"), "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"), "kg": ("kilogram", "kilograms"), "g": ("gram", "grams"),
    "mg": ("milligram", "milligrams"), "L": ("liter", "liters"), "ml": ("milliliter", "milliliters"),
    "mL": ("milliliter", "milliliters"), "GB": ("gigabyte", "gigabytes"), "MB": ("megabyte", "megabytes"),
    "TB": ("terabyte", "terabytes"), "KB": ("kilobyte", "kilobytes"), "ms": ("millisecond", "milliseconds"),
    "Hz": ("hertz", "hertz"), "kHz": ("kilohertz", "kilohertz"), "MHz": ("megahertz", "megahertz"),
    "GHz": ("gigahertz", "gigahertz"), "°C": ("degree Celsius", "degrees Celsius"),
    "℃": ("degree Celsius", "degrees Celsius"), "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
}
#: A number and a unit symbol; not after a currency sign ("$5m" is five million dollars).
_UNIT_RE = re.compile(r"(?<![$€£₩\d.,])(\d[\d,]*(?:\.\d+)?)\s?(" + words_re(UNITS) + r")(?![A-Za-z])")


def expand_units(text: str) -> str:
    """"3.5 km" -> "3.5 kilometers", "1 kg" -> "1 kilogram", "20°C" -> "20 degrees Celsius"
    (the number is spelled by the number rules after)."""
    def unit(m: re.Match[str]) -> str:
        singular, plural = UNITS[m.group(2)]
        return f"{m.group(1)} {singular if m.group(1) == '1' else plural}"

    return _UNIT_RE.sub(unit, text)


def normalize(text: str) -> str:
    """English text as a speech engine should read it (see the module docstring): unit
    symbols named (:func:`expand_units`), then :func:`expand_for_speech`.

    Characters with no English reading (an emoji, a kanji) are left out: eSpeak would
    otherwise say "Chinese letter" in the middle of the line.
    """
    return expand_for_speech(expand_units(text))[0]


def english_cleaners_v2(text: str) -> tuple[str, list[tuple[int, str]]]:
    """FastPitch's training text: :func:`expand_for_speech`, lower-cased, in english_basic's
    characters; return it with the input characters it could not map."""
    text, unknown = expand_for_speech(text)
    text = text.lower()
    for src, dst in _TRAINING_TEXT_REPLACEMENTS.items():
        text = text.replace(src, dst)
    return collapse_whitespace(text), unknown


def _split_letters_digits(m: re.Match[str]) -> str:
    # Zero-width match between a letter and a digit ("MP3" -> "MP 3"); ordinals
    # and decades ("21st", "1980s") are kept whole by checking the context.
    s, i = m.string, m.start()
    tail = re.match(r"[A-Za-z']+", s[i:])
    if s[i - 1].isdigit() and tail and tail.group(0).lower() in ("st", "nd", "rd", "th", "s", "'s"):
        return ""
    return " "


__all__ = [
    "ABBREVIATIONS", "CURRENCY_UNITS", "cardinal", "collapse_whitespace", "english_cleaners_v2",
    "expand_abbreviations", "expand_currency", "expand_for_speech", "expand_number_abbreviation",
    "expand_numbers", "expand_units", "fold_to_ascii", "normalize", "ordinal", "spell_acronyms",
]
