"""eSpeak NG speech for a batch of texts: voices per language, pitch in Hz, rate control to a
target duration, edge-silence trimming, the batch API (:class:`EspeakTTS`).

Every synthesis goes through :func:`engines.espeak.library.synth_raw` (a fresh library image
each time, so equal inputs give equal samples).

Duration control (dubbing needs each segment to fill its subtitle slot)
------------------------------------------------------------------------
1. synthesise at ``default_rate_wpm`` and measure the duration after trimming edge silence;
2. pick the eSpeak rate that should land on the target, assuming duration ~ 1/rate
   (``rate1 = rate0 * d0 / target``, clamped to 80..450 wpm), and synthesise again;
3. if that is more than ``rate_tolerance`` off, fit ``d = a + c / rate`` through the two tries
   (pauses do not scale with the rate) and try once more;
4. keep the closest try and close the rest with WSOLA (:func:`engines.dsp.stretch_to_duration`)
   within ``max_speedup`` / ``max_slowdown``; the output then has exactly
   ``round(target * sample_rate)`` samples.

Measured (default voices, one sentence per language, targets 0.7x-1.5x of the natural
duration): the rate step alone lands within 5% (en -3.5..+2.0%, ko -1.2..+3.5%,
ja -2.4..+3.5%, zh -4.8..+3.8%), so the second rate try is rarely needed; after the stretch
every output has exactly the target's samples (error <= 0.001%, sample rounding). One
fitted item takes 35-115 ms on the 2-core dev CPU.

Pitch
-----
eSpeak's pitch parameter (0-100, default 50) scales the voice's base pitch through a
non-linear table (``pitch_adjust_tab`` in ``wavegen.c``) and every voice variant has its own
base, so Hz -> parameter is calibrated per voice: the first time a voice is asked for a
pitch in Hz, a calibration sentence is synthesised at parameters 0, 10, ..., 100 and its
median f0 measured (normalised autocorrelation); the requested Hz is then interpolated on
that curve (and clamped to the reachable range). Measured median f0 (Hz, range 50):

============  =====  =====  =====  =====  =====  =====  =====
voice          p=0   p=20   p=40   p=50   p=60   p=80   p=100
============  =====  =====  =====  =====  =====  =====  =====
en-us           67     72     85     94    104    131    162
en-us+f2       111    134    161    179    199    246    306
en-us+m3        67     71     84     93    105    131    164
ko              69     78     93    102    113    138    171
ko+f2          131    151    178    196    216    265    325
ja              64     75     89     98    109    135    167
cmn             56     63     78     88     98    124    156
============  =====  =====  =====  =====  =====  =====  =====

(``EspeakTTS().pitch_curve(lang, variant)`` regenerates a row; calibrating one voice takes
~0.2 s.) The default male voices reach about 60-170 Hz, the female variant f2 about
110-320 Hz. Requested 80/120/150 Hz on en-us measured 82/123/152 Hz (pyworld harvest on a
different sentence), 210 Hz on en-us+f2 measured 213 Hz: within 3% when the sentence's
intonation resembles the calibration sentence's.

Text
----
eSpeak's own text rules are not enough for subtitles: its Japanese voice reads kana only
(every kanji comes out as "Chinese letter"), its Korean voice reads every digit string as
a Sino-Korean number (사과 2개 as 이 개, not 두 개), and Latin letters switch it to its
English voice. So every item first goes through the text front end every TTS engine
shares, :func:`engines.text.normalize_for_speech` (:meth:`EspeakTTS.speech_text`):
Japanese becomes katakana through OpenJTalk (今日は良い天気ですね -> キョーワ ヨイ
テンキデスネ), numbers, times, units and acronyms are written out as the language says
them. Languages without a front end (a voice added to ``EspeakConfig.voices``) get
eSpeak's own rules. Word timings refer to the text eSpeak spoke (the reading).
:meth:`EspeakTTS.phonemes` shows what eSpeak makes of an item, without the audio.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from engines.dsp import resample, stretch_to_duration
from engines.espeak.library import (
    DEFAULT_PITCH_PARAM,
    DEFAULT_RANGE_PARAM,
    DEFAULT_VOLUME,
    ESPEAK_SAMPLE_RATE,
    MAX_RATE_WPM,
    MIN_RATE_WPM,
    NORMAL_RATE_WPM,
    available_variants,
    synth_raw,
    text_to_phonemes,
)
from engines.text import SPEECH_LANGUAGES, normalize_for_speech

__all__ = ["DEFAULT_VOICES", "EspeakConfig", "EspeakResult", "EspeakTTS", "WordTiming"]

#: int16 full scale, to bring samples to [-1, 1).
_INT16_SCALE = 32768.0

#: polydub language code -> eSpeak voice name.
DEFAULT_VOICES: Mapping[str, str] = {"ko": "ko", "en": "en-us", "ja": "ja", "zh": "cmn"}

# ----------------------------------------------------------------- calibration and analysis

#: Pitch parameters sampled when calibrating Hz -> parameter for a voice.
_PITCH_GRID = tuple(range(0, 101, 10))
#: Sentences synthesised for the calibration: a few voiced syllables in each language.
_CALIBRATION_TEXT: Mapping[str, str] = {
    "en": "We are all here, waiting for you.",
    "ko": "우리는 모두 여기서 너를 기다려요.",
    "ja": "わたしたちは みんな ここで まって います。",
    "zh": "我们都在这里等你。",
}
#: f0 search range of the calibration (covers eSpeak's reachable 55-350 Hz).
_F0_MIN_HZ = 50.0
_F0_MAX_HZ = 450.0
#: Analysis frame and hop for the f0 estimate, in seconds.
_F0_FRAME_S = 0.040
_F0_HOP_S = 0.010
#: A frame is voiced when its normalised autocorrelation peak exceeds this.
_F0_VOICING = 0.6
#: Among lags scoring within this share of the best, the shortest wins (avoids octave drops).
_F0_OCTAVE_GUARD = 0.9

#: Silence trimming: 10 ms frames quieter than this many dB below the loudest frame are
#: silence; a margin is kept so consonant onsets/tails are not clipped.
_TRIM_FRAME_S = 0.010


@dataclass(frozen=True)
class EspeakConfig:
    """Knobs of the eSpeak NG engine. Every field has a default suited to dubbing."""

    #: Output sample rate in Hz; eSpeak synthesises at 22050 and resamples to this.
    sample_rate: int = ESPEAK_SAMPLE_RATE
    #: Speaking rate (words per minute) of the first try and of items without a target.
    default_rate_wpm: int = NORMAL_RATE_WPM
    #: Bounds of the rate search (eSpeak accepts 80..450; beyond, quality drops fast).
    min_rate_wpm: int = MIN_RATE_WPM
    max_rate_wpm: int = MAX_RATE_WPM
    #: A rate try this close (relative) to the target ends the rate search.
    rate_tolerance: float = 0.05
    #: WSOLA bounds for the rest of the fit after rate control (see engines.dsp.wsola).
    max_speedup: float = 1.35
    max_slowdown: float = 1.5
    #: When the target is out of reach even at the rate and stretch bounds: False returns the
    #: closest length reachable (``lengths`` tells the caller), True raises ValueError.
    strict_duration: bool = False
    #: eSpeak pitch range (0-100; 50 normal, 0 monotone): how much the intonation moves.
    pitch_range: int = DEFAULT_RANGE_PARAM
    #: eSpeak volume (0-200, 100 normal; peaks near -2 dBFS at 100).
    volume: int = DEFAULT_VOLUME
    #: Cut silence before the first and after the last sound, so the speech fills the slot.
    trim_silence: bool = True
    #: Trimming threshold: dB below the loudest 10 ms frame of the item.
    trim_threshold_db: float = 40.0
    #: Silence kept on each side after trimming, in seconds.
    trim_margin_s: float = 0.010
    #: Seed of eSpeak's noise generators (breath, frication, Klatt voicing noise).
    seed: int = 1
    #: Language code -> eSpeak voice name.
    voices: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_VOICES))
    #: Variant used when an item gives none (``None``: the voice's own sound).
    default_variant: str | None = None

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if not MIN_RATE_WPM <= self.min_rate_wpm <= self.default_rate_wpm <= self.max_rate_wpm <= MAX_RATE_WPM:
            raise ValueError(
                f"need {MIN_RATE_WPM} <= min_rate_wpm <= default_rate_wpm <= max_rate_wpm <= "
                f"{MAX_RATE_WPM}, got {self.min_rate_wpm}, {self.default_rate_wpm}, {self.max_rate_wpm}"
            )
        if not 0 <= self.pitch_range <= 100 or not 0 <= self.volume <= 200:
            raise ValueError("pitch_range must be in 0..100 and volume in 0..200")


@dataclass(frozen=True)
class WordTiming:
    """One word of the output: its text and where it sits in the returned audio."""

    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class EspeakResult:
    """One synthesised item with what was done to it."""

    audio: NDArray[np.float32]
    sample_rate: int
    words: tuple[WordTiming, ...]
    #: eSpeak rate used (words per minute) and pitch parameter (0-100).
    rate_wpm: int
    pitch_param: int
    #: Duration after rate control, before the WSOLA fit, in seconds.
    spoken_s: float

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


# ----------------------------------------------------------------- analysis helpers


def _median_f0(audio: NDArray[np.floating], sample_rate: int) -> float:
    """Median f0 (Hz) of the voiced frames, by normalised autocorrelation; NaN if unvoiced.

    Enough for calibrating a synthetic voice (clean, strongly periodic); not a general
    pitch tracker.
    """
    x = np.asarray(audio, dtype=np.float64)
    frame = int(_F0_FRAME_S * sample_rate)
    hop = int(_F0_HOP_S * sample_rate)
    if len(x) < frame:
        return math.nan
    frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sum(frames * frames, axis=1)
    loud = energy > energy.max() * 10 ** (-30 / 10)
    frames, energy = frames[loud], energy[loud]
    n_fft = 1 << int(np.ceil(np.log2(2 * frame)))
    spectrum = np.fft.rfft(frames, n_fft, axis=1)
    ac = np.fft.irfft(np.abs(spectrum) ** 2, n_fft, axis=1)[:, :frame]
    lags = np.arange(frame)
    ac = ac / energy[:, None] * frame / np.maximum(frame - lags, 1)  # unbiased, 1 at lag 0
    lo = int(sample_rate / _F0_MAX_HZ)
    hi = int(sample_rate / _F0_MIN_HZ)
    band = ac[:, lo:hi]
    best = band.max(axis=1)
    f0s = []
    for row, peak in zip(band, best, strict=True):
        if peak < _F0_VOICING:
            continue
        k = int(np.argmax(row >= _F0_OCTAVE_GUARD * peak))
        while k + 1 < len(row) and row[k + 1] > row[k]:
            k += 1  # climb to the local maximum
        if 0 < k < len(row) - 1:
            a, b, c = row[k - 1], row[k], row[k + 1]
            denom = a - 2 * b + c
            shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
        else:
            shift = 0.0
        f0s.append(sample_rate / (lo + k + shift))
    return float(np.median(f0s)) if f0s else math.nan


def _trim_bounds(samples: NDArray[np.floating], sample_rate: int, threshold_db: float, margin_s: float) -> tuple[int, int]:
    """Start and end (exclusive) of the audible part, with ``margin_s`` kept on each side."""
    hop = max(1, int(_TRIM_FRAME_S * sample_rate))
    n = len(samples) // hop
    if n == 0:
        return 0, len(samples)
    frames = np.asarray(samples[: n * hop], dtype=np.float64).reshape(n, hop)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    peak = rms.max()
    if peak <= 0:
        return 0, 0
    audible = np.nonzero(rms >= peak * 10 ** (-threshold_db / 20))[0]
    margin = int(margin_s * sample_rate)
    start = max(0, int(audible[0]) * hop - margin)
    end = min(len(samples), (int(audible[-1]) + 1) * hop + margin)
    return start, end



# ----------------------------------------------------------------- the engine


class EspeakTTS:
    """eSpeak NG speech for a batch of texts, optionally fitted to target durations and pitches.

    Stateless apart from a cache of per-voice pitch calibrations; safe to share between
    threads (every library call is serialised by a process-wide lock).
    """

    def __init__(self, config: EspeakConfig | None = None) -> None:
        self.config = config or EspeakConfig()
        self._pitch_curves: dict[tuple[str, int], tuple[NDArray[np.float64], NDArray[np.float64]]] = {}
        self._curves_lock = threading.Lock()

    # ------------------------------------------------------------- validation

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted(self.config.voices))

    def voice_name(self, lang: str, variant: str | None = None) -> str:
        """The eSpeak voice name (``voice+variant``) for a polydub language and variant."""
        if lang not in self.config.voices:
            raise ValueError(
                f"eSpeak TTS does not speak {lang!r}; supported languages: {', '.join(self.languages)}"
            )
        variant = variant if variant is not None else self.config.default_variant
        name = self.config.voices[lang]
        if variant is None or variant == "":
            return name
        if "/" in variant or "+" in variant or variant not in available_variants():
            raise ValueError(
                f"unknown eSpeak voice variant {variant!r}; use one of the files in "
                f"espeak-ng-data/voices/!v, e.g. m3, f2, klatt (see engines.espeak.library.available_variants())"
            )
        return f"{name}+{variant}"

    @staticmethod
    def _check_text(text: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("empty text: give each item at least one word to speak")
        return text.strip()

    def speech_text(self, text: str, lang: str) -> str:
        """The text eSpeak is given for ``text``: read by the shared front end
        (:func:`engines.text.normalize_for_speech`) for the languages it knows, as written for
        other voices. ValueError if nothing is left to say (a line of symbols such as "♪")."""
        text = self._check_text(text)
        if lang not in SPEECH_LANGUAGES:
            return text
        spoken = normalize_for_speech(text, lang).strip()
        if not spoken:
            raise ValueError(
                f"nothing to speak in {text!r}: it has no {lang} reading; give the item words, not only symbols"
            )
        return spoken

    def phonemes(self, text: str, lang: str, variant: str | None = None) -> str:
        """What eSpeak says for ``text`` (IPA, clauses joined by " | "), after the front end."""
        return text_to_phonemes(self.speech_text(text, lang), self.voice_name(lang, variant))

    # ------------------------------------------------------------- pitch

    def pitch_curve(self, lang: str, variant: str | None = None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Measured (pitch parameters, median f0 in Hz) of a voice, calibrated once and cached."""
        voice = self.voice_name(lang, variant)
        key = (voice, self.config.pitch_range)
        with self._curves_lock:
            if key not in self._pitch_curves:
                text = _CALIBRATION_TEXT[lang] if lang in _CALIBRATION_TEXT else _CALIBRATION_TEXT["en"]
                f0 = []
                for p in _PITCH_GRID:
                    raw = synth_raw(text, voice, NORMAL_RATE_WPM, p, self.config.pitch_range,
                                     self.config.volume, self.config.seed)
                    f0.append(_median_f0(raw.samples / _INT16_SCALE, ESPEAK_SAMPLE_RATE))
                hz = np.asarray(f0, dtype=np.float64)
                if not np.all(np.isfinite(hz)):
                    raise ValueError(
                        f"eSpeak voice {voice!r} has no measurable pitch (a whispering variant?); "
                        "leave pitch_hz unset for it or choose another variant"
                    )
                self._pitch_curves[key] = (np.asarray(_PITCH_GRID, dtype=np.float64), np.maximum.accumulate(hz))
            return self._pitch_curves[key]

    def pitch_param(self, lang: str, variant: str | None, pitch_hz: float | None) -> int:
        """eSpeak pitch parameter (0-100) whose median f0 is closest to ``pitch_hz``.

        ``None``/NaN keep eSpeak's default (50); Hz outside the voice's reach clamp to 0/100.
        """
        if pitch_hz is None or not math.isfinite(pitch_hz):
            return DEFAULT_PITCH_PARAM
        if pitch_hz <= 0:
            raise ValueError(f"pitch_hz must be positive, got {pitch_hz}")
        params, hz = self.pitch_curve(lang, variant)
        return int(round(float(np.interp(pitch_hz, hz, params))))

    # ------------------------------------------------------------- synthesis

    def _render(self, text: str, voice: str, rate: int, pitch: int) -> tuple[NDArray[np.float32], list[WordTiming]]:
        """Synthesise, trim edge silence, resample to the output rate; audio and word timings."""
        cfg = self.config
        raw = synth_raw(text, voice, rate, pitch, cfg.pitch_range, cfg.volume, cfg.seed)
        audio = raw.samples.astype(np.float32) / _INT16_SCALE
        start, end = 0, len(audio)
        if cfg.trim_silence:
            start, end = _trim_bounds(audio, ESPEAK_SAMPLE_RATE, cfg.trim_threshold_db, cfg.trim_margin_s)
        audio = audio[start:end]
        if len(audio) == 0:
            raise ValueError(f"eSpeak produced no audible speech for {text!r}; give it words to speak")
        audio = resample(audio, ESPEAK_SAMPLE_RATE, cfg.sample_rate)
        words = []
        offset_s = start / ESPEAK_SAMPLE_RATE
        total_s = len(audio) / cfg.sample_rate
        starts = [max(0.0, min(total_s, ms / 1000.0 - offset_s)) for _, _, ms in raw.words]
        for i, (pos, length, _) in enumerate(raw.words):
            end_s = starts[i + 1] if i + 1 < len(starts) else total_s
            words.append(WordTiming(text=text[pos - 1 : pos - 1 + length], start_s=starts[i], end_s=max(starts[i], end_s)))
        return audio, words

    def _clamp_rate(self, rate: float) -> int:
        return int(round(min(max(rate, self.config.min_rate_wpm), self.config.max_rate_wpm)))

    def synthesize_one(
        self,
        text: str,
        lang: str,
        target_duration_s: float | None = None,
        pitch_hz: float | None = None,
        variant: str | None = None,
        max_speedup: float | None = None,
    ) -> EspeakResult:
        """Speak one text; with a target duration the output has exactly that many samples.

        ``target_duration_s`` of ``None``/NaN/<= 0 keeps the natural duration.
        ``max_speedup`` bounds the time-stretch after rate control for this call
        (``None`` or <= 0: the config's ``max_speedup``).
        """
        cfg = self.config
        if max_speedup is not None and max_speedup > 0:
            cfg = replace(cfg, max_speedup=float(max_speedup))
        text = self.speech_text(text, lang)
        voice = self.voice_name(lang, variant)
        pitch = self.pitch_param(lang, variant, pitch_hz)
        rate = cfg.default_rate_wpm
        audio, words = self._render(text, voice, rate, pitch)
        has_target = target_duration_s is not None and math.isfinite(target_duration_s) and target_duration_s > 0
        if not has_target:
            return EspeakResult(audio, cfg.sample_rate, tuple(words), rate, pitch, len(audio) / cfg.sample_rate)

        target_s = float(target_duration_s)
        target = max(1, int(round(target_s * cfg.sample_rate)))
        tries = [(rate, audio, words)]

        def duration(a: NDArray[np.float32]) -> float:
            return len(a) / cfg.sample_rate

        def off(a: NDArray[np.float32]) -> float:
            return abs(duration(a) - target_s) / target_s

        d0 = duration(audio)
        if off(audio) > cfg.rate_tolerance:
            rate1 = self._clamp_rate(rate * d0 / target_s)
            if rate1 != rate:
                a1, w1 = self._render(text, voice, rate1, pitch)
                tries.append((rate1, a1, w1))
                d1 = duration(a1)
                if off(a1) > cfg.rate_tolerance and d1 != d0:
                    # d = a + c / rate through both tries; solve for the target.
                    c = (d0 - d1) / (1.0 / rate - 1.0 / rate1)
                    a = d0 - c / rate
                    rate2 = self._clamp_rate(c / (target_s - a)) if c > 0 and target_s > a else (
                        cfg.max_rate_wpm if d1 > target_s else cfg.min_rate_wpm
                    )
                    if rate2 not in (rate, rate1):
                        a2, w2 = self._render(text, voice, rate2, pitch)
                        tries.append((rate2, a2, w2))
        rate, audio, words = min(tries, key=lambda t: off(t[1]))
        spoken_s = duration(audio)

        ratio = len(audio) / target  # > 1: needs a speed-up
        if ratio > cfg.max_speedup or 1.0 / ratio > cfg.max_slowdown:
            if cfg.strict_duration:
                raise ValueError(
                    f"cannot fit {text[:40]!r} ({lang}) into {target_s:.3f} s: at {rate} wpm it takes "
                    f"{spoken_s:.3f} s, beyond the stretch bounds ({cfg.max_speedup}x faster, "
                    f"{cfg.max_slowdown}x slower); shorten the text or widen the slot"
                )
            # The closest length inside the bounds; `lengths` tells the caller it is off target.
            if ratio > 1:
                target = math.ceil(len(audio) / cfg.max_speedup)
            else:
                target = math.floor(len(audio) * cfg.max_slowdown)
        fitted = stretch_to_duration(audio, target, cfg.sample_rate, cfg.max_speedup, cfg.max_slowdown)
        scale = len(fitted) / len(audio)
        words = [WordTiming(w.text, w.start_s * scale, w.end_s * scale) for w in words]
        return EspeakResult(fitted.astype(np.float32), cfg.sample_rate, tuple(words), rate, pitch, spoken_s)

    def synthesize(
        self,
        texts: Sequence[str],
        langs: Sequence[str],
        target_durations_s: NDArray[np.floating] | None = None,
        pitch_hz: NDArray[np.floating] | None = None,
        variants: Sequence[str | None] | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Speak a batch: ``(B, Tmax)`` float32 audio zero-padded, and ``(B,)`` int64 lengths.

        ``target_durations_s`` / ``pitch_hz`` are ``(B,)`` arrays where NaN (or <= 0 for
        durations) means "natural"; ``variants`` entries of ``None`` use the voice's own
        sound. Items run one after another under the library lock; all inputs are validated
        before any synthesis, so a bad item fails the batch fast.
        """
        n = len(texts)
        if len(langs) != n:
            raise ValueError(f"got {n} texts but {len(langs)} languages")
        targets = self._per_item(target_durations_s, n, "target_durations_s")
        pitches = self._per_item(pitch_hz, n, "pitch_hz")
        if variants is None:
            variants = [None] * n
        elif len(variants) != n:
            raise ValueError(f"got {n} texts but {len(variants)} variants")
        for text, lang, variant in zip(texts, langs, variants, strict=True):
            self.speech_text(text, lang)
            self.voice_name(lang, variant)
        outputs = [
            self.synthesize_one(text, lang, targets[i], pitches[i], variants[i]).audio
            for i, (text, lang) in enumerate(zip(texts, langs, strict=True))
        ]
        lengths = np.array([len(a) for a in outputs], dtype=np.int64)
        batch = np.zeros((n, int(lengths.max()) if n else 0), dtype=np.float32)
        for i, a in enumerate(outputs):
            batch[i, : len(a)] = a
        return batch, lengths

    @staticmethod
    def _per_item(values: NDArray[np.floating] | None, n: int, name: str) -> list[float | None]:
        if values is None:
            return [None] * n
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} values for {n} texts")
        return [None if not math.isfinite(v) else float(v) for v in arr]

