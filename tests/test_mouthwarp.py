"""Mouth-warp lip sync on a real portrait (skimage's astronaut) with synthetic speech-like audio."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from engines.mouthwarp.config import MouthWarpConfig
from engines.mouthwarp.geometry import mouth_region
from engines.mouthwarp.measure import SILENCE_DB, frame_levels_db, measure_mouth_signal
from engines.mouthwarp.openness import mouth_openness, phoneme_class
from engines.mouthwarp.tracker import FaceBox, FaceTracker
from engines.mouthwarp.warp import MouthWarp
from handlers.quality.signals import MIN_SYNC_FRAMES, av_offset

SR = 22_050
FPS = 25
N_FRAMES = 50
SIZE = 256
#: (start s, end s, peak amplitude, f0 Hz) of the synthetic syllables; silence in between.
SYLLABLES = [(0.12, 0.40, 0.25, 140.0), (0.56, 0.80, 0.12, 165.0), (1.00, 1.36, 0.20, 120.0), (1.52, 1.72, 0.08, 180.0)]
#: Extra room around the mouth when deriving the allowed region from the face box: the engine's
#: box is smoothed and re-detected, so it may sit a pixel or two off the test's own detection.
BOX_SLACK = 0.06


def speech_like(
    seconds: float = N_FRAMES / FPS, syllables: list[tuple[float, float, float, float]] = SYLLABLES, delay_s: float = 0.0
) -> np.ndarray:
    """Bursts of a harmonic tone (7 harmonics, f0 120-180 Hz) with a soft envelope, silence between."""
    t = np.arange(int(round(seconds * SR))) / SR
    x = np.zeros_like(t)
    for start, end, amp, f0 in syllables:
        start, end = start + delay_s, end + delay_s
        m = (t >= start) & (t < end)
        tt = t[m] - start
        env = np.sin(np.pi * tt / (end - start)) ** 0.5
        tone = sum(np.sin(2 * np.pi * f0 * k * tt) / k for k in range(1, 8))
        x[m] = amp * env * tone
    return x.astype(np.float32)


def per_frame_rms(audio: np.ndarray, n: int) -> np.ndarray:
    """The test's own envelope: linear RMS over each frame's span [i/fps, (i+1)/fps)."""
    edges = np.round(np.arange(n + 1) * SR / FPS).astype(int)
    return np.array([np.sqrt(np.mean(audio[a:b] ** 2)) if b <= audio.size else 0.0 for a, b in zip(edges[:-1], edges[1:])])


def astronaut(size: int = SIZE) -> np.ndarray:
    return cv2.resize(skimage.data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def haar_face(img: np.ndarray) -> tuple[int, int, int, int]:
    """Independent of the engine: the biggest frontal face found straight by OpenCV."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = cascade.detectMultiScale(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 1.1, 5, minSize=(24, 24))
    assert len(faces) >= 1, "the astronaut's face must be found by the plain Haar cascade"
    return tuple(int(v) for v in max(faces, key=lambda f: f[2] * f[3]))


def blur_face(img: np.ndarray) -> np.ndarray:
    x, y, w, h = haar_face(img)
    m = w // 3
    out = img.copy()
    sl = np.s_[max(0, y - m) : y + h + m, max(0, x - m) : x + w + m]
    out[sl] = cv2.GaussianBlur(img[sl], (0, 0), 8)
    return out


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return np.repeat(astronaut()[None], N_FRAMES, axis=0)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return speech_like()


@pytest.fixture(scope="module")
def rendered(clip: np.ndarray, audio: np.ndarray) -> np.ndarray:
    return MouthWarp().render_clip(clip, audio, SR, FPS)


# --- the render ---------------------------------------------------------------------------------


def test_output_shape_dtype_and_input_untouched(clip: np.ndarray, audio: np.ndarray, rendered: np.ndarray) -> None:
    assert rendered.shape == clip.shape and rendered.dtype == np.uint8
    assert np.array_equal(clip, np.repeat(astronaut()[None], N_FRAMES, axis=0)), "the input must not be modified"
    changed = [i for i in range(N_FRAMES) if not np.array_equal(rendered[i], clip[i])]
    assert len(changed) >= N_FRAMES // 2, f"speech covers most of the clip, only frames {changed} changed"


def test_changes_only_inside_mouth_region(clip: np.ndarray, rendered: np.ndarray) -> None:
    cfg = MouthWarpConfig()
    x, y, w, h = haar_face(clip[0])
    # Allowed: the configured mouth region around the independently detected face, plus the
    # feather kernel's reach and some slack for box smoothing.
    reach = 3 * cfg.feather * h + 2 + BOX_SLACK * h
    ax0 = int(np.floor(x + (cfg.mouth_center_x - cfg.mouth_width / 2) * w - reach))
    ax1 = int(np.ceil(x + (cfg.mouth_center_x + cfg.mouth_width / 2) * w + reach))
    ay0 = int(np.floor(y + (cfg.mouth_center_y - cfg.upper_extent) * h - reach))
    ay1 = int(np.ceil(y + (cfg.mouth_center_y + cfg.lower_extent) * h + reach))
    # Sanity: that region is the lower-middle part of the face, not half the picture.
    assert x < ax0 and ax1 < x + w and y + h / 2 < ay0 and ay1 < y + 1.3 * h
    outside = np.ones(clip.shape[1:3], dtype=bool)
    outside[ay0:ay1, ax0:ax1] = False
    for i in range(N_FRAMES):
        assert np.array_equal(rendered[i][outside], clip[i][outside]), f"frame {i} changed outside the mouth"
    # And the engine's own bound (mouth_region of its tracked box) holds too.
    tracker = FaceTracker(cfg)
    for i in range(N_FRAMES):
        box = tracker.update(clip[i])
        assert box is not None
        rx0, ry0, rx1, ry1 = mouth_region(box, clip.shape[1:], cfg)
        diff = np.any(rendered[i] != clip[i], axis=-1)
        diff[ry0:ry1, rx0:rx1] = False
        assert not diff.any(), f"frame {i} changed outside mouth_region"


def test_mouth_visibly_opens_and_edges_are_feathered(clip: np.ndarray) -> None:
    out = MouthWarp().warp_clip(clip[:1], np.array([1.0]))[0]
    diff = np.abs(out.astype(int) - clip[0].astype(int)).max(axis=-1)
    assert diff.max() > 80, "at full openness the gap between the lips must be clearly dark"
    changed = diff > 0
    ring = changed & ~cv2.erode(changed.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    # No seam: on the border of the changed area the change is small on average.
    assert ring.any() and diff[ring].mean() < 0.15 * diff.max(), (diff[ring].mean(), diff.max())
    # The gap is darker than the original mouth.
    luma = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(float)  # noqa: E731
    assert luma(out)[changed].mean() < luma(clip[0])[changed].mean() - 20


def test_silent_frames_are_unchanged(clip: np.ndarray, audio: np.ndarray, rendered: np.ndarray) -> None:
    openness = mouth_openness(audio, SR, FPS, N_FRAMES)
    rms = per_frame_rms(audio, N_FRAMES)
    silent = np.flatnonzero(openness == 0)
    # Leading and trailing silence at least (0-0.12 s, 1.72-2.0 s), plus closed gaps between syllables.
    assert {0, 1, 2, 47, 48, 49} <= set(silent.tolist()), silent
    assert np.all(rms[silent] == 0)
    for i in silent:
        assert np.array_equal(rendered[i], clip[i]), f"silent frame {i} changed"
    # Where it is quiet but the smoother's release is still closing, the change is small.
    assert openness[rms == 0].max() < 0.5


def test_mouth_signal_follows_audio_envelope(clip: np.ndarray, audio: np.ndarray, rendered: np.ndarray) -> None:
    signal = measure_mouth_signal(rendered, FaceTracker())
    assert signal.shape == (N_FRAMES,) and np.all(np.isfinite(signal))
    rms = per_frame_rms(audio, N_FRAMES)
    r = float(np.corrcoef(signal, rms)[0, 1])
    r_db = float(np.corrcoef(signal, frame_levels_db(audio, SR, FPS, N_FRAMES))[0, 1])
    print(f"\nmouth signal vs audio RMS per frame: r = {r:.3f} (vs dB level: {r_db:.3f})")
    assert r > 0.6
    # On the untouched clip the signal hardly moves (only box jitter): what is measured is the
    # engine's doing.
    baseline = measure_mouth_signal(clip, FaceTracker())
    print(f"mouth signal range: rendered {np.ptp(signal):.3f}, untouched {np.ptp(baseline):.3f}")
    assert np.ptp(baseline) < 0.2 * np.ptp(signal)


def test_av_offset_is_found(clip: np.ndarray, audio: np.ndarray) -> None:
    delay_frames = 3
    late = speech_like(delay_s=delay_frames / FPS)
    rendered = MouthWarp().render_clip(clip, late, SR, FPS)
    signal = measure_mouth_signal(rendered, FaceTracker())
    # QC's offset search (handlers.quality.signals.av_offset) over the dB level of the on-time audio.
    offset_s, r, usable = av_offset(signal, frame_levels_db(audio, SR, FPS, N_FRAMES), FPS, max_lag_frames=6)
    assert usable >= MIN_SYNC_FRAMES and offset_s is not None and r is not None
    lag = offset_s * FPS
    print(f"\nAV offset: true {delay_frames} frames, found {lag:.2f} (r = {r:.3f})")
    assert abs(lag - delay_frames) < 0.5 and r > 0.6


def test_frame_without_face_passes_through(audio: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    blank = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
    blurred = blur_face(astronaut())
    mw = MouthWarp()
    for name, frame in [("noise", noise), ("blank", blank), ("blurred face", blurred)]:
        assert FaceTracker().update(frame) is None, f"{name}: no face expected"
        frames = np.repeat(frame[None], 10, axis=0)
        out = mw.render_clip(frames, audio, SR, FPS)
        assert np.array_equal(out, frames), f"{name} frames must pass through bit-identical"


def test_cut_to_faceless_frames_mid_clip_passes_through(clip: np.ndarray, audio: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    frames = clip[:30].copy()
    frames[10:16] = rng.integers(0, 256, (6, SIZE, SIZE, 3), dtype=np.uint8)  # loud frames 3-9 face, 10-15 noise
    frames[20:24] = 0  # fade to black
    out = MouthWarp().render_clip(frames, audio, SR, FPS)
    assert not np.array_equal(out[5], frames[5])
    assert np.array_equal(out[10:16], frames[10:16]) and np.array_equal(out[20:24], frames[20:24])
    assert not np.array_equal(out[16], frames[16]), "the face is picked up again right after the cut"


def test_batch_of_two_clips_equals_each_alone(clip: np.ndarray) -> None:
    mw = MouthWarp()
    other = np.ascontiguousarray(np.repeat(astronaut()[None, :, ::-1], 38, axis=0))  # mirrored, shorter
    a_audio, b_audio = speech_like(), speech_like(1.5, SYLLABLES[::-1][:3], delay_s=-0.1)
    frames = np.zeros((2, N_FRAMES, SIZE, SIZE, 3), dtype=np.uint8)
    frames[0], frames[1, :38] = clip, other
    frames[1, 38:] = 77  # padding must come back as given
    wav = np.zeros((2, a_audio.size), dtype=np.float32)
    wav[0], wav[1, : b_audio.size] = a_audio, b_audio
    wav[1, b_audio.size :] = 0.5  # loud padding must not leak into clip 2
    out, lengths = mw.render(frames, wav, SR, FPS, frame_lengths=[N_FRAMES, 38], audio_lengths=[a_audio.size, b_audio.size])
    assert out.shape == frames.shape and out.dtype == np.uint8 and lengths.tolist() == [N_FRAMES, 38]
    assert np.array_equal(out[0], mw.render_clip(clip, a_audio, SR, FPS))
    assert np.array_equal(out[1, :38], mw.render_clip(other, b_audio, SR, FPS))
    assert np.all(out[1, 38:] == 77)
    assert not np.array_equal(out[1, :38], other)


def test_deterministic(clip: np.ndarray, audio: np.ndarray, rendered: np.ndarray) -> None:
    again = MouthWarp().render_clip(clip, audio, SR, FPS)
    assert np.array_equal(again, rendered)


# --- audio -> openness ------------------------------------------------------------------------


def test_openness_frame_alignment() -> None:
    # A tone on exactly [0.4, 0.6) s is frames 10..14 at 25 fps; nothing may open before it.
    audio = speech_like(1.2, [(0.4, 0.6, 0.3, 150.0)])
    audio[(np.arange(audio.size) >= int(0.4 * SR)) & (np.arange(audio.size) < int(0.6 * SR))] = 0.2
    levels = frame_levels_db(audio, SR, FPS, 40)
    assert np.all(levels[:10] < -100) and np.all(levels[10:15] > -20) and np.all(levels[15:] < -100)
    op = mouth_openness(audio, SR, FPS, 40)
    assert op.shape == (40,) and op.dtype == np.float32
    assert np.all(op[:10] == 0) and np.all(op[10:15] > 0.9)
    assert 0 < op[15] < op[14] and np.all(op[25:] == 0), "release closes the mouth smoothly, then fully"
    assert np.all((op >= 0) & (op <= 1))


def test_frame_levels_cover_each_frame_span_from_the_first() -> None:
    """Frame 0 counts its whole span [0, 1/fps) like every other frame; frames past the audio are silent."""
    steady = np.full(SR, 0.1, np.float32)  # 1 s at -20 dBFS: 25 frames
    levels = frame_levels_db(steady, SR, FPS, 30)
    np.testing.assert_allclose(levels[:25], 20 * np.log10(0.1), atol=1e-4)
    assert np.all(levels[25:] == SILENCE_DB)


def test_openness_levels_and_gain() -> None:
    quiet, loud = np.full(SR, 0.02, np.float32), np.full(SR, 0.3, np.float32)
    cfg = MouthWarpConfig()
    assert mouth_openness(quiet, SR, FPS, 25)[-1] < mouth_openness(loud, SR, FPS, 25)[-1]
    floor = np.full(SR, 10 ** ((cfg.silence_db - 1) / 20), np.float32)
    assert np.all(mouth_openness(floor, SR, FPS, 25) == 0), "below the silence threshold the mouth stays shut"
    doubled = MouthWarpConfig(gain=2.0)
    assert mouth_openness(quiet, SR, FPS, 25, doubled)[-1] > mouth_openness(quiet, SR, FPS, 25)[-1]
    # Frames past the end of the audio are silent.
    assert np.all(mouth_openness(loud[: SR // 5], SR, FPS, 25)[12:] == 0)


def test_phoneme_timings_shape_openness() -> None:
    audio = np.full(SR, 0.05, np.float32)  # a steady, mid-level voice for 1 s
    base = mouth_openness(audio, SR, FPS, 25)
    assert 0.2 < base[10] < 0.75
    timings = [(0.2, 0.4, "AA1"), (0.4, 0.48, "M"), (0.6, 0.7, "p"), (0.8, 0.92, "ɔː")]
    shaped = mouth_openness(audio, SR, FPS, 25, phoneme_timings=timings)
    assert np.all(shaped[5:10] > base[5:10]), "vowels open wider"
    assert np.all(shaped[10:12] == 0) and np.all(shaped[15:17] == 0), "bilabials close"
    assert 0 < shaped[17] < base[17], "a frame half covered by a bilabial half closes"
    assert np.all(shaped[20:23] > base[20:23])
    assert np.array_equal(shaped[12:15], base[12:15]), "unlabelled frames keep the audio's openness"
    with pytest.raises(ValueError, match="start"):
        mouth_openness(audio, SR, FPS, 25, phoneme_timings=[(0.5, 0.4, "a")])
    with pytest.raises(ValueError, match=r"phoneme_timings\[0\]"):
        mouth_openness(audio, SR, FPS, 25, phoneme_timings=[(0.1, "a")])


@pytest.mark.parametrize(
    ("label", "expected"),
    [("AA1", "vowel"), ("iy", "vowel"), ("ə", "vowel"), ("aː", "vowel"), ("O", "vowel"), ("vowel", "vowel"),
     ("M", "bilabial"), ("b", "bilabial"), ("PP", "bilabial"), ("MBP", "bilabial"),
     ("s", "other"), ("T", "other"), ("sil", "other"), ("", "other")],
)
def test_phoneme_class(label: str, expected: str) -> None:
    assert phoneme_class(label) == expected


# --- tracker --------------------------------------------------------------------------------------


def test_tracker_finds_face_holds_it_briefly_then_lets_go() -> None:
    img = astronaut()
    x, y, w, h = haar_face(img)
    cfg = MouthWarpConfig()
    tracker = FaceTracker(cfg)
    boxes = [tracker.update(img) for _ in range(6)]
    for b in boxes:
        assert b is not None and FaceBox(x, y, w, h).iou(b) > 0.8
    blurred = blur_face(img)
    held = [tracker.update(blurred) for _ in range(cfg.detect_every + cfg.max_missed_frames + 2)]
    assert held[0] is not None, "a face that is briefly not detected is held"
    assert held[-1] is None, "and dropped after max_missed_frames failed detections"
    assert tracker.update(img) is not None, "a face coming back is found again at once"


def test_tracker_picks_the_largest_face() -> None:
    canvas = np.full((300, 600, 3), 200, np.uint8)
    canvas[20:280, 320:580] = astronaut(260)
    canvas[50:250, 20:220] = astronaut(200)
    box = FaceTracker().update(canvas)
    assert box is not None and box.x > 300, box


def test_tracker_follows_a_moving_face() -> None:
    img = astronaut()
    frames = [np.roll(img, 2 * i, axis=1) for i in range(12)]  # 2 px/frame to the right
    tracker = FaceTracker(MouthWarpConfig(box_smoothing=0.0))
    boxes = [tracker.update(f) for f in frames]
    assert all(b is not None for b in boxes)
    assert abs((boxes[-1].x - boxes[0].x) - 22) <= 2, [round(b.x, 1) for b in boxes]


def test_measure_mouth_signal_box_inputs(rendered: np.ndarray) -> None:
    tracker_boxes = FaceTracker().track(rendered)
    arr = np.array([[np.nan] * 4 if b is None else list(b) for b in tracker_boxes])
    arr[0] = np.nan
    sig = measure_mouth_signal(rendered, arr)
    assert np.isnan(sig[0]) and np.all(np.isfinite(sig[1:]))
    listed = measure_mouth_signal(rendered, [None] + tracker_boxes[1:])
    assert np.array_equal(sig, listed, equal_nan=True)
    with pytest.raises(ValueError, match="one box"):
        measure_mouth_signal(rendered, tracker_boxes[:-1])


# --- frame sizes (speed is measured by bench/, not asserted here) ----------------------------------


@pytest.mark.parametrize(("width", "height"), [(256, 256), (640, 360)])
def test_renders_at_common_frame_sizes(width: int, height: int, audio: np.ndarray) -> None:
    canvas = np.full((height, width, 3), 90, np.uint8)
    side = min(width, height)
    x0 = (width - side) // 2
    canvas[:, x0 : x0 + side] = astronaut(side)
    frames = np.repeat(canvas[None], N_FRAMES, axis=0)
    out = MouthWarp().render_clip(frames, audio, SR, FPS)
    assert out.shape == frames.shape
    assert not np.array_equal(out[5], frames[5]), "the face must be found at this size too"


# --- bad inputs -----------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(clip: np.ndarray, audio: np.ndarray) -> None:
    mw = MouthWarp()
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        mw.render_clip(clip[0], audio, SR, FPS)
    with pytest.raises(ValueError, match="uint8"):
        mw.render_clip(clip.astype(np.float32), audio, SR, FPS)
    with pytest.raises(ValueError, match=r"\(B, N, H, W, 3\)"):
        mw.render(clip, audio[None], SR, FPS)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        mw.render(clip[None], audio, SR, FPS)
    for fps in (0, -25, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="fps must be a positive"):
            mw.render_clip(clip[:2], audio, SR, fps)
    with pytest.raises(ValueError, match="sample_rate"):
        mw.render_clip(clip[:2], audio, 0, FPS)
    with pytest.raises(ValueError, match="audio is empty"):
        mw.render_clip(clip[:2], np.zeros(0, np.float32), SR, FPS)
    with pytest.raises(ValueError, match="empty input"):
        mw.render(clip[None, :2], np.zeros((1, 0), np.float32), SR, FPS)
    with pytest.raises(ValueError, match="float samples"):
        mw.render_clip(clip[:2], (audio * 32767).astype(np.int16), SR, FPS)
    with pytest.raises(ValueError, match="NaN"):
        mw.render_clip(clip[:2], np.full(100, np.nan, np.float32), SR, FPS)
    with pytest.raises(ValueError, match="audio must be one clip"):
        mw.render_clip(clip[:2], audio[None], SR, FPS)
    with pytest.raises(ValueError, match="batch sizes differ"):
        mw.render(clip[None, :2], np.stack([audio, audio]), SR, FPS)
    with pytest.raises(ValueError, match="frame_lengths"):
        mw.render(clip[None, :2], audio[None], SR, FPS, frame_lengths=[3])
    with pytest.raises(ValueError, match="audio_lengths"):
        mw.render(clip[None, :2], audio[None], SR, FPS, audio_lengths=[0])
    with pytest.raises(ValueError, match="one openness per frame"):
        mw.warp_clip(clip[:2], np.zeros(3))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        mw.warp_clip(clip[:2], np.array([0.0, 1.5]))
    with pytest.raises(ValueError, match="speech_db"):
        MouthWarpConfig(speech_db=-60.0)
    with pytest.raises(ValueError, match="chin would fold"):
        MouthWarpConfig(max_open=0.3)



def test_warp_with_given_boxes_equals_tracking(clip: np.ndarray, audio: np.ndarray, rendered: np.ndarray) -> None:
    """Callers that need the face boxes (the served model counts faces) track once and pass them in."""
    boxes = FaceTracker().track(clip)
    openness = mouth_openness(audio, SR, FPS, clip.shape[0])
    assert np.array_equal(MouthWarp().warp_clip(clip, openness, boxes), rendered)
    with pytest.raises(ValueError, match="one box"):
        MouthWarp().warp_clip(clip, openness, boxes[:-1])
