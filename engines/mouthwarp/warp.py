"""The warp: open the mouth of each frame by a given amount, and the batch-first engine.

Inside a region placed relative to the face box (two half-ellipses meeting at the lip line,
:mod:`engines.mouthwarp.geometry`), the upper lip moves up and the lower lip and chin move
down by a backward map for ``cv2.remap`` that is the identity on the region's border, the gap
between the lips is filled with a dark inner-mouth colour, and the result is composited with
a Gaussian-feathered mask. Pixels outside :func:`~engines.mouthwarp.geometry.mouth_region`
are never written; frames whose openness is (near) zero are returned untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from engines.mouthwarp.checks import batch_lengths, check_clip, check_rates
from engines.mouthwarp.config import MouthWarpConfig
from engines.mouthwarp.geometry import mouth_geometry, mouth_region
from engines.mouthwarp.openness import PhonemeTiming, mouth_openness
from engines.mouthwarp.tracker import FaceBox, FaceTracker

__all__ = ["MouthWarp"]

#: Mouth openings smaller than this many pixels are not drawn (invisible; keeps silence exact).
MIN_OPENING_PX = 0.35
#: How much lighter the inner mouth is at the lips than in the middle of the gap (0 = flat).
INNER_SHADING = 0.35


def _warp_frame(frame: NDArray[np.uint8], box: FaceBox, openness: float, cfg: MouthWarpConfig) -> NDArray[np.uint8]:
    """Open the mouth of one frame by ``openness``; returns a new frame (input untouched)."""
    g = mouth_geometry(box, cfg)
    opening = float(openness) * cfg.max_open * box.h
    if opening < MIN_OPENING_PX:
        return frame.copy()
    x0, y0, x1, y1 = mouth_region(box, frame.shape, cfg)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return frame.copy()
    roi = np.ascontiguousarray(frame[y0:y1, x0:x1])
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    # Column profile: u in [-1, 1] across the mouth; each column's region is the vertical chord
    # of two half-ellipses (semi-axes up/down) meeting at the lip line, so the warp is the
    # identity on the region's border and needs no hard edge.
    u = (xs - g.cx) / g.half_w
    chord = np.sqrt(np.clip(1.0 - u * u, 0.0, None))  # (1, W)
    reach_up = g.up * chord
    reach_down = g.down * chord
    shape = chord * chord  # opening profile: widest at the centre, closed at the corners
    open_up = cfg.upper_lip_share * opening * shape
    open_down = (1.0 - cfg.upper_lip_share) * opening * shape
    t = ys - g.cy  # (H, 1): distance below the lip line
    with np.errstate(divide="ignore", invalid="ignore"):
        # Backward map: an output row at distance s from the lip line shows the source row at
        # (s - e) / (1 - e / reach) (0 at the lip line, identity at the region's edge).
        src_down = (t - open_down) / (1.0 - open_down / reach_down)
        src_up = (t + open_up) / (1.0 - open_up / reach_up)
    inside = chord > 0
    lower = inside & (t >= open_down) & (t < reach_down)
    upper = inside & (t <= -open_up) & (t > -reach_up)
    gap = inside & (t > -open_up) & (t < open_down)
    src_t = np.where(lower, src_down, np.where(upper, src_up, np.where(gap, 0.0, t)))
    map_y = (g.cy + src_t - y0).astype(np.float32)
    map_x = np.broadcast_to(xs - x0, map_y.shape).astype(np.float32)
    warped = cv2.remap(roi, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    warped = warped.astype(np.float32)
    # The gap between the lips: dark inner mouth. Each pixel row [t - 1/2, t + 1/2] takes the
    # colour in proportion to how much of it the gap covers (box-filter anti-aliasing), so a gap
    # thinner than a pixel near the mouth corners fades out instead of leaving a dark line.
    cover = np.minimum(t + 0.5, open_down) - np.maximum(t - 0.5, -open_up)
    # Deepest in the middle of the gap, a little lighter towards the lips (the cavity's shading).
    half_gap = np.maximum(0.5 * (open_up + open_down), 1e-6)
    depth = 1.0 - INNER_SHADING * np.clip((t - 0.5 * (open_down - open_up)) / half_gap, -1.0, 1.0) ** 2
    gap_alpha = np.clip(cover, 0.0, 1.0) * inside * depth * cfg.inner_mouth_strength
    inner = np.asarray(cfg.inner_mouth_rgb, dtype=np.float32)
    warped += gap_alpha[..., None] * (inner - warped)
    # Feathered composite: the region's shape inset by one sigma, Gaussian-blurred, so the mask
    # is nearly 0 on the region's border (where the warp is already the identity) and the mouth
    # corners fade out instead of ending on an edge. Zero beyond the ROI's margin.
    inset = g.sigma
    u_in = (xs - g.cx) / max(g.half_w - inset, 1e-3)
    chord_in = np.sqrt(np.clip(1.0 - u_in * u_in, 0.0, None))
    region = ((chord_in > 0) & (t > -(g.up - inset) * chord_in) & (t < (g.down - inset) * chord_in)).astype(np.float32)
    k = 2 * g.radius + 1
    mask = cv2.GaussianBlur(region, (k, k), g.sigma, borderType=cv2.BORDER_CONSTANT)
    base = roi.astype(np.float32)
    blended = base + mask[..., None] * (warped - base)
    out = frame.copy()
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


class MouthWarp:
    """Batch-first mouth-warp lip sync (see :mod:`engines.mouthwarp` for the method)."""

    def __init__(self, config: MouthWarpConfig | None = None) -> None:
        self.config = config or MouthWarpConfig()

    def render(
        self,
        frames: NDArray[np.uint8],
        audio: NDArray[np.floating],
        sample_rate: int,
        fps: float,
        frame_lengths: NDArray[np.integer] | Sequence[int] | None = None,
        audio_lengths: NDArray[np.integer] | Sequence[int] | None = None,
        phoneme_timings: Sequence[Sequence[PhonemeTiming] | None] | None = None,
    ) -> tuple[NDArray[np.uint8], NDArray[np.int64]]:
        """Lip-sync a padded batch of clips; returns ``(frames, frame_lengths)``.

        ``frames`` (B, N, H, W, 3) uint8 RGB padded to the longest clip, ``audio`` (B, T) float
        padded likewise, ``frame_lengths`` / ``audio_lengths`` (B,) the valid counts (default:
        all). ``phoneme_timings`` optionally gives per clip a list of ``(start_s, end_s, label)``.
        Each clip is rendered independently (its own face tracker), so a batch equals its clips
        rendered one by one; padding frames are returned as given.
        """
        arr = np.asarray(frames)
        wav = np.asarray(audio)
        if arr.ndim != 5 or arr.shape[-1] != 3:
            raise ValueError(f"frames must be a padded batch (B, N, H, W, 3), got shape {arr.shape}; "
                             "use render_clip for a single (N, H, W, 3) clip")
        if wav.ndim != 2:
            raise ValueError(f"audio must be a padded batch (B, T), got shape {wav.shape}; "
                             "use render_clip for a single (T,) clip")
        if wav.shape[0] != arr.shape[0]:
            raise ValueError(f"batch sizes differ: {arr.shape[0]} clips of frames, {wav.shape[0]} of audio")
        if arr.shape[1] == 0 or wav.shape[1] == 0:
            raise ValueError(f"empty input: {arr.shape[1]} frames and {wav.shape[1]} audio samples per clip; "
                             "lip sync needs at least one frame and one sample")
        n_lens = batch_lengths(frame_lengths, arr.shape[0], arr.shape[1], "frame_lengths")
        a_lens = batch_lengths(audio_lengths, wav.shape[0], wav.shape[1], "audio_lengths")
        if phoneme_timings is not None and len(phoneme_timings) != arr.shape[0]:
            raise ValueError(f"phoneme_timings needs one entry (or None) per clip: {arr.shape[0]} clips, "
                             f"{len(phoneme_timings)} entries")
        check_rates(sample_rate, fps)
        out = arr.copy()
        for b in range(arr.shape[0]):
            timings = phoneme_timings[b] if phoneme_timings is not None else None
            out[b, : n_lens[b]] = self.render_clip(
                arr[b, : n_lens[b]], wav[b, : a_lens[b]], sample_rate, fps, phoneme_timings=timings
            )
        return out, n_lens

    def render_clip(
        self,
        frames: NDArray[np.uint8],
        audio: NDArray[np.floating],
        sample_rate: int,
        fps: float,
        phoneme_timings: Sequence[PhonemeTiming] | None = None,
    ) -> NDArray[np.uint8]:
        """Lip-sync one clip: ``frames`` (N, H, W, 3) uint8 RGB, ``audio`` (T,) float in [-1, 1]."""
        arr = check_clip(frames)
        openness = mouth_openness(audio, sample_rate, fps, arr.shape[0], self.config, phoneme_timings)
        return self.warp_clip(arr, openness)

    def warp_clip(self, frames: NDArray[np.uint8], openness: NDArray[np.floating],
                  boxes: Sequence[FaceBox | None] | None = None) -> NDArray[np.uint8]:
        """Open the mouth of each frame by ``openness[i]`` in [0, 1] (for callers with their own
        openness curve, e.g. from visemes). Frames without a face or at openness 0 are copied.
        ``boxes`` (one per frame, from :meth:`FaceTracker.track`) skips tracking, for callers
        that also need the boxes."""
        arr = check_clip(frames)
        amount = np.asarray(openness, dtype=np.float64).reshape(-1)
        if amount.size != arr.shape[0]:
            raise ValueError(f"need one openness per frame: {arr.shape[0]} frames, {amount.size} values")
        if not np.all(np.isfinite(amount)) or amount.min(initial=0.0) < 0 or amount.max(initial=0.0) > 1:
            raise ValueError("openness values must be finite and in [0, 1]")
        if boxes is None:
            boxes = FaceTracker(self.config).track(arr)
        elif len(boxes) != arr.shape[0]:
            raise ValueError(f"need one box (or None) per frame: {arr.shape[0]} frames, {len(boxes)} boxes")
        out = np.empty_like(arr)
        for i, (frame, box) in enumerate(zip(arr, boxes)):
            out[i] = frame if box is None else _warp_frame(frame, box, float(amount[i]), self.config)
        return out
