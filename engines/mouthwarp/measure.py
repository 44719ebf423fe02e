"""Measuring lip sync: the mouth in video and the audio level, one value per video frame.

:func:`measure_mouth_signal` goes from video to mouth darkness per frame (QC, benchmarks);
:func:`frame_levels_db` gives the audio's level over each frame's span, the input of the
openness curve and the other side of a sync measurement (correlate the two, or search the
AV offset over them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from engines.dsp.envelope import frame_rms
from engines.mouthwarp.checks import check_rates
from engines.mouthwarp.config import MouthWarpConfig
from engines.mouthwarp.geometry import mouth_geometry
from engines.mouthwarp.tracker import FaceBox, FaceTracker

__all__ = ["SILENCE_DB", "frame_levels_db", "measure_mouth_signal"]

#: Level reported for a frame without any audio sample (or digital silence): far below any
#: sensible silence floor, but finite so that arithmetic on it stays NaN-free.
SILENCE_DB = -200.0
#: Added to the RMS before the log, so an all-zero window gives ``SILENCE_DB``.
_AMPLITUDE_EPS = 1e-10
#: Rec. 601 luma weights for RGB, used to measure mouth darkness.
_LUMA_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: The mouth-signal area spans this fraction of the mouth region's width (the inner part, where
#: the gap is tallest) ...
MEASURE_WIDTH = 0.6
#: ... and the widest gap plus this many pixels above and below.
MEASURE_MARGIN_PX = 1.0


def frame_levels_db(audio: NDArray[np.floating], sample_rate: int, fps: float, n_frames: int) -> NDArray[np.float64]:
    """RMS level in dBFS of each video frame's audio span ``[i/fps, (i+1)/fps)``, shape (n_frames,).

    Why exactly the frame's span: lip sync needs one value per video frame, aligned to the
    samples shown with that frame (:func:`engines.dsp.frame_rms`). Frames past the end of
    the audio, and digital silence, get ``SILENCE_DB``.
    """
    check_rates(sample_rate, fps)
    rms = frame_rms(np.asarray(audio, dtype=np.float64).reshape(-1), sample_rate, 1.0 / fps, n_frames)
    return np.maximum(20.0 * np.log10(rms + _AMPLITUDE_EPS), SILENCE_DB)


def measure_mouth_signal(
    frames: NDArray[np.uint8],
    boxes: Sequence[FaceBox | None] | NDArray[np.floating] | FaceTracker,
    config: MouthWarpConfig | None = None,
) -> NDArray[np.float64]:
    """Mouth darkness per frame (N,): mean of ``1 - luma/255`` in the lip gap area; NaN without face.

    Why darkness: an open mouth shows the dark oral cavity, in real footage and in this
    engine's output alike, so the signal rises with the opening; correlate it with the audio
    level per frame (:func:`frame_levels_db`) for a sync score, or cross-correlate the two to
    find the AV offset. The area is an ellipse around the lip line, as wide as the inner
    ``MEASURE_WIDTH`` of the mouth region and as tall as the widest opening.

    ``boxes``: one :class:`FaceBox` (or ``None``) per frame, an (N, 4) array of x, y, w, h
    (NaN rows for no face), or a :class:`FaceTracker`, which is run over ``frames`` (reset first).
    """
    cfg = config or (boxes.config if isinstance(boxes, FaceTracker) else MouthWarpConfig())
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8 RGB, got shape {arr.shape} dtype {arr.dtype}")
    if isinstance(boxes, FaceTracker):
        box_list: list[FaceBox | None] = boxes.track(arr)
    elif isinstance(boxes, np.ndarray):
        if boxes.shape != (arr.shape[0], 4):
            raise ValueError(f"boxes array must be (N, 4) = ({arr.shape[0]}, 4), got {boxes.shape}")
        box_list = [None if not np.all(np.isfinite(b)) else FaceBox(*map(float, b)) for b in boxes]
    else:
        box_list = list(boxes)
        if len(box_list) != arr.shape[0]:
            raise ValueError(f"need one box (or None) per frame: {arr.shape[0]} frames, {len(box_list)} boxes")
    out = np.full(arr.shape[0], np.nan, dtype=np.float64)
    for i, box in enumerate(box_list):
        if box is None:
            continue
        g = mouth_geometry(box, cfg)
        full_gap = cfg.max_open * box.h
        half_w = MEASURE_WIDTH * g.half_w
        half_h = 0.5 * full_gap + MEASURE_MARGIN_PX
        mid = g.cy + (0.5 - cfg.upper_lip_share) * full_gap  # centre of the widest gap
        x0, x1 = max(0, int(math.floor(g.cx - half_w))), min(arr.shape[2], int(math.ceil(g.cx + half_w)) + 1)
        y0, y1 = max(0, int(math.floor(mid - half_h))), min(arr.shape[1], int(math.ceil(mid + half_h)) + 1)
        if x1 <= x0 or y1 <= y0:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        ellipse = ((xx - g.cx) / half_w) ** 2 + ((yy - mid) / half_h) ** 2 <= 1.0
        if not ellipse.any():
            continue
        luma = arr[i, y0:y1, x0:x1].astype(np.float32) @ _LUMA_RGB
        out[i] = float(1.0 - luma[ellipse].mean() / 255.0)
    return out
