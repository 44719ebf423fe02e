"""The ctypes binding of eSpeak NG, from the ``espeakng-loader`` wheel.

The wheel carries ``libespeak-ng.so`` 1.52 and its data; this module drives it through its
C API (``speak_lib.h``): ``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, ...)``,
``espeak_SetSynthCallback``, ``espeak_SetVoiceByName("voice+variant")``,
``espeak_SetParameter`` and ``espeak_Synth`` with UTF-8 text; samples (int16, 22050 Hz) and
word events arrive in the callback. :func:`synth_raw` is one such synthesis;
:func:`text_to_phonemes` is eSpeak's reading of a text without the audio
(``espeak_TextToPhonemes``: what it would say, for checking the text front end);
:func:`available_variants` lists the voice variants the data holds.

Determinism, and why the library is initialised for every synthesis
------------------------------------------------------------------
Measured on 1.52: synthesising the same text twice in one initialised library gives
*different* samples (lengths differing by up to ~250 samples, even with both random seeds
fixed), because the waveform generator keeps state across calls in C statics that no API
resets: the pitch-flutter phase (``Flutter_ix``), the echo buffer, the AGC. Idempotent
pipeline outputs need byte-identical audio, so rather than initialising once, every
synthesis runs on a *fresh image* of the library: ``dlopen`` a private copy of the ``.so``
(private, so no other user of the loader's library in this process shares or pins its
state), ``espeak_Initialize``, set voice and parameters, seed both random generators
(``espeak_ng_SetRandSeed``, and libc ``srand`` because ``espeak_Initialize`` seeds from the
clock), synthesise, ``espeak_Terminate``, ``dlclose``. That costs 2-3 ms per synthesis (the
synthesis itself takes 2-10 ms per sentence) and equal inputs give equal samples, in any
order and from any thread. ``espeak_Terminate`` leaves three allocations behind (the
alternate-language translators and the voice-list array, ~180 kB per synthesis of mixed-script
text); they are freed through the library's own symbol table (``_free_leftovers``), so memory
stays flat over thousands of syntheses (measured: +0.15 MB over 1600).

Thread safety: the library is not re-entrant (global state everywhere), so one process-wide
lock wraps every call into it; a batch runs item after item under that lock.
"""

from __future__ import annotations

import atexit
import ctypes
import locale
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_PITCH_PARAM",
    "DEFAULT_RANGE_PARAM",
    "DEFAULT_VOLUME",
    "ESPEAK_SAMPLE_RATE",
    "MAX_RATE_WPM",
    "MIN_RATE_WPM",
    "NORMAL_RATE_WPM",
    "RawSynthesis",
    "available_variants",
    "synth_raw",
    "text_to_phonemes",
]

# ----------------------------------------------------------------- the C API (speak_lib.h)

#: Native output rate of eSpeak NG's formant synthesiser.
ESPEAK_SAMPLE_RATE = 22050
#: ``espeakRATE_MINIMUM`` / ``espeakRATE_MAXIMUM`` / ``espeakRATE_NORMAL`` (words per minute).
MIN_RATE_WPM = 80
MAX_RATE_WPM = 450
NORMAL_RATE_WPM = 175
#: ``espeak_AUDIO_OUTPUT``: synchronous, samples delivered to the callback, no sound device.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
#: ``espeakINITIALIZE_DONT_EXIT``: return an error instead of calling exit() on bad data.
_INITIALIZE_DONT_EXIT = 0x8000
#: Milliseconds of audio per callback in synchronous mode.
_BUFFER_MS = 200
#: ``espeak_POSITION_TYPE.POS_CHARACTER`` and ``espeakCHARS_UTF8``.
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
#: ``espeak_PARAMETER`` values.
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
#: ``espeakPHONEMES_IPA``: phonemes as IPA rather than eSpeak's ASCII mnemonics.
_PHONEMES_IPA = 0x02
#: ``espeak_EVENT_TYPE`` values we read.
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
#: eSpeak's own defaults for pitch/range (0-100) and volume (0-200).
DEFAULT_PITCH_PARAM = 50
DEFAULT_RANGE_PARAM = 50
DEFAULT_VOLUME = 100


class _Event(ctypes.Structure):
    """``espeak_EVENT``."""

    class _Id(ctypes.Union):
        _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _Id),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class _Capture:
    """What the callback collects during one ``espeak_Synth``."""

    chunks: list[NDArray[np.int16]] = field(default_factory=list)
    #: (character position 1-based, length in characters, audio position in ms)
    words: list[tuple[int, int, int]] = field(default_factory=list)


_LOCK = threading.RLock()
_capture: _Capture | None = None
_private_library: Path | None = None
_libc = ctypes.CDLL(None)
_libc.free.argtypes = [ctypes.c_void_p]
_libc.free.restype = None
_libc.srand.argtypes = [ctypes.c_uint]


@_SynthCallback
def _on_synth(wav: ctypes._Pointer, n_samples: int, events: ctypes._Pointer) -> int:
    """Copy the samples and word events out of eSpeak's buffers (only valid during the call)."""
    if _capture is None:
        return 1  # not ours: abort
    if wav and n_samples > 0:
        _capture.chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
    if events:
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_WORD:
                _capture.words.append((int(ev.text_position), int(ev.length), int(ev.audio_position)))
            i += 1
    return 0


def _data_path() -> str:
    import espeakng_loader

    return espeakng_loader.get_data_path()


def _library_copy() -> Path:
    """A private copy of libespeak-ng, made once per process (see the module docstring).

    Re-made if it vanished (a forked child outliving its parent's clean-up); removed at
    exit only by the process that made it.
    """
    global _private_library
    if _private_library is None or not _private_library.exists():
        import espeakng_loader

        folder = Path(tempfile.mkdtemp(prefix="polydub-espeak-"))
        target = folder / "libespeak-ng-polydub.so"
        shutil.copy2(espeakng_loader.get_library_path(), target)
        owner = os.getpid()
        atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
        _private_library = target
        _leak_offsets.cache_clear()
    return _private_library


def _dlclose(handle: int) -> None:
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(handle)


def _declare(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
        ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p


#: What ``espeak_Terminate`` leaves allocated, freed by us before the image is discarded
#: (measured with valgrind; without this a fresh image per synthesis leaks every time):
#: the secondary and tertiary translators, loaded when a text switches language (a Latin
#: word in Korean or Chinese text, a kanji read by the Japanese voice), each holding a
#: dictionary (~180 kB for English), freed with ``DeleteTranslator``...
_LEAKY_TRANSLATORS = ("translator2", "translator3")
#: ... and the voice list array of ``espeak_ListVoices`` (a function static, hence the
#: compiler's ``.NNNN`` suffix: names ending in "." match by prefix), freed with ``free``.
_LEAKY_ARRAYS = ("voices.",)
_DELETE_TRANSLATOR = "DeleteTranslator"
_ANCHOR_SYMBOL = "espeak_Synth"
_DeleteTranslator = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
#: ELF constants: 64-bit little-endian, symbol table section type.
_ELFCLASS64 = 2
_ELFDATA2LSB = 1
_SHT_SYMTAB = 2
_ELF64_SYM_SIZE = 24


def _elf_symbols(path: Path, wanted: Sequence[str]) -> dict[str, int]:
    """Offsets of ``wanted`` symbols from the ``.symtab`` of a 64-bit little-endian ELF file.

    The library is not stripped, so its hidden globals are listed there even though
    ``dlsym`` cannot see them. A wanted name ending in "." matches any ``name.NNNN`` (a
    function static). Returns what it finds ({} for any other file format).
    """
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != _ELFCLASS64 or data[5] != _ELFDATA2LSB:
        return {}
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    # (name, type, flags, addr, offset, size, link, info, addralign, entsize)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    exact = {name.encode(): name for name in wanted if not name.endswith(".")}
    prefixes = [(name.encode(), name) for name in wanted if name.endswith(".")]
    found: dict[str, int] = {}
    for section in sections:
        if section[1] != _SHT_SYMTAB:
            continue
        strings = sections[section[6]][4]
        for j in range(section[5] // _ELF64_SYM_SIZE):
            st_name, _, _, _, st_value, _ = struct.unpack_from("<IBBHQQ", data, section[4] + j * _ELF64_SYM_SIZE)
            symbol = data[strings + st_name : data.index(b"\0", strings + st_name)]
            name = exact.get(symbol) or next(
                (n for p, n in prefixes if symbol.startswith(p) and symbol[len(p) :].isdigit()), None
            )
            if name is not None and st_value:
                found[name] = st_value
    return found


@lru_cache(maxsize=1)
def _leak_offsets() -> dict[str, int]:
    """Symbol offsets needed by :func:`_free_leftovers` ({} if any is missing)."""
    names = (_ANCHOR_SYMBOL, _DELETE_TRANSLATOR, *_LEAKY_TRANSLATORS, *_LEAKY_ARRAYS)
    found = _elf_symbols(_library_copy(), names)
    return found if all(n in found for n in names) else {}


def _free_leftovers(lib: ctypes.CDLL) -> None:
    """Free what ``espeak_Terminate`` leaks (see ``_LEAKY_TRANSLATORS``); call it after Terminate."""
    offsets = _leak_offsets()
    if not offsets:
        return  # a stripped or non-ELF build: nothing we can reach; the leak stays
    base = ctypes.cast(getattr(lib, _ANCHOR_SYMBOL), ctypes.c_void_p).value - offsets[_ANCHOR_SYMBOL]
    delete = _DeleteTranslator(base + offsets[_DELETE_TRANSLATOR])
    for name in _LEAKY_TRANSLATORS:
        slot = ctypes.c_void_p.from_address(base + offsets[name])
        if slot.value:
            delete(slot.value)
            slot.value = None
    for name in _LEAKY_ARRAYS:
        slot = ctypes.c_void_p.from_address(base + offsets[name])
        if slot.value:
            _libc.free(slot.value)
            slot.value = None


@dataclass(frozen=True)
class RawSynthesis:
    """One synthesis straight from eSpeak: int16 at 22050 Hz plus word events."""

    samples: NDArray[np.int16]
    words: tuple[tuple[int, int, int], ...]


@contextmanager
def _fresh_library(voice: str) -> Iterator[ctypes.CDLL]:
    """A freshly initialised library image with ``voice`` set, under the process-wide lock;
    terminated, its leftovers freed and unloaded on exit (see the module docstring).

    ``espeak_Initialize`` switches the process's ``LC_CTYPE`` to UTF-8 (its character
    classes need it): the locale is put back afterwards.
    """
    with _LOCK:
        saved_ctype = locale.setlocale(locale.LC_CTYPE)
        lib = ctypes.CDLL(str(_library_copy()))
        try:
            _declare(lib)
            rate_hz = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, _data_path().encode(), _INITIALIZE_DONT_EXIT
            )
            if rate_hz != ESPEAK_SAMPLE_RATE:
                raise RuntimeError(f"espeak_Initialize returned {rate_hz}, expected {ESPEAK_SAMPLE_RATE} Hz")
            try:
                if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise ValueError(f"eSpeak has no voice {voice!r} in {_data_path()}")
                yield lib
            finally:
                lib.espeak_Terminate()
                _free_leftovers(lib)
        finally:
            _dlclose(lib._handle)
            locale.setlocale(locale.LC_CTYPE, saved_ctype)


def synth_raw(text: str, voice: str, rate: int, pitch: int, pitch_range: int, volume: int, seed: int) -> RawSynthesis:
    """One synthesis on a fresh library image, under the process-wide lock.

    ``espeak_Initialize`` seeds libc ``rand`` from the clock: it is re-seeded with ``seed``
    so any code path of the library that draws from it repeats.
    """
    global _capture
    encoded = text.encode("utf-8") + b"\0"
    with _fresh_library(voice) as lib:
        lib.espeak_SetSynthCallback(_on_synth)
        for param, value in (
            (_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range), (_PARAM_VOLUME, volume),
        ):
            if lib.espeak_SetParameter(param, int(value), 0) != 0:
                raise RuntimeError(f"espeak_SetParameter({param}, {value}) failed")
        lib.espeak_ng_SetRandSeed(seed)
        _libc.srand(seed)
        _capture = _Capture()
        try:
            status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status}")
            lib.espeak_Synchronize()
            capture = _capture
        finally:
            _capture = None
    samples = np.concatenate(capture.chunks) if capture.chunks else np.zeros(0, dtype=np.int16)
    return RawSynthesis(samples=samples.astype(np.int16, copy=False), words=tuple(capture.words))


def text_to_phonemes(text: str, voice: str) -> str:
    """What eSpeak would say for ``text`` with ``voice``, as IPA: one string per clause,
    joined by " | ". A switch to another language's voice shows as ``(en)...(ja)``: for
    example a kanji read by the Japanese voice comes out as English "Chinese letter".
    """
    buffer = ctypes.create_string_buffer(text.encode("utf-8") + b"\0")
    pointer = ctypes.c_void_p(ctypes.addressof(buffer))
    clauses: list[str] = []
    with _fresh_library(voice) as lib:
        # Each call reads one clause and moves the pointer on; NULL after the last one.
        while pointer.value:
            phonemes = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA)
            if phonemes:
                clauses.append(phonemes.decode("utf-8"))
    return " | ".join(c.strip() for c in clauses if c.strip())


@lru_cache(maxsize=1)
def available_variants() -> tuple[str, ...]:
    """Names accepted as ``variant`` (files of ``espeak-ng-data/voices/!v``)."""
    folder = Path(_data_path()) / "voices" / "!v"
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_file()))
