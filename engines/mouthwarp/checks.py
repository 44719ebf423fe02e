"""Input checks the mouth-warp modules share: rates, frames, clips and batch lengths.

Each raises ``ValueError`` naming what is wrong and what is expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["batch_lengths", "check_clip", "check_frame", "check_rates"]


def check_rates(sample_rate: int, fps: float) -> None:
    if not (isinstance(fps, (int, float, np.integer, np.floating)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    if not (isinstance(sample_rate, (int, np.integer)) and not isinstance(sample_rate, bool) and sample_rate > 0):
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")


def check_frame(frame: NDArray[np.uint8]) -> None:
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a frame must be (H, W, 3) uint8 RGB, got shape {frame.shape} dtype {frame.dtype}")


def check_clip(frames: NDArray[np.uint8]) -> NDArray[np.uint8]:
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be one clip (N, H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"frames are empty: shape {arr.shape}")
    return arr


def batch_lengths(lengths: NDArray[np.integer] | Sequence[int] | None, batch: int, limit: int, name: str) -> NDArray[np.int64]:
    if lengths is None:
        return np.full(batch, limit, dtype=np.int64)
    lens = np.asarray(lengths)
    if lens.shape != (batch,) or not np.issubdtype(lens.dtype, np.integer):
        raise ValueError(f"{name} must be ({batch},) integers, got shape {lens.shape} dtype {lens.dtype}")
    if lens.min() < 1 or lens.max() > limit:
        raise ValueError(f"{name} {lens.tolist()} must each be in 1..{limit} (the padded length)")
    return lens.astype(np.int64)
