"""GE2E speaker encoder: real weights, preprocessing, batching, voice ordering, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engines import speaker as spk
from engines.dsp import resample
from engines.dsp.mel import hz_to_mel, mel_to_hz, slaney_mel_filterbank
from engines.speaker import EMBEDDING_SIZE, SpeakerEncoder, SpeakerEncoderConfig, similarity

SR = 22_050


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    return SpeakerEncoder.load()


def tone_speech(seconds: float, f0: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Voiced-like test audio: a harmonic-rich buzz with syllable-rate amplitude modulation."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    buzz = sum(np.sin(k * phase) / k for k in range(1, 20))
    syllables = np.clip(np.sin(2 * np.pi * 2.5 * t + rng.uniform(0, 6)), 0, None)
    return (0.1 * buzz * syllables).astype(np.float32)


def test_weights_load_strictly_from_the_wheel(encoder: SpeakerEncoder) -> None:
    path = spk.default_weights_path()
    assert path.is_file() and path.name == "pretrained.pt" and path.parent.name == "resemblyzer"
    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    ours = encoder.state_dict()
    assert set(ours) == set(state)
    for key, value in state.items():
        assert torch.equal(ours[key], value), key


def test_forward_matches_a_numpy_lstm(encoder: SpeakerEncoder) -> None:
    """Resemblyzer's forward, written out in numpy from the checkpoint tensors (its own module
    cannot be imported here: it pulls librosa): last hidden state of layer 3 -> linear -> ReLU -> L2."""
    state = {k: v.numpy().astype(np.float64) for k, v in encoder.state_dict().items()}
    mels = np.random.default_rng(0).gamma(1.0, 0.5, size=(2, spk.PARTIAL_FRAMES, spk.N_MELS))

    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-x))

    x = mels
    for layer in range(spk.NUM_LAYERS):
        w_ih, w_hh = state[f"lstm.weight_ih_l{layer}"], state[f"lstm.weight_hh_l{layer}"]
        bias = state[f"lstm.bias_ih_l{layer}"] + state[f"lstm.bias_hh_l{layer}"]
        h = np.zeros((len(x), spk.HIDDEN_SIZE))
        c = np.zeros_like(h)
        outs = []
        for t in range(x.shape[1]):
            i, f, g, o = np.split(x[:, t] @ w_ih.T + h @ w_hh.T + bias, 4, axis=1)
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
            outs.append(h)
        x = np.stack(outs, axis=1)
    raw = np.maximum(h @ state["linear.weight"].T + state["linear.bias"], 0)
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    with torch.inference_mode():
        got = encoder(torch.from_numpy(mels.astype(np.float32))).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_mel_filterbank_is_slaney() -> None:
    """Slaney filters have unit area in Hz and peak at Slaney-mel-spaced centres (librosa's default;
    cross-checked once against librosa 0.10: max abs difference 1e-9)."""
    fb = slaney_mel_filterbank(spk.SAMPLE_RATE, spk.N_FFT, spk.N_MELS).astype(np.float32)
    assert fb.shape == (spk.N_MELS, spk.N_FFT // 2 + 1)
    bin_hz = spk.SAMPLE_RATE / spk.N_FFT
    np.testing.assert_allclose(fb.sum(axis=1) * bin_hz, 1.0, atol=0.05)
    assert fb[0, 1] == pytest.approx(0.00739021, rel=1e-5)  # librosa.filters.mel(sr=16000, n_fft=400, n_mels=40)
    assert fb.sum() == pytest.approx(0.9994972, rel=1e-5)
    assert int(fb[20].argmax()) == 44


def test_mel_spectrogram_frames_are_centred() -> None:
    mel = spk.mel_spectrogram(np.zeros(16_000))
    assert mel.shape == (1 + 16_000 // spk.HOP_LENGTH, spk.N_MELS) and not mel.any()
    tone = np.sin(2 * np.pi * 1000 * np.arange(16_000) / 16_000)
    band = spk.mel_spectrogram(tone)[50].argmax()
    centres = mel_to_hz(np.linspace(0, hz_to_mel(np.array([8000.0]))[0], spk.N_MELS + 2))[1:-1]
    assert abs(centres[band] - 1000) < 100


def test_embedding_shape_norm_and_determinism(encoder: SpeakerEncoder) -> None:
    wave = tone_speech(3.0, 140.0)
    a = encoder.embed(wave[None], [len(wave)], SR)
    b = encoder.embed(wave[None], [len(wave)], SR)
    assert a.shape == (1, EMBEDDING_SIZE) and a.dtype == np.float32
    assert np.linalg.norm(a[0]) == pytest.approx(1.0, abs=1e-5)
    assert (a >= 0).all(), "ReLU before the norm makes GE2E embeddings non-negative"
    np.testing.assert_array_equal(a, b)


def test_batch_equals_single(encoder: SpeakerEncoder) -> None:
    waves = [tone_speech(3.0, 120.0, seed=1), tone_speech(1.7, 210.0, seed=2), tone_speech(5.2, 95.0, seed=3)]
    lengths = [len(w) for w in waves]
    batch = np.zeros((len(waves), max(lengths)), dtype=np.float32)
    for i, w in enumerate(waves):
        batch[i, : len(w)] = w
    together = encoder.embed(batch, lengths, SR)
    for i, w in enumerate(waves):
        np.testing.assert_allclose(together[i], encoder.embed_one(w, SR), atol=1e-5)


def test_sample_rate_is_handled(encoder: SpeakerEncoder) -> None:
    from scipy.signal import resample_poly

    wave = tone_speech(3.0, 150.0, sr=16_000)
    at_16k = encoder.embed_one(wave, 16_000)
    at_48k = encoder.embed_one(resample_poly(wave, 3, 1).astype(np.float32), 48_000)
    assert similarity(at_16k, at_48k) > 0.99


def test_too_short_speech_says_how_much_and_the_minimum(encoder: SpeakerEncoder) -> None:
    short = tone_speech(0.3, 150.0)
    with pytest.raises(ValueError, match=r"0\.\d\d s of speech found in 0.30 s of audio, at least 0.50 s"):
        encoder.embed_one(short, SR)
    with pytest.raises(ValueError, match=r"0.00 s of speech"):
        encoder.embed_one(np.zeros(3 * SR, dtype=np.float32), SR)


def test_long_silences_are_trimmed(encoder: SpeakerEncoder) -> None:
    wave = tone_speech(2.0, 150.0)
    padded = np.concatenate([np.zeros(2 * SR, np.float32), wave, np.zeros(3 * SR, np.float32)])
    trimmed = encoder.preprocess(padded, SR)
    assert len(trimmed) < 2.8 * spk.SAMPLE_RATE
    assert similarity(encoder.embed_one(wave, SR), encoder.embed_one(padded, SR)) > 0.95


def test_quiet_input_is_raised_loud_input_kept(encoder: SpeakerEncoder) -> None:
    wave = tone_speech(2.0, 150.0).astype(np.float64)
    cfg = SpeakerEncoderConfig(trim_silence=False)
    plain = SpeakerEncoder(cfg)
    quiet = plain.preprocess(wave * 1e-3, SR)
    rms_db = 20 * math.log10(np.sqrt(np.mean(quiet**2)))
    assert rms_db == pytest.approx(cfg.target_dbfs, abs=0.5)
    loud = plain.preprocess(wave, SR)
    assert np.sqrt(np.mean(loud**2)) == pytest.approx(np.sqrt(np.mean(resample(wave, SR, spk.SAMPLE_RATE, dtype=np.float64) ** 2)))


def test_missing_weights_name_the_path_and_the_fix(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "pretrained.pt"
    with pytest.raises(FileNotFoundError, match=r"nowhere/pretrained.pt.*Resemblyzer"):
        SpeakerEncoder.load(missing)


def test_similarity_broadcasts() -> None:
    a = np.eye(4, dtype=np.float32)
    assert similarity(a[0], a[0]) == pytest.approx(1.0)
    np.testing.assert_allclose(similarity(a, a[1]), [0, 1, 0, 0])
    np.testing.assert_allclose(similarity(a * 3, a), [1, 1, 1, 1])


def test_same_voice_scores_higher_than_other_voices(encoder: SpeakerEncoder) -> None:
    """Two different sentences of one eSpeak voice are closer than either is to any other voice."""
    from engines.espeak.tts import EspeakTTS

    texts = ["Every morning she walks to the old market to buy fresh bread and a little cheese.",
             "We should probably leave before the storm arrives, the roads will be flooded soon."]
    variants = [None, "m3", "f2", "f4", "klatt"]
    tts = EspeakTTS()
    embeds = {}
    for variant in variants:
        waves, lengths = tts.synthesize(texts, ["en", "en"], variants=[variant, variant])
        embeds[variant] = encoder.embed(waves, lengths, tts.config.sample_rate)
    for v in variants:
        same = similarity(embeds[v][0], embeds[v][1])
        others = [similarity(embeds[v][0], embeds[w][1]) for w in variants if w != v]
        assert same > max(others), (v, same, others)
        assert same > 0.85
