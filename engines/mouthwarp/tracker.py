"""Face tracking: the Haar frontal-face cascade every few frames, template matching between.

:class:`FaceTracker` finds the face with OpenCV's Haar frontal-face cascade on a downscaled
grey frame every ``detect_every`` frames and follows it in between with normalised template
matching, smooths the box with an exponential moving average, holds it for a few frames when
detection misses, and reports ``None`` when there is no face (or when the picture cuts away).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

from engines.mouthwarp.checks import check_frame
from engines.mouthwarp.config import MouthWarpConfig

__all__ = ["FACE_CASCADE_FILE", "FaceBox", "FaceTracker"]

#: The cascade file inside ``cv2.data.haarcascades`` (shipped by opencv-python-headless < 5).
FACE_CASCADE_FILE = "haarcascade_frontalface_default.xml"
#: Floor of the detector's minSize: the cascade's own window is 24 px, nothing smaller is found.
_MIN_DETECT_PX = 24


class FaceBox(NamedTuple):
    """A face box in full-resolution pixel coordinates (floats: boxes are smoothed)."""

    x: float
    y: float
    w: float
    h: float

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + 0.5 * self.w, self.y + 0.5 * self.h)

    def iou(self, other: FaceBox) -> float:
        """Intersection over union; 0 for disjoint boxes."""
        ix = max(0.0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0.0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.w * self.h + other.w * other.h - inter
        return inter / union if union > 0 else 0.0


def _load_cascade() -> cv2.CascadeClassifier:
    path = cv2.data.haarcascades + FACE_CASCADE_FILE
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(
            f"could not load the Haar face cascade {path}; install opencv-python-headless<5 "
            "(OpenCV 5 no longer ships the cascades)"
        )
    return cascade


class FaceTracker:
    """Follows the main face of a clip, one frame at a time.

    Why detect-and-track: a full-frame Haar search costs about 20-30 ms on a 256x256 or a
    downscaled 640x360 frame (2 CPU threads), template matching under half a millisecond. So
    the detector runs every ``detect_every`` frames, and once a face is held it searches only
    around it at nearby sizes (several times cheaper); template matching fills the frames in
    between. The tracker is stateful (one per clip); :meth:`reset` or :meth:`track` starts afresh.
    """

    def __init__(self, config: MouthWarpConfig | None = None) -> None:
        self.config = config or MouthWarpConfig()
        self._cascade = _load_cascade()
        self.reset()

    def reset(self) -> None:
        """Forget the face (use between clips: state must not leak from one clip to the next)."""
        self._box: FaceBox | None = None
        self._template: NDArray[np.uint8] | None = None
        self._template_box: FaceBox | None = None  # the detected box the template was cut from
        self._template_origin = (0, 0)  # its top-left corner in detection pixels
        self._anchor: FaceBox | None = None  # last measured (unsmoothed) box: centre of the search
        self._since_detect = 0
        self._misses = 0

    # -- public --------------------------------------------------------------------------------

    def update(self, frame: NDArray[np.uint8]) -> FaceBox | None:
        """Box of the face in ``frame`` (H, W, 3) RGB uint8, or ``None`` when there is none."""
        check_frame(frame)
        cfg = self.config
        grey, scale = self._small_grey(frame)
        measured: FaceBox | None = None
        detected = False
        if self._box is None or self._misses > 0 or self._since_detect >= cfg.detect_every - 1:
            cand = self._detect(grey, scale, frame.shape[:2])
            if cand is not None:
                measured, detected = cand, True
                self._since_detect = 0
                self._misses = 0
                self._set_template(grey, cand, scale)
            elif self._box is not None:
                self._misses += 1
        if not detected and self._box is not None:
            self._since_detect += 1
            tracked, score = self._match(grey, scale)
            if score < cfg.track_cut_score or self._misses > cfg.max_missed_frames:
                self.reset()
                return None
            if score >= cfg.track_min_score:
                measured = tracked
            # else: hold the previous box for this frame
        if measured is not None:
            self._smooth(measured)
        return self._box

    def track(self, frames: NDArray[np.uint8]) -> list[FaceBox | None]:
        """Boxes for every frame of a clip (N, H, W, 3); resets the tracker first."""
        if frames.ndim != 4:
            raise ValueError(f"frames must be (N, H, W, 3) uint8 RGB, got shape {frames.shape}")
        self.reset()
        return [self.update(f) for f in frames]

    # -- internals -----------------------------------------------------------------------------

    def _small_grey(self, frame: NDArray[np.uint8]) -> tuple[NDArray[np.uint8], float]:
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.config.detect_max_side / max(frame.shape[:2]))
        if scale < 1.0:
            size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
            grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
            scale = grey.shape[1] / frame.shape[1]
        return grey, scale

    def _detect(self, grey: NDArray[np.uint8], scale: float, shape: tuple[int, int]) -> FaceBox | None:
        cfg = self.config
        min_side = max(_MIN_DETECT_PX, int(round(cfg.detect_min_size * min(shape) * scale)))
        max_side = 0  # 0: no upper bound (OpenCV's convention)
        ox = oy = 0
        if self._box is not None:
            # Re-detection near a known face: search only around it and only at nearby sizes.
            # Several times cheaper than a full-frame search (the pyramid is the cost).
            b = self._box
            grow = cfg.redetect_margin
            ox = max(0, int(math.floor((b.x - grow * b.w) * scale)))
            oy = max(0, int(math.floor((b.y - grow * b.h) * scale)))
            ex = min(grey.shape[1], int(math.ceil((b.x + (1 + grow) * b.w) * scale)))
            ey = min(grey.shape[0], int(math.ceil((b.y + (1 + grow) * b.h) * scale)))
            grey = grey[oy:ey, ox:ex]
            side = min(b.w, b.h) * scale
            min_side = max(min_side, int(math.floor(side / cfg.redetect_size_ratio)))
            max_side = int(math.ceil(side * cfg.redetect_size_ratio))
            if grey.shape[0] < min_side or grey.shape[1] < min_side:
                return None
        rects, neighbours = self._cascade.detectMultiScale2(
            grey,
            scaleFactor=cfg.detect_scale_factor,
            minNeighbors=cfg.detect_min_neighbors,
            minSize=(min_side, min_side),
            maxSize=(max_side, max_side),
        )
        if len(rects) == 0:
            return None
        rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4) + np.array([ox, oy, 0, 0], dtype=np.float64)
        support = np.asarray(neighbours, dtype=np.float64).reshape(-1)
        # Detector threads may return candidates in any order: sort for determinism.
        order = np.lexsort((rects[:, 3], rects[:, 2], rects[:, 1], rects[:, 0]))
        rects, support = rects[order], support[order]
        keep = support >= cfg.detect_support_ratio * support.max()
        rects = rects[keep] / scale
        boxes = [FaceBox(*map(float, r)) for r in rects]
        if self._box is not None:
            cx, cy = self._box.center
            return min(boxes, key=lambda b: (b.center[0] - cx) ** 2 + (b.center[1] - cy) ** 2)
        return max(boxes, key=lambda b: b.w * b.h)

    def _set_template(self, grey: NDArray[np.uint8], box: FaceBox, scale: float) -> None:
        x0, y0, x1, y1 = _int_rect(box, scale, grey.shape)
        self._template = grey[y0:y1, x0:x1].copy() if (x1 - x0 >= 4 and y1 - y0 >= 4) else None
        self._template_box = box
        self._template_origin = (x0, y0)
        self._anchor = box

    def _match(self, grey: NDArray[np.uint8], scale: float) -> tuple[FaceBox, float]:
        """Best template position near the last measured box, and its normalised correlation.

        The measurement is the detected box the template was cut from, moved by the template's
        shift, so tracking adds no drift of its own on a still picture.
        """
        box = self._anchor
        tpl = self._template
        if tpl is None or box is None:
            assert self._box is not None
            return self._box, 1.0  # nothing to compare against: trust the detector's last box
        th, tw = tpl.shape
        pad_x = self.config.track_search * box.w * scale
        pad_y = self.config.track_search * box.h * scale
        sx0 = max(0, int(math.floor(box.x * scale - pad_x)))
        sy0 = max(0, int(math.floor(box.y * scale - pad_y)))
        sx1 = min(grey.shape[1], int(math.ceil((box.x + box.w) * scale + pad_x)))
        sy1 = min(grey.shape[0], int(math.ceil((box.y + box.h) * scale + pad_y)))
        if sx1 - sx0 < tw or sy1 - sy0 < th:
            return box, 0.0
        window = grey[sy0:sy1, sx0:sx1]
        if float(window.std()) < 1e-6 or float(tpl.std()) < 1e-6:
            return box, 0.0  # flat picture (fade to black, blank frame): no face there
        result = cv2.matchTemplate(window, tpl, cv2.TM_CCOEFF_NORMED)
        result = np.nan_to_num(result, nan=0.0, posinf=0.0, neginf=0.0)
        _, score, _, (mx, my) = cv2.minMaxLoc(result)
        tb = self._template_box
        dx = (sx0 + mx - self._template_origin[0]) / scale
        dy = (sy0 + my - self._template_origin[1]) / scale
        moved = FaceBox(tb.x + dx, tb.y + dy, tb.w, tb.h)
        if score >= self.config.track_min_score:
            self._anchor = moved
        return moved, float(score)

    def _smooth(self, measured: FaceBox) -> None:
        prev = self._box
        a = self.config.box_smoothing
        if prev is None or prev.iou(measured) < self.config.box_reset_iou:
            self._box = measured
            return
        self._box = FaceBox(*(a * p + (1.0 - a) * m for p, m in zip(prev, measured, strict=True)))


def _int_rect(box: FaceBox, scale: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x0 = min(max(0, int(round(box.x * scale))), shape[1])
    y0 = min(max(0, int(round(box.y * scale))), shape[0])
    x1 = min(max(0, int(round((box.x + box.w) * scale))), shape[1])
    y1 = min(max(0, int(round((box.y + box.h) * scale))), shape[0])
    return x0, y0, x1, y1
