"""Face crops for Wav2Lip: the published padding, and a paste that touches nothing but the mouth."""

from __future__ import annotations

import numpy as np
import pytest

from handlers.runtime.facecrop import PADS, CropBox, crop_box, crop_face, mouth_bounds, mouth_weights, paste_mouth

SIZE = 96


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    import cv2
    import skimage.data

    return cv2.resize(skimage.data.astronaut(), (1280, 720), interpolation=cv2.INTER_LINEAR)


def test_the_box_gets_the_published_padding_and_stays_inside_the_frame() -> None:
    region = crop_box(np.array([100.0, 50.0, 200.0, 200.0]), (720, 1280, 3))
    assert region == CropBox(100 - PADS[2], 50 - PADS[0], 300 + PADS[3], 250 + PADS[1])
    assert crop_box(np.array([1200.0, 650.0, 200.0, 200.0]), (720, 1280, 3)) == CropBox(1200, 650, 1280, 720)
    assert crop_box(np.full(4, np.nan), (720, 1280, 3)) is None, "no face: no crop"
    assert crop_box(np.array([10.0, 10.0, 4.0, 4.0]), (720, 1280, 3)) is None, "too small to re-draw"


def test_a_round_trip_changes_no_pixel_outside_the_mouth(frame: np.ndarray) -> None:
    region = crop_box(np.array([420.0, 80.0, 360.0, 360.0]), frame.shape)
    assert region is not None
    crop = crop_face(frame, region, SIZE)
    assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8
    pasted = paste_mouth(frame, crop, region)
    changed = np.any(pasted != frame, axis=2)
    y0, y1, x0, x1 = mouth_bounds(region)
    outside = changed.copy()
    outside[y0:y1, x0:x1] = False
    assert not outside.any(), "a pixel outside the mouth rectangle changed"
    assert changed[y0:y1, x0:x1].any(), "the mouth was pasted"
    # Inside the ellipse the crop's own (down- then up-scaled) pixels come back: close to the frame.
    assert np.abs(pasted.astype(int) - frame.astype(int)).mean() < 1.0


def test_the_blend_has_no_edge(frame: np.ndarray) -> None:
    region = crop_box(np.array([420.0, 80.0, 360.0, 360.0]), frame.shape)
    assert region is not None
    bounds = mouth_bounds(region)
    weights = mouth_weights(region, bounds).astype(np.float64)
    assert weights.max() == pytest.approx(1.0) and weights.min() == 0.0
    border = np.concatenate([weights[0], weights[-1], weights[:, 0], weights[:, -1]])
    assert border.max() < 0.01, "the weight has faded out at the rectangle's border"
    # The weight rises over a rim of tens of pixels (a smoothstep): no step between neighbours.
    assert max(np.abs(np.diff(weights, axis=0)).max(), np.abs(np.diff(weights, axis=1)).max()) < 0.1


def test_the_pasted_mouth_takes_the_frame_s_colour(frame: np.ndarray) -> None:
    region = crop_box(np.array([420.0, 80.0, 360.0, 360.0]), frame.shape)
    assert region is not None
    green = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    green[..., 1] = 255  # a re-drawn face in a colour far from the frame's
    green[60:80, 30:66] = (0, 120, 0)  # with a darker mouth in it
    pasted = paste_mouth(frame, green, region).astype(np.float64)
    y0, y1, x0, x1 = mouth_bounds(region)
    weights = mouth_weights(region, (y0, y1, x0, x1))[..., None]
    mean = lambda image: (image[y0:y1, x0:x1] * weights).sum(axis=(0, 1)) / weights.sum()  # noqa: E731
    assert np.abs(mean(pasted) - mean(frame.astype(np.float64))).max() < 2.0, "mean colour kept"
    assert np.abs(pasted - frame).max() > 20, "the darker mouth shows"
