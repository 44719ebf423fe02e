"""32-bit float WAV in memory: the one way polydub writes and reads its intermediate audio.

Why scipy and not libsndfile: libsndfile adds a ``PEAK`` chunk with the
wall-clock time to float WAVs, so a redelivered event would rewrite the "same"
object with different bytes and idempotence could not be checked byte for
byte. Float keeps the pipeline's audio bit-exact between stages (no
requantisation, no clipping of peaks above 1.0).
"""

from __future__ import annotations

import io

import numpy as np
from scipy.io import wavfile

from schemas.errors import InputError


def encode_wav(audio: np.ndarray, rate: int) -> bytes:
    """``(samples,)`` or ``(samples, channels)`` audio as float32 WAV bytes that depend only on the samples."""
    array = np.ascontiguousarray(audio, dtype=np.float32)
    if array.ndim not in (1, 2):
        raise ValueError(f"audio must be (samples,) or (samples, channels), got shape {array.shape}")
    buffer = io.BytesIO()
    wavfile.write(buffer, int(rate), array)
    return buffer.getvalue()


def decode_wav(data: bytes, source: str = "audio") -> tuple[np.ndarray, int]:
    """WAV bytes as float32 ``(samples,)`` or ``(samples, channels)`` and the rate; integer PCM is scaled to [-1, 1].

    ``source`` names the object in the error a malformed file raises.
    """
    try:
        rate, audio = wavfile.read(io.BytesIO(data))
    except (ValueError, EOFError) as exc:
        raise InputError(f"{source} is not a WAV file ({exc})", "give a PCM or float WAV file") from exc
    if np.issubdtype(audio.dtype, np.integer):
        scale = float(np.iinfo(audio.dtype).max) + 1.0
        audio = audio.astype(np.float32) / np.float32(scale)
    return audio.astype(np.float32, copy=False), int(rate)


def mono(audio: np.ndarray) -> np.ndarray:
    """Channels averaged to one (mono input is returned as is)."""
    return audio.mean(axis=1).astype(np.float32) if audio.ndim > 1 else audio
