"""Sample-rate conversion: one polyphase resampler for every engine and stage.

Why polyphase by the reduced ratio (``scipy.signal.resample_poly``): it is
exact for the rational ratios audio rates have (22050 <-> 16000 <-> 48000),
deterministic, linear-phase, and needs no state, so a chunk resampled alone
equals the same span of a longer signal resampled (up to the filter's edge).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.signal import resample_poly

__all__ = ["resample"]


def resample(audio: NDArray[np.floating], rate: int, new_rate: int,
             dtype: type[np.floating] = np.float32) -> NDArray[np.floating]:
    """``audio`` at ``rate`` Hz converted to ``new_rate`` Hz along its last axis, as ``dtype``.

    ``(samples,)`` and channels-first ``(channels, samples)`` both work; equal
    rates return the input (as ``dtype``) untouched.
    """
    if rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {rate} and {new_rate}")
    x = np.asarray(audio)
    if int(rate) == int(new_rate):
        return x.astype(dtype, copy=False)
    g = math.gcd(int(rate), int(new_rate))
    return resample_poly(x, int(new_rate) // g, int(rate) // g, axis=-1).astype(dtype, copy=False)
