"""Mouth-warp lip sync: the reference lip-sync engine that needs no weights.

Why it exists: Wav2Lip needs a checkpoint that cannot be downloaded everywhere, and a
dubbing pipeline still has to move the lips with the new speech. This engine makes the
mouth open and close with the loudness of the dubbed audio (and, when phoneme timings are
known, closes on bilabials and opens wider on vowels). It is a plausible effect, not a
generative model: the mouth region is stretched by a smooth geometric warp and the gap
between the lips is darkened.

Pipeline per clip:

1. :class:`FaceTracker` finds the face with OpenCV's Haar frontal-face cascade on a
   downscaled grey frame every ``detect_every`` frames and follows it in between with
   normalised template matching (cheap: a real-time budget on CPU), smooths the box with an
   exponential moving average, holds it for a few frames when detection misses, and reports
   ``None`` when there is no face (or when the picture cuts away) so the frame passes through;
2. :func:`mouth_openness` turns the audio into one openness value in [0, 1] per video frame:
   RMS level in dBFS over exactly the frame's time span ``[i/fps, (i+1)/fps)``, mapped
   linearly between a silence floor and a speech level, attack/release smoothed, then shaped
   by phoneme classes when given;
3. :meth:`MouthWarp.warp_clip` opens the mouth: inside a region placed relative to the face
   box (two half-ellipses meeting at the lip line), the upper lip moves up and the lower lip
   and chin move down by a backward map for ``cv2.remap`` that is the identity on the region's
   border, the gap between the lips is filled with a dark inner-mouth colour, and the result is
   composited with a Gaussian-feathered mask. Pixels outside the feathered region are never
   written, so they stay bit-identical; frames whose openness is (near) zero are returned
   untouched.

:func:`measure_mouth_signal` goes the other way (video -> mouth darkness per frame) for QC and
benchmarks: correlate it with :func:`frame_levels_db` of the audio, or find the AV offset
with :func:`estimate_av_offset`.

Everything is deterministic (no randomness; detector candidates are sorted before choosing).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
from numpy.typing import NDArray

from engines.dsp.envelope import rms_envelope

__all__ = [
    "FaceBox",
    "FaceTracker",
    "MouthWarp",
    "MouthWarpConfig",
    "estimate_av_offset",
    "frame_levels_db",
    "measure_mouth_signal",
    "mouth_openness",
    "mouth_region",
    "phoneme_class",
]

#: The cascade file inside ``cv2.data.haarcascades`` (shipped by opencv-python-headless < 5).
FACE_CASCADE_FILE = "haarcascade_frontalface_default.xml"
#: Floor of the detector's minSize: the cascade's own window is 24 px, nothing smaller is found.
_MIN_DETECT_PX = 24
#: Level reported for a frame without any audio sample (or digital silence): far below any
#: sensible silence floor, but finite so that arithmetic on it stays NaN-free.
SILENCE_DB = -200.0
#: Added to the RMS before the log, so an all-zero window gives ``SILENCE_DB``.
_AMPLITUDE_EPS = 1e-10
#: Openness below this is rounded to exactly 0: the smoothing tails would otherwise leave
#: invisible sub-pixel warps on frames that should be bit-identical.
MIN_OPENNESS = 0.02
#: Mouth openings smaller than this many pixels are not drawn (invisible; keeps silence exact).
MIN_OPENING_PX = 0.35
#: Rec. 601 luma weights for RGB, used to measure mouth darkness.
_LUMA_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float32)
#: How much lighter the inner mouth is at the lips than in the middle of the gap (0 = flat).
INNER_SHADING = 0.35
#: The mouth-signal area spans this fraction of the mouth region's width (the inner part, where
#: the gap is tallest) ...
MEASURE_WIDTH = 0.6
#: ... and the widest gap plus this many pixels above and below.
MEASURE_MARGIN_PX = 1.0
#: Smallest feather sigma in pixels: below it the blur would no longer soften a 1-px step.
_MIN_FEATHER_PX = 0.5
#: Gaussian kernel reaches this many sigmas each side before it is cut off.
_FEATHER_SIGMAS = 3.0

#: ARPAbet vowels (stress digits are stripped before lookup).
_ARPABET_VOWELS = frozenset(
    {"aa", "ae", "ah", "ao", "aw", "ax", "axr", "ay", "eh", "er", "ey", "ih", "ix", "iy", "ow", "oy", "uh", "uw", "ux"}
)
#: IPA vowel letters (a label whose first letter is one of these is a vowel).
_IPA_VOWELS = frozenset("aeiouyɑɐɒæɛɜɞəɘɪɔʊʌɯøœɶɨʉɤɵ")
#: Bilabials in ARPAbet/IPA/letters, and the bilabial viseme names in common use
#: (Oculus/MPEG-4 ``PP``, Preston Blair ``MBP``).
_BILABIALS = frozenset({"p", "b", "m", "pp", "mbp", "bmp", "pb", "em", "bilabial", "pʰ", "ɓ", "m̥"})
#: Viseme and generic class names that mean "open vowel".
_VOWEL_NAMES = frozenset({"vowel", "aa", "a", "e", "i", "o", "u", "ai", "ei", "oh", "ee"})
#: Characters dropped before classifying a label (stress digits, IPA length and diacritics).
_LABEL_STRIP = re.compile(r"[0-9ːˑˈˌʰʷʲ̩̯̃\u0300-\u036f]")

VOWEL = "vowel"
BILABIAL = "bilabial"
OTHER = "other"

PhonemeTiming = tuple[float, float, str]


@dataclass(frozen=True)
class MouthWarpConfig:
    """Every knob of the mouth-warp engine. Fractions are of the face box unless said otherwise.

    The placement defaults were measured on ``skimage.data.astronaut()`` with this module's
    detector settings at 128-720 px: the lip centre lies at 0.79-0.87 of the Haar box height
    (0.80 at the 256 px test size), the lips span 0.38-0.43 of the box width.
    """

    # --- detection -------------------------------------------------------------------------
    #: Haar pyramid step (``scaleFactor``): smaller finds more sizes but costs more time.
    detect_scale_factor: float = 1.1
    #: Haar ``minNeighbors``: how many overlapping hits make a face; higher rejects more
    #: false positives (and more real faces).
    detect_min_neighbors: int = 5
    #: Smallest face to look for, as a fraction of the frame's shorter side: a mouth on a
    #: smaller face is too small to animate visibly, and skipping tiny scales saves time.
    detect_min_size: float = 0.08
    #: The grey frame is downscaled so that its longer side is at most this many pixels before
    #: detection: Haar cost grows with area, and faces worth animating survive the downscale.
    detect_max_side: int = 320
    #: Among detections, only those with at least this fraction of the best candidate's
    #: neighbour count are considered; this drops large, weakly supported false positives
    #: before "pick the largest".
    detect_support_ratio: float = 0.5
    #: Run the detector every N frames and track in between (the detector is the expensive
    #: part). While no face is held, the detector runs on every frame.
    detect_every: int = 5
    #: When a face is held, re-detection searches only the box grown by this fraction of its
    #: size on each side ...
    redetect_margin: float = 0.5
    #: ... and only face sizes within this ratio of the held box (both ways).
    redetect_size_ratio: float = 1.5
    # --- tracking ---------------------------------------------------------------------------
    #: Template search window around the previous box, as a fraction of the box size per side.
    track_search: float = 0.25
    #: A template match at least this good (normalised cross-correlation) moves the box.
    track_min_score: float = 0.6
    #: A best match below this means the picture cut away: drop the face at once, no hold.
    track_cut_score: float = 0.25
    #: Frames the last box is held (and tracked) after the detector stops finding the face.
    max_missed_frames: int = 3
    #: Weight of the previous box in the exponential moving average of boxes (0 = no smoothing).
    box_smoothing: float = 0.6
    #: A new measurement whose IoU with the smoothed box is below this resets the average
    #: (another face, or a cut): smoothing across it would slide the mouth over the picture.
    box_reset_iou: float = 0.3
    # --- mouth region -----------------------------------------------------------------------
    #: Horizontal centre of the mouth, fraction of face width from the box's left edge.
    mouth_center_x: float = 0.5
    #: Lip line (where the mouth opens), fraction of face height from the box's top edge.
    mouth_center_y: float = 0.80
    #: Width of the warped mouth region, fraction of face width.
    mouth_width: float = 0.45
    #: How far above the lip line the warp reaches (upper lip), fraction of face height.
    upper_extent: float = 0.10
    #: How far below the lip line the warp reaches (lower lip and chin), fraction of face height.
    lower_extent: float = 0.22
    #: Opening at openness 1, fraction of face height (the jaw drops about this much).
    max_open: float = 0.08
    #: Share of the opening taken by the upper lip moving up; the jaw does the rest.
    upper_lip_share: float = 0.25
    #: Gaussian sigma of the feathered composite mask, fraction of face height.
    feather: float = 0.025
    #: Colour of the inner mouth (RGB), blended into the gap between the lips.
    inner_mouth_rgb: tuple[int, int, int] = (45, 18, 22)
    #: How strongly the gap takes the inner-mouth colour (1 = solid colour).
    inner_mouth_strength: float = 0.85
    # --- audio -> openness ------------------------------------------------------------------
    #: Frame level (dBFS) at or below which the mouth is closed.
    silence_db: float = -45.0
    #: Frame level (dBFS) of full-voice speech: maps to openness ``gain`` (clipped to 1).
    speech_db: float = -18.0
    #: Scales the loudness-to-opening map; >1 opens fully at lower levels.
    gain: float = 1.0
    #: Attack time constant (s) of the openness smoother: how fast the mouth opens.
    attack_s: float = 0.015
    #: Release time constant (s): how fast it closes. Short, because lips close fast.
    release_s: float = 0.05
    #: Openness multiplier where a vowel is spoken (clipped to 1).
    vowel_boost: float = 1.3
    #: Openness multiplier during a bilabial (p, b, m): the lips meet.
    bilabial_factor: float = 0.0

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (self.detect_scale_factor > 1.0, f"detect_scale_factor must be > 1, got {self.detect_scale_factor}"),
            (self.detect_min_neighbors >= 0, f"detect_min_neighbors must be >= 0, got {self.detect_min_neighbors}"),
            (0.0 < self.detect_min_size < 1.0, f"detect_min_size must be in (0, 1), got {self.detect_min_size}"),
            (self.detect_max_side >= 32, f"detect_max_side must be >= 32 px, got {self.detect_max_side}"),
            (0.0 <= self.detect_support_ratio <= 1.0, f"detect_support_ratio must be in [0, 1], got {self.detect_support_ratio}"),
            (self.redetect_margin >= 0.0, f"redetect_margin must be >= 0, got {self.redetect_margin}"),
            (self.redetect_size_ratio > 1.0, f"redetect_size_ratio must be > 1, got {self.redetect_size_ratio}"),
            (self.detect_every >= 1, f"detect_every must be >= 1, got {self.detect_every}"),
            (0.0 < self.track_search <= 1.0, f"track_search must be in (0, 1], got {self.track_search}"),
            (-1.0 <= self.track_cut_score <= self.track_min_score <= 1.0,
             f"need -1 <= track_cut_score <= track_min_score <= 1, got {self.track_cut_score}, {self.track_min_score}"),
            (self.max_missed_frames >= 0, f"max_missed_frames must be >= 0, got {self.max_missed_frames}"),
            (0.0 <= self.box_smoothing < 1.0, f"box_smoothing must be in [0, 1), got {self.box_smoothing}"),
            (0.0 <= self.box_reset_iou <= 1.0, f"box_reset_iou must be in [0, 1], got {self.box_reset_iou}"),
            (0.0 < self.mouth_width <= 1.0, f"mouth_width must be in (0, 1], got {self.mouth_width}"),
            (self.upper_extent > 0 and self.lower_extent > 0, "upper_extent and lower_extent must be > 0"),
            (0.0 <= self.upper_lip_share <= 1.0, f"upper_lip_share must be in [0, 1], got {self.upper_lip_share}"),
            (self.max_open >= 0.0, f"max_open must be >= 0, got {self.max_open}"),
            # The warp is a monotone compression only while each lip moves less than the region
            # it compresses; keep a margin so the chin is squeezed, not folded.
            (self.max_open * self.upper_lip_share <= 0.75 * self.upper_extent,
             "max_open * upper_lip_share must be <= 0.75 * upper_extent (the upper lip would fold)"),
            (self.max_open * (1.0 - self.upper_lip_share) <= 0.75 * self.lower_extent,
             "max_open * (1 - upper_lip_share) must be <= 0.75 * lower_extent (the chin would fold)"),
            (self.feather > 0.0, f"feather must be > 0, got {self.feather}"),
            (all(0 <= c <= 255 for c in self.inner_mouth_rgb) and len(self.inner_mouth_rgb) == 3,
             f"inner_mouth_rgb must be three values in 0..255, got {self.inner_mouth_rgb}"),
            (0.0 <= self.inner_mouth_strength <= 1.0,
             f"inner_mouth_strength must be in [0, 1], got {self.inner_mouth_strength}"),
            (self.speech_db > self.silence_db,
             f"speech_db ({self.speech_db}) must be above silence_db ({self.silence_db})"),
            (self.gain > 0.0, f"gain must be > 0, got {self.gain}"),
            (self.attack_s >= 0.0 and self.release_s >= 0.0, "attack_s and release_s must be >= 0"),
            (self.vowel_boost >= 0.0 and self.bilabial_factor >= 0.0, "vowel_boost and bilabial_factor must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"MouthWarpConfig: {message}")


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


# ---------------------------------------------------------------------------------------------
# Face tracking
# ---------------------------------------------------------------------------------------------


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
        _check_frame(frame)
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


# ---------------------------------------------------------------------------------------------
# Audio -> openness
# ---------------------------------------------------------------------------------------------


def frame_levels_db(audio: NDArray[np.floating], sample_rate: int, fps: float, n_frames: int) -> NDArray[np.float64]:
    """RMS level in dBFS of each video frame's audio span ``[i/fps, (i+1)/fps)``, shape (n_frames,).

    Why exactly the frame's span: lip sync needs one value per video frame, aligned to the
    samples shown with that frame. The shared :func:`engines.dsp.rms_envelope` centres its
    window ``i`` on ``i * hop``; dropping the first half frame of samples and using a one-frame
    window moves that window onto ``[i/fps, (i+1)/fps)``. Frames past the end of the audio get
    ``SILENCE_DB``.
    """
    _check_rates(sample_rate, fps)
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    hop_s = 1.0 / fps
    half = int(round(0.5 * sample_rate * hop_s))
    rms = np.zeros(n_frames, dtype=np.float64)
    if x.size > half:
        env = rms_envelope(x[half:], sample_rate, hop_s, window_s=hop_s)[:n_frames]
        rms[: env.size] = env
    return np.maximum(20.0 * np.log10(rms + _AMPLITUDE_EPS), SILENCE_DB)


def phoneme_class(label: str) -> str:
    """``"vowel"``, ``"bilabial"`` or ``"other"`` for a phoneme or viseme label.

    Accepts ARPAbet (``AA1``, ``M``), IPA (``aː``, ``ɔ``, ``m``), single letters, viseme names
    (``PP``, ``MBP``, ``aa``, ``O``) and the class names themselves, case-insensitively.
    """
    raw = label.strip().lower()
    if raw in (VOWEL, BILABIAL, OTHER):
        return raw
    core = _LABEL_STRIP.sub("", raw)
    if not core:
        return OTHER
    if core in _BILABIALS or raw in _BILABIALS:
        return BILABIAL
    if core in _ARPABET_VOWELS or core in _VOWEL_NAMES or core[0] in _IPA_VOWELS:
        return VOWEL
    return OTHER


def _phoneme_factors(
    timings: Sequence[PhonemeTiming], fps: float, n_frames: int, config: MouthWarpConfig
) -> NDArray[np.float64]:
    """Per-frame openness multiplier: 1 + sum over classes of coverage * (factor - 1)."""
    factor_of = {VOWEL: config.vowel_boost, BILABIAL: config.bilabial_factor}
    factors = np.ones(n_frames, dtype=np.float64)
    starts = np.arange(n_frames, dtype=np.float64) / fps
    ends = starts + 1.0 / fps
    for k, item in enumerate(timings):
        try:
            start, end, label = item
            start, end = float(start), float(end)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"phoneme_timings[{k}] must be (start_s, end_s, label), got {item!r}") from exc
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ValueError(f"phoneme_timings[{k}] has start {start} and end {end}: need finite start <= end")
        if not isinstance(label, str):
            raise ValueError(f"phoneme_timings[{k}] label must be a string, got {label!r}")
        cls = phoneme_class(label)
        if cls not in factor_of or end == start:
            continue
        coverage = np.clip(np.minimum(ends, end) - np.maximum(starts, start), 0.0, None) * fps
        factors += coverage * (factor_of[cls] - 1.0)
    return np.maximum(factors, 0.0)


def _smoothing_coef(tau_s: float, fps: float) -> float:
    """One-pole coefficient for time constant ``tau_s`` at one step per video frame."""
    return 1.0 if tau_s <= 0 else 1.0 - math.exp(-1.0 / (fps * tau_s))


def mouth_openness(
    audio: NDArray[np.floating],
    sample_rate: int,
    fps: float,
    n_frames: int,
    config: MouthWarpConfig | None = None,
    phoneme_timings: Sequence[PhonemeTiming] | None = None,
) -> NDArray[np.float32]:
    """Mouth openness in [0, 1] for each of ``n_frames`` video frames.

    Frame ``i`` covers the audio ``[i/fps, (i+1)/fps)``. The level (:func:`frame_levels_db`) is
    mapped linearly from ``silence_db`` (closed) to ``speech_db`` (open by ``gain``), smoothed
    with a fast attack and a short release (lips do not snap shut between syllables), then
    multiplied per frame by the phoneme factors (vowels open more, bilabials close) after the
    smoothing, so a bilabial closure is not blurred away. Values under ``MIN_OPENNESS`` become
    exactly 0 so silent frames stay untouched.
    """
    cfg = config or MouthWarpConfig()
    _check_rates(sample_rate, fps)
    x = np.asarray(audio)
    if x.ndim != 1:
        raise ValueError(f"audio must be one clip (T,), got shape {x.shape}")
    if x.size == 0:
        raise ValueError("audio is empty: lip sync needs the dubbed speech (at least one sample)")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"audio must be float samples in [-1, 1], got dtype {x.dtype}; convert PCM first")
    if not np.all(np.isfinite(x)):
        raise ValueError("audio contains NaN or infinite samples")
    levels = frame_levels_db(x, sample_rate, fps, n_frames)
    target = np.clip(cfg.gain * (levels - cfg.silence_db) / (cfg.speech_db - cfg.silence_db), 0.0, 1.0)
    attack = _smoothing_coef(cfg.attack_s, fps)
    release = _smoothing_coef(cfg.release_s, fps)
    out = np.empty(n_frames, dtype=np.float64)
    state = 0.0
    for i, value in enumerate(target):
        state += (attack if value > state else release) * (value - state)
        out[i] = state
    if phoneme_timings:
        out *= _phoneme_factors(phoneme_timings, fps, n_frames, cfg)
    out = np.clip(out, 0.0, 1.0)
    out[out < MIN_OPENNESS] = 0.0
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Mouth geometry and the warp
# ---------------------------------------------------------------------------------------------


class _MouthGeometry(NamedTuple):
    cx: float  # mouth centre x (full-frame pixels)
    cy: float  # lip line y
    half_w: float  # half width of the warped region
    up: float  # reach above the lip line
    down: float  # reach below the lip line
    sigma: float  # feather sigma
    radius: int  # feather kernel radius


def _geometry(box: FaceBox, cfg: MouthWarpConfig) -> _MouthGeometry:
    sigma = max(_MIN_FEATHER_PX, cfg.feather * box.h)
    return _MouthGeometry(
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
    g = _geometry(box, config or MouthWarpConfig())
    pad = g.radius + 1
    h, w = frame_shape[:2]
    x0 = max(0, int(math.floor(g.cx - g.half_w)) - pad)
    x1 = min(w, int(math.ceil(g.cx + g.half_w)) + pad + 1)
    y0 = max(0, int(math.floor(g.cy - g.up)) - pad)
    y1 = min(h, int(math.ceil(g.cy + g.down)) + pad + 1)
    return x0, y0, max(x0, x1), max(y0, y1)


def _warp_frame(frame: NDArray[np.uint8], box: FaceBox, openness: float, cfg: MouthWarpConfig) -> NDArray[np.uint8]:
    """Open the mouth of one frame by ``openness``; returns a new frame (input untouched)."""
    g = _geometry(box, cfg)
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


# ---------------------------------------------------------------------------------------------
# Measuring the mouth in video (QC, benchmarks)
# ---------------------------------------------------------------------------------------------


def measure_mouth_signal(
    frames: NDArray[np.uint8],
    boxes: Sequence[FaceBox | None] | NDArray[np.floating] | FaceTracker,
    config: MouthWarpConfig | None = None,
) -> NDArray[np.float64]:
    """Mouth darkness per frame (N,): mean of ``1 - luma/255`` in the lip gap area; NaN without face.

    Why darkness: an open mouth shows the dark oral cavity, in real footage and in this
    engine's output alike, so the signal rises with the opening; correlate it with the audio
    level per frame (:func:`frame_levels_db`) for a sync score, or cross-correlate to find the
    AV offset (:func:`estimate_av_offset`). The area is an ellipse around the lip line, as wide
    as the inner ``MEASURE_WIDTH`` of the mouth region and as tall as the widest opening.

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
        g = _geometry(box, cfg)
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


def estimate_av_offset(
    mouth_signal: NDArray[np.floating], audio_signal: NDArray[np.floating], max_lag_frames: int
) -> tuple[int, float]:
    """Lag (frames) that best aligns the two per-frame signals, and the correlation there.

    A positive lag means the video is late: ``mouth_signal[i + lag]`` matches
    ``audio_signal[i]``. NaN frames (no face) are ignored. Returns ``(0, nan)`` when no lag
    has at least three frames with variation in both signals.
    """
    m = np.asarray(mouth_signal, dtype=np.float64).reshape(-1)
    a = np.asarray(audio_signal, dtype=np.float64).reshape(-1)
    if m.size != a.size:
        raise ValueError(f"signals differ in length: {m.size} mouth frames vs {a.size} audio frames")
    if max_lag_frames < 0:
        raise ValueError(f"max_lag_frames must be >= 0, got {max_lag_frames}")
    best_lag, best_r = 0, -math.inf
    for lag in range(-max_lag_frames, max_lag_frames + 1):
        mm = m[lag:] if lag >= 0 else m[:lag]
        aa = a[: a.size - lag] if lag >= 0 else a[-lag:]
        ok = np.isfinite(mm) & np.isfinite(aa)
        if ok.sum() < 3 or mm[ok].std() == 0 or aa[ok].std() == 0:
            continue
        r = float(np.corrcoef(mm[ok], aa[ok])[0, 1])
        if r > best_r:
            best_lag, best_r = lag, r
    return (best_lag, best_r) if math.isfinite(best_r) else (0, math.nan)


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


class MouthWarp:
    """Batch-first mouth-warp lip sync (see the module docstring for the method)."""

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
        n_lens = _lengths(frame_lengths, arr.shape[0], arr.shape[1], "frame_lengths")
        a_lens = _lengths(audio_lengths, wav.shape[0], wav.shape[1], "audio_lengths")
        if phoneme_timings is not None and len(phoneme_timings) != arr.shape[0]:
            raise ValueError(f"phoneme_timings needs one entry (or None) per clip: {arr.shape[0]} clips, "
                             f"{len(phoneme_timings)} entries")
        _check_rates(sample_rate, fps)
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
        arr = _check_clip(frames)
        openness = mouth_openness(audio, sample_rate, fps, arr.shape[0], self.config, phoneme_timings)
        return self.warp_clip(arr, openness)

    def warp_clip(self, frames: NDArray[np.uint8], openness: NDArray[np.floating],
                  boxes: Sequence[FaceBox | None] | None = None) -> NDArray[np.uint8]:
        """Open the mouth of each frame by ``openness[i]`` in [0, 1] (for callers with their own
        openness curve, e.g. from visemes). Frames without a face or at openness 0 are copied.
        ``boxes`` (one per frame, from :meth:`FaceTracker.track`) skips tracking, for callers
        that also need the boxes."""
        arr = _check_clip(frames)
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


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def _check_rates(sample_rate: int, fps: float) -> None:
    if not (isinstance(fps, (int, float, np.integer, np.floating)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    if not (isinstance(sample_rate, (int, np.integer)) and not isinstance(sample_rate, bool) and sample_rate > 0):
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")


def _check_frame(frame: NDArray[np.uint8]) -> None:
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"a frame must be (H, W, 3) uint8 RGB, got shape {frame.shape} dtype {frame.dtype}")


def _check_clip(frames: NDArray[np.uint8]) -> NDArray[np.uint8]:
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be one clip (N, H, W, 3) RGB, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"frames are empty: shape {arr.shape}")
    return arr


def _lengths(lengths: NDArray[np.integer] | Sequence[int] | None, batch: int, limit: int, name: str) -> NDArray[np.int64]:
    if lengths is None:
        return np.full(batch, limit, dtype=np.int64)
    lens = np.asarray(lengths)
    if lens.shape != (batch,) or not np.issubdtype(lens.dtype, np.integer):
        raise ValueError(f"{name} must be ({batch},) integers, got shape {lens.shape} dtype {lens.dtype}")
    if lens.min() < 1 or lens.max() > limit:
        raise ValueError(f"{name} {lens.tolist()} must each be in 1..{limit} (the padded length)")
    return lens.astype(np.int64)
