"""The ``polydub sample`` maker (handlers.sample): a real face, moving mouth, speech, subtitles."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

from handlers.runtime.media import decode_audio, probe, read_frames
from handlers.runtime.subtitles import parse_subtitles
from handlers.sample import (
    PHRASES,
    SampleFiles,
    build_track,
    face_layout,
    make_sample,
    render_frames,
)
from schemas.errors import InputError

SECONDS = 6.0
FPS = 25
RATE = 44_100
TARGET = "ko"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return make_sample(tmp_path_factory.mktemp("sample") / "clip.mp4", TARGET, SECONDS, fps=FPS)


@pytest.fixture(scope="module")
def frames(sample: SampleFiles) -> np.ndarray:
    return read_frames(sample.video)


def dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)) + 1e-12))


def test_files_sit_side_by_side(sample: SampleFiles) -> None:
    assert sample.video.name == "clip.mp4" and sample.video.exists()
    assert sample.subtitles == sample.video.with_suffix(".srt") and sample.subtitles.exists()


def test_video_has_the_requested_shape(sample: SampleFiles) -> None:
    info = probe(sample.video)
    assert info.has_video and info.has_audio
    assert abs(info.duration_s - SECONDS) <= 1 / FPS
    assert (info.width, info.height, info.fps) == (256, 256, FPS)
    assert info.n_frames == SECONDS * FPS
    assert info.audio_rate == RATE


def test_subtitles_parse_and_fit_the_video(sample: SampleFiles) -> None:
    segments = parse_subtitles(sample.subtitles)
    assert len(segments) > 0
    assert all(0.0 <= s.start_s < s.end_s <= SECONDS for s in segments)
    assert all(a.end_s < b.start_s for a, b in zip(segments, segments[1:]))
    assert [s.text for s in segments] == list(PHRASES[TARGET][: len(segments)])


def test_speech_fills_the_slots_over_a_quiet_background(sample: SampleFiles) -> None:
    audio = decode_audio(sample.video, RATE)
    segments = parse_subtitles(sample.subtitles)
    first = segments[0]
    lead_in = audio[int(0.1 * RATE) : int((first.start_s - 0.05) * RATE)]
    assert -40.0 < dbfs(lead_in) < -30.0  # the background alone, about -35 dBFS
    for s in segments:
        assert dbfs(audio[int(s.start_s * RATE) : int(s.end_s * RATE)]) > dbfs(lead_in) + 10.0  # dialogue ~14 dB over the bed


def test_mouth_moves_and_the_rest_stays_still(sample: SampleFiles, frames: np.ndarray) -> None:
    layout = face_layout((256, 256))
    x0, y0, x1, y1 = layout.mouth_box
    mouth = frames[:, y0:y1, x0:x1].astype(np.float64).mean(axis=(1, 2, 3))
    assert mouth.max() - mouth.min() > 20.0  # opens visibly (darker when open)
    top = frames[:, : 256 // 5].astype(np.int16)  # hair and background
    assert np.abs(top - top[0]).max() <= 6  # only codec noise
    # the mouth is open while someone speaks and closed in the pauses
    t = (np.arange(len(frames)) + 0.5) / FPS
    speaking = np.zeros(len(frames), dtype=bool)
    for s in parse_subtitles(sample.subtitles):
        speaking |= (t >= s.start_s) & (t < s.end_s)
    assert mouth[speaking].mean() < mouth[~speaking].mean() - 10.0
    assert np.ptp(mouth[~speaking]) < 3.0


def test_speaker_and_languages() -> None:
    track = build_track(TARGET, SECONDS, sample_rate=22050)
    assert track.source_lang == "en" and track.target_lang == TARGET
    for seg, said in zip(track.segments, track.spoken, strict=True):
        i = PHRASES[TARGET].index(seg.text)
        assert PHRASES["en"][i] == said  # subtitle and speech say the same thing
    assert build_track("en", SECONDS, sample_rate=22050).source_lang == "ja"
    assert build_track("en", SECONDS, "zh", sample_rate=22050).spoken[0] == PHRASES["zh"][0]


def test_long_samples_cycle_the_phrases() -> None:
    track = build_track("zh", 90.0, sample_rate=22050)
    assert len(track.audio) == 90 * 22050
    assert len(track.segments) > len(PHRASES["zh"])
    assert track.segments[len(PHRASES["zh"])].text == PHRASES["zh"][0]
    assert track.segments[-1].end_s <= 90.0


def test_frames_are_streamed() -> None:
    layout = face_layout((64, 64))
    frames = render_frames(layout, [0.0, 1.0])
    assert inspect.isgenerator(frames)
    closed, opened = list(frames)
    assert closed is layout.image and not np.array_equal(closed, opened)


def test_audio_is_deterministic() -> None:
    a = build_track("ja", 5.0, sample_rate=22050)
    b = build_track("ja", 5.0, sample_rate=22050)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.segments == b.segments


def test_same_arguments_write_the_same_soundtrack(sample: SampleFiles, tmp_path: Path) -> None:
    again = make_sample(tmp_path / "again.mp4", TARGET, SECONDS, fps=FPS)
    np.testing.assert_array_equal(decode_audio(again.video, RATE), decode_audio(sample.video, RATE))
    assert again.subtitles.read_text(encoding="utf-8") == sample.subtitles.read_text(encoding="utf-8")


def test_bad_requests_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="choose one of: en, ja, ko, zh"):
        make_sample(tmp_path / "x.mp4", "fr", SECONDS)
    with pytest.raises(InputError, match="spoken"):
        make_sample(tmp_path / "x.mp4", "ko", SECONDS, source_lang="de")
    with pytest.raises(InputError, match="at least"):
        make_sample(tmp_path / "x.mp4", "ko", 1.0)
    assert not (tmp_path / "x.mp4").exists()
