"""Every knob of the mouth-warp engine, in one frozen dataclass checked on construction."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MouthWarpConfig"]


@dataclass(frozen=True)
class MouthWarpConfig:
    """Every knob of the mouth-warp engine. Fractions are of the face box unless said otherwise.

    The placement defaults were measured on ``skimage.data.astronaut()`` with the tracker's
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
