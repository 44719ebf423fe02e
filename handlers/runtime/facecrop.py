"""Face crops for crop-based lip sync: cut the face out as the model was trained, paste its mouth back.

Wav2Lip sees a 96x96 crop of the face box, padded as the published inference
wrapper pads it (10 px below the box, for the chin), and re-draws the crop's
lower half. Pasting the whole crop back over an HD frame, as the published
wrapper does, shows a blurry square with a hard edge. Here only the mouth is
pasted: an ellipse over the lower half of the box, feathered to nothing at its
rim, after the re-drawn pixels' mean colour is matched to the frame's there.
Every pixel outside that ellipse keeps its exact value.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

#: Padding of the face box before cropping, in pixels (top, bottom, left, right): the
#: published wrapper's default, which takes in the chin.
PADS = (0, 10, 0, 0)
#: The pasted ellipse, in fractions of the padded box: centre and radii. Centred on the
#: mouth (the lip line sits at about 0.8 of a frontal face box), it spans lips, jaw and
#: chin of the half the model re-draws, and keeps the nose, cheeks and jaw line.
MOUTH_CENTRE = (0.5, 0.80)
MOUTH_RADII = (0.30, 0.20)
#: Width of the feathered rim, as a fraction of the ellipse's radius: the blend weight
#: falls smoothly from 1 to 0 over it, so there is no edge to see.
FEATHER = 0.35
#: Smallest box side worth cropping, in pixels (below this the mouth is a few pixels).
MIN_BOX_PX = 12


@dataclass(frozen=True)
class CropBox:
    """The padded face box in frame pixels, ``[y0, y1) x [x0, x1)``."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def crop_box(box: NDArray[np.floating], frame_shape: tuple[int, ...]) -> CropBox | None:
    """The padded, frame-clipped crop of a face box ``(x, y, w, h)``; ``None`` for no face (NaN) or a tiny one."""
    x, y, w, h = (float(v) for v in box)
    if not all(np.isfinite((x, y, w, h))):
        return None
    top, bottom, left, right = PADS
    height, width = frame_shape[:2]
    x0, y0 = max(0, int(round(x - left))), max(0, int(round(y - top)))
    x1, y1 = min(width, int(round(x + w + right))), min(height, int(round(y + h + bottom)))
    if x1 - x0 < MIN_BOX_PX or y1 - y0 < MIN_BOX_PX:
        return None
    return CropBox(x0, y0, x1, y1)


def crop_face(frame: NDArray[np.uint8], region: CropBox, size: int) -> NDArray[np.uint8]:
    """The region resized to ``size x size`` (area interpolation: it is almost always a downscale)."""
    patch = frame[region.y0:region.y1, region.x0:region.x1]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def mouth_bounds(region: CropBox) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` in frame pixels of the rectangle around the pasted ellipse."""
    cx, cy = MOUTH_CENTRE
    rx, ry = MOUTH_RADII
    x0 = region.x0 + int(np.floor((cx - rx) * region.width))
    x1 = region.x0 + int(np.ceil((cx + rx) * region.width))
    y0 = region.y0 + int(np.floor((cy - ry) * region.height))
    y1 = region.y0 + int(np.ceil((cy + ry) * region.height))
    return max(region.y0, y0), min(region.y1, y1), max(region.x0, x0), min(region.x1, x1)


def mouth_weights(region: CropBox, bounds: tuple[int, int, int, int]) -> NDArray[np.float32]:
    """Blend weight per pixel of the bounds: 1 inside the ellipse, a smooth rim, exactly 0 outside."""
    y0, y1, x0, x1 = bounds
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - region.y0) / region.height
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - region.x0) / region.width
    d = np.sqrt(((xs[None, :] - MOUTH_CENTRE[0]) / MOUTH_RADII[0]) ** 2
                + ((ys[:, None] - MOUTH_CENTRE[1]) / MOUTH_RADII[1]) ** 2)
    t = np.clip((1.0 - d) / FEATHER, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)  # smoothstep


def paste_mouth(frame: NDArray[np.uint8], generated: NDArray[np.uint8], region: CropBox) -> NDArray[np.uint8]:
    """``frame`` with the mouth of the re-drawn crop blended in; every pixel outside the ellipse unchanged."""
    out = frame.copy()
    bounds = mouth_bounds(region)
    y0, y1, x0, x1 = bounds
    if y1 <= y0 or x1 <= x0:
        return out
    full = cv2.resize(generated, (region.width, region.height), interpolation=cv2.INTER_CUBIC)
    redrawn = full[y0 - region.y0:y1 - region.y0, x0 - region.x0:x1 - region.x0].astype(np.float32)
    original = frame[y0:y1, x0:x1].astype(np.float32)
    weights = mouth_weights(region, bounds)
    total = float(weights.sum())
    if total <= 0:
        return out
    # The model's colours drift from the frame's (grading, white balance, its 96 px world):
    # shift the re-drawn mouth to the frame's mean colour where it is pasted.
    shift = ((original - redrawn) * weights[..., None]).sum(axis=(0, 1)) / total
    blended = original + weights[..., None] * (redrawn + shift - original)
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
