"""The dubbed file's soundtrack keeps the source's layout and rate; the subtitles ride in it.

Sources are built here with PyAV from the sample video: the sample's own mono
track (44.1 kHz), a stereo AAC track at 32 kHz whose LEFT channel alone carries
a tone, and a 5.1(side) AC-3 track (what film masters ship) with the sample's
programme in the centre and a tone in the left SURROUND alone. Each goes
through every stage (eSpeak, no VC, no lip sync: merging copies the picture)
and the output is measured:

* same channels (5.1(side) comes back as 5.1: AAC has no side/back
  distinction), rate kept from 44.1 kHz up, 32 kHz raised to 48 kHz;
* the tone stays in its channel (nothing of it in the others), and is
  ducked while the dub speaks;
* the dub sits in the centre channel (5.1) or equally in both fronts (stereo);
* a ``mov_text`` stream tagged ``kor`` holds the subtitle cues.

The fast tests pin the pieces: layout and rate rules, the dub's channel
weights, BS.1770 channel weights, the linked limiter, every writable layout
round-tripping through the MP4 writer.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from pydantic import ValidationError

from engines.dsp import fit_length, frame_rms, resample
from handlers.inputs import validate_inputs
from handlers.merging import OUTPUT_DUB_TRACK, OUTPUT_VIDEO
from handlers.quality.measurements import OutputInfo
from handlers.quality.verdicts import _streams
from handlers.runtime import keys
from handlers.runtime.inference import LocalInferenceClient
from handlers.runtime.media import (
    channel_names,
    decode_audio,
    encode_mp4,
    probe,
    soundtrack_layout,
    soundtrack_rate,
)
from handlers.runtime.mix import dub_weights, limit_peaks, loudness_profile
from handlers.runtime.objectstore import LocalObjectStore
from handlers.runtime.settings import Settings
from handlers.runtime.subtitles import ISO_639_2, cue_lines, parse_subtitles
from handlers.runtime.wav import decode_wav
from handlers.sample import SampleFiles, make_sample
from schemas.errors import InputError
from schemas.events import SUPPORTED_LANGUAGES, DubCompleted, EngineChoice, MediaSubmitted, SubtitlesRef
from tests.test_stages import Pipeline

LANG = "ko"
SAMPLE_SECONDS = 6
#: The background tone: above most of the dub's energy, well inside every codec's band.
TONE_HZ = 6000.0
TONE_DBFS = -20.0
SOURCE_RATE = 48_000
LOW_SOURCE_RATE = 32_000
SOURCE_BIT_RATE = 256_000
SURROUND_BIT_RATE = 448_000
#: Dub activity: 10 ms frames above this level (the dub track is the voice alone).
ACTIVE_DBFS = -45.0
ACTIVITY_FRAME_S = 0.01
#: "Outside speech" keeps this far from any dub activity (duck release is 0.3 s).
CLEAR_OF_SPEECH_S = 0.6
#: "During speech" keeps this far inside the dub's active spans.
INSIDE_SPEECH_S = 0.05
#: What counts as "not in that channel": the tone this far below its own channel's level.
MAX_LEAKAGE_DB = -40.0
#: The dub's gain in the two fronts of a stereo output may differ by this (AAC coding).
MAX_FRONT_IMBALANCE_DB = 0.2
#: A channel without the dub holds less than this share of the centre's dub gain.
MAX_DUB_SHARE_OFF_CENTRE = 0.01
#: Ducking (POLYDUB_DUCK_DB is -14 dB): the tone under speech at least this much lower.
MIN_DUCK_DB = 10.0


# --- building the sources ---------------------------------------------------------------


def _tone(n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    return (10 ** (TONE_DBFS / 20) * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


def _write_source(path: Path, picture: Path, audio: np.ndarray, rate: int, layout: str, codec: str,
                  bit_rate: int) -> Path:
    """``picture``'s video packets remuxed, with ``audio`` ``(channels, samples)`` encoded by PyAV."""
    with av.open(str(picture)) as src, av.open(str(path), "w") as out:
        video_in = src.streams.video[0]
        video_out = out.add_stream_from_template(video_in)
        stream = out.add_stream(codec, rate=rate, layout=layout)
        stream.bit_rate = bit_rate
        step = 1024
        for start in range(0, audio.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, start:start + step]), format="fltp",
                                               layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
        for packet in src.demux(video_in):
            if packet.dts is None:
                continue
            packet.stream = video_out
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return make_sample(tmp_path_factory.mktemp("sample") / "sample.mp4", target_lang=LANG, seconds=SAMPLE_SECONDS)


def _stereo_source(sample: SampleFiles, directory: Path) -> Path:
    """The sample's programme in both channels (centred, as stereo dialogue is), the tone in LEFT only."""
    programme = decode_audio(sample.video, LOW_SOURCE_RATE)
    channels = np.stack([programme + _tone(programme.size, LOW_SOURCE_RATE), programme])
    return _write_source(directory / "stereo.mp4", sample.video, channels, LOW_SOURCE_RATE, "stereo", "aac",
                         SOURCE_BIT_RATE)


def _surround_source(sample: SampleFiles, directory: Path) -> Path:
    """5.1(side) AC-3: the programme in the centre, the tone in the left surround only, the rest silent."""
    programme = decode_audio(sample.video, SOURCE_RATE)
    names = channel_names("5.1(side)")
    channels = np.zeros((len(names), programme.size), dtype=np.float32)
    channels[names.index("FC")] = programme
    channels[names.index("SL")] = _tone(programme.size, SOURCE_RATE)
    return _write_source(directory / "surround.mkv", sample.video, channels, SOURCE_RATE, "5.1(side)", "ac3",
                         SURROUND_BIT_RATE)


# --- running and measuring ------------------------------------------------------------------


@dataclass
class Dubbed:
    """One source through every stage: the output file, its soundtrack and the dub voice alone."""

    source: Path
    video: Path
    layout: str
    rate: int
    audio: np.ndarray  # (samples, channels), decoded from the output MP4
    dub: np.ndarray  # the dub track at the output rate
    completed: DubCompleted

    def channel(self, name: str) -> np.ndarray:
        return self.audio[:, channel_names(self.layout).index(name)]


def _dub(source: Path, root: Path) -> Dubbed:
    settings = Settings(object_store="local", local_store_dir=root / "store", chunk_seconds=4.0,
                        trace_file=root / "traces.jsonl")
    store = LocalObjectStore(settings.local_store_dir)
    pipeline = Pipeline(settings, store, LocalInferenceClient())
    job_id = f"sound-{uuid.uuid4().hex[:10]}"
    subtitles = source.with_name("sample.srt")
    asyncio.run(pipeline.drive([MediaSubmitted(
        job_id=job_id, source_uri=source.resolve().as_uri(), target_lang=LANG,
        subtitles=SubtitlesRef(uri=subtitles.resolve().as_uri(), format="srt"),
        engines=EngineChoice(tts="espeak", vc="none", lipsync="none"))]))
    (completed,) = pipeline.publisher.of_type(DubCompleted)
    video = root / OUTPUT_VIDEO
    store.get_file(keys.output_key(job_id, OUTPUT_VIDEO), video)
    with av.open(str(video)) as container:
        stream = container.streams.audio[0]
        layout, rate = str(stream.layout.name), int(stream.codec_context.sample_rate)
    dub, dub_rate = decode_wav(store.get_bytes(keys.output_key(job_id, OUTPUT_DUB_TRACK)))
    audio = decode_audio(video, rate, layout=layout)
    return Dubbed(source, video, layout, rate, audio, fit_length(resample(dub, dub_rate, rate), audio.shape[0]),
                  completed)


def _speech_masks(dub: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(inside the dub's speech, well clear of it), per sample at ``rate``."""
    active = 20 * np.log10(frame_rms(dub, rate, ACTIVITY_FRAME_S) + 1e-12) >= ACTIVE_DBFS
    hop = int(round(ACTIVITY_FRAME_S * rate))
    per_sample = np.repeat(active, hop)[: dub.size]
    per_sample = np.pad(per_sample, (0, dub.size - per_sample.size))

    def spread(mask: np.ndarray, seconds: float) -> np.ndarray:
        width = int(seconds * rate)
        return np.convolve(mask.astype(np.float32), np.ones(2 * width + 1, np.float32), mode="same") > 0

    inside = ~spread(~per_sample, INSIDE_SPEECH_S)
    clear = ~spread(per_sample, CLEAR_OF_SPEECH_S)
    return inside, clear


def _tone_dbfs(x: np.ndarray, rate: int, where: np.ndarray) -> float:
    """Amplitude of the TONE_HZ component over the samples ``where`` (lock-in), in dBFS."""
    t = np.flatnonzero(where) / rate
    amplitude = 2 * abs(np.mean(x[where] * np.exp(-2j * np.pi * TONE_HZ * t)))
    return float(20 * np.log10(amplitude + 1e-12))


def _dub_gain(x: np.ndarray, dub: np.ndarray, where: np.ndarray) -> float:
    """How much of the dub ``x`` carries: its least-squares gain on the dub over ``where``."""
    d = dub[where].astype(np.float64)
    return float(np.dot(x[where], d) / np.dot(d, d))


def _cue_texts(video: Path) -> tuple[str | None, list[tuple[int, str]]]:
    """The subtitle stream's language tag and its non-empty cues as (start ms, text)."""
    with av.open(str(video)) as container:
        stream = container.streams.subtitles[0]
        cues = []
        for packet in container.demux(stream):
            if packet.pts is None or packet.time_base is None:
                continue
            for subtitle in packet.decode():
                text = subtitle.dialogue.decode("utf-8")  # type: ignore[union-attr]
                if text:
                    cues.append((round(packet.pts * packet.time_base * 1000), text))
        return stream.metadata.get("language"), cues


def _expected_cues(sample: SampleFiles) -> list[tuple[int, str]]:
    return [(round(s.start_s * 1000), "\n".join(cue_lines(s))) for s in parse_subtitles(sample.subtitles)]


@pytest.fixture(scope="module")
def stereo(sample: SampleFiles, tmp_path_factory: pytest.TempPathFactory) -> Dubbed:
    return _dub(_stereo_source(sample, sample.video.parent), tmp_path_factory.mktemp("stereo"))


@pytest.fixture(scope="module")
def surround(sample: SampleFiles, tmp_path_factory: pytest.TempPathFactory) -> Dubbed:
    return _dub(_surround_source(sample, sample.video.parent), tmp_path_factory.mktemp("surround"))


# --- end to end -----------------------------------------------------------------------------


@pytest.mark.slow
def test_mono_stays_mono_at_the_source_rate_with_a_korean_subtitle_track(
        sample: SampleFiles, tmp_path: Path) -> None:
    dubbed = _dub(sample.video, tmp_path)

    assert probe(sample.video).audio_rate == 44_100
    assert (dubbed.layout, dubbed.rate) == ("mono", 44_100)
    assert dubbed.completed.qc.passed, dubbed.completed.qc
    language, cues = _cue_texts(dubbed.video)
    assert language == "kor"
    assert cues == _expected_cues(sample)


@pytest.mark.slow
def test_stereo_keeps_its_channels_the_tone_left_and_the_dub_centred(stereo: Dubbed, sample: SampleFiles) -> None:
    inside, clear = _speech_masks(stereo.dub, stereo.rate)
    left, right = stereo.channel("FL"), stereo.channel("FR")

    assert probe(stereo.source).audio_rate == LOW_SOURCE_RATE
    assert (stereo.layout, stereo.rate) == ("stereo", 48_000)  # 32 kHz is raised to full band
    assert stereo.completed.qc.passed, stereo.completed.qc
    # The tone stays in the left channel, ducked under the dub.
    tone_clear, tone_ducked = _tone_dbfs(left, stereo.rate, clear), _tone_dbfs(left, stereo.rate, inside)
    assert tone_clear - tone_ducked >= MIN_DUCK_DB, (tone_clear, tone_ducked)
    assert _tone_dbfs(right, stereo.rate, clear) - tone_clear <= MAX_LEAKAGE_DB
    # The dub is in both fronts, equally: a phantom centre.
    g_left, g_right = _dub_gain(left, stereo.dub, inside), _dub_gain(right, stereo.dub, inside)
    assert g_left > 0 and g_right > 0
    assert abs(20 * np.log10(g_left / g_right)) <= MAX_FRONT_IMBALANCE_DB, (g_left, g_right)
    language, cues = _cue_texts(stereo.video)
    assert (language, cues) == ("kor", _expected_cues(sample))


@pytest.mark.slow
def test_surround_keeps_its_channels_the_tone_in_its_surround_and_the_dub_in_the_centre(surround: Dubbed) -> None:
    inside, clear = _speech_masks(surround.dub, surround.rate)
    names = channel_names(surround.layout)
    tone_clear = _tone_dbfs(surround.channel("BL"), surround.rate, clear)
    tone_ducked = _tone_dbfs(surround.channel("BL"), surround.rate, inside)
    centre_gain = _dub_gain(surround.channel("FC"), surround.dub, inside)

    assert probe(surround.source).audio_layout == "5.1(side)"
    assert (surround.layout, surround.rate) == ("5.1", SOURCE_RATE)  # side surrounds are AAC's surrounds
    assert surround.completed.qc.passed, surround.completed.qc
    assert tone_clear - tone_ducked >= MIN_DUCK_DB, (tone_clear, tone_ducked)
    for name in names:
        if name != "BL":
            assert _tone_dbfs(surround.channel(name), surround.rate, clear) - tone_clear <= MAX_LEAKAGE_DB, name
    assert centre_gain > 0
    for name in names:
        if name != "FC":
            share = abs(_dub_gain(surround.channel(name), surround.dub, inside)) / centre_gain
            assert share <= MAX_DUB_SHARE_OFF_CENTRE, (name, share)


@pytest.mark.slow
def test_the_output_meets_the_loudness_target_over_all_its_channels(surround: Dubbed) -> None:
    settings = Settings()
    lufs, _ = loudness_profile(surround.audio, surround.rate, channel_names(surround.layout))

    assert abs(lufs - settings.loudness_target_lufs) <= settings.qc_loudness_tolerance_lu, lufs
    assert surround.completed.qc.metrics["loudness"] == pytest.approx(settings.loudness_target_lufs, abs=0.1)


# --- the pieces -----------------------------------------------------------------------------


@pytest.mark.parametrize("source, channels, expected", [
    ("mono", 1, "mono"), ("stereo", 2, "stereo"), ("5.1", 6, "5.1"), ("5.1(side)", 6, "5.1"),
    ("5.0(side)", 5, "5.0"), ("quad(side)", 4, "quad"), (None, 6, "5.1"), (None, 2, "stereo"),
])
def test_the_soundtrack_keeps_the_layout_aac_can_carry(source: str | None, channels: int, expected: str) -> None:
    assert soundtrack_layout(source, channels) == expected


def test_a_layout_the_mp4_cannot_carry_is_refused_before_any_work(tmp_path: Path) -> None:
    path = tmp_path / "seven.wav"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=SOURCE_RATE, layout="7.1")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8 * 1024), np.int16), format="s16", layout="7.1")
        frame.sample_rate = SOURCE_RATE
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))

    with pytest.raises(InputError) as error:
        soundtrack_layout(probe(path).audio_layout, 8)
    assert "7.1" in error.value.reason and "5.1" in error.value.fix


@pytest.mark.parametrize("rate, expected", [
    (8000, 48_000), (22_050, 48_000), (32_000, 48_000), (44_100, 44_100), (48_000, 48_000), (96_000, 96_000),
    (192_000, 48_000),
])
def test_the_soundtrack_rate_is_the_sources_from_44_1_khz_up(rate: int, expected: int) -> None:
    assert soundtrack_rate(rate, 48_000) == expected


def test_the_low_rate_fallback_must_be_full_band(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYDUB_OUTPUT_AUDIO_RATE", "22050")
    with pytest.raises(ValidationError, match="full-band"):
        Settings()
    monkeypatch.setenv("POLYDUB_OUTPUT_AUDIO_RATE", "44100")
    assert Settings().output_audio_rate == 44_100


@pytest.mark.parametrize("layout, dub_in", [
    ("mono", {"FC"}), ("stereo", {"FL", "FR"}), ("2.1", {"FL", "FR"}), ("quad", {"FL", "FR"}),
    ("3.0", {"FC"}), ("5.1", {"FC"}),
])
def test_the_dub_goes_in_the_centre_or_both_fronts(layout: str, dub_in: set[str]) -> None:
    names = channel_names(layout)
    weights = dub_weights(names)

    assert {n for n, w in zip(names, weights) if w} == dub_in
    assert set(weights[weights > 0].tolist()) == {1.0}


def test_loudness_weighs_surrounds_up_and_leaves_the_lfe_out() -> None:
    names = channel_names("5.1")
    tone = _tone(SOURCE_RATE * 2, SOURCE_RATE)

    def with_tone_in(name: str) -> float:
        audio = np.zeros((tone.size, len(names)), np.float32)
        audio[:, names.index(name)] = tone
        return loudness_profile(audio, SOURCE_RATE, names)[0]

    mono = loudness_profile(tone, SOURCE_RATE)[0]
    assert with_tone_in("FL") == pytest.approx(mono, abs=0.01)
    assert with_tone_in("BL") - with_tone_in("FL") == pytest.approx(10 * np.log10(1.41), abs=0.01)
    assert with_tone_in("LFE") == float("-inf")


def test_the_limiter_is_linked_across_channels() -> None:
    n = SOURCE_RATE // 2
    audio = np.full((n, 2), 0.1, np.float32)
    audio[n // 2, 0] = 2.0  # one over, in the left channel only

    limited = limit_peaks(audio, SOURCE_RATE, -1.0)

    assert np.abs(limited).max() <= 10 ** (-1.0 / 20) + 1e-6
    gains = limited / audio
    np.testing.assert_allclose(np.delete(gains[:, 0], n // 2), np.delete(gains[:, 1], n // 2), rtol=1e-6)
    assert gains[n // 2, 1] < 1.0  # the right channel dips with the left


@pytest.mark.parametrize("layout", sorted({soundtrack_layout(name, channel_count)
                                           for name, channel_count in [("mono", 1), ("stereo", 2), ("2.1", 3),
                                                                       ("3.0", 3), ("4.0", 4), ("quad", 4),
                                                                       ("5.0", 5), ("5.1", 6)]}))
def test_every_writable_layout_round_trips_channel_for_channel(layout: str, tmp_path: Path) -> None:
    names = channel_names(layout)
    n = SOURCE_RATE
    t = np.arange(n) / SOURCE_RATE
    # Each channel its own frequency (the LFE a low one, the band it carries).
    freqs = [50.0 + 10 * i if name == "LFE" else 500.0 + 250 * i for i, name in enumerate(names)]
    audio = np.stack([0.2 * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)
    frames = [np.zeros((32, 32, 3), np.uint8)] * 25
    out = encode_mp4(tmp_path / "out.mp4", frames, 25, audio, SOURCE_RATE, 1.0, preset="ultrafast",
                     audio_layout=layout, language="kor", subtitles=[])

    info = probe(out)
    decoded = decode_audio(out, SOURCE_RATE, layout=layout)
    assert (info.audio_layout, info.audio_channels, info.subtitle_codec) == (layout, len(names), "mov_text")
    for i, f in enumerate(freqs):
        spectrum = np.abs(np.fft.rfft(decoded[SOURCE_RATE // 4:, i]))
        assert abs(np.argmax(spectrum) * SOURCE_RATE / (n - SOURCE_RATE // 4) - f) < 5, (layout, names[i])


@pytest.mark.parametrize("delivered, problem", [
    ({"audio_layout": "mono"}, "soundtrack is mono, not the source's 5.1"),
    ({"audio_rate": 32_000}, "soundtrack is 32000 Hz, below 44100 Hz"),
    ({"subtitle_codec": None, "subtitle_language": None}, "no mov_text subtitle track tagged kor"),
    ({"subtitle_language": "eng"}, "no mov_text subtitle track tagged kor"),
])
def test_qc_fails_a_delivery_that_lost_the_layout_the_rate_or_the_subtitle_track(
        delivered: dict[str, object], problem: str) -> None:
    good = {"duration_s": 6.0, "has_video": True, "has_audio": True, "video_codec": "h264", "audio_codec": "aac",
            "audio_layout": "5.1", "audio_rate": 48_000, "subtitle_codec": "mov_text", "subtitle_language": "kor",
            "expected_audio_layout": "5.1", "expected_subtitle_language": "kor"}
    passed = _streams(SimpleNamespace(output=OutputInfo(**good)))  # type: ignore[arg-type]
    failed = _streams(SimpleNamespace(output=OutputInfo(**(good | delivered))))  # type: ignore[arg-type]

    assert passed.passed and "5.1, 48000 Hz" in passed.reason and "mov_text subtitles (kor)" in passed.reason
    assert not failed.passed and failed.gate and problem in failed.reason, failed.reason


def test_validation_accepts_the_sample_and_every_language_has_a_container_tag(sample: SampleFiles) -> None:
    assert validate_inputs(sample.video, sample.subtitles).media.audio_layout == "mono"
    assert set(ISO_639_2) == set(SUPPORTED_LANGUAGES)
    assert ISO_639_2["zh"] == "zho"  # MP4 language tags are ISO 639-2/T
