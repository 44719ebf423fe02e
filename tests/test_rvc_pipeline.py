"""RVC's conversion pipeline: pitch, cuts, retrieval, protect, loudness, and pieces that join as the whole.

Random-weight models cannot say whether a conversion sounds like anyone; these
tests hold the pipeline to what it promises regardless of the weights: the
published formulas, exact lengths, determinism across batching and retries,
and that converting long audio in pieces gives what converting it whole gives.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.dsp.mel import stft_magnitude
from engines.rvc.nsf import SineSource
from engines.rvc.pipeline import (
    SEGMENTATION_FP32,
    ConversionOptions,
    Request,
    RvcPipeline,
    Segmentation,
    mix_loudness,
    quiet_cuts,
    sine_phase,
)
from engines.rvc.pitch import F0_METHODS, coarse_pitch, register_shift, shift_pitch, track_f0, voiced_median_hz
from engines.rvc.randomness import ItemDraws
from engines.rvc.retrieval import FeatureIndex
from engines.rvc.voice import LoadedVoice
from tests.fixtures.rvc import small_content_encoder, sung_tone, tiny_voice, voiced_speechlike

RATE = 16000
#: Long enough never to cut: the "whole" conversion of the pieces test.
UNCUT = Segmentation(pad_s=1.0, query_s=6.0, center_s=1000.0, max_s=1000.0)


@pytest.fixture(scope="module")
def content() -> torch.nn.Module:
    return small_content_encoder()


@pytest.fixture(scope="module")
def voice() -> LoadedVoice:
    return tiny_voice(seed=1)


def _convert(content: torch.nn.Module, voice: LoadedVoice, audio: np.ndarray, *,
             segmentation: Segmentation = SEGMENTATION_FP32, **options: object) -> np.ndarray:
    pipeline = RvcPipeline(content, ConversionOptions(**options), segmentation)  # type: ignore[arg-type]
    return pipeline.convert([Request(pipeline.analyse(audio, voice), voice)])[0]


# --- pitch ---------------------------------------------------------------------------------


def test_coarse_pitch_matches_the_published_formula_on_known_values() -> None:
    """mel = 1127 ln(1 + f/700); (mel - mel(50)) * 254 / (mel(1100) - mel(50)) + 1, clipped to 1..255, rounded."""
    f0 = np.array([0.0, 30.0, 50.0, 100.0, 155.5, 220.0, 440.0, 880.0, 1100.0, 2000.0])
    assert coarse_pitch(f0).tolist() == [1, 1, 1, 20, 39, 60, 122, 217, 255, 255]
    mel = lambda f: 1127 * math.log(1 + f / 700)  # noqa: E731
    for hz in (63.0, 137.2, 301.0, 777.7):
        expected = round((mel(hz) - mel(50)) * 254 / (mel(1100) - mel(50)) + 1)
        assert int(coarse_pitch(np.array([hz]))[0]) == expected


def test_a_pitch_shift_is_in_semitones_and_keeps_unvoiced_frames_unvoiced() -> None:
    shifted = shift_pitch(np.array([0.0, 110.0, 220.0]), 12)
    assert shifted.tolist() == [0.0, 220.0, 440.0]
    assert shift_pitch(np.array([200.0]), -7)[0] == pytest.approx(200 * 2 ** (-7 / 12))


@pytest.mark.parametrize("method", F0_METHODS)
def test_each_tracker_finds_the_pitch_of_a_voiced_tone_and_none_in_silence(method: str) -> None:
    tone = sung_tone(180, 1.5)
    frames = tone.size // 160 + 1
    f0 = track_f0(tone, frames, method)  # type: ignore[arg-type]
    assert f0.shape == (frames,)
    assert voiced_median_hz(f0) == pytest.approx(180, rel=0.03)
    assert np.mean(f0 > 0) > 0.8
    assert not track_f0(np.zeros(RATE), 101, method).any()  # type: ignore[arg-type]


def test_the_register_shift_moves_a_median_onto_another_and_is_bounded() -> None:
    assert register_shift(110.0, 220.0, 12) == pytest.approx(12)
    assert register_shift(200.0, 150.0, 12) == pytest.approx(12 * math.log2(0.75))
    assert register_shift(100.0, 800.0, 12) == 12  # three octaves asked, one given
    assert register_shift(None, 200.0, 12) == 0 and register_shift(200.0, None, 12) == 0


# --- segmentation --------------------------------------------------------------------------


def test_long_audio_is_cut_in_the_quiet_near_each_mark_on_the_content_grid() -> None:
    audio = voiced_speechlike(90.0)
    gaps = [(35.1, 35.4), (74.2, 74.5)]  # within query_s (6 s) of the marks at 38 s and 76 s
    for start, end in gaps:
        audio[int(start * RATE): int(end * RATE)] = 0
    cuts = quiet_cuts(audio, SEGMENTATION_FP32)
    assert len(cuts) == 2
    for cut, (start, end) in zip(cuts, gaps):
        assert start <= cut / 100 <= end
        assert cut % 2 == 0  # 20 ms content frames
    assert quiet_cuts(audio[: 40 * RATE], SEGMENTATION_FP32) == []


def test_a_segmentation_pad_must_be_whole_content_frames() -> None:
    with pytest.raises(ValueError, match="whole number of content frames"):
        Segmentation(pad_s=0.01, query_s=6, center_s=38, max_s=41)


def _log_spectrum(audio: np.ndarray) -> np.ndarray:
    return np.log(stft_magnitude(audio, 64, 16) + 1e-4)


@pytest.mark.slow
def test_converting_90s_in_pieces_matches_converting_it_whole_and_the_seams_do_not_click(
        content: torch.nn.Module, voice: LoadedVoice) -> None:
    """Away from the cuts the two agree to under 1 dB of log spectrum (different voices: some 8 dB apart).

    They cannot agree sample for sample: the content encoder and the text encoder attend over
    what they are given (a piece, or all 90 s), as RVC's own segmentation does.
    """
    audio = voiced_speechlike(90.0)
    pipeline = RvcPipeline(content, ConversionOptions(noise_scale=0.0))
    utterance = pipeline.analyse(audio, voice)
    assert len(utterance.pieces) == 3
    pieces = pipeline.convert([Request(utterance, voice)])[0]
    whole = _convert(content, voice, audio, segmentation=UNCUT, noise_scale=0.0)
    rate = voice.sample_rate
    assert pieces.size == whole.size == 90 * rate

    hop = 16
    spectrum = _log_spectrum(whole)
    away = np.ones(spectrum.shape[0], bool)
    seams = [start * rate // 100 for start, _ in utterance.pieces[1:]]
    for seam in seams:
        away[max(0, (seam - rate) // hop): (seam + rate) // hop] = False

    def distance(other: np.ndarray) -> float:
        """Mean absolute log-magnitude difference, in dB, over the frames away from the seams."""
        return float(np.abs(_log_spectrum(other) - spectrum).mean(axis=1)[away].mean() * 20 / math.log(10))

    piece_vs_whole = distance(pieces)
    unrelated = distance(_convert(content, tiny_voice(seed=5), audio, segmentation=UNCUT, noise_scale=0.0))
    assert piece_vs_whole < 1.0, piece_vs_whole
    assert piece_vs_whole < 0.1 * unrelated, (piece_vs_whole, unrelated)

    # No click: the largest step at a seam is no larger than the steps the voice makes anyway.
    steps = np.abs(np.diff(pieces))
    for seam in seams:
        assert steps[seam - 20: seam + 20].max() <= np.percentile(steps, 99.9)


def test_a_piece_starts_its_sine_where_the_whole_utterance_has_it() -> None:
    """Without it the voice's excitation would jump at every cut (RVC restarts each piece at phase 0)."""
    source = SineSource(1600, 16, voiced_noise_std=0.0)  # voiced and noise-free: the excitation is the sine
    f0 = torch.from_numpy(np.random.default_rng(2).uniform(80, 400, 300))[None]
    whole = source.excitation(f0, torch.tensor([300]), ItemDraws(None, 1))
    start = next(t for t in range(100, 200) if 0.3 < sine_phase(f0[0, :t].numpy(), 1600, 16) < 0.7)
    phase = torch.tensor([sine_phase(f0[0, :start].numpy(), 1600, 16)], dtype=torch.float64)
    piece = source.excitation(f0[:, start:], torch.tensor([300 - start]), ItemDraws(None, 1), phase)
    np.testing.assert_allclose(piece[0].numpy(), whole[0, start * 16:].numpy(), atol=2e-4)
    restarted = source.excitation(f0[:, start:], torch.tensor([300 - start]), ItemDraws(None, 1))
    assert np.abs(restarted[0].numpy() - whole[0, start * 16:].numpy()).max() > 0.5 * source.amplitude


@pytest.mark.slow
def test_a_voice_without_f0_converts_pieces_like_the_whole_sample_for_sample(content: torch.nn.Module) -> None:
    """No sine source, no noise: the only difference left is the content encoder's context."""
    voice = tiny_voice(seed=2, f0=False)
    audio = voiced_speechlike(50.0, seed=3)
    pieces = _convert(content, voice, audio, noise_scale=0.0)
    whole = _convert(content, voice, audio, segmentation=UNCUT, noise_scale=0.0)
    relative = np.sqrt(np.mean((pieces - whole) ** 2)) / np.sqrt(np.mean(whole ** 2))
    assert relative < 0.05, relative


# --- lengths, batches, retries --------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.05, 1.234, 3.0])
def test_the_output_is_exactly_as_long_as_the_input_at_the_voice_rate(content: torch.nn.Module,
                                                                       voice: LoadedVoice, seconds: float) -> None:
    audio = voiced_speechlike(seconds)
    out = _convert(content, voice, audio)
    assert out.size == round(audio.size * voice.sample_rate / RATE)
    assert np.isfinite(out).all() and np.abs(out).max() <= 0.99 + 1e-6


def test_an_utterance_converts_the_same_alone_in_a_batch_and_on_a_retry(content: torch.nn.Module,
                                                                        voice: LoadedVoice) -> None:
    pipeline = RvcPipeline(content)
    a, b = voiced_speechlike(2.0, seed=1), voiced_speechlike(3.1, seed=2)
    other_voice = tiny_voice(seed=9, f0=False)
    alone = pipeline.convert([Request(pipeline.analyse(a, voice), voice)])[0]
    batched = pipeline.convert([Request(pipeline.analyse(b, other_voice), other_voice),
                                Request(pipeline.analyse(a, voice), voice),
                                Request(pipeline.analyse(b, voice), voice)])
    again = pipeline.convert([Request(pipeline.analyse(a, voice), voice)])[0]
    assert np.array_equal(alone, again)
    np.testing.assert_allclose(batched[1], alone, atol=2e-5)
    assert not np.allclose(batched[2][: alone.size], alone, atol=1e-3)


def test_the_pitch_shift_changes_the_pitch_the_voice_is_driven_with(content: torch.nn.Module,
                                                                    voice: LoadedVoice) -> None:
    pipeline = RvcPipeline(content)
    utterance = pipeline.analyse(voiced_speechlike(1.0), voice)
    plain, octave = (pipeline.convert([Request(utterance, voice, semitones)])[0] for semitones in (0.0, 12.0))
    assert not np.allclose(plain, octave, atol=1e-3)


# --- retrieval and protect ------------------------------------------------------------------


def test_retrieval_takes_the_inverse_square_distance_mean_of_the_8_nearest() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 6)).astype(np.float32)
    index = FeatureIndex.from_vectors(vectors)
    query = rng.standard_normal((4, 6)).astype(np.float32)
    distances = ((query[:, None, :] - vectors[None]) ** 2).sum(-1)  # squared L2, as faiss reports
    nearest = np.argsort(distances, axis=1)[:, :8]
    weights = 1 / np.take_along_axis(distances, nearest, 1) ** 2
    expected = (weights[:, :, None] * vectors[nearest]).sum(1) / weights.sum(1, keepdims=True)
    np.testing.assert_allclose(index.retrieve(query), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(index.retrieve(vectors[:3]), vectors[:3], atol=1e-5)  # a stored frame: itself
    np.testing.assert_array_equal(index.blend(query, 0.0), query)
    np.testing.assert_allclose(index.blend(query, 0.25), 0.25 * expected + 0.75 * query, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="another RVC version"):
        index.retrieve(np.zeros((2, 5), np.float32))


def test_an_index_written_as_rvc_trains_it_reads_back_its_vectors(tmp_path: Path) -> None:
    import faiss

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((400, 256)).astype(np.float32)
    index = faiss.index_factory(256, "IVF8,Flat")  # RVC: IVF{n},Flat over the training features
    index.train(vectors)
    index.add(vectors)
    index.nprobe = 1
    faiss.write_index(index, str(tmp_path / "alice.index"))
    read = FeatureIndex.read(tmp_path / "alice.index")
    assert read.dim == 256 and read.vectors.shape == (400, 256)
    np.testing.assert_allclose(np.sort(read.vectors, axis=0), np.sort(vectors, axis=0))
    (tmp_path / "broken.index").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a faiss index"):
        FeatureIndex.read(tmp_path / "broken.index")


def test_protect_keeps_unvoiced_frames_off_the_index_and_retrieval_moves_voiced_ones(
        content: torch.nn.Module, voice: LoadedVoice) -> None:
    rng = np.random.default_rng(4)
    index = FeatureIndex.from_vectors(rng.standard_normal((64, 256)).astype(np.float32))
    pipeline = RvcPipeline(content, ConversionOptions(index_rate=1.0, protect=0.0))
    noise = (0.05 * rng.standard_normal(RATE)).astype(np.float32)  # nothing voiced
    utterance = pipeline.analyse(noise, voice)
    assert not utterance.own_f0_hz.any()
    with_index = pipeline.convert([Request(utterance, voice, index=index)])[0]
    without = pipeline.convert([Request(utterance, voice)])[0]
    np.testing.assert_allclose(with_index, without, atol=1e-5)

    voiced = pipeline.analyse(voiced_speechlike(1.0), voice)
    moved = pipeline.convert([Request(voiced, voice, index=index)])[0]
    assert not np.allclose(moved, pipeline.convert([Request(voiced, voice)])[0], atol=1e-3)


# --- loudness --------------------------------------------------------------------------------


def test_the_loudness_mix_moves_the_converted_contour_toward_the_input() -> None:
    rate = 8000
    source = np.concatenate([0.05 * np.ones(2 * RATE), 0.4 * np.ones(2 * RATE)])  # quiet, then loud
    converted = 0.2 * np.sin(2 * np.pi * 200 * np.arange(4 * rate) / rate)  # steady
    follow = mix_loudness(source, converted, rate, 0.0)
    keep = mix_loudness(source, converted, rate, 1.0)
    np.testing.assert_allclose(keep, converted)

    def rms(x: np.ndarray, a: float, b: float) -> float:
        return float(np.sqrt(np.mean(x[int(a * rate): int(b * rate)] ** 2)))

    assert rms(follow, 0.2, 1.2) == pytest.approx(0.05, rel=0.1)
    assert rms(follow, 2.8, 3.8) == pytest.approx(0.4, rel=0.1)
    half = mix_loudness(source, converted, rate, 0.5)
    assert rms(half, 0.2, 1.2) == pytest.approx(math.sqrt(0.05 * rms(converted, 0.2, 1.2)), rel=0.1)


# --- the published size --------------------------------------------------------------------


@pytest.mark.slow
def test_the_published_sizes_run_through_the_pipeline() -> None:
    """Published HuBERT (random) with published v1-40k and v2-48k voices (random): lengths and ranges."""
    from engines.rvc.hubert import random_hubert
    from engines.rvc.voice import random_voice

    content = random_hubert()
    audio = voiced_speechlike(1.5)
    for preset in ("v1-40k", "v2-48k"):
        voice = random_voice(preset)
        out = _convert(content, voice, audio)
        assert out.size == round(1.5 * voice.sample_rate)
        assert np.isfinite(out).all() and 0 < np.abs(out).max() <= 0.99 + 1e-6
