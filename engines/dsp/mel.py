"""Mel spectrograms as the published models computed them (librosa's conventions, without librosa).

Two front ends share one STFT and one filterbank here:

* the GE2E speaker encoder's power mel (``engines.speaker``);
* the Tacotron-style normalised log-mel that Wav2Lip (and many TTS/lip-sync
  models of its generation) were trained on (:class:`LogMelSpec`, preset
  :data:`WAV2LIP_MEL`): pre-emphasis, a centred STFT magnitude, Slaney mel
  filters, dB relative to a reference level, then a symmetric clip to
  ``[-max_abs, max_abs]``.

Why reimplemented: librosa is not a dependency (its chain pulls numba and
audioread into every worker), and the formulas are short. The STFT is
librosa 0.7's, which Wav2Lip pinned: frames centred by reflect-padding
``n_fft // 2`` samples on both sides, a periodic Hann window of ``win_length``
centred in ``n_fft``; ``1 + len // hop`` frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.signal import get_window, lfilter

__all__ = ["WAV2LIP_MEL", "LogMelSpec", "hz_to_mel", "log_mel", "mel_to_hz", "mel_windows", "slaney_mel_filterbank",
           "stft_magnitude"]

#: Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: NDArray[np.float64]) -> NDArray[np.float64]:
    """Slaney's mel scale (Auditory Toolbox, librosa ``htk=False``)."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    above = hz >= _MIN_LOG_HZ
    mel[above] = _MIN_LOG_MEL + np.log(hz[above] / _MIN_LOG_HZ) / _LOGSTEP
    return mel


def mel_to_hz(mel: NDArray[np.float64]) -> NDArray[np.float64]:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    above = mel >= _MIN_LOG_MEL
    hz[above] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel[above] - _MIN_LOG_MEL))
    return hz


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                          fmax: float | None = None) -> NDArray[np.float64]:
    """Triangular mel filters, Slaney scale and area normalisation: librosa's ``filters.mel`` default.

    Returns ``(n_mels, n_fft // 2 + 1)``. Each triangle spans three consecutive mel points and
    is scaled by ``2 / (f[i+2] - f[i])`` so every band has unit area (the "slaney" norm).
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= {sample_rate / 2.0} Hz, got fmin={fmin}, fmax={fmax}")
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mel_points = np.linspace(hz_to_mel(np.array([fmin]))[0], hz_to_mel(np.array([fmax]))[0], n_mels + 2)
    hz_points = mel_to_hz(mel_points)
    fdiff = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    return weights


def stft_magnitude(wav: NDArray[np.floating], n_fft: int, hop: int, win_length: int | None = None) -> NDArray[np.float64]:
    """``|STFT|`` as librosa 0.7 computes it, ``(frames, n_fft // 2 + 1)`` (frames first).

    Centred frames (reflect padding of ``n_fft // 2``; constant padding when the
    signal is too short to reflect), a periodic Hann window of ``win_length``
    (default ``n_fft``) zero-padded to ``n_fft`` around its centre.
    """
    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    win_length = n_fft if win_length is None else win_length
    window = get_window("hann", win_length, fftbins=True).astype(np.float64)
    if win_length < n_fft:
        left = (n_fft - win_length) // 2
        window = np.pad(window, (left, n_fft - win_length - left))
    pad = n_fft // 2
    padded = np.pad(x, pad, mode="reflect" if x.size > pad else "constant")
    n_frames = 1 + (padded.size - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    return np.abs(np.fft.rfft(frames * window, n=n_fft, axis=1))


@dataclass(frozen=True)
class LogMelSpec:
    """A Tacotron-style normalised log-mel front end (the ``hparams`` of models trained on it)."""

    sample_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int
    fmin: float
    fmax: float
    #: Pre-emphasis coefficient (``y[n] = x[n] - k x[n-1]``); 0 turns it off.
    preemphasis: float
    #: Floor of the magnitude in dB before the reference is subtracted (``min_level_db``).
    min_level_db: float
    #: dB subtracted after conversion (``ref_level_db``).
    ref_level_db: float
    #: Output range: ``[-max_abs, max_abs]`` (symmetric, clipped).
    max_abs: float

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def silence(self) -> float:
        """The value a silent frame takes (the floor of the range)."""
        return -self.max_abs


#: Wav2Lip's ``hparams``: 16 kHz, n_fft 800 / hop 200 / win 800, 80 mels 55-7600 Hz,
#: pre-emphasis 0.97, dB floor -100, reference 20 dB, values in [-4, 4]: 80 frames/s.
WAV2LIP_MEL = LogMelSpec(sample_rate=16_000, n_fft=800, hop_length=200, win_length=800, n_mels=80, fmin=55.0,
                         fmax=7600.0, preemphasis=0.97, min_level_db=-100.0, ref_level_db=20.0, max_abs=4.0)


def log_mel(wav: NDArray[np.floating], spec: LogMelSpec) -> NDArray[np.float32]:
    """``(n_mels, frames)`` normalised log-mel of mono audio at ``spec.sample_rate``.

    A signal with NaN or infinite samples is refused: the network's output would
    be garbage without any other sign (the published loader raises too).
    """
    x = np.asarray(wav, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError("audio holds NaN or infinite samples; clean it before computing mel features")
    if spec.preemphasis:
        x = lfilter([1.0, -spec.preemphasis], [1.0], x)
    magnitude = stft_magnitude(x, spec.n_fft, spec.hop_length, spec.win_length)
    basis = slaney_mel_filterbank(spec.sample_rate, spec.n_fft, spec.n_mels, spec.fmin, spec.fmax)
    mel = basis @ magnitude.T
    floor = 10.0 ** (spec.min_level_db / 20.0)
    db = 20.0 * np.log10(np.maximum(floor, mel)) - spec.ref_level_db
    scaled = 2.0 * spec.max_abs * (db - spec.min_level_db) / -spec.min_level_db - spec.max_abs
    return np.clip(scaled, -spec.max_abs, spec.max_abs).astype(np.float32)


def mel_windows(mel: NDArray[np.floating], offsets_s: NDArray[np.floating], spec: LogMelSpec,
                steps: int) -> NDArray[np.float32]:
    """One ``(n_mels, steps)`` window per video frame, starting at its time: ``(frames, n_mels, steps)``.

    Frame ``i`` at ``offsets_s[i]`` seconds into the audio takes the mel frames from
    ``int(offsets_s[i] * frames_per_second)`` on (Wav2Lip's ``int(i * 80 / fps)`` when
    the offsets are ``i / fps``). Why padding rather than the published "last window
    again": a window past the end of the audio is padded with silence, so every
    frame gets its own window and none is lost at the end of a clip.
    """
    m = np.asarray(mel, dtype=np.float32)
    starts = np.floor(np.asarray(offsets_s, dtype=np.float64) * spec.frames_per_second + 1e-9).astype(np.int64)
    if starts.size and starts.min() < 0:
        raise ValueError(f"frame offsets must be >= 0 s, got {float(np.min(offsets_s))}")
    need = int(starts.max()) + steps if starts.size else 0
    if need > m.shape[1]:
        m = np.pad(m, ((0, 0), (0, need - m.shape[1])), constant_values=spec.silence)
    index = starts[:, None] + np.arange(steps)[None, :]
    return np.ascontiguousarray(np.transpose(m[:, index], (1, 0, 2)))
