"""Media I/O against real files made here with PyAV: probe, decode, frames, encode, mux."""

from __future__ import annotations

import hashlib
import math
import tracemalloc
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from handlers.runtime import media
from handlers.runtime.media import (
    decode_audio,
    encode_mp4,
    iter_frames,
    mux_audio,
    probe,
    read_frames,
)
from handlers.runtime.wav import decode_wav, encode_wav
from schemas.errors import InputError

DURATION_S = 3.2
FPS = 25
WIDTH, HEIGHT = 160, 120
SOURCE_RATE = 44100
TONE_HZ = 440.0
TONE_AMPLITUDE = 0.5
# A keyframe every 12 frames, so range reads really seek instead of starting at 0.
GOP = 12
# Each frame's index is painted into it as brightness, in steps survivable by H.264.
INDEX_STEP = 3
AAC_FRAME = 1024
FAST = "ultrafast"


def _tone(n_samples: int, rate: int) -> np.ndarray:
    t = np.arange(n_samples) / rate
    return (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def _indexed_frame(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, :] = (index * INDEX_STEP) % 256
    return image


def _frame_index(image: np.ndarray) -> int:
    return round(float(image.mean()) / INDEX_STEP)


def make_video(
    path: Path,
    duration_s: float = DURATION_S,
    fps: Fraction = Fraction(FPS),
    audio_rate: int | None = SOURCE_RATE,
) -> Path:
    """Write a test clip with PyAV itself: indexed frames and a stereo sine tone."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"g": str(GOP), "preset": FAST})
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        audio = out.add_stream("aac", rate=audio_rate, layout="stereo") if audio_rate else None
        for i in range(round(duration_s * fps)):
            frame = av.VideoFrame.from_ndarray(_indexed_frame(i), format="rgb24")
            frame.pts, frame.time_base = i, 1 / fps
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None and audio_rate is not None:
            tone = _tone(round(duration_s * audio_rate), audio_rate)
            stereo = np.stack([tone, tone])
            for start in range(0, stereo.shape[1], AAC_FRAME):
                chunk = np.ascontiguousarray(stereo[:, start : start + AAC_FRAME])
                aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                aframe.sample_rate, aframe.pts, aframe.time_base = audio_rate, start, Fraction(1, audio_rate)
                out.mux(audio.encode(aframe))
            out.mux(audio.encode(None))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "clip.mp4")


@pytest.fixture(scope="module")
def silent_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "silent.mkv", 2.0, Fraction(30000, 1001), None)


def _dominant_hz(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
    return float(np.fft.rfftfreq(audio.size, 1 / rate)[np.argmax(spectrum)])


# --- probe ---------------------------------------------------------------------


def test_probe(clip: Path) -> None:
    info = probe(clip)
    assert info.duration_s == pytest.approx(DURATION_S, abs=1e-3)
    assert info.has_video and info.has_audio
    assert info.fps == 25.0 and info.frame_rate == Fraction(25)
    assert (info.width, info.height) == (WIDTH, HEIGHT)
    assert info.n_frames == round(DURATION_S * FPS)
    assert (info.audio_rate, info.audio_channels) == (SOURCE_RATE, 2)
    assert (info.video_codec, info.audio_codec) == ("h264", "aac")


def test_probe_estimates_frames_the_container_does_not_count(silent_clip: Path) -> None:
    info = probe(silent_clip)  # Matroska keeps no frame count
    assert info.frame_rate == Fraction(30000, 1001)
    assert info.n_frames == round(2.0 * 30000 / 1001)
    assert not info.has_audio and info.audio_rate is None


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    for call in (lambda: probe(missing), lambda: decode_audio(missing, 16000), lambda: iter_frames(missing)):
        with pytest.raises(InputError) as err:
            call()
        assert "nope.mp4 does not exist" in err.value.reason
        assert err.value.fix


def test_non_media_file_is_an_input_error(tmp_path: Path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is a shopping list, not a video\n")
    with pytest.raises(InputError) as err:
        probe(fake)
    assert "notes.mp4 is not a media file" in err.value.reason
    with pytest.raises(InputError, match="notes.mp4"):
        decode_audio(fake, 16000)
    subs = tmp_path / "subs.srt"  # FFmpeg opens this, but it holds no audio or video
    subs.write_text("1\n00:00:01,000 --> 00:00:02,000\nhi\n")
    with pytest.raises(InputError, match="no video or audio stream"):
        probe(subs)


# --- audio ---------------------------------------------------------------------


@pytest.mark.parametrize("rate", [16000, 22050, 48000])
def test_decode_audio_whole_file(clip: Path, rate: int) -> None:
    audio = decode_audio(clip, rate)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert audio.size == round(DURATION_S * rate)
    steady = audio[rate // 10 : -rate // 10]
    # Mono is the channel mean, so a centred tone keeps its level.
    assert np.abs(steady).max() == pytest.approx(TONE_AMPLITUDE, abs=0.03)
    assert _dominant_hz(steady, rate) == pytest.approx(TONE_HZ, abs=2.0)


def test_decode_audio_range_matches_the_whole(clip: Path) -> None:
    rate = SOURCE_RATE
    whole = decode_audio(clip, rate)
    start_s, end_s = 1.3, 2.1
    part = decode_audio(clip, rate, start_s, end_s)
    assert part.size == round(end_s * rate) - round(start_s * rate)
    np.testing.assert_allclose(part, whole[round(start_s * rate) : round(end_s * rate)], atol=1e-4)


def test_decode_audio_range_seeks(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fed: list[int] = []
    real = av.AudioResampler

    class Counting:
        def __init__(self, **kwargs: Any) -> None:
            self.inner = real(**kwargs)

        def resample(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
            fed.append(0 if frame is None else 1)
            return self.inner.resample(frame)

    monkeypatch.setattr(av, "AudioResampler", Counting)
    audio = decode_audio(clip, 16000, 2.9, 3.0)
    assert audio.size == 1600
    whole_file_frames = math.ceil(DURATION_S * SOURCE_RATE / AAC_FRAME)
    assert 0 < sum(fed) < whole_file_frames / 4


def test_decode_audio_pads_past_the_stream_end(clip: Path) -> None:
    rate = 16000
    audio = decode_audio(clip, rate, 3.0, 4.0)
    assert audio.size == rate
    assert np.abs(audio[: rate // 10]).max() > 0.3
    assert not audio[round((DURATION_S - 3.0) * rate) + 1 :].any()


def test_decode_audio_of_a_silent_video_says_so(silent_clip: Path) -> None:
    with pytest.raises(InputError) as err:
        decode_audio(silent_clip, 16000)
    assert "has no audio stream" in err.value.reason
    assert "silent.mkv" in err.value.reason


# --- frames --------------------------------------------------------------------


def test_iter_frames_of_a_range(clip: Path) -> None:
    frames = iter_frames(clip, 1.0, 2.0)
    assert isinstance(frames, Iterator)
    got = list(frames)
    assert len(got) == 25
    assert all(f.shape == (HEIGHT, WIDTH, 3) and f.dtype == np.uint8 for f in got)
    # Frame 25 is shown at exactly 1.0 s and is the first one in [1.0, 2.0).
    assert [_frame_index(f) for f in got] == list(range(25, 50))


def test_adjacent_ranges_tile_the_video(clip: Path) -> None:
    first = [_frame_index(f) for f in iter_frames(clip, 0.0, 1.3)]
    second = [_frame_index(f) for f in iter_frames(clip, 1.3, DURATION_S)]
    assert first + second == list(range(round(DURATION_S * FPS)))


def test_iter_frames_at_ntsc_rate(silent_clip: Path) -> None:
    rate = Fraction(30000, 1001)
    got = [_frame_index(f) for f in iter_frames(silent_clip, 0.5, 1.5)]
    first, stop = math.ceil(0.5 * rate), math.ceil(1.5 * rate)
    assert got == list(range(first, stop))


def test_read_frames(clip: Path) -> None:
    frames = read_frames(clip, 0.0, 0.4)
    assert frames.shape == (10, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert read_frames(clip, 1.0, 1.0).shape == (0, HEIGHT, WIDTH, 3)


# --- writing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "fps"),
    [(25, Fraction(25)), (Fraction(30000, 1001), Fraction(30000, 1001)), (29.97, Fraction(30000, 1001))],
)
def test_encode_round_trip_has_the_requested_duration(
    tmp_path: Path, given: float | Fraction, fps: Fraction
) -> None:
    rate = 22050
    duration_s = DURATION_S
    frames = (_indexed_frame(i) for i in range(200))  # more than needed: the rest is not pulled
    tone = _tone(round(2.0 * rate), rate)  # shorter than the video: padded with silence
    out = encode_mp4(tmp_path / "out.mp4", frames, given, tone, rate, duration_s, preset=FAST)
    info = probe(out)
    assert abs(info.duration_s - duration_s) <= 1 / fps
    assert info.n_frames == round(duration_s * fps)
    assert info.frame_rate == fps
    assert (info.audio_codec, info.audio_rate, info.audio_channels) == ("aac", rate, 1)
    back = decode_audio(out, rate)
    assert abs(back.size / rate - duration_s) <= 1 / fps
    # The audio is where it was put (no encoder-delay shift), then silence.
    middle = slice(rate // 2, rate)
    assert np.corrcoef(back[middle], tone[middle])[0, 1] > 0.99
    assert np.abs(back[round(2.1 * rate) :]).max() < 0.01
    assert [_frame_index(f) for f in iter_frames(out, 0.0, 0.2)] == list(range(round(0.2 * fps)))


def test_encode_without_duration_follows_the_frames(tmp_path: Path) -> None:
    rate = 24000
    n_frames = 30
    out = encode_mp4(
        tmp_path / "out.mp4",
        [_indexed_frame(i) for i in range(n_frames)],
        FPS,
        _tone(rate * 5, rate),  # longer than the video: trimmed
        rate,
        preset=FAST,
    )
    info = probe(out)
    assert info.n_frames == n_frames
    assert abs(info.duration_s - n_frames / FPS) <= 1 / FPS


def test_encode_pads_odd_sizes_and_holds_the_last_frame(tmp_path: Path) -> None:
    frames = [_indexed_frame(i, width=161, height=121) for i in range(5)]
    out = encode_mp4(tmp_path / "odd.mp4", frames, FPS, None, None, duration_s=0.4, preset=FAST)
    info = probe(out)
    assert (info.width, info.height) == (162, 122)
    assert not info.has_audio
    got = read_frames(out)
    assert len(got) == 10
    assert [_frame_index(f) for f in got] == [0, 1, 2, 3, 4, 4, 4, 4, 4, 4]


def test_encode_streams_frames(tmp_path: Path) -> None:
    width, height, n_frames = 320, 240, 150
    held_if_buffered = n_frames * width * height * 3

    def frames() -> Iterator[np.ndarray]:
        for i in range(n_frames):
            yield _indexed_frame(i, width, height)

    tracemalloc.start()
    try:
        encode_mp4(tmp_path / "long.mp4", frames(), FPS, None, None, preset=FAST)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < held_if_buffered / 10


def test_encode_failure_leaves_no_file(tmp_path: Path) -> None:
    def broken() -> Iterator[np.ndarray]:
        yield _indexed_frame(0)
        raise RuntimeError("lip-sync crashed")

    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="lip-sync crashed"):
        encode_mp4(target, broken(), FPS, None, None, preset=FAST)
    assert list(tmp_path.iterdir()) == []


def test_encode_rejects_bad_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_mp4(tmp_path / "x.mp4", [np.zeros((8, 8), np.uint8)], FPS, None, None)
    with pytest.raises(ValueError, match="no frames"):
        encode_mp4(tmp_path / "x.mp4", [], FPS, None, None)
    assert list(tmp_path.iterdir()) == []


def _video_packet_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    count = 0
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            if packet.size:
                digest.update(bytes(packet))
                count += 1
    return count, digest.hexdigest()


def test_mux_audio_copies_the_video_and_replaces_the_audio(clip: Path, tmp_path: Path) -> None:
    rate = 22050
    dub = _tone(round(DURATION_S * rate), rate) * 0.5
    out = mux_audio(clip, dub, rate, tmp_path / "dubbed.mp4")
    before, after = probe(clip), probe(out)
    assert after.n_frames == before.n_frames
    assert (after.width, after.height, after.video_codec) == (before.width, before.height, "h264")
    assert (after.audio_rate, after.audio_channels, after.audio_codec) == (rate, 1, "aac")
    assert abs(after.duration_s - before.duration_s) <= 1 / FPS
    # Stream copy: the very same compressed video packets.
    assert _video_packet_digest(out) == _video_packet_digest(clip)
    level = np.abs(decode_audio(out, rate)[rate // 2 : rate]).max()
    assert level == pytest.approx(TONE_AMPLITUDE * 0.5, abs=0.03)


def _write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_wav(audio, rate))
    return path


def test_mux_audio_needs_a_video(tmp_path: Path) -> None:
    wav = _write_wav(tmp_path / "a.wav", _tone(1000, 16000), 16000)
    with pytest.raises(InputError, match="no video stream"):
        mux_audio(wav, _tone(1000, 16000), 16000, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_wav_round_trip(tmp_path: Path) -> None:
    mono = _tone(12345, 22050) * 1.5  # peaks above 1.0 survive: the files are float
    data = encode_wav(mono, 22050)
    audio, rate = decode_wav(data)
    assert rate == 22050 and audio.dtype == np.float32
    np.testing.assert_array_equal(audio, mono)
    stereo = np.stack([mono, -mono], axis=1)
    audio, _ = decode_wav(encode_wav(stereo, 22050))
    np.testing.assert_array_equal(audio, stereo)
    assert encode_wav(mono, 22050) == data, "the bytes depend only on the samples (no timestamp chunk)"


def test_read_wav_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="junk.wav"):
        decode_wav(b"not a riff file", "junk.wav")


def test_decode_audio_reads_wav_too(tmp_path: Path) -> None:
    wav = _write_wav(tmp_path / "tone.wav", _tone(48000, 48000), 48000)
    audio = decode_audio(wav, 16000, 0.5, 1.0)  # late enough to seek
    assert audio.size == 8000
    assert _dominant_hz(audio, 16000) == pytest.approx(TONE_HZ, abs=3.0)
    assert media.probe(wav).has_video is False
