"""Loudness envelope: how loud the audio is, frame by frame.

Why here: several engines need "is someone speaking now, and how loudly" at a coarse rate
(mouth opening for lip sync, ducking the background under the dub, silence checks), and one
definition keeps them consistent.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["frame_rms", "rms_envelope"]

#: Samples squared and summed at a time (bounds the temporaries to a few MB).
_BLOCK = 1 << 18


def rms_envelope(
    audio: NDArray[np.floating],
    sample_rate: int,
    hop_s: float,
    window_s: float | None = None,
    centred: bool = True,
) -> NDArray[np.float32]:
    """Linear RMS of ``audio`` every ``hop_s`` seconds.

    Frame ``i`` is centred on ``i * hop_s`` (so frame ``i`` of a video at ``1 / hop_s`` fps
    describes the sound around that frame's timestamp) and spans ``window_s`` seconds
    (default: ``2 * hop_s``, smooth enough for a mouth or a ducking gain); with
    ``centred=False`` it starts at ``i * hop_s`` instead. Samples outside the audio count
    as silence. Returns ``ceil(len / hop)`` values (at least one for non-empty audio),
    float32.
    """
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"rms_envelope takes mono 1-D audio, got shape {x.shape}")
    if sample_rate <= 0 or hop_s <= 0:
        raise ValueError(f"sample_rate and hop_s must be positive, got {sample_rate}, {hop_s}")
    hop = hop_s * sample_rate
    win = max(1, int(round((2.0 * hop_s if window_s is None else window_s) * sample_rate)))
    n = int(np.ceil(len(x) / hop)) if len(x) else 0
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    # Running sum of squares in float64 (exact enough over hours of audio), built block by
    # block so the only full-length temporary is the sum itself.
    cum = np.empty(len(x) + 1, dtype=np.float64)
    cum[0] = 0.0
    for start in range(0, len(x), _BLOCK):
        block = x[start : start + _BLOCK].astype(np.float64)
        part = cum[start + 1 : start + 1 + len(block)]
        np.cumsum(block * block, out=part)
        part += cum[start]
    centres = np.round(np.arange(n) * hop).astype(np.int64)
    start = centres - win // 2 if centred else centres
    lo = np.clip(start, 0, len(x))
    hi = np.clip(start + win, 0, len(x))
    return np.sqrt((cum[hi] - cum[lo]) / win).astype(np.float32)



def frame_rms(audio: NDArray[np.floating], sample_rate: int, frame_s: float,
              n_frames: int | None = None) -> NDArray[np.float64]:
    """Linear RMS of consecutive spans ``[i * frame_s, (i + 1) * frame_s)``, shape ``(n_frames,)``.

    The envelope for things counted per frame: one value per video frame, aligned
    to the samples shown with it (lip sync), or fixed non-overlapping frames
    (speech activity). ``n_frames`` defaults to the whole frames the audio holds;
    frames past the end of the audio are 0.
    """
    if sample_rate <= 0 or frame_s <= 0:
        raise ValueError(f"sample_rate and frame_s must be positive, got {sample_rate}, {frame_s}")
    x = np.asarray(audio).reshape(-1)
    count = int(x.size // (frame_s * sample_rate)) if n_frames is None else int(n_frames)
    if count < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    rms = np.zeros(count, dtype=np.float64)
    if x.size and count:
        env = rms_envelope(x, sample_rate, frame_s, window_s=frame_s, centred=False)[:count]
        rms[: env.size] = env
    return rms
