"""``polydub sample``: a short test video to dub, made from nothing but installed packages.

Why: the README's first command must work on a fresh clone with no media at hand, and
tests need a video with every feature the pipeline handles, generated rather than
committed. The sample has:

* a real face, ``skimage.data.astronaut()``, cropped around the face the OpenCV Haar
  cascade finds, so face-based lip sync has something to find;
* a mouth that opens with the loudness of the speech (a soft dark ellipse over the lips),
  so lip-sync changes are visible and measurable, while the rest of the picture is still;
* speech in a *source* language (by default one unlike the target: English under
  ko/ja/zh subtitles, Japanese under English ones) by a voice unlike eSpeak's default
  (variant ``f2``, a female voice, at ~210 Hz), one phrase per subtitle slot with pauses
  between;
* target-language subtitles (``<stem>.srt`` beside the video) covering exactly the spoken
  slots, from a parallel phrase table, so speech and subtitle say the same thing;
* a quiet background (pink noise and a low hum, about -35 dBFS) under the speech, so the
  pipeline's background keeping is testable.

Any length from :data:`MIN_SECONDS` to hours: the phrases cycle, frames are streamed to the
encoder one at a time, and the audio is one float32 array (4 bytes x rate x seconds).
The same arguments give the same audio and frames (seeded noise, deterministic eSpeak).

This is a developer tool, not a pipeline stage; like the stages, it reaches the eSpeak
model only through the in-process inference client (``tts_espeak``).
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy.signal import lfilter

from engines.dsp import frame_rms, resample
from handlers.runtime.inference import LocalInferenceClient
from handlers.runtime.media import encode_mp4
from handlers.runtime.subtitles import Segment, to_srt
from schemas.errors import InputError
from serving.batching import join_items, split_batch
from serving.interfaces import TTS_INPUTS, TTS_OUTPUTS
from serving.specs import scalar

log = logging.getLogger(__name__)

#: Shortest sample: a lead-in, one phrase and a tail must fit.
MIN_SECONDS = 3.0
#: Audio rate of the sample's soundtrack, a common rate for real videos (so ingest's
#: resampling to the pipeline rate is exercised).
DEFAULT_AUDIO_RATE = 44_100
DEFAULT_FPS = 25.0
DEFAULT_SIZE = (256, 256)

# --- the speaker -------------------------------------------------------------------
#: eSpeak variant and pitch of the sample's speaker: a female voice well above eSpeak's
#: default male ~95 Hz, so a dub that keeps "the original speaker's voice" is audibly
#: different from plain eSpeak output.
SPEAKER_VARIANT = "f2"
SPEAKER_PITCH_HZ = 210.0
#: Speech level: eSpeak peaks near -2 dBFS; this gain leaves headroom for the background.
SPEECH_GAIN = 0.7

# --- the timeline ------------------------------------------------------------------
#: Silence before the first phrase and the least left after the last one, in seconds.
LEAD_IN_S = 0.5
MIN_TAIL_S = 0.3
#: Pauses between phrases, cycled: varied like real speech, deterministic.
PAUSES_S = (0.7, 1.0, 0.8, 1.2)
#: Subtitle times are written in milliseconds; phrases start on whole milliseconds.
_MS = 1000

# --- the background ----------------------------------------------------------------
#: Pink noise and mains hum levels (RMS, dBFS); together about -35 dBFS.
NOISE_DBFS = -36.5
HUM_DBFS = -41.0
HUM_HZ = 50.0
#: Relative levels of the hum's harmonics (50, 100, 150 Hz): a soft transformer buzz.
HUM_HARMONICS = (1.0, 0.5, 0.25)
BACKGROUND_SEED = 20_240_601
#: Paul Kellet's economy pinking filter (-3 dB/octave within 0.5 dB above 10 Hz).
_PINK_B = (0.049922035, -0.095993537, 0.050612699, -0.004408786)
_PINK_A = (1.0, -2.494956002, 2.017265875, -0.522189400)
#: Samples of noise generated per block, so long samples never hold float64 copies.
_NOISE_BLOCK = 1 << 16
#: Fade at both ends of the background, in seconds (no click at start or end).
_FADE_S = 0.05

# --- the face ----------------------------------------------------------------------
_CASCADE = "haarcascade_frontalface_default.xml"
#: The crop is this many face widths wide, centred on the face: hair and background
#: above, the collar below.
CROP_FACE_WIDTHS = 2.4
#: Mouth geometry in units of the detected face box (measured on the astronaut: the
#: smile cascade puts the mouth at 0.47 w, 0.79 h, 0.59 w wide).
MOUTH_X = 0.49
MOUTH_Y = 0.815
MOUTH_HALF_WIDTH = 0.15
MOUTH_MAX_HALF_HEIGHT = 0.085
#: Colour of the open mouth (RGB) and its opacity at the centre.
MOUTH_RGB = (60, 20, 25)
MOUTH_OPACITY = 0.9
#: Softness of the mouth's edge: Gaussian blur sigma in units of the face width.
MOUTH_EDGE_SIGMA = 0.012
#: Loudness (dBFS of the speech envelope) mapped to a closed and a fully open mouth.
MOUTH_CLOSED_DBFS = -45.0
MOUTH_OPEN_DBFS = -15.0
#: Below this opening the mouth is not drawn at all (the picture stays bit-identical).
MOUTH_MIN_OPENING = 0.05

# --- the phrases ---------------------------------------------------------------------
#: Twelve everyday phrases per language, line i of every list saying the same thing,
#: written as subtitles are (Japanese in kanji and kana: the TTS engines read it through
#: the shared text front end, engines.text).
PHRASES: Mapping[str, tuple[str, ...]] = {
    "en": (
        "Good morning, everyone.",
        "How are you today?",
        "The weather is nice.",
        "Let's have lunch together.",
        "Thank you very much.",
        "Where is the station?",
        "I like this song.",
        "See you tomorrow.",
        "Please wait a moment.",
        "It is very cold today.",
        "What time is it now?",
        "Have a nice weekend.",
    ),
    "ko": (
        "여러분, 좋은 아침이에요.",
        "오늘 어떻게 지내세요?",
        "날씨가 좋네요.",
        "같이 점심 먹어요.",
        "정말 감사합니다.",
        "역이 어디에 있어요?",
        "저는 이 노래를 좋아해요.",
        "내일 봐요.",
        "잠시만 기다려 주세요.",
        "오늘은 정말 추워요.",
        "지금 몇 시예요?",
        "즐거운 주말 보내세요.",
    ),
    "ja": (
        "皆さん、おはようございます。",
        "今日は元気ですか。",
        "いい天気ですね。",
        "一緒に昼ごはんを食べましょう。",
        "どうもありがとうございます。",
        "駅はどこですか。",
        "私はこの歌が好きです。",
        "また、明日。",
        "ちょっと待ってください。",
        "今日はとても寒いです。",
        "今何時ですか。",
        "良い週末を。",
    ),
    "zh": (
        "大家早上好。",
        "你今天好吗？",
        "今天天气很好。",
        "我们一起吃午饭吧。",
        "非常感谢你。",
        "车站在哪里？",
        "我喜欢这首歌。",
        "明天见。",
        "请稍等一下。",
        "今天非常冷。",
        "现在几点了？",
        "周末愉快。",
    ),
}
LANGUAGES = tuple(sorted(PHRASES))
#: Spoken language when none is given: one unlike the subtitles, so the sample needs dubbing.
DEFAULT_SOURCE: Mapping[str, str] = {"ko": "en", "ja": "en", "zh": "en", "en": "ja"}


@dataclass(frozen=True)
class SampleFiles:
    """What ``polydub sample`` wrote."""

    video: Path
    subtitles: Path


@dataclass(frozen=True)
class SampleTrack:
    """The sample's soundtrack and script, before encoding."""

    #: Speech plus background, mono float32.
    audio: NDArray[np.float32]
    #: The speech alone (drives the mouth; tests compare against it).
    speech: NDArray[np.float32]
    sample_rate: int
    duration_s: float
    #: Target-language subtitle cues, one per spoken phrase.
    segments: tuple[Segment, ...]
    #: What was spoken in each cue's slot, in the source language.
    spoken: tuple[str, ...]
    source_lang: str
    target_lang: str


@dataclass(frozen=True)
class FaceLayout:
    """The still picture and where its mouth is, in output pixels."""

    image: NDArray[np.uint8]
    mouth_center: tuple[int, int]
    #: Half width and largest half height of the open mouth.
    mouth_half_width: int
    mouth_max_half_height: int
    #: Gaussian sigma of the mouth's edge, in pixels.
    edge_sigma: float

    @property
    def mouth_box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) enclosing the fully open mouth and its soft edge."""
        cx, cy = self.mouth_center
        pad = int(math.ceil(3 * self.edge_sigma)) + 1
        h, w = self.image.shape[:2]
        return (
            max(0, cx - self.mouth_half_width - pad),
            max(0, cy - self.mouth_max_half_height - pad),
            min(w, cx + self.mouth_half_width + pad + 1),
            min(h, cy + self.mouth_max_half_height + pad + 1),
        )


# --- checks --------------------------------------------------------------------------


def _check_language(lang: str, role: str) -> None:
    if lang not in PHRASES:
        raise InputError(
            f"the sample cannot use {lang!r} as its {role} language",
            f"choose one of: {', '.join(LANGUAGES)}",
        )


def resolve_source_lang(target_lang: str, source_lang: str | None) -> str:
    """The spoken language: the one given, else :data:`DEFAULT_SOURCE` for the target."""
    _check_language(target_lang, "subtitle (target)")
    source = DEFAULT_SOURCE[target_lang] if source_lang is None else source_lang
    _check_language(source, "spoken (source)")
    return source


# --- audio ---------------------------------------------------------------------------


def _dbfs_to_rms(dbfs: float) -> float:
    return 10.0 ** (dbfs / 20.0)


def background(n_samples: int, sample_rate: int, seed: int = BACKGROUND_SEED) -> NDArray[np.float32]:
    """Pink noise plus a low hum, ~-35 dBFS, faded in and out; seeded, so reproducible.

    Made block by block, so a long sample holds no float64 copy of its whole length.
    """
    rng = np.random.default_rng(seed)
    out = np.empty(n_samples, dtype=np.float32)
    state = np.zeros(len(_PINK_A) - 1)
    energy = 0.0
    for start in range(0, n_samples, _NOISE_BLOCK):
        stop = min(n_samples, start + _NOISE_BLOCK)
        block, state = lfilter(_PINK_B, _PINK_A, rng.standard_normal(stop - start), zi=state)
        out[start:stop] = block
        energy += float(block @ block)
    rms = math.sqrt(energy / n_samples) if n_samples else 1.0
    out *= _dbfs_to_rms(NOISE_DBFS) / max(rms, 1e-12)
    hum_rms = math.sqrt(sum(a * a for a in HUM_HARMONICS) / 2)
    hum_gain = _dbfs_to_rms(HUM_DBFS) / hum_rms
    for start in range(0, n_samples, _NOISE_BLOCK):
        stop = min(n_samples, start + _NOISE_BLOCK)
        t = np.arange(start, stop, dtype=np.float64) / sample_rate
        hum = sum(a * np.sin(2 * np.pi * HUM_HZ * (k + 1) * t) for k, a in enumerate(HUM_HARMONICS))
        out[start:stop] += (hum_gain * hum).astype(np.float32)
    fade = min(n_samples // 2, int(_FADE_S * sample_rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        out[:fade] *= ramp
        out[-fade:] *= ramp[::-1]
    return out


def _speak(texts: Sequence[str], lang: str, sample_rate: int) -> list[NDArray[np.float32]]:
    """The sample's speaker saying each text at its natural pace, at ``sample_rate``.

    Through ``tts_espeak`` in process (eSpeak runs on the CPU, so no device is probed),
    then resampled from the model's rate.
    """
    items = [{"TEXT": text, "LANG": lang, "VOICE": SPEAKER_VARIANT, "PITCH_HZ": np.float32(SPEAKER_PITCH_HZ)}
             for text in texts]
    out = LocalInferenceClient(device="cpu").infer_sync("tts_espeak", join_items(items, TTS_INPUTS))
    return [resample(item["WAVEFORM"], int(scalar(item, "SAMPLE_RATE")), sample_rate)
            for item in split_batch(out, TTS_OUTPUTS)]


def build_track(
    target_lang: str,
    seconds: float,
    source_lang: str | None = None,
    sample_rate: int = DEFAULT_AUDIO_RATE,
) -> SampleTrack:
    """Speech, background and subtitle cues of a sample of ``seconds`` seconds."""
    source = resolve_source_lang(target_lang, source_lang)
    if not math.isfinite(seconds) or seconds < MIN_SECONDS:
        raise InputError(
            f"a sample of {seconds} s is too short for a phrase and its pauses",
            f"ask for at least {MIN_SECONDS:g} seconds",
        )
    spoken_table, target_table = PHRASES[source], PHRASES[target_lang]
    n = len(spoken_table)
    waves = _speak(spoken_table, source, sample_rate)

    total = int(round(seconds * sample_rate))
    speech = np.zeros(total, dtype=np.float32)
    segments: list[Segment] = []
    spoken: list[str] = []
    t_ms = int(LEAD_IN_S * _MS)
    k = 0
    while True:
        i = k % n
        length = len(waves[i])
        start = int(round(t_ms * sample_rate / _MS))
        if start + length + MIN_TAIL_S * sample_rate > total:
            break
        speech[start : start + length] = waves[i] * SPEECH_GAIN
        end_ms = t_ms + math.ceil(length * _MS / sample_rate)
        segments.append(Segment(index=k + 1, start_s=t_ms / _MS, end_s=end_ms / _MS, text=target_table[i]))
        spoken.append(spoken_table[i])
        t_ms = end_ms + int(PAUSES_S[k % len(PAUSES_S)] * _MS)
        k += 1
    if not segments:
        raise InputError(
            f"a sample of {seconds} s is too short for the first {source} phrase",
            f"ask for at least {LEAD_IN_S + len(waves[0]) / sample_rate + MIN_TAIL_S:.1f} seconds",
        )
    audio = background(total, sample_rate)
    audio += speech
    np.clip(audio, -1.0, 1.0, out=audio)
    return SampleTrack(
        audio=audio, speech=speech, sample_rate=sample_rate, duration_s=total / sample_rate,
        segments=tuple(segments), spoken=tuple(spoken), source_lang=source, target_lang=target_lang,
    )


# --- picture -------------------------------------------------------------------------


def face_layout(size: tuple[int, int] = DEFAULT_SIZE) -> FaceLayout:
    """The astronaut cropped around her face and resized to ``size`` (width, height)."""
    import cv2
    from skimage import data

    width, height = size
    if width < 16 or height < 16:
        raise InputError(f"a {width}x{height} picture is too small for a face", "use at least 64x64")
    portrait = data.astronaut()
    gray = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + _CASCADE)
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(40, 40))
    if len(faces) == 0:  # never on the astronaut; a clear message if a new OpenCV disagrees
        raise RuntimeError(f"OpenCV's {_CASCADE} found no face in skimage.data.astronaut()")
    fx, fy, fw, fh = (int(v) for v in max(faces, key=lambda r: int(r[2]) * int(r[3])))

    # A crop of the output's aspect ratio, centred on the face, shifted inside the image.
    img_h, img_w = portrait.shape[:2]
    crop_w = min(img_w, int(round(CROP_FACE_WIDTHS * fw)))
    crop_h = min(img_h, int(round(crop_w * height / width)))
    crop_w = min(crop_w, int(round(crop_h * width / height)))
    x0 = min(max(0, fx + fw // 2 - crop_w // 2), img_w - crop_w)
    y0 = min(max(0, fy + fh // 2 - crop_h // 2), img_h - crop_h)
    crop = portrait[y0 : y0 + crop_h, x0 : x0 + crop_w]
    image = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)

    sx, sy = width / crop_w, height / crop_h
    return FaceLayout(
        image=np.ascontiguousarray(image),
        mouth_center=(int(round((fx - x0 + MOUTH_X * fw) * sx)), int(round((fy - y0 + MOUTH_Y * fh) * sy))),
        mouth_half_width=max(2, int(round(MOUTH_HALF_WIDTH * fw * sx))),
        mouth_max_half_height=max(2, int(round(MOUTH_MAX_HALF_HEIGHT * fh * sy))),
        edge_sigma=max(0.5, MOUTH_EDGE_SIGMA * fw * sx),
    )


def mouth_openings(speech: NDArray[np.float32], sample_rate: int, fps: float, n_frames: int) -> NDArray[np.float32]:
    """Opening (0 closed .. 1 open) of the mouth in each frame, from the speech loudness.

    Frame ``i`` is shown over ``[i/fps, (i+1)/fps)``, so its loudness is measured over that
    interval (:func:`engines.dsp.frame_rms`).
    """
    env = frame_rms(speech, sample_rate, 1.0 / fps, n_frames).astype(np.float32)
    db = 20.0 * np.log10(np.maximum(env, 1e-9))
    return np.clip((db - MOUTH_CLOSED_DBFS) / (MOUTH_OPEN_DBFS - MOUTH_CLOSED_DBFS), 0.0, 1.0).astype(np.float32)


def render_frames(layout: FaceLayout, openings: Sequence[float] | NDArray[np.float32]) -> Iterator[NDArray[np.uint8]]:
    """One frame per opening: the still face with a soft dark mouth of that opening.

    Only the mouth box is recomputed; a closed mouth yields the still picture itself.
    """
    import cv2

    x0, y0, x1, y1 = layout.mouth_box
    cx, cy = layout.mouth_center[0] - x0, layout.mouth_center[1] - y0
    base_roi = layout.image[y0:y1, x0:x1].astype(np.float32)
    colour = np.array(MOUTH_RGB, dtype=np.float32)
    for opening in openings:
        if opening < MOUTH_MIN_OPENING:
            yield layout.image
            continue
        mask = np.zeros(base_roi.shape[:2], dtype=np.float32)
        half_h = max(1, int(round(float(opening) * layout.mouth_max_half_height)))
        cv2.ellipse(mask, (cx, cy), (layout.mouth_half_width, half_h), 0, 0, 360, 1.0, thickness=-1)
        mask = cv2.GaussianBlur(mask, (0, 0), layout.edge_sigma)[..., None] * MOUTH_OPACITY
        frame = layout.image.copy()
        frame[y0:y1, x0:x1] = np.clip(base_roi * (1.0 - mask) + colour * mask + 0.5, 0, 255).astype(np.uint8)
        yield frame


# --- files ---------------------------------------------------------------------------


def _write_text_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def make_sample(
    out_mp4: Path,
    target_lang: str,
    seconds: float,
    source_lang: str | None = None,
    fps: float = DEFAULT_FPS,
    size: tuple[int, int] = DEFAULT_SIZE,
    audio_rate: int = DEFAULT_AUDIO_RATE,
) -> SampleFiles:
    """Write the sample video ``out_mp4`` and its subtitles ``<stem>.srt`` beside it.

    ``target_lang`` is the subtitles' language (what to dub into), ``source_lang`` the
    spoken one (default: :data:`DEFAULT_SOURCE`). ``size`` is (width, height).
    """
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps}", "use a frame rate such as 25")
    out_mp4 = Path(out_mp4)
    track = build_track(target_lang, seconds, source_lang, audio_rate)
    layout = face_layout(size)
    n_frames = max(1, int(round(track.duration_s * fps)))
    openings = mouth_openings(track.speech, track.sample_rate, fps, n_frames)

    out_mp4.parent.mkdir(parents=True, exist_ok=True)
    subtitles = out_mp4.with_suffix(".srt")
    encode_mp4(out_mp4, render_frames(layout, openings), fps, track.audio, track.sample_rate,
               duration_s=track.duration_s)
    _write_text_atomic(subtitles, to_srt(track.segments))
    log.info(
        "sample written: %s (%.1f s, %d %s phrases under %s subtitles) and %s",
        out_mp4, track.duration_s, len(track.segments), track.source_lang, target_lang, subtitles,
    )
    return SampleFiles(video=out_mp4, subtitles=subtitles)


__all__ = [
    "DEFAULT_SOURCE",
    "FaceLayout",
    "LANGUAGES",
    "MIN_SECONDS",
    "PHRASES",
    "SampleFiles",
    "SampleTrack",
    "background",
    "build_track",
    "face_layout",
    "make_sample",
    "mouth_openings",
    "render_frames",
    "resolve_source_lang",
]
