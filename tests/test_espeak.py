"""eSpeak NG TTS engine (engines.espeak): languages, determinism, batching, pitch, duration."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from engines.espeak.library import ESPEAK_SAMPLE_RATE, synth_raw
from engines.espeak.tts import EspeakConfig, EspeakTTS

with warnings.catch_warnings():  # pyworld imports pkg_resources
    warnings.simplefilter("ignore")
    import pyworld

SENTENCES = {
    "en": "Good morning, how are you today?",
    "ko": "안녕하세요, 오늘 기분이 어때요?",
    "ja": "おはようございます、きょうはいいてんきですね。",
    "zh": "早上好，你今天好吗？",
}
LANGS = tuple(SENTENCES)


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS()


def median_f0(audio: np.ndarray, sr: int = ESPEAK_SAMPLE_RATE) -> float:
    """Independent f0 estimate (WORLD's Harvest), median over voiced frames."""
    f0, _ = pyworld.harvest(audio.astype(np.float64), sr, f0_floor=50.0, f0_ceil=500.0)
    return float(np.median(f0[f0 > 0]))


@pytest.mark.parametrize("lang", LANGS)
def test_every_language_speaks(tts: EspeakTTS, lang: str) -> None:
    result = tts.synthesize_one(SENTENCES[lang], lang)
    audio = result.audio
    assert audio.dtype == np.float32 and np.all(np.isfinite(audio))
    assert 0.8 < result.duration_s < 4.0
    assert 0.1 < np.abs(audio).max() <= 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.02  # speech, not a click in silence
    # trimmed: sound right at both ends, no long leading/trailing silence
    edge = int(0.05 * ESPEAK_SAMPLE_RATE)
    assert np.abs(audio[:edge]).max() > 0.005 and np.abs(audio[-edge:]).max() > 0.005


def test_word_timings_follow_the_text(tts: EspeakTTS) -> None:
    result = tts.synthesize_one("Good morning, how are you today?", "en")
    words = [w.text for w in result.words]
    assert words == ["Good", "morning", "how", "are", "you", "today"]
    starts = [w.start_s for w in result.words]
    assert starts == sorted(starts) and starts[0] < 0.05
    assert all(0 <= w.start_s <= w.end_s <= result.duration_s + 1e-9 for w in result.words)


def test_same_input_gives_identical_samples(tts: EspeakTTS) -> None:
    first = tts.synthesize_one(SENTENCES["en"], "en").audio
    tts.synthesize_one(SENTENCES["ko"], "ko")  # other state in between
    second = tts.synthesize_one(SENTENCES["en"], "en").audio
    np.testing.assert_array_equal(first, second)
    klatt = [tts.synthesize_one(SENTENCES["zh"], "zh", variant="klatt").audio for _ in range(2)]
    np.testing.assert_array_equal(klatt[0], klatt[1])


def test_batch_is_padded_with_lengths(tts: EspeakTTS) -> None:
    texts = [SENTENCES[lang] for lang in LANGS]
    batch, lengths = tts.synthesize(texts, list(LANGS))
    assert batch.shape == (4, lengths.max()) and batch.dtype == np.float32
    assert lengths.dtype == np.int64
    for i, lang in enumerate(LANGS):
        alone = tts.synthesize_one(texts[i], lang).audio
        assert lengths[i] == len(alone)
        np.testing.assert_array_equal(batch[i, : lengths[i]], alone)
        assert not np.any(batch[i, lengths[i] :])


def test_batch_targets_and_nan_means_natural(tts: EspeakTTS) -> None:
    natural = tts.synthesize_one(SENTENCES["en"], "en").duration_s
    batch, lengths = tts.synthesize(
        [SENTENCES["en"]] * 3, ["en"] * 3, np.array([np.nan, natural * 1.1, 0.0]), None, [None, "m3", None]
    )
    assert lengths[1] == round(natural * 1.1 * ESPEAK_SAMPLE_RATE)
    assert lengths[0] == lengths[2] == round(natural * ESPEAK_SAMPLE_RATE)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("factor", [0.8, 1.0, 1.3])
def test_duration_control_within_3_percent(tts: EspeakTTS, lang: str, factor: float) -> None:
    natural = tts.synthesize_one(SENTENCES[lang], lang).duration_s
    target = natural * factor
    result = tts.synthesize_one(SENTENCES[lang], lang, target_duration_s=target)
    assert abs(result.duration_s - target) / target < 0.03
    # rate control did most of the work: what WSOLA had to close is small
    assert abs(result.spoken_s - target) / target < 0.06
    if factor != 1.0:
        assert (result.rate_wpm > 175) == (factor < 1.0)


def test_duration_control_at_another_output_rate() -> None:
    tts16 = EspeakTTS(EspeakConfig(sample_rate=16000))
    result = tts16.synthesize_one(SENTENCES["ko"], "ko", target_duration_s=2.0)
    assert result.sample_rate == 16000 and len(result.audio) == 32000


def test_unreachable_target_is_clamped_or_raises(tts: EspeakTTS) -> None:
    text = "This sentence is far too long to be said in a quarter of a second."
    clamped = tts.synthesize_one(text, "en", target_duration_s=0.25)
    assert clamped.duration_s > 0.5  # the closest reachable, not the impossible target
    assert clamped.duration_s == pytest.approx(clamped.spoken_s / 1.35, rel=0.01)
    strict = EspeakTTS(EspeakConfig(strict_duration=True))
    with pytest.raises(ValueError, match="cannot fit"):
        strict.synthesize_one(text, "en", target_duration_s=0.25)


def test_pitch_hz_moves_f0_the_right_way(tts: EspeakTTS) -> None:
    low = median_f0(tts.synthesize_one(SENTENCES["en"], "en", pitch_hz=85.0).audio)
    high = median_f0(tts.synthesize_one(SENTENCES["en"], "en", pitch_hz=150.0).audio)
    assert low < high
    assert low == pytest.approx(85.0, rel=0.1) and high == pytest.approx(150.0, rel=0.1)
    female = median_f0(tts.synthesize_one(SENTENCES["en"], "en", pitch_hz=210.0, variant="f2").audio)
    assert female == pytest.approx(210.0, rel=0.1)


def test_pitch_curve_is_monotonic(tts: EspeakTTS) -> None:
    params, hz = tts.pitch_curve("zh")
    assert params[0] == 0 and params[-1] == 100
    assert np.all(np.diff(hz) >= 0) and hz[-1] > 2 * hz[0]
    assert tts.pitch_param("zh", None, 1.0) == 0 and tts.pitch_param("zh", None, 5000.0) == 100
    assert tts.pitch_param("zh", None, float("nan")) == 50


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_rejected(tts: EspeakTTS, text: str) -> None:
    with pytest.raises(ValueError, match="empty text"):
        tts.synthesize([text], ["en"])


def test_unsupported_language_names_the_supported_ones(tts: EspeakTTS) -> None:
    with pytest.raises(ValueError, match="supported languages: en, ja, ko, zh"):
        tts.synthesize(["Bonjour"], ["fr"])
    with pytest.raises(ValueError, match="supported languages"):
        tts.synthesize_one("你好", "cmn")  # eSpeak's name, not polydub's code


def test_bad_batch_arguments(tts: EspeakTTS) -> None:
    with pytest.raises(ValueError, match="languages"):
        tts.synthesize(["a", "b"], ["en"])
    with pytest.raises(ValueError, match="target_durations_s"):
        tts.synthesize(["a"], ["en"], np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="variant"):
        tts.synthesize(["a"], ["en"], variants=["../../etc/passwd"])
    with pytest.raises(ValueError, match="variant"):
        tts.synthesize(["a"], ["en"], variants=["no-such-variant"])


def test_threads_give_the_serial_results(tts: EspeakTTS) -> None:
    jobs = [(SENTENCES[lang], lang, t) for lang in LANGS for t in (None, 1.7)]
    serial = [tts.synthesize_one(text, lang, target_duration_s=t).audio for text, lang, t in jobs]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for k in range(offset, len(jobs), 4):
                text, lang, t = jobs[k]
                results[k] = tts.synthesize_one(text, lang, target_duration_s=t).audio
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for k, expected in enumerate(serial):
        np.testing.assert_array_equal(results[k], expected)


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads Linux /proc")
def test_memory_stays_flat_over_many_syntheses() -> None:
    """Each synthesis loads and unloads the library: nothing may be left behind.

    Mixed-script text loads eSpeak's alternate translator (~180 kB) that
    espeak_Terminate does not free; 400 calls would leak ~70 MB without our cleanup.
    """

    def rss_mb() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 1e6

    for _ in range(20):
        synth_raw("hello 안녕", "ko", 175, 50, 50, 100, 1)
    before = rss_mb()
    for _ in range(400):
        synth_raw("hello 안녕", "ko", 175, 50, 50, 100, 1)
    assert rss_mb() - before < 10.0
