"""WSOLA time-stretching and the loudness envelope (engines.dsp)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from engines.dsp import rms_envelope, stretch_to_duration, time_stretch

SR = 22050
F0_HZ = 150.0


def harmonic_tone(seconds: float, f0: float = F0_HZ, sr: int = SR) -> np.ndarray:
    """A voiced-speech-like tone: f0 and four harmonics with falling amplitudes."""
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6))).astype(np.float32)


def peak_frequency(x: np.ndarray, lo: float, hi: float, sr: int = SR) -> float:
    """Frequency of the strongest spectral peak in [lo, hi] (zero-padded FFT, fine grid)."""
    x = np.asarray(x, dtype=np.float64)
    n = 16 * len(x)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    band = (freqs >= lo) & (freqs <= hi)
    return float(freqs[band][np.argmax(spectrum[band])])


@pytest.mark.parametrize("rate", [0.5, 0.77, 1.0, 1.13, 1.3, 2.0])
@pytest.mark.parametrize("n", [1, 700, 22050, 33333])
def test_output_length_is_round_len_over_rate(rate: float, n: int) -> None:
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    assert len(time_stretch(x, rate, SR)) == round(n / rate)


@pytest.mark.parametrize("target", [15000, 19999, 20000, 20001, 26000])
def test_stretch_to_duration_lands_exactly(target: int) -> None:
    x = harmonic_tone(20000 / SR)
    y = stretch_to_duration(x, target, SR, max_speedup=1.35, max_slowdown=1.5)
    assert len(y) == target
    assert y.dtype == np.float32


@pytest.mark.parametrize("rate", [1 / 1.3, 1.3])
def test_pitch_is_kept(rate: float) -> None:
    x = harmonic_tone(2.0)
    y = time_stretch(x, rate, SR)
    middle = y[len(y) // 4 : 3 * len(y) // 4]
    f0 = peak_frequency(middle, 100, 200)
    assert abs(f0 - F0_HZ) / F0_HZ < 0.02
    # ... and the output is a clean tone, not frames at random phases: the level holds.
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=0.05)


@pytest.mark.parametrize("rate", [0.8, 1.3])
def test_time_structure_scales_by_rate(rate: float) -> None:
    """A 3 Hz amplitude modulation (syllable rhythm) comes out at 3 * rate Hz."""
    t = np.arange(4 * SR) / SR
    x = (np.sin(2 * np.pi * F0_HZ * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t))).astype(np.float32)
    y = time_stretch(x, rate, SR)
    envelope = rms_envelope(y, SR, 0.005)
    modulation = peak_frequency(envelope - envelope.mean(), 1.0, 8.0, sr=200)
    assert modulation == pytest.approx(3.0 * rate, rel=0.03)


def test_rate_one_is_identity_and_dtype_is_kept() -> None:
    x = harmonic_tone(0.5).astype(np.float64)
    y = time_stretch(x, 1.0, SR)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, x)


def test_silence_stays_silent() -> None:
    y = time_stretch(np.zeros(10000, dtype=np.float32), 1.25, SR)
    assert len(y) == 8000 and not np.any(y)


def test_bounds_are_enforced() -> None:
    x = harmonic_tone(1.0)
    with pytest.raises(ValueError, match="speed-up"):
        stretch_to_duration(x, int(len(x) / 1.4), SR, max_speedup=1.35, max_slowdown=1.5)
    with pytest.raises(ValueError, match="slow-down"):
        stretch_to_duration(x, int(len(x) * 1.6), SR, max_speedup=1.35, max_slowdown=1.5)
    # exactly at the bounds is allowed
    assert len(stretch_to_duration(x, int(np.ceil(len(x) / 1.35)), SR, 1.35, 1.5)) == int(np.ceil(len(x) / 1.35))
    assert len(stretch_to_duration(x, int(len(x) * 1.5), SR, 1.35, 1.5)) == int(len(x) * 1.5)


def test_bad_arguments_are_rejected() -> None:
    x = harmonic_tone(0.2)
    with pytest.raises(ValueError, match="rate"):
        time_stretch(x, 0.0, SR)
    with pytest.raises(ValueError, match="mono"):
        time_stretch(np.stack([x, x]), 1.2, SR)
    with pytest.raises(ValueError, match="empty"):
        stretch_to_duration(np.zeros(0, dtype=np.float32), 100, SR)
    with pytest.raises(ValueError, match=">= 0"):
        stretch_to_duration(x, -1, SR)


def test_ten_seconds_stretch_fast() -> None:
    """Well under 0.05x real time: 10 s of audio in less than 0.5 s (measured ~0.03-0.08 s)."""
    x = np.random.default_rng(0).standard_normal(10 * SR).astype(np.float32) * 0.1
    for rate in (0.75, 1.3):
        started = time.perf_counter()
        time_stretch(x, rate, SR)
        assert time.perf_counter() - started < 0.05 * 10


def test_rms_envelope_levels_and_length() -> None:
    amplitude = 0.5
    x = np.concatenate([np.zeros(SR // 2), amplitude * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)])
    env = rms_envelope(x, SR, 0.01)
    assert len(env) == int(np.ceil(len(x) / (0.01 * SR)))
    assert env.dtype == np.float32
    assert np.all(env[:45] == 0)  # silence, away from the onset
    assert env[80:140] == pytest.approx(np.full(60, amplitude / np.sqrt(2)), rel=0.01)
    # frame i is centred on i * hop: the onset at 0.5 s is half-covered by frame 50
    assert 0.2 < env[50] / env[100] < 0.8
    assert len(rms_envelope(np.zeros(0), SR, 0.01)) == 0
