"""The PocketSphinx recogniser and its served model: eSpeak English is understood, garble is not.

Speech is eSpeak NG English (the dub QC re-transcribes); the model is the en-US one
inside the ``pocketsphinx`` wheel. Decoding takes about half a second per sentence on
one core, so the tests that decode several are ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.asr import PocketsphinxRecognizer, RecognizerConfig, default_model_dir, find_model_files
from engines.espeak.tts import EspeakTTS
from handlers.quality.text import edit_distance, error_rate, tokens
from serving.batching import join_items, run_batch, split_batch
from serving.catalog import build_model
from serving.specs import scalar

#: Sentences of the sample's kind (short subtitle lines).
SENTENCES = ("Good morning, everyone.", "How are you today?", "Let's have lunch together.",
             "The weather is lovely today.", "I have 3 cats and 2 dogs.")
#: Highest corpus WER accepted on clean eSpeak English: measured 0.0-0.15 on such lines, so
#: this catches a recogniser or front end that broke, not one unlucky word.
CLEAN_MAX_WER = 0.3
#: Lowest WER of speech nobody could follow (time-reversed: measured above 1.0).
GARBLED_MIN_WER = 0.8


@pytest.fixture(scope="module")
def recognizer() -> PocketsphinxRecognizer:
    return PocketsphinxRecognizer()


@pytest.fixture(scope="module")
def speech() -> tuple[list[np.ndarray], int]:
    """Each sentence spoken by eSpeak's default English voice, at its own rate."""
    tts = EspeakTTS()
    spoken = [tts.synthesize_one(text, "en") for text in SENTENCES]
    return [s.audio for s in spoken], spoken[0].sample_rate


def corpus_wer(references: tuple[str, ...] | list[str], hypotheses: list[str]) -> float:
    ref = [tokens(r, "en") for r in references]
    return sum(edit_distance(r, tokens(h, "en")) for r, h in zip(ref, hypotheses)) / sum(len(r) for r in ref)


@pytest.mark.slow
def test_espeak_english_is_understood(recognizer: PocketsphinxRecognizer,
                                      speech: tuple[list[np.ndarray], int]) -> None:
    waves, rate = speech
    heard = [recognizer.transcribe(w, rate) for w in waves]
    assert corpus_wer(SENTENCES, heard) <= CLEAN_MAX_WER, heard
    assert heard[0] == "good morning everyone"
    assert all(h == h.lower() and "  " not in h for h in heard)


@pytest.mark.slow
def test_time_reversed_speech_and_noise_are_not_understood(recognizer: PocketsphinxRecognizer,
                                                           speech: tuple[list[np.ndarray], int]) -> None:
    waves, rate = speech
    reversed_heard = [recognizer.transcribe(w[::-1].copy(), rate) for w in waves]
    assert corpus_wer(SENTENCES, reversed_heard) >= GARBLED_MIN_WER, reversed_heard
    noise = (0.1 * np.random.default_rng(5).standard_normal(rate)).astype(np.float32)
    assert error_rate(SENTENCES[0], recognizer.transcribe(noise, rate), "en") >= GARBLED_MIN_WER


def test_silence_is_heard_as_nothing(recognizer: PocketsphinxRecognizer) -> None:
    assert recognizer.transcribe(np.zeros(16_000, dtype=np.float32), 16_000) == ""
    assert recognizer.transcribe(np.zeros(0, dtype=np.float32), 22_050) == ""
    assert error_rate(SENTENCES[0], "", "en") == 1.0


@pytest.mark.slow
def test_words_do_not_depend_on_what_was_decoded_before(speech: tuple[list[np.ndarray], int]) -> None:
    """Each clip heard by a fresh recogniser equals it heard after every other clip and garble.

    The history matters: without the front end rebuilt per utterance, a decoder that had
    heard other clips gave different words for three of eight short phrases.
    """
    waves, rate = speech
    clips = [*waves, *(w[::-1].copy() for w in waves)]
    fresh = [PocketsphinxRecognizer().transcribe(c, rate) for c in clips]
    seasoned = PocketsphinxRecognizer()
    backwards = [seasoned.transcribe(c, rate) for c in clips[::-1]][::-1]
    assert backwards == fresh
    padded = np.zeros((len(clips), max(c.size for c in clips)), dtype=np.float32)
    for i, c in enumerate(clips):
        padded[i, : c.size] = c
    lengths = np.array([c.size for c in clips])
    order = np.random.default_rng(3).permutation(len(clips))
    assert seasoned.transcribe_batch(padded[order], lengths[order], rate) == [fresh[i] for i in order]
    # Louder or quieter, the same words: the clip is scaled before decoding.
    assert seasoned.transcribe(waves[0] * np.float32(3.0), rate) == fresh[0]


def test_input_is_resampled_padded_and_over_a_noise_floor(recognizer: PocketsphinxRecognizer) -> None:
    rate = 22_050
    tone = (0.8 * np.sin(2 * np.pi * 200 * np.arange(rate) / rate)).astype(np.float32)
    pcm = recognizer.prepare(tone, rate)
    config = recognizer.config
    pad = int(round(config.pad_s * config.sample_rate))
    assert pcm.dtype == np.int16 and pcm.size == config.sample_rate + 2 * pad
    assert np.abs(pcm[pad:-pad]).max() == pytest.approx(config.peak * 32767, rel=0.1)  # peak, plus the floor
    floor = np.sqrt(np.mean(pcm[:pad].astype(np.float64) ** 2)) / 32767
    rms = config.peak / np.sqrt(2)
    assert floor == pytest.approx(rms * 10 ** (config.noise_floor_db / 20), rel=0.2)
    np.testing.assert_array_equal(recognizer.prepare(tone, rate), pcm)  # seeded: always the same


def test_bad_input_is_refused_with_the_reason(recognizer: PocketsphinxRecognizer) -> None:
    with pytest.raises(ValueError, match="mono 1-D"):
        recognizer.transcribe(np.zeros((2, 100), dtype=np.float32), 16_000)
    with pytest.raises(ValueError, match="NaN or infinite"):
        recognizer.transcribe(np.array([0.1, np.nan], dtype=np.float32), 16_000)
    with pytest.raises(ValueError, match="sample_rate must be positive"):
        recognizer.transcribe(np.zeros(100, dtype=np.float32), 0)
    with pytest.raises(ValueError, match="one length per row"):
        recognizer.transcribe_batch(np.zeros((2, 10), dtype=np.float32), np.array([10]), 16_000)
    with pytest.raises(ValueError, match="peak must be in"):
        RecognizerConfig(peak=0.0)


def test_model_folder_parts_are_found_or_named(tmp_path: Path) -> None:
    files = find_model_files(default_model_dir())
    assert (files.acoustic_model / "mdef").is_file()
    assert files.language_model.name == "en-us.lm.bin", "the phonetic LM beside it is not the word LM"
    assert files.dictionary.name.endswith(".dict")
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        find_model_files(tmp_path / "missing")
    (tmp_path / "am").mkdir()
    (tmp_path / "am" / "mdef").write_text("")
    (tmp_path / "words.dic").write_text("")
    with pytest.raises(ValueError, match=r"exactly one word language model .*found none"):
        find_model_files(tmp_path)
    (tmp_path / "a.lm.bin").write_bytes(b"")
    (tmp_path / "b.lm").write_text("")
    with pytest.raises(ValueError, match=r"exactly one word language model .*found a\.lm\.bin, b\.lm"):
        find_model_files(tmp_path)


def _served_text(model: object, items: list[dict]) -> list[str]:
    out = split_batch(run_batch(model, join_items(items, model.inputs)), model.outputs)  # type: ignore[attr-defined]
    return [str(scalar(item, "TEXT")) for item in out]


def test_served_model_names_the_missing_language_and_the_setting(tmp_path: Path) -> None:
    model = build_model("asr")
    assert sorted(model.languages) == ["en"]
    with pytest.raises(ValueError, match=r"no speech recogniser for language 'ko'.*POLYDUB_QC_ASR_MODELS_DIR"):
        model.infer_item({"WAVEFORM": np.zeros(100, np.float32), "SAMPLE_RATE": np.int32(16_000), "LANG": ["ko"]})
    with pytest.raises(ValueError, match="models_dir=.* is not a folder"):
        build_model("asr", {"models_dir": str(tmp_path / "missing")})


@pytest.mark.slow
def test_served_model_takes_a_model_folder_per_language(tmp_path: Path,
                                                        speech: tuple[list[np.ndarray], int]) -> None:
    (tmp_path / "xx").symlink_to(default_model_dir(), target_is_directory=True)
    model = build_model("asr", {"models_dir": str(tmp_path)})
    assert sorted(model.languages) == ["en", "xx"]
    waves, rate = speech
    items = [{"WAVEFORM": waves[0], "SAMPLE_RATE": np.int32(rate), "LANG": lang} for lang in ("en", "xx")]
    heard = _served_text(model, items)
    assert heard[0] == heard[1] == "good morning everyone"
