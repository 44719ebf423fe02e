"""Where the mouth is: the warped region placed relative to a face box.

Shared by the warp (which pixels it moves) and the measurement (where it looks for the gap
between the lips), so both agree on the mouth's place.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from engines.mouthwarp.config import MouthWarpConfig
from engines.mouthwarp.tracker import FaceBox

__all__ = ["MouthGeometry", "mouth_geometry", "mouth_region"]

#: Smallest feather sigma in pixels: below it the blur would no longer soften a 1-px step.
_MIN_FEATHER_PX = 0.5
#: Gaussian kernel reaches this many sigmas each side before it is cut off.
_FEATHER_SIGMAS = 3.0


class MouthGeometry(NamedTuple):
    """The mouth region of one face box, in full-frame pixels."""

    cx: float  # mouth centre x (full-frame pixels)
    cy: float  # lip line y
    half_w: float  # half width of the warped region
    up: float  # reach above the lip line
    down: float  # reach below the lip line
    sigma: float  # feather sigma
    radius: int  # feather kernel radius


def mouth_geometry(box: FaceBox, cfg: MouthWarpConfig) -> MouthGeometry:
    sigma = max(_MIN_FEATHER_PX, cfg.feather * box.h)
    return MouthGeometry(
        cx=box.x + cfg.mouth_center_x * box.w,
        cy=box.y + cfg.mouth_center_y * box.h,
        half_w=0.5 * cfg.mouth_width * box.w,
        up=cfg.upper_extent * box.h,
        down=cfg.lower_extent * box.h,
        sigma=sigma,
        radius=int(math.ceil(_FEATHER_SIGMAS * sigma)),
    )


def mouth_region(box: FaceBox, frame_shape: tuple[int, ...], config: MouthWarpConfig | None = None) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (exclusive ends, clipped to the frame): the only pixels a warp may change.

    It is the bounding rectangle of the warped mouth region grown by the feather kernel radius.
    """
    g = mouth_geometry(box, config or MouthWarpConfig())
    pad = g.radius + 1
    h, w = frame_shape[:2]
    x0 = max(0, int(math.floor(g.cx - g.half_w)) - pad)
    x1 = min(w, int(math.ceil(g.cx + g.half_w)) + pad + 1)
    y0 = max(0, int(math.floor(g.cy - g.up)) - pad)
    y1 = min(h, int(math.ceil(g.cy + g.down)) + pad + 1)
    return x0, y0, max(x0, x1), max(y0, y1)
