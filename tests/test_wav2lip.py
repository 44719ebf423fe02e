"""Wav2Lip: the published generator's exact state dict, the official checkpoint layout, the mel front end.

No weights can be downloaded: checkpoints are written by the tests in the
official layout (``{"state_dict", "optimizer", "global_step", "global_epoch"}``,
with and without DataParallel's ``module.``; the GAN file has the same keys),
from the published-size and the tiny network with random weights.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.dsp.mel import WAV2LIP_MEL, hz_to_mel, log_mel, mel_to_hz, mel_windows, slaney_mel_filterbank
from engines.wav2lip.checkpoint import config_from_state, load_wav2lip, random_wav2lip
from engines.wav2lip.config import FACE_SIZE, MEL_STEPS, Wav2LipConfig
from engines.wav2lip.model import Wav2Lip, face_inputs, generate

PUBLISHED_TENSORS = 352
PUBLISHED_PARAMETERS = 36_298_035
#: Key shapes the published generator has (MODELS.md, listed from the upstream module).
PUBLISHED_SHAPES = {
    "face_encoder_blocks.0.0.conv_block.0.weight": (16, 6, 7, 7),
    "audio_encoder.0.conv_block.0.weight": (32, 1, 3, 3),
    "face_decoder_blocks.1.0.conv_block.0.weight": (1024, 512, 3, 3),
    "face_decoder_blocks.6.0.conv_block.0.weight": (160, 64, 3, 3),
    "output_block.0.conv_block.0.weight": (32, 80, 3, 3),
    "output_block.1.weight": (3, 32, 1, 1),
}


def _inputs(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, size=(batch, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    mels = rng.uniform(-4, 4, size=(batch, 80, MEL_STEPS)).astype(np.float32)
    return crops, mels


def _save(path: Path, model: Wav2Lip, prefix: str = "module.", container: bool = True) -> Path:
    state = {f"{prefix}{key}": value for key, value in model.state_dict().items()}
    blob = {"state_dict": state, "optimizer": {"state": {}, "param_groups": []}, "global_step": 250_000,
            "global_epoch": 42} if container else state
    torch.save(blob, path)
    return path


@pytest.fixture(scope="module")
def published() -> Wav2Lip:
    return random_wav2lip(seed=1)


def test_the_published_size_has_the_published_state_dict(published: Wav2Lip) -> None:
    state = published.state_dict()
    assert len(state) == PUBLISHED_TENSORS
    assert sum(p.numel() for p in published.parameters()) == PUBLISHED_PARAMETERS
    for key, shape in PUBLISHED_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert config_from_state(state) == Wav2LipConfig()


def test_the_tiny_config_keeps_every_key_name(published: Wav2Lip) -> None:
    tiny = Wav2Lip(Wav2LipConfig.tiny())
    assert list(tiny.state_dict()) == list(published.state_dict())
    assert config_from_state(tiny.state_dict()) == Wav2LipConfig.tiny()
    assert sum(p.numel() for p in tiny.parameters()) < 50_000


@pytest.mark.parametrize("prefix, container", [("module.", True), ("", True), ("", False)],
                         ids=["official", "no-prefix", "bare-state-dict"])
def test_official_layout_checkpoints_load_strictly_and_give_the_same_outputs(
        tmp_path: Path, prefix: str, container: bool) -> None:
    original = random_wav2lip(Wav2LipConfig.tiny(), seed=3)
    path = _save(tmp_path / "wav2lip.pth", original, prefix, container)
    loaded = load_wav2lip(path)
    assert loaded.global_step == (250_000 if container else None)
    crops, mels = _inputs(3)
    np.testing.assert_array_equal(generate(loaded.model, crops, mels), generate(original, crops, mels))


def test_plain_and_gan_files_share_the_generator_keys(tmp_path: Path, published: Wav2Lip) -> None:
    plain = _save(tmp_path / "wav2lip.pth", published)
    gan = _save(tmp_path / "wav2lip_gan.pth", random_wav2lip(seed=2))
    a, b = load_wav2lip(plain).model, load_wav2lip(gan).model
    assert list(a.state_dict()) == list(b.state_dict())
    assert not torch.equal(a.output_block[1].weight, b.output_block[1].weight)


def test_a_file_that_is_not_a_wav2lip_generator_is_refused_naming_the_problem(tmp_path: Path) -> None:
    state = Wav2Lip(Wav2LipConfig.tiny()).state_dict()
    del state["output_block.1.bias"]
    torch.save({"state_dict": state}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match=r"missing key\(s\) \['output_block.1.bias'\]"):
        load_wav2lip(tmp_path / "broken.pth")
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a Wav2Lip generator"):
        load_wav2lip(tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_wav2lip(tmp_path / "absent.pth")


def test_face_inputs_are_bgr_with_the_lower_half_masked_then_the_reference() -> None:
    crops, _ = _inputs(2)
    faces = face_inputs(crops)
    assert faces.shape == (2, 6, FACE_SIZE, FACE_SIZE) and faces.dtype == np.float32
    bgr = crops[..., ::-1].transpose(0, 3, 1, 2) / 255.0
    np.testing.assert_allclose(faces[:, 3:], bgr, atol=1e-7)
    np.testing.assert_allclose(faces[:, :3, : FACE_SIZE // 2], bgr[:, :, : FACE_SIZE // 2], atol=1e-7)
    assert not faces[:, :3, FACE_SIZE // 2:].any()


def test_a_batch_gives_what_each_item_gives_alone() -> None:
    model = random_wav2lip(Wav2LipConfig.tiny(), seed=5)
    crops, mels = _inputs(4, seed=9)
    together = generate(model, crops, mels)
    alone = np.concatenate([generate(model, crops[i:i + 1], mels[i:i + 1]) for i in range(4)])
    assert together.shape == (4, FACE_SIZE, FACE_SIZE, 3) and together.dtype == np.uint8
    assert np.abs(together.astype(int) - alone.astype(int)).max() <= 1  # float rounding at most


# --- the mel front end ----------------------------------------------------------------------


def _direct_log_mel(wav: np.ndarray) -> np.ndarray:
    """Wav2Lip's published formula, step by step with plain loops and a DFT matrix (slow, obvious)."""
    spec = WAV2LIP_MEL
    emphasised = np.concatenate([[wav[0]], wav[1:] - spec.preemphasis * wav[:-1]])
    padded = np.pad(emphasised, spec.n_fft // 2, mode="reflect")
    n = np.arange(spec.n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / spec.n_fft)  # periodic Hann
    dft = np.exp(-2j * np.pi * np.outer(np.arange(spec.n_fft // 2 + 1), n) / spec.n_fft)
    frames = [padded[t * spec.hop_length: t * spec.hop_length + spec.n_fft]
              for t in range(1 + len(wav) // spec.hop_length)]
    magnitude = np.abs(np.stack([dft @ (frame * window) for frame in frames], axis=1))
    mel = slaney_mel_filterbank(16_000, 800, 80, 55.0, 7600.0) @ magnitude
    db = 20 * np.log10(np.maximum(1e-5, mel)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4)


def test_log_mel_is_the_published_formula_on_a_test_tone() -> None:
    t = np.arange(16_000) / 16_000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
    ours = log_mel(tone, WAV2LIP_MEL)
    assert ours.shape == (80, 1 + 16_000 // 200) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, _direct_log_mel(tone), atol=1e-4)
    assert ours.min() >= -4 and ours.max() <= 4
    centres = mel_to_hz(np.linspace(hz_to_mel(np.array([55.0]))[0], hz_to_mel(np.array([7600.0]))[0], 82))[1:-1]
    loudest = centres[np.argsort(ours[:, 40])[-2:]]  # the two partials' bands
    for partial in (440.0, 3000.0):
        assert np.abs(loudest - partial).min() < 0.1 * partial, (partial, loudest)


def test_the_slaney_filters_are_librosa_s() -> None:
    """Cross-checked once against ``librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600)``."""
    fb = slaney_mel_filterbank(16_000, 800, 80, 55.0, 7600.0)
    assert fb.shape == (80, 401)
    np.testing.assert_allclose(fb.sum(axis=1) * 20.0, 1.0, atol=0.1)  # unit area per band (20 Hz bins)
    # librosa 0.10.2's values (the whole matrix agreed to 1.6e-9; the whole log-mel of a 3 s
    # test signal, computed through librosa as Wav2Lip's audio.py does, to 1.3e-7).
    assert fb.sum() == pytest.approx(3.999497890472412, rel=1e-7)
    assert int(fb[40].argmax()) == 86 and fb[40].max() == pytest.approx(0.014343159273266792, rel=1e-6)
    assert fb[0, 3] == pytest.approx(0.0038695919793099165, rel=1e-6)


@pytest.mark.parametrize("fps", [23.976, 25.0, 29.97, 30.0, 60.0])
def test_every_frame_gets_its_mel_window_and_none_is_lost_at_the_end(fps: float) -> None:
    seconds = 2.0
    frames = int(math.floor(seconds * fps))
    mel = log_mel(np.random.default_rng(0).standard_normal(int(seconds * 16_000)) * 0.1, WAV2LIP_MEL)
    windows = mel_windows(mel, np.arange(frames) / fps, WAV2LIP_MEL, MEL_STEPS)
    assert windows.shape == (frames, 80, MEL_STEPS), "one window per frame, the last included"
    for i in (0, 1, frames // 2):
        start = int(i * 80 / fps)
        np.testing.assert_array_equal(windows[i], mel[:, start: start + MEL_STEPS])
    last = int((frames - 1) * 80 / fps)
    tail = mel.shape[1] - last
    np.testing.assert_array_equal(windows[-1][:, :tail], mel[:, last:])
    assert (windows[-1][:, tail:] == WAV2LIP_MEL.silence).all(), "past the audio: silence, not a repeat"
