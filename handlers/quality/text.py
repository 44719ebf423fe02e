"""Text metrics for intelligibility: a re-transcribed dub scored against its subtitles.

Word error rate for English, character error rate for Korean, Japanese and
Chinese (their words are not separated by spaces). Both sides go through one
normalisation (:func:`normalize_for_scoring`), so only what was heard differently
counts: NFKC, case folded, punctuation dropped (apostrophes inside words kept), and
for English the reading rules of the TTS front end (:func:`engines.text.en.normalize`:
"21" -> "twenty one", "$5" -> "five dollars", "Mr." -> "mister"), since a recogniser
writes what it hears as words, and contractions written out ("I'm" -> "i am").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from engines.text.en import normalize as read_english

#: Languages scored by character error rate (no spaces between words), the rest by words.
CHARACTER_LANGUAGES = frozenset({"ko", "ja", "zh"})
#: Apostrophe-like marks written for the ASCII apostrophe (kept inside words).
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
#: Punctuation and symbols (and "_", which ``\w`` counts as a letter); the apostrophe is kept here.
_PUNCTUATION = re.compile(r"[^\w\s']|_", re.UNICODE)
#: An apostrophe that does not join two letters (a quotation mark).
_LONE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)", re.UNICODE)
#: English contractions written out, in order (irregular forms first): "I'm" and "I am" are the
#: same words to a listener, and a recogniser writes either. "'s" and "'d" stay as written
#: (is/has/possessive, would/had cannot be told apart from the text).
_CONTRACTIONS = tuple((re.compile(pattern), words) for pattern, words in (
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\bcannot\b", "can not"),
    (r"\bshan't\b", "shall not"), (r"\blet's\b", "let us"), (r"\b(\w+)n't\b", r"\1 not"),
    (r"\b(\w+)'m\b", r"\1 am"), (r"\b(\w+)'re\b", r"\1 are"), (r"\b(\w+)'ll\b", r"\1 will"),
    (r"\b(\w+)'ve\b", r"\1 have"),
))


def edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions) between token lists."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp))
        previous = current
    return previous[-1]


def error_metric(lang: str) -> str:
    """``"cer"`` for ko/ja/zh (words are not space separated there), ``"wer"`` otherwise."""
    return "cer" if lang in CHARACTER_LANGUAGES else "wer"


def normalize_for_scoring(text: str, lang: str) -> str:
    """``text`` as scored: read aloud (English), case folded, punctuation dropped, spaces collapsed."""
    clean = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
    if lang == "en":
        clean = read_english(clean)
    clean = _LONE_APOSTROPHE.sub(" ", _PUNCTUATION.sub(" ", clean.casefold()))
    if lang == "en":
        for pattern, words in _CONTRACTIONS:
            clean = pattern.sub(words, clean)
    return " ".join(clean.split())


def tokens(text: str, lang: str) -> list[str]:
    """Normalised tokens (:func:`normalize_for_scoring`): characters or words by language."""
    clean = normalize_for_scoring(text, lang)
    if error_metric(lang) == "cer":
        return [c for c in clean if not c.isspace()]
    return clean.split()


def error_rate(reference: str, hypothesis: str, lang: str) -> float:
    """WER (en) or CER (ko, ja, zh) of ``hypothesis`` against ``reference``.

    Edit distance over the reference's length; an empty reference scores 0 when the
    hypothesis is empty too, else 1.
    """
    ref, hyp = tokens(reference, lang), tokens(hypothesis, lang)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)
