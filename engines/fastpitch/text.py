"""Text front end for FastPitch: symbol sets, normalisation, ARPAbet, encoding.

A FastPitch checkpoint is only as good as the agreement between its
``word_emb`` rows and the symbol ids fed to it, so the symbol list and its
order are data, not code details:

* ``english_basic`` (the published LJSpeech models, 148 symbols):
  ``"_"`` (pad, id 0), ``"-"``, the 10 marks ``!'(),.:;?`` and space, ``A-Z``,
  ``a-z``, then the 84 CMUdict ARPAbet phones prefixed with ``"@"``.
* ``english_basic_lowercase`` (123 symbols), the published variant with ``"``
  and lower-case letters only.
* any other language (ko, ja, zh, ...): :meth:`SymbolSet.from_file` reads one
  symbol per line, in model id order, as the model was trained.

Unknown characters are never silently dropped: :meth:`TextProcessor.encode`
raises a ValueError listing each one with its position unless the caller
explicitly chose ``on_unknown="drop"`` (then they are dropped with a warning).
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engines.text.common import collapse_whitespace
from engines.text.en import english_cleaners_v2

logger = logging.getLogger(__name__)


def basic_cleaners(text: str) -> tuple[str, list[tuple[int, str]]]:
    """Lower-case and collapse whitespace only (for non-English symbol sets)."""
    return collapse_whitespace(text.lower()), []


def no_cleaners(text: str) -> tuple[str, list[tuple[int, str]]]:
    """Leave the text unchanged (symbol sets trained on raw text)."""
    return text, []


#: A cleaner returns the cleaned text and the (input position, character) it could not map.
Cleaner = Callable[[str], tuple[str, list[tuple[int, str]]]]
#: The normalisers a symbol set can name, by the names checkpoints record
#: (``text_cleaners``). English is the shared English front end (engines.text.en), so
#: FastPitch reads numbers and abbreviations exactly as every other engine does.
CLEANERS: dict[str, Cleaner] = {
    "english_cleaners_v2": english_cleaners_v2,
    "basic_cleaners": basic_cleaners,
    "none": no_cleaners,
}

#: Marks ARPAbet symbols in the symbol list ("@AH1"): some phones equal letters.
ARPABET_PREFIX = "@"
#: The padding symbol of the published symbol sets (id 0).
PAD_SYMBOL = "_"
_VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
_STRESSES = ("", "0", "1", "2")
_CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R",
               "S", "SH", "T", "TH", "V", "W", "Y", "Z", "ZH")
#: The 84 CMUdict phones (15 vowels x 4 stress marks + 24 consonants), sorted
#: as in the published list, which fixes their ids 64..147 in english_basic.
ARPABET_SYMBOLS: tuple[str, ...] = tuple(sorted(
    [v + s for v in _VOWELS for s in _STRESSES] + list(_CONSONANTS)))
_ARPABET_SET = frozenset(ARPABET_SYMBOLS)

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = _UPPER.lower()
#: Curly braces hold space-separated phones that bypass normalisation: "{HH AH0 L OW1}".
_BRACES_RE = re.compile(r"\{([^{}]*)\}")
#: Words for dictionary lookup (with a short clitic: "don't", "he's").
_WORD_RE = re.compile(r"[A-Za-z]+(?:'[A-Za-z]{1,2})?")
_UNICODE_FORMS = ("NFC", "NFD", "NFKC", "NFKD")
#: How many unknown characters an error message lists before "...".
MAX_REPORTED_UNKNOWN = 20

OnUnknown = Literal["error", "drop"]
Ambiguous = Literal["ignore", "first"]


@dataclass(frozen=True)
class SymbolSet:
    """An ordered symbol list: position = the model's embedding row."""

    name: str
    """Identifier, e.g. "english_basic" or the file stem of a custom list."""
    symbols: tuple[str, ...]
    """Symbols in id order; multi-character symbols are allowed (phones)."""
    pad: str = PAD_SYMBOL
    """Padding symbol; its id must be the model's ``padding_idx``."""
    cleaners: str = "basic_cleaners"
    """Normaliser applied before encoding: a key of :data:`CLEANERS`."""
    unicode_form: str | None = None
    """Unicode normalisation applied first (e.g. "NFD" to split Hangul into jamo)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbols", tuple(self.symbols))
        if not self.symbols:
            raise ValueError(f"symbol set {self.name!r} is empty")
        if any(s == "" for s in self.symbols):
            raise ValueError(f"symbol set {self.name!r} contains an empty symbol")
        seen: dict[str, int] = {}
        dupes = []
        for i, s in enumerate(self.symbols):
            if s in seen:
                dupes.append(f"{s!r} at {seen[s]} and {i}")
            seen[s] = i
        if dupes:
            raise ValueError(f"symbol set {self.name!r} has duplicate symbols: {', '.join(dupes)}")
        if self.pad not in seen:
            raise ValueError(f"symbol set {self.name!r} lacks its pad symbol {self.pad!r}")
        if self.cleaners not in CLEANERS:
            raise ValueError(f"symbol set {self.name!r}: unknown cleaners {self.cleaners!r}; "
                             f"choose one of {sorted(CLEANERS)}")
        if self.unicode_form is not None and self.unicode_form not in _UNICODE_FORMS:
            raise ValueError(f"symbol set {self.name!r}: unicode_form must be one of "
                             f"{_UNICODE_FORMS} or None, got {self.unicode_form!r}")

    def __len__(self) -> int:
        return len(self.symbols)

    @functools.cached_property
    def symbol_to_id(self) -> dict[str, int]:
        """Symbol -> id."""
        return {s: i for i, s in enumerate(self.symbols)}

    @property
    def pad_id(self) -> int:
        """Id of the padding symbol."""
        return self.symbol_to_id[self.pad]

    @functools.cached_property
    def max_symbol_length(self) -> int:
        """Longest symbol, in characters (bounds the greedy tokenizer)."""
        return max(len(s) for s in self.symbols)

    @classmethod
    def english_basic(cls) -> SymbolSet:
        """The published 148-symbol set of the NVIDIA LJSpeech FastPitch."""
        chars = PAD_SYMBOL + "-" + "!'(),.:;? " + _UPPER + _LOWER
        return cls("english_basic", tuple(chars) + tuple(ARPABET_PREFIX + s for s in ARPABET_SYMBOLS),
                   cleaners="english_cleaners_v2")

    @classmethod
    def english_basic_lowercase(cls) -> SymbolSet:
        """The published lower-case variant (123 symbols, includes '"')."""
        chars = PAD_SYMBOL + "-" + "!'\"(),.:;? " + _LOWER
        return cls("english_basic_lowercase",
                   tuple(chars) + tuple(ARPABET_PREFIX + s for s in ARPABET_SYMBOLS),
                   cleaners="english_cleaners_v2")

    @classmethod
    def from_name(cls, name: str) -> SymbolSet:
        """A built-in set by its published name."""
        builders = {"english_basic": cls.english_basic,
                    "english_basic_lowercase": cls.english_basic_lowercase}
        if name not in builders:
            raise ValueError(f"unknown symbol set {name!r}; built in: {sorted(builders)}. For "
                             "another language give a symbol file (SymbolSet.from_file).")
        return builders[name]()

    @classmethod
    def from_file(cls, path: str | Path, *, name: str | None = None, pad: str | None = None,
                  cleaners: str = "basic_cleaners", unicode_form: str | None = None) -> SymbolSet:
        """Read one symbol per line (UTF-8), line i = id i.

        Lines keep their spaces (a line holding one space is the space
        symbol); only the line break is removed. ``pad`` defaults to the
        first symbol, matching FastPitch's ``padding_idx`` 0.
        """
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"symbol file not found: {p}")
        lines = p.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # trailing newline
        symbols = [line[:-1] if line.endswith("\r") else line for line in lines]
        empty = [i + 1 for i, s in enumerate(symbols) if s == ""]
        if empty:
            raise ValueError(f"{p}: empty symbol on line(s) {empty}; one symbol per line")
        if not symbols:
            raise ValueError(f"{p}: no symbols")
        return cls(name or p.stem, tuple(symbols), pad=symbols[0] if pad is None else pad,
                   cleaners=cleaners, unicode_form=unicode_form)


class PronunciationDictionary:
    """Word -> ARPAbet pronunciations, read from a CMUdict-format file.

    Format: ``WORD  PH1 PH2 ...`` per line; alternates as ``WORD(1)``; lines
    starting with ``;;;`` are comments. Pronunciations using a phone outside
    the 84 ARPAbet symbols are skipped (as published) and counted in a log line.
    """

    def __init__(self, entries: Mapping[str, Sequence[str]],
                 heteronyms: Iterable[str] = ()) -> None:
        self._entries = {w.upper(): list(p) for w, p in entries.items()}
        self.heteronyms = frozenset(h.lower() for h in heteronyms)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def from_file(cls, path: str | Path, heteronyms_path: str | Path | None = None
                  ) -> PronunciationDictionary:
        """Parse a CMUdict file (UTF-8, falling back to Latin-1 like cmudict-0.7b)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"pronunciation dictionary not found: {p}")
        raw = p.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        entries: dict[str, list[str]] = {}
        skipped = 0
        for line in text.splitlines():
            if not line.strip() or line.startswith(";;;"):
                continue
            word, *phones = line.split()
            word = re.sub(r"\(\d+\)$", "", word).upper()
            if not phones or any(ph not in _ARPABET_SET for ph in phones):
                skipped += 1
                continue
            entries.setdefault(word, []).append(" ".join(phones))
        if not entries:
            raise ValueError(f"{p}: no valid 'WORD  PH1 PH2' lines (CMUdict format)")
        if skipped:
            logger.info("%s: skipped %d line(s) with phones outside ARPAbet", p, skipped)
        heteronyms: list[str] = []
        if heteronyms_path is not None:
            hp = Path(heteronyms_path)
            if not hp.is_file():
                raise FileNotFoundError(f"heteronyms file not found: {hp}")
            heteronyms = [w.strip() for w in hp.read_text(encoding="utf-8").splitlines() if w.strip()]
        return cls(entries, heteronyms)

    def lookup(self, word: str) -> list[str] | None:
        """All pronunciations of ``word`` (case-insensitive), or None."""
        return self._entries.get(word.upper())


@dataclass(frozen=True)
class UnknownSymbol:
    """One piece of text the symbol set cannot encode."""

    text: str
    position: int
    where: Literal["input", "normalized"]

    def describe(self) -> str:
        codes = " ".join(f"U+{ord(c):04X}" for c in self.text)
        return f"{self.text!r} ({codes}) at {self.where} position {self.position}"


class TextProcessor:
    """Text -> symbol ids for one FastPitch model.

    Pipeline: Unicode normalisation (if the set asks) -> cleaners outside
    ``{...}`` groups -> optional dictionary ARPAbet for every word found with
    one pronunciation (the published ``p_arpabet=1.0`` behaviour; ambiguous
    words and listed heteronyms stay spelled) -> greedy longest-match of
    symbols, ``{...}`` groups read as phones.
    """

    def __init__(self, symbol_set: SymbolSet | str = "english_basic", *,
                 cmudict_path: str | Path | None = None,
                 heteronyms_path: str | Path | None = None,
                 ambiguous: Ambiguous = "ignore",
                 on_unknown: OnUnknown = "error") -> None:
        self.symbol_set = SymbolSet.from_name(symbol_set) if isinstance(symbol_set, str) else symbol_set
        if ambiguous not in ("ignore", "first"):
            raise ValueError(f"ambiguous must be 'ignore' or 'first', got {ambiguous!r}")
        if on_unknown not in ("error", "drop"):
            raise ValueError(f"on_unknown must be 'error' or 'drop', got {on_unknown!r}")
        self.ambiguous: Ambiguous = ambiguous
        self.on_unknown: OnUnknown = on_unknown
        if cmudict_path is not None and not any(
                s.startswith(ARPABET_PREFIX) for s in self.symbol_set.symbols):
            raise ValueError(f"symbol set {self.symbol_set.name!r} has no '{ARPABET_PREFIX}' "
                             "ARPAbet symbols: a pronunciation dictionary cannot be used with it")
        self.dictionary = (PronunciationDictionary.from_file(cmudict_path, heteronyms_path)
                           if cmudict_path is not None else None)
        self._cleaner = CLEANERS[self.symbol_set.cleaners]

    # -- normalisation -------------------------------------------------------

    def normalize(self, text: str) -> str:
        """The text exactly as it will be tokenized (phones in ``{...}``)."""
        return self._normalize(text)[0]

    def _normalize(self, text: str) -> tuple[str, list[UnknownSymbol]]:
        if self.symbol_set.unicode_form:
            text = unicodedata.normalize(self.symbol_set.unicode_form, text)
        pieces: list[str] = []
        unknown: list[UnknownSymbol] = []
        pos = 0
        for m in _BRACES_RE.finditer(text):
            pieces.append(self._clean(text[pos:m.start()], pos, unknown))
            pieces.append("{" + " ".join(m.group(1).split()) + "}")
            pos = m.end()
        pieces.append(self._clean(text[pos:], pos, unknown))
        kept = [p for p in pieces if p]
        if len(kept) == 1:
            return kept[0], unknown
        # Around {...} groups: joined with one space, as the published encoder
        # joins its cleaned words.
        return re.sub(r" {2,}", " ", " ".join(kept)).strip(), unknown

    def _clean(self, segment: str, offset: int, unknown: list[UnknownSymbol]) -> str:
        if not segment.strip():
            return ""
        cleaned, bad = self._cleaner(segment)
        unknown.extend(UnknownSymbol(ch, offset + i, "input") for i, ch in bad)
        if self.dictionary is not None:
            cleaned = _WORD_RE.sub(lambda m: self._arpabet_or_word(m.group(0)), cleaned)
        return cleaned

    def _arpabet_or_word(self, word: str) -> str:
        phones = self._pronounce(word)
        return word if phones is None else "{" + phones + "}"

    def _pronounce(self, word: str) -> str | None:
        assert self.dictionary is not None
        if word.lower() in self.dictionary.heteronyms:
            return None  # pronunciation depends on context: let the model read letters
        prons = self.dictionary.lookup(word)
        if prons is None:
            # Possessive / plural fallback, as published: base word + "Z".
            for suffix in ("'s", "s"):
                if word.lower().endswith(suffix) and len(word) > len(suffix):
                    base = self._pronounce(word[:-len(suffix)])
                    return None if base is None else base + " Z"
            return None
        if len(prons) > 1 and self.ambiguous == "ignore":
            return None
        return prons[0]

    # -- encoding ------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Text -> symbol ids. Raises ValueError naming unknown characters."""
        normalized, unknown = self._normalize(text)
        ids: list[int] = []
        pos = 0
        for m in _BRACES_RE.finditer(normalized):
            self._encode_chars(normalized[pos:m.start()], pos, ids, unknown)
            self._encode_phones(m.group(1), m.start(1), ids, unknown)
            pos = m.end()
        self._encode_chars(normalized[pos:], pos, ids, unknown)
        if unknown:
            listing = ", ".join(u.describe() for u in unknown[:MAX_REPORTED_UNKNOWN])
            more = f" and {len(unknown) - MAX_REPORTED_UNKNOWN} more" if len(unknown) > MAX_REPORTED_UNKNOWN else ""
            message = (f"{len(unknown)} unknown character(s) for symbol set "
                       f"{self.symbol_set.name!r}: {listing}{more}; normalized text: {normalized!r}")
            if self.on_unknown == "error":
                raise ValueError(message + ". Rewrite or remove them, or pass on_unknown='drop'.")
            logger.warning("dropping %s", message)
        return ids

    def _encode_chars(self, chunk: str, offset: int, ids: list[int],
                      unknown: list[UnknownSymbol]) -> None:
        table = self.symbol_set.symbol_to_id
        longest = self.symbol_set.max_symbol_length
        i = 0
        while i < len(chunk):
            for size in range(min(longest, len(chunk) - i), 0, -1):
                sid = table.get(chunk[i:i + size])
                if sid is not None:
                    ids.append(sid)
                    i += size
                    break
            else:
                unknown.append(UnknownSymbol(chunk[i], offset + i, "normalized"))
                i += 1

    def _encode_phones(self, group: str, offset: int, ids: list[int],
                       unknown: list[UnknownSymbol]) -> None:
        table = self.symbol_set.symbol_to_id
        for m in re.finditer(r"\S+", group):
            phone = m.group(0)
            sid = table.get(ARPABET_PREFIX + phone, table.get(phone))
            if sid is None:
                unknown.append(UnknownSymbol(phone, offset + m.start(), "normalized"))
            else:
                ids.append(sid)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text, ARPAbet runs shown back in ``{...}`` (for logs and tests)."""
        out: list[str] = []
        for i in ids:
            s = self.symbol_set.symbols[int(i)]
            if len(s) > 1 and s.startswith(ARPABET_PREFIX):
                s = "{" + s[len(ARPABET_PREFIX):] + "}"
            out.append(s)
        return "".join(out).replace("}{", " ")


def text_settings_from_train_setup(train_setup: Mapping[str, Any]) -> dict[str, Any]:
    """The text-related fields of an NVIDIA ``train_setup`` (args of training).

    Returns ``symbol_set``, ``text_cleaners`` and ``p_arpabet`` when present so
    a caller can check them against the processor it builds.
    """
    keys = ("symbol_set", "text_cleaners", "p_arpabet")
    return {k: train_setup[k] for k in keys if k in train_setup}


__all__ = [
    "ARPABET_PREFIX", "ARPABET_SYMBOLS", "CLEANERS", "PAD_SYMBOL", "PronunciationDictionary", "SymbolSet",
    "TextProcessor", "UnknownSymbol", "text_settings_from_train_setup",
]
