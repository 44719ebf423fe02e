"""Exact lengths: trim or zero-pad a signal to the number of samples a timeline needs."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["fit_length"]


def fit_length(audio: NDArray[np.generic], n_samples: int) -> NDArray[np.generic]:
    """``audio`` cut or zero-padded along its last axis to exactly ``n_samples``.

    Works for ``(samples,)`` and channels-first ``(channels, samples)``.
    """
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    have = audio.shape[-1]
    if have >= n_samples:
        return audio[..., :n_samples]
    pad = [(0, 0)] * (audio.ndim - 1) + [(0, n_samples - have)]
    return np.pad(audio, pad)
