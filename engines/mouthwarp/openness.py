"""Audio (and optional phoneme timings) -> mouth openness in [0, 1] per video frame.

RMS level in dBFS over exactly each frame's time span ``[i/fps, (i+1)/fps)``
(:func:`engines.mouthwarp.measure.frame_levels_db`), mapped linearly between a silence floor
and a speech level, attack/release smoothed, then shaped by phoneme classes when given
(bilabials close the lips, vowels open them wider).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from engines.mouthwarp.checks import check_rates
from engines.mouthwarp.config import MouthWarpConfig
from engines.mouthwarp.measure import frame_levels_db

__all__ = ["BILABIAL", "MIN_OPENNESS", "OTHER", "VOWEL", "PhonemeTiming", "mouth_openness", "phoneme_class"]

#: Openness below this is rounded to exactly 0: the smoothing tails would otherwise leave
#: invisible sub-pixel warps on frames that should be bit-identical.
MIN_OPENNESS = 0.02

#: ARPAbet vowels (stress digits are stripped before lookup).
_ARPABET_VOWELS = frozenset(
    {"aa", "ae", "ah", "ao", "aw", "ax", "axr", "ay", "eh", "er", "ey", "ih", "ix", "iy", "ow", "oy", "uh", "uw", "ux"}
)
#: IPA vowel letters (a label whose first letter is one of these is a vowel).
_IPA_VOWELS = frozenset("aeiouyɑɐɒæɛɜɞəɘɪɔʊʌɯøœɶɨʉɤɵ")
#: Bilabials in ARPAbet/IPA/letters, and the bilabial viseme names in common use
#: (Oculus/MPEG-4 ``PP``, Preston Blair ``MBP``).
_BILABIALS = frozenset({"p", "b", "m", "pp", "mbp", "bmp", "pb", "em", "bilabial", "pʰ", "ɓ", "m̥"})
#: Viseme and generic class names that mean "open vowel".
_VOWEL_NAMES = frozenset({"vowel", "aa", "a", "e", "i", "o", "u", "ai", "ei", "oh", "ee"})
#: Characters dropped before classifying a label (stress digits, IPA length and diacritics).
_LABEL_STRIP = re.compile(r"[0-9ːˑˈˌʰʷʲ̩̯̃\u0300-\u036f]")

VOWEL = "vowel"
BILABIAL = "bilabial"
OTHER = "other"

#: ``(start_s, end_s, label)`` of one phoneme or viseme.
PhonemeTiming = tuple[float, float, str]


def phoneme_class(label: str) -> str:
    """``"vowel"``, ``"bilabial"`` or ``"other"`` for a phoneme or viseme label.

    Accepts ARPAbet (``AA1``, ``M``), IPA (``aː``, ``ɔ``, ``m``), single letters, viseme names
    (``PP``, ``MBP``, ``aa``, ``O``) and the class names themselves, case-insensitively.
    """
    raw = label.strip().lower()
    if raw in (VOWEL, BILABIAL, OTHER):
        return raw
    core = _LABEL_STRIP.sub("", raw)
    if not core:
        return OTHER
    if core in _BILABIALS or raw in _BILABIALS:
        return BILABIAL
    if core in _ARPABET_VOWELS or core in _VOWEL_NAMES or core[0] in _IPA_VOWELS:
        return VOWEL
    return OTHER


def _phoneme_factors(
    timings: Sequence[PhonemeTiming], fps: float, n_frames: int, config: MouthWarpConfig
) -> NDArray[np.float64]:
    """Per-frame openness multiplier: 1 + sum over classes of coverage * (factor - 1)."""
    factor_of = {VOWEL: config.vowel_boost, BILABIAL: config.bilabial_factor}
    factors = np.ones(n_frames, dtype=np.float64)
    starts = np.arange(n_frames, dtype=np.float64) / fps
    ends = starts + 1.0 / fps
    for k, item in enumerate(timings):
        try:
            start, end, label = item
            start, end = float(start), float(end)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"phoneme_timings[{k}] must be (start_s, end_s, label), got {item!r}") from exc
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ValueError(f"phoneme_timings[{k}] has start {start} and end {end}: need finite start <= end")
        if not isinstance(label, str):
            raise ValueError(f"phoneme_timings[{k}] label must be a string, got {label!r}")
        cls = phoneme_class(label)
        if cls not in factor_of or end == start:
            continue
        coverage = np.clip(np.minimum(ends, end) - np.maximum(starts, start), 0.0, None) * fps
        factors += coverage * (factor_of[cls] - 1.0)
    return np.maximum(factors, 0.0)


def _smoothing_coef(tau_s: float, fps: float) -> float:
    """One-pole coefficient for time constant ``tau_s`` at one step per video frame."""
    return 1.0 if tau_s <= 0 else 1.0 - math.exp(-1.0 / (fps * tau_s))


def mouth_openness(
    audio: NDArray[np.floating],
    sample_rate: int,
    fps: float,
    n_frames: int,
    config: MouthWarpConfig | None = None,
    phoneme_timings: Sequence[PhonemeTiming] | None = None,
) -> NDArray[np.float32]:
    """Mouth openness in [0, 1] for each of ``n_frames`` video frames.

    Frame ``i`` covers the audio ``[i/fps, (i+1)/fps)``. The level (:func:`frame_levels_db`) is
    mapped linearly from ``silence_db`` (closed) to ``speech_db`` (open by ``gain``), smoothed
    with a fast attack and a short release (lips do not snap shut between syllables), then
    multiplied per frame by the phoneme factors (vowels open more, bilabials close) after the
    smoothing, so a bilabial closure is not blurred away. Values under ``MIN_OPENNESS`` become
    exactly 0 so silent frames stay untouched.
    """
    cfg = config or MouthWarpConfig()
    check_rates(sample_rate, fps)
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"audio must be one clip (T,), got shape {x.shape}")
    if x.size == 0:
        raise ValueError("audio is empty: lip sync needs the dubbed speech (at least one sample)")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"audio must be float samples in [-1, 1], got dtype {x.dtype}; convert PCM first")
    if not np.all(np.isfinite(x)):
        raise ValueError("audio contains NaN or infinite samples")
    levels = frame_levels_db(x, sample_rate, fps, n_frames)
    target = np.clip(cfg.gain * (levels - cfg.silence_db) / (cfg.speech_db - cfg.silence_db), 0.0, 1.0)
    attack = _smoothing_coef(cfg.attack_s, fps)
    release = _smoothing_coef(cfg.release_s, fps)
    out = np.empty(n_frames, dtype=np.float64)
    state = 0.0
    for i, value in enumerate(target):
        state += (attack if value > state else release) * (value - state)
        out[i] = state
    if phoneme_timings:
        out *= _phoneme_factors(phoneme_timings, fps, n_frames, cfg)
    out = np.clip(out, 0.0, 1.0)
    out[out < MIN_OPENNESS] = 0.0
    return out.astype(np.float32)
