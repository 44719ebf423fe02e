"""Text metrics for intelligibility: a re-transcribed dub scored against its subtitles.

Word error rate for English, character error rate for Korean, Japanese and
Chinese (their words are not separated by spaces), over NFKC-normalised,
case-folded text without punctuation.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

#: Languages scored by character error rate (no spaces between words), the rest by words.
CHARACTER_LANGUAGES = frozenset({"ko", "ja", "zh"})


_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)


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


def tokens(text: str, lang: str) -> list[str]:
    """Normalised tokens: NFKC, case-folded, punctuation dropped; characters or words by language."""
    clean = _PUNCTUATION.sub(" ", unicodedata.normalize("NFKC", text).casefold())
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
