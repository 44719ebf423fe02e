"""RVC's pitch track: F0 every 10 ms of 16 kHz audio, the semitone shift, and the coarse pitch bins.

The synthesizer of an F0 voice takes the pitch twice: ``nsff0``, F0 in Hz that
drives the NSF sine source, and ``pitch``, the same F0 quantised on a mel scale
into 255 bins (:func:`coarse_pitch`, RVC's published formula) that the text
encoder embeds. Unvoiced frames are 0 Hz and bin 1, as in the F0 files RVC
trains on (its training extraction never interpolates across unvoiced frames),
so the source plays noise there and ``protect`` knows where the consonants are.

Trackers (``F0Method``), all bounded to 50-1100 Hz as RVC bounds them:

* ``dio``: WORLD's DIO refined by StoneMask, fast and the research plan's choice;
* ``harvest``: WORLD's Harvest refined by StoneMask, then a 3-tap median filter
  (RVC's ``filter_radius`` > 2), slower and steadier on breathy speech;
* ``pm``: Praat's autocorrelation tracker (parselmouth), voicing threshold 0.6.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, get_args

import numpy as np
from numpy.typing import NDArray
from scipy.signal import medfilt

with warnings.catch_warnings():
    # pyworld imports pkg_resources only to read its own version, which warns on new setuptools.
    warnings.simplefilter("ignore", category=UserWarning)
    import pyworld

F0Method = Literal["dio", "harvest", "pm"]
F0_METHODS: tuple[str, ...] = get_args(F0Method)

#: The rate RVC analyses at (content features and pitch alike).
ANALYSIS_RATE = 16_000
#: Samples per pitch frame: 10 ms, the synthesizer's 100 frames per second.
FRAME = 160
#: RVC's F0 range in Hz; also the ends of the coarse mel scale.
F0_FLOOR_HZ = 50.0
F0_CEIL_HZ = 1100.0
#: Coarse bins: 1 (unvoiced and the floor) .. 255 (the ceiling).
COARSE_MIN, COARSE_MAX = 1, 255
#: Praat's voicing threshold in RVC's ``pm`` tracker.
PM_VOICING_THRESHOLD = 0.6
#: Median-filter taps applied to Harvest when ``filter_radius`` > 2 (RVC's rule).
HARVEST_MEDIAN_TAPS = 3


def _mel(f0_hz: NDArray[np.float64] | float) -> NDArray[np.float64]:
    return 1127.0 * np.log1p(np.asarray(f0_hz, dtype=np.float64) / 700.0)


def coarse_pitch(f0_hz: NDArray[np.floating]) -> NDArray[np.int64]:
    """RVC's coarse pitch: mel(F0) mapped linearly so 50 Hz -> 1 and 1100 Hz -> 255, rounded.

    ``mel = 1127 ln(1 + f / 700)``; voiced frames get
    ``(mel - mel(50)) * 254 / (mel(1100) - mel(50)) + 1``, and everything is
    then clipped to [1, 255] (unvoiced 0 Hz lands on 1), rounded half to even
    as ``np.rint`` does.
    """
    mel = _mel(np.asarray(f0_hz, dtype=np.float64))
    low, high = float(_mel(F0_FLOOR_HZ)), float(_mel(F0_CEIL_HZ))
    voiced = mel > 0
    mel[voiced] = (mel[voiced] - low) * (COARSE_MAX - COARSE_MIN) / (high - low) + COARSE_MIN
    mel = np.clip(mel, COARSE_MIN, COARSE_MAX)
    return np.rint(mel).astype(np.int64)


def shift_pitch(f0_hz: NDArray[np.floating], semitones: float) -> NDArray[np.float64]:
    """F0 raised by ``semitones`` (negative: lowered); unvoiced 0 Hz stays 0."""
    return np.asarray(f0_hz, dtype=np.float64) * 2.0 ** (float(semitones) / 12.0)


def track_f0(audio: NDArray[np.floating], frames: int, method: F0Method = "dio",
             filter_radius: int = 3) -> NDArray[np.float64]:
    """F0 in Hz of 16 kHz ``audio`` at frame ``j`` = sample ``160 j``, exactly ``frames`` values.

    0 marks unvoiced frames. Trackers return about ``len / 160 + 1`` frames;
    the track is cut or zero-padded to ``frames`` (Praat's, which starts late,
    is padded on both sides as RVC pads it).
    """
    x = np.ascontiguousarray(audio, dtype=np.float64)
    if method == "dio":
        f0, times = pyworld.dio(x, ANALYSIS_RATE, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ,
                                frame_period=1000.0 * FRAME / ANALYSIS_RATE)
        f0 = pyworld.stonemask(x, f0, times, ANALYSIS_RATE)
    elif method == "harvest":
        f0, times = pyworld.harvest(x, ANALYSIS_RATE, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ,
                                    frame_period=1000.0 * FRAME / ANALYSIS_RATE)
        f0 = pyworld.stonemask(x, f0, times, ANALYSIS_RATE)
        if filter_radius > 2:
            f0 = medfilt(f0, HARVEST_MEDIAN_TAPS)
    elif method == "pm":
        f0 = _praat_f0(x)
        missing = frames - f0.size
        if missing > 0:
            before = (missing + 1) // 2
            f0 = np.pad(f0, (before, missing - before))
    else:
        raise ValueError(f"unknown F0 method {method!r}: choose one of {', '.join(F0_METHODS)}")
    f0 = np.asarray(f0, dtype=np.float64)
    if f0.size >= frames:
        return f0[:frames].copy()
    return np.pad(f0, (0, frames - f0.size))


def _praat_f0(x: NDArray[np.float64]) -> NDArray[np.float64]:
    import parselmouth  # imported here: only the ``pm`` tracker needs Praat

    pitch = parselmouth.Sound(x, ANALYSIS_RATE).to_pitch_ac(
        time_step=FRAME / ANALYSIS_RATE, voicing_threshold=PM_VOICING_THRESHOLD,
        pitch_floor=F0_FLOOR_HZ, pitch_ceiling=F0_CEIL_HZ)
    return np.asarray(pitch.selected_array["frequency"], dtype=np.float64)


def voiced_median_hz(f0_hz: NDArray[np.floating]) -> float | None:
    """Median F0 over voiced frames (the register a voice speaks in), ``None`` when none are voiced."""
    f0 = np.asarray(f0_hz, dtype=np.float64)
    voiced = f0[f0 > 0]
    return float(np.median(voiced)) if voiced.size else None


def register_shift(source_median_hz: float | None, target_median_hz: float | None,
                   limit_semitones: float) -> float:
    """Semitones that move a source register onto a target one, clipped to +-``limit_semitones``.

    0 when either register is unknown (no voiced frames): the shift then
    keeps the source's pitch, which is what RVC does without a shift.
    """
    if not source_median_hz or not target_median_hz or source_median_hz <= 0 or target_median_hz <= 0:
        return 0.0
    semitones = 12.0 * math.log2(target_median_hz / source_median_hz)
    return float(np.clip(semitones, -limit_semitones, limit_semitones))


__all__ = ["ANALYSIS_RATE", "F0Method", "F0_CEIL_HZ", "F0_FLOOR_HZ", "F0_METHODS", "FRAME", "coarse_pitch",
           "register_shift", "shift_pitch", "track_f0", "voiced_median_hz"]
