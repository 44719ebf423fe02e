"""Video frames on the audio timeline: which frames a span shows, and the audio a run of frames covers.

Lip sync (rendering) and QC (measuring) both send a model a slice of frames
with the audio of the same span; they must agree on which frames belong to a
time window and which samples belong to a slice, or QC would measure a
different alignment than lip sync rendered.
"""

from __future__ import annotations

import math

import numpy as np

#: Frame timestamps within this much of a window edge count as on the edge (float timestamps).
EDGE_TOLERANCE_S = 1e-3


def window_frame_range(start_s: float, end_s: float, fps: float) -> tuple[int, int]:
    """Frame indices ``[first, last)`` shown in ``[start_s, end_s)`` (frame k at k/fps)."""
    return math.ceil(start_s * fps - EDGE_TOLERANCE_S), math.ceil(end_s * fps - EDGE_TOLERANCE_S)


def audio_for_frames(audio: np.ndarray, rate: int, start_s: float, n_frames: int, fps: float) -> np.ndarray:
    """The samples shown with ``n_frames`` frames from ``start_s`` (seconds into ``audio``), zero-padded.

    At least one sample, so a model always gets a non-empty clip.
    """
    a = max(0, int(round(start_s * rate)))
    b = max(a + 1, int(round((start_s + n_frames / fps) * rate)))
    clip = np.zeros(b - a, dtype=np.float32)
    piece = audio[a:b]
    clip[: piece.size] = piece
    return clip
