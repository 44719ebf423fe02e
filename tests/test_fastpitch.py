"""FastPitch + HiFi-GAN: published layouts, checkpoint formats, inference, bundle.

No NVIDIA weights can be downloaded here, so checkpoints are synthetic files
written with ``torch.save`` in each official layout. Published-size models are
only built and inspected (no full-size inference); behaviour is tested on the
tiny presets, which run the same code.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from engines.fastpitch import (
    FastPitch,
    FastPitchConfig,
    FastPitchTTS,
    HiFiGan,
    HiFiGanConfig,
    SymbolSet,
    SynthesisConfig,
    TextProcessor,
    load_fastpitch,
    load_hifigan,
)
from engines.fastpitch.model import DEFAULT_PITCH_STD_HZ, MEL_PAD_VALUE

HOP = 256

#: ckpt["config"] of a published FastPitch 1.1 (NVIDIA kwarg names, NGC values).
NVIDIA_PUBLISHED_CONFIG: dict[str, Any] = {
    "n_mel_channels": 80, "n_symbols": 148, "padding_idx": 0, "symbols_embedding_dim": 384,
    "in_fft_n_layers": 6, "in_fft_n_heads": 1, "in_fft_d_head": 64,
    "in_fft_conv1d_kernel_size": 3, "in_fft_conv1d_filter_size": 1536,
    "in_fft_output_size": 384, "p_in_fft_dropout": 0.1, "p_in_fft_dropatt": 0.1,
    "p_in_fft_dropemb": 0.0, "out_fft_n_layers": 6, "out_fft_n_heads": 1,
    "out_fft_d_head": 64, "out_fft_conv1d_kernel_size": 3,
    "out_fft_conv1d_filter_size": 1536, "out_fft_output_size": 384,
    "p_out_fft_dropout": 0.1, "p_out_fft_dropatt": 0.1, "p_out_fft_dropemb": 0.0,
    "dur_predictor_kernel_size": 3, "dur_predictor_filter_size": 256,
    "p_dur_predictor_dropout": 0.1, "dur_predictor_n_layers": 2,
    "pitch_predictor_kernel_size": 3, "pitch_predictor_filter_size": 256,
    "p_pitch_predictor_dropout": 0.1, "pitch_predictor_n_layers": 2,
    "pitch_embedding_kernel_size": 3, "n_speakers": 1, "speaker_emb_weight": 1.0,
    "energy_predictor_kernel_size": 3, "energy_predictor_filter_size": 256,
    "p_energy_predictor_dropout": 0.1, "energy_predictor_n_layers": 2,
    "energy_conditioning": True, "energy_embedding_kernel_size": 3,
}
#: The same for the tiny test model (what a small NVIDIA training run would save).
NVIDIA_TINY_CONFIG: dict[str, Any] = {
    **NVIDIA_PUBLISHED_CONFIG,
    "symbols_embedding_dim": 16, "in_fft_n_layers": 2, "in_fft_n_heads": 2, "in_fft_d_head": 4,
    "in_fft_conv1d_filter_size": 24, "in_fft_output_size": 16, "out_fft_n_layers": 2,
    "out_fft_n_heads": 2, "out_fft_d_head": 4, "out_fft_conv1d_filter_size": 24,
    "out_fft_output_size": 16, "dur_predictor_filter_size": 8,
    "pitch_predictor_filter_size": 8, "energy_predictor_filter_size": 8,
}
#: ckpt["config"] of NVIDIA's HiFi-GAN generator (V1).
NVIDIA_HIFIGAN_CONFIG: dict[str, Any] = {
    "upsample_rates": [8, 8, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4],
    "upsample_initial_channel": 512, "resblock": "1", "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
}
NVIDIA_TINY_HIFIGAN_CONFIG: dict[str, Any] = {
    **NVIDIA_HIFIGAN_CONFIG, "upsample_initial_channel": 16, "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
}
TRAIN_SETUP = {"sampling_rate": 22050, "hop_length": 256, "symbol_set": "english_basic",
               "text_cleaners": ["english_cleaners_v2"], "p_arpabet": 1.0, "epochs": 1000}


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Any:
    """Tiny models run fastest on one thread; with several, OpenMP spin-waits
    make them 10-30x slower on a busy machine. Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def n_params(module: torch.nn.Module, prefix: str = "", exclude: str | None = None) -> int:
    return sum(p.numel() for k, p in module.named_parameters()
               if k.startswith(prefix) and not (exclude and k.startswith(exclude)))


def tiny_fastpitch(seed: int = 0, frames_per_symbol: float = 5.0, **overrides: Any) -> FastPitch:
    """Tiny random FastPitch whose durations average about ``frames_per_symbol``."""
    torch.manual_seed(seed)
    model = FastPitch(FastPitchConfig.tiny(**overrides)).eval()
    with torch.no_grad():
        model.duration_predictor.fc.bias.fill_(math.log1p(frames_per_symbol))
    return model


def tiny_hifigan(seed: int = 0) -> HiFiGan:
    torch.manual_seed(seed)
    return HiFiGan(HiFiGanConfig.tiny()).eval()


def padded_batch(seqs: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    tokens = torch.full((len(seqs), int(lengths.max())), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s)
    return tokens, lengths


def random_seqs(lengths: list[int], seed: int = 1, n_symbols: int = 148) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, n_symbols, (n,), generator=g).tolist() for n in lengths]


def nvidia_fastpitch_file(path: Path, model: FastPitch, *, config: dict[str, Any] | None,
                          state_key: str = "state_dict", ema: FastPitch | None = None,
                          prefix: str = "", drop_attention: bool = False,
                          train_setup: dict[str, Any] | None = None) -> Path:
    """Write a FastPitch checkpoint the way NVIDIA's Checkpointer.maybe_save does."""
    def sd(m: FastPitch) -> dict[str, torch.Tensor]:
        return {prefix + k: v.clone() for k, v in m.state_dict().items()
                if not (drop_attention and k.startswith("attention."))}

    ckpt: dict[str, Any] = {
        "epoch": 1000, "iteration": 123456,
        "train_setup": dict(TRAIN_SETUP if train_setup is None else train_setup),
        state_key: sd(model),
        "optimizer": torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.9, 0.98)).state_dict(),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                   "growth_interval": 2000, "_growth_tracker": 0},
    }
    if ema is not None:
        ckpt["ema_state_dict"] = sd(ema)
    if config is not None:
        ckpt["config"] = config
    torch.save(ckpt, path)
    return path


def flat_resblocks(sd: dict[str, torch.Tensor], n_kernels: int) -> dict[str, torch.Tensor]:
    """NVIDIA nested resblocks.S.J.* -> original HiFi-GAN flat resblocks.(S*n+J).*"""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "resblocks":
            k = ".".join(["resblocks", str(int(parts[1]) * n_kernels + int(parts[2])), *parts[3:]])
        out[k] = v
    return out


# ---------------------------------------------------------------------------
# published sizes: build + state dict only
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def published_fastpitch() -> FastPitch:
    return FastPitch(FastPitchConfig())


@pytest.fixture(scope="module")
def published_hifigan() -> HiFiGan:
    return HiFiGan(HiFiGanConfig())


def test_published_fastpitch_state_dict_matches_nvidia(published_fastpitch: FastPitch) -> None:
    sd = published_fastpitch.state_dict()
    assert len(sd) == 185
    assert sum(k.startswith("attention.") for k in sd) == 12
    expected_shapes = {
        "encoder.word_emb.weight": (148, 384),
        "encoder.pos_emb.inv_freq": (192,),
        "encoder.layers.0.dec_attn.qkv_net.weight": (192, 384),
        "encoder.layers.5.dec_attn.o_net.weight": (384, 64),
        "encoder.layers.3.pos_ff.CoreNet.0.weight": (1536, 384, 3),
        "encoder.layers.3.pos_ff.CoreNet.2.weight": (384, 1536, 3),
        "decoder.layers.5.pos_ff.CoreNet.2.weight": (384, 1536, 3),
        "decoder.pos_emb.inv_freq": (192,),
        "duration_predictor.layers.0.conv.weight": (256, 384, 3),
        "duration_predictor.fc.weight": (1, 256),
        "pitch_predictor.layers.1.conv.weight": (256, 256, 3),
        "energy_predictor.fc.weight": (1, 256),
        "pitch_emb.weight": (384, 1, 3),
        "energy_emb.weight": (384, 1, 3),
        "proj.weight": (80, 384),
        "pitch_mean": (1,), "pitch_std": (1,),
        "attention.key_proj.0.conv.weight": (768, 384, 3),
    }
    for key, shape in expected_shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert "decoder.word_emb.weight" not in sd
    assert "encoder.layers.0.dec_attn.o_net.bias" not in sd  # o_net has no bias
    assert "speaker_emb.weight" not in sd                   # single speaker
    main = n_params(published_fastpitch, exclude="attention.")
    aligner = n_params(published_fastpitch, prefix="attention.")
    assert round(main / 1e6, 2) == 45.26
    assert round(aligner / 1e6, 1) == 1.0


def test_published_hifigan_state_dict_matches_nvidia(published_hifigan: HiFiGan) -> None:
    sd = published_hifigan.state_dict()
    assert len(sd) == 234
    assert sum(k.endswith("weight_g") for k in sd) == sum(k.endswith("weight_v") for k in sd) == 78
    expected_shapes = {
        "conv_pre.weight_v": (512, 80, 7), "conv_pre.weight_g": (512, 1, 1),
        "ups.0.weight_v": (512, 256, 16), "ups.0.weight_g": (512, 1, 1),
        "ups.3.weight_v": (64, 32, 4),
        "resblocks.0.0.convs1.0.weight_v": (256, 256, 3),
        "resblocks.3.2.convs2.2.weight_v": (32, 32, 11),
        "conv_post.weight_v": (1, 32, 7), "conv_post.bias": (1,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert round(n_params(published_hifigan) / 1e6, 2) == 13.94
    assert published_hifigan.hop_length == HOP


def test_published_config_from_nvidia_kwargs() -> None:
    assert FastPitchConfig.from_checkpoint_config(NVIDIA_PUBLISHED_CONFIG) == FastPitchConfig()
    assert FastPitchConfig().to_checkpoint_config() == NVIDIA_PUBLISHED_CONFIG
    assert HiFiGanConfig.from_checkpoint_config(NVIDIA_HIFIGAN_CONFIG) == HiFiGanConfig()
    assert FastPitchConfig.from_checkpoint_config(NVIDIA_TINY_CONFIG) == FastPitchConfig.tiny()
    assert HiFiGanConfig.from_checkpoint_config(NVIDIA_TINY_HIFIGAN_CONFIG) == HiFiGanConfig.tiny()


# ---------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------


def test_config_unknown_key_is_named() -> None:
    with pytest.raises(ValueError, match="in_fft_n_experts"):
        FastPitchConfig.from_checkpoint_config({**NVIDIA_PUBLISHED_CONFIG, "in_fft_n_experts": 4})
    with pytest.raises(ValueError, match="upsample_magic"):
        HiFiGanConfig.from_checkpoint_config({**NVIDIA_HIFIGAN_CONFIG, "upsample_magic": 1})


def test_config_partial_and_legacy_keys() -> None:
    # An old FastPitch 1.0 config: max_seq_len (ignored), no energy keys.
    old = {k: v for k, v in NVIDIA_PUBLISHED_CONFIG.items() if "energy" not in k}
    cfg = FastPitchConfig.from_checkpoint_config(
        {**old, "max_seq_len": 2048}, base=FastPitchConfig(energy_conditioning=False))
    assert cfg.energy_conditioning is False and cfg.n_symbols == 148
    # The original HiFi-GAN config.json carries training/audio keys: accepted.
    original = {**NVIDIA_HIFIGAN_CONFIG, "num_gpus": 0, "batch_size": 16, "learning_rate": 2e-4,
                "segment_size": 8192, "num_mels": 80, "hop_size": 256, "sampling_rate": 22050}
    assert HiFiGanConfig.from_checkpoint_config(original) == HiFiGanConfig()


@pytest.mark.parametrize("bad", [
    dict(encoder_output_size=256),
    dict(encoder_conv_kernel_size=4),
    dict(padding_idx=148),
    dict(encoder_dropout=1.0),
])
def test_invalid_fastpitch_config_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        FastPitchConfig(**bad)


def test_invalid_hifigan_config_rejected() -> None:
    with pytest.raises(ValueError, match="upsample"):
        HiFiGanConfig(upsample_rates=(8, 8, 2), upsample_kernel_sizes=(16, 16, 4, 4))
    with pytest.raises(ValueError, match="dilations"):
        HiFiGanConfig(resblock_dilation_sizes=((1, 3), (1, 3), (1, 3)))


# ---------------------------------------------------------------------------
# FastPitch inference (tiny)
# ---------------------------------------------------------------------------


def test_padded_batch_equals_unbatched() -> None:
    model = tiny_fastpitch()
    seqs = random_seqs([23, 9, 15, 4])
    paces = [1.0, 1.5, 0.8, 2.0]
    shifts = [0.0, 40.0, -25.0, 10.0]
    tokens, lengths = padded_batch(seqs)
    batched = model.infer(tokens, lengths, pace=paces, pitch_shift_hz=shifts)
    for i, seq in enumerate(seqs):
        alone = model.infer(torch.tensor([seq]), torch.tensor([len(seq)]),
                            pace=paces[i], pitch_shift_hz=shifts[i])
        n, t = len(seq), int(alone.mel_lengths[0])
        assert int(batched.mel_lengths[i]) == t
        torch.testing.assert_close(batched.mel[i, :, :t], alone.mel[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(batched.durations[i, :n], alone.durations[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(batched.pitch[i, :, :n], alone.pitch[0], atol=1e-4, rtol=0)
        assert batched.energy is not None and alone.energy is not None
        torch.testing.assert_close(batched.energy[i, :n], alone.energy[0], atol=1e-4, rtol=0)
        # padding: nothing predicted, mel holds the silence value
        assert torch.all(batched.durations[i, n:] == 0)
        assert torch.all(batched.pitch[i, :, n:] == 0)
        assert torch.all(batched.mel[i, :, t:] == MEL_PAD_VALUE)
    assert batched.mel.shape == (4, 80, int(batched.mel_lengths.max()))


def test_pace_two_halves_length() -> None:
    model = tiny_fastpitch(frames_per_symbol=9.0)
    tokens, lengths = padded_batch(random_seqs([30, 12]))
    normal = model.infer(tokens, lengths, pace=1.0)
    fast = model.infer(tokens, lengths, pace=2.0)
    for i, n in enumerate(lengths.tolist()):
        dur = normal.durations[i, :n]
        # published rounding: repeats = int(dur / pace + 0.5), per symbol
        assert int(normal.mel_lengths[i]) == int(torch.floor(dur + 0.5).sum())
        assert int(fast.mel_lengths[i]) == int(torch.floor(dur / 2 + 0.5).sum())
        assert abs(int(fast.mel_lengths[i]) - int(normal.mel_lengths[i]) / 2) <= 0.75 * n
    # with integer even durations, exactly half
    dur_tgt = torch.full(tokens.shape, 4.0)
    exact = model.infer(tokens, lengths, pace=2.0, dur_tgt=dur_tgt)
    assert exact.mel_lengths.tolist() == (lengths * 2).tolist()


def test_pitch_shift_and_scale_change_pitch() -> None:
    model = tiny_fastpitch()
    tokens, lengths = padded_batch(random_seqs([14, 6]))
    base = model.infer(tokens, lengths)
    shifted = model.infer(tokens, lengths, pitch_shift_hz=[50.0, 0.0])
    mask = torch.tensor([[1.0] * 14, [1.0] * 6 + [0.0] * 8])
    # buffers are zero -> the published LJSpeech stats apply: +50 Hz = +50/67.24 normalised
    torch.testing.assert_close(shifted.pitch[0, 0] - base.pitch[0, 0],
                               torch.full((14,), 50.0 / DEFAULT_PITCH_STD_HZ), atol=1e-5, rtol=0)
    torch.testing.assert_close(shifted.pitch[1], base.pitch[1])           # per item
    assert torch.all(shifted.pitch[:, 0] * (1 - mask) == 0)               # padding stays 0
    assert not torch.allclose(shifted.mel[0], base.mel[0])                # it is heard
    # with the model's own statistics, doubling F0 maps p -> 2p + mean/std
    with torch.no_grad():
        model.pitch_mean.fill_(200.0)
        model.pitch_std.fill_(50.0)
    doubled = model.infer(tokens, lengths, pitch_scale=2.0)
    torch.testing.assert_close(doubled.pitch[0, 0], base.pitch[0, 0] * 2 + 4.0, atol=1e-5, rtol=0)


def test_pitch_and_duration_overrides() -> None:
    model = tiny_fastpitch()
    tokens, lengths = padded_batch(random_seqs([8]))
    flat = model.infer(tokens, lengths, pitch_transform=lambda p, lens, mean, std: p * 0.0)
    assert torch.all(flat.pitch == 0)
    out = model.infer(tokens, lengths, dur_tgt=torch.arange(8.0)[None])
    assert out.mel_lengths.tolist() == [sum(range(8))]


def test_max_duration_clamps() -> None:
    model = tiny_fastpitch(frames_per_symbol=500.0)
    out = model.infer(*padded_batch(random_seqs([5])))
    assert float(out.durations.max()) == 75.0
    assert out.mel_lengths.tolist() == [5 * 75]


def test_multispeaker_and_no_energy_variants() -> None:
    model = tiny_fastpitch(n_speakers=3, energy_conditioning=False)
    sd = model.state_dict()
    assert tuple(sd["speaker_emb.weight"].shape) == (3, 16)
    assert not any(k.startswith(("energy_predictor.", "energy_emb.")) for k in sd)
    tokens, lengths = padded_batch(random_seqs([10, 10]))
    tokens[1] = tokens[0]
    out = model.infer(tokens, lengths, speaker=torch.tensor([0, 2]))
    assert out.energy is None
    assert not torch.allclose(out.mel[0], out.mel[1])  # same text, other voice
    with pytest.raises(ValueError, match="speaker"):
        model.infer(tokens, lengths, speaker=3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(lengths=torch.tensor([0])), "lengths"),
    (dict(pace=0.0), "pace"),
    (dict(pace=[1.0, 2.0]), "pace"),
    (dict(pitch_scale=-1.0), "pitch_scale"),
])
def test_infer_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    model = tiny_fastpitch()
    args: dict[str, Any] = dict(tokens=torch.tensor([[5, 6, 7]]), lengths=torch.tensor([3]))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        model.infer(**args)


def test_aligner_forward_is_a_distribution_over_symbols() -> None:
    model = tiny_fastpitch()
    mel = torch.randn(2, 80, 30)
    keys = model.encoder.word_emb(torch.randint(1, 148, (2, 7))).transpose(1, 2)
    padding = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    attn, logprob = model.attention(mel, keys, padding)
    assert attn.shape == logprob.shape == (2, 1, 30, 7)
    torch.testing.assert_close(attn.sum(3), torch.ones(2, 1, 30))
    assert torch.all(attn[1, :, :, 4:] == 0)


# ---------------------------------------------------------------------------
# HiFi-GAN (tiny)
# ---------------------------------------------------------------------------


def test_hifigan_shapes_batching_and_weight_norm_removal() -> None:
    gen = tiny_hifigan()
    mel = torch.randn(3, 80, 12)
    lengths = torch.tensor([12, 7, 3])
    with torch.no_grad():
        full = gen(mel)
        masked = gen(mel, lengths)
        assert full.shape == (3, 1, 12 * HOP)
        for i, n in enumerate(lengths.tolist()):
            alone = gen(mel[i:i + 1, :, :n])
            torch.testing.assert_close(masked[i, :, :n * HOP], alone[0], atol=1e-5, rtol=0)
            assert torch.all(masked[i, :, n * HOP:] == 0)
        assert gen.weight_normed
        gen.remove_weight_norm()
        assert not gen.weight_normed
        folded = gen(mel)
    torch.testing.assert_close(folded, full, atol=1e-5, rtol=0)
    keys = gen.state_dict()
    assert "conv_pre.weight" in keys and not any(k.endswith(("weight_g", "weight_v")) for k in keys)
    assert float(full.abs().max()) <= 1.0


def test_hifigan_rejects_wrong_mel_shape() -> None:
    with pytest.raises(ValueError, match="80"):
        tiny_hifigan()(torch.randn(1, 64, 10))


# ---------------------------------------------------------------------------
# checkpoints: FastPitch
# ---------------------------------------------------------------------------


def _same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: str | None = None) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa if not (skip and k.startswith(skip)))


@pytest.mark.parametrize("layout", ["with_config", "no_config_given", "module_prefix",
                                    "no_attention", "other_attention", "bare"])
def test_load_fastpitch_layouts(tmp_path: Path, layout: str) -> None:
    model = tiny_fastpitch(seed=3)
    path = tmp_path / "FastPitch_checkpoint_1000.pt"
    given: FastPitchConfig | None = None
    if layout == "with_config":
        nvidia_fastpitch_file(path, model, config=NVIDIA_TINY_CONFIG)
    elif layout == "no_config_given":  # like nvidia_fastpitch_210824.pt
        nvidia_fastpitch_file(path, model, config=None)
        given = FastPitchConfig.tiny()
    elif layout == "module_prefix":     # saved from DataParallel
        nvidia_fastpitch_file(path, model, config=NVIDIA_TINY_CONFIG, prefix="module.")
    elif layout == "no_attention":      # aligner stripped for deployment
        nvidia_fastpitch_file(path, model, config=NVIDIA_TINY_CONFIG, drop_attention=True)
    elif layout == "other_attention":   # aligner of another width: training-only, tolerated
        other = tiny_fastpitch(seed=3, attention_n_channels=8)
        other.load_state_dict({k: v for k, v in model.state_dict().items()
                               if not k.startswith("attention.")}, strict=False)
        nvidia_fastpitch_file(path, other, config=NVIDIA_TINY_CONFIG)
    else:
        torch.save(model.state_dict(), path)
        given = FastPitchConfig.tiny()
    loaded = load_fastpitch(path, given)
    assert loaded.config == FastPitchConfig.tiny()
    assert not loaded.model.training
    aligner_skipped = layout in ("no_attention", "other_attention")
    assert _same_weights(loaded.model, model, skip="attention." if aligner_skipped else None)
    if layout in ("with_config", "module_prefix", "no_attention"):
        assert loaded.config_source == "checkpoint"
        assert loaded.train_setup["symbol_set"] == "english_basic"
    tokens, lengths = padded_batch(random_seqs([9]))
    torch.testing.assert_close(loaded.model.infer(tokens, lengths).mel,
                               model.infer(tokens, lengths).mel)


def test_load_fastpitch_prefers_ema_when_asked(tmp_path: Path) -> None:
    model, ema = tiny_fastpitch(seed=1), tiny_fastpitch(seed=2)
    path = nvidia_fastpitch_file(tmp_path / "fp.pt", model, config=NVIDIA_TINY_CONFIG, ema=ema)
    assert load_fastpitch(path).state_key == "state_dict"
    loaded = load_fastpitch(path, prefer_ema=True)
    assert loaded.state_key == "ema_state_dict"
    assert _same_weights(loaded.model, ema) and not _same_weights(loaded.model, model)
    # an EMA-only file loads either way
    only_ema = nvidia_fastpitch_file(tmp_path / "ema.pt", ema, config=NVIDIA_TINY_CONFIG,
                                     state_key="ema_state_dict")
    assert load_fastpitch(only_ema).state_key == "ema_state_dict"


def test_load_fastpitch_wrong_formats(tmp_path: Path) -> None:
    model = tiny_fastpitch()
    # a HiFi-GAN file given as FastPitch: names the expected container keys
    gen_file = tmp_path / "gen.pt"
    torch.save({"generator": tiny_hifigan().state_dict(), "config": NVIDIA_TINY_HIFIGAN_CONFIG},
               gen_file)
    with pytest.raises(ValueError, match=r"'state_dict'.*'ema_state_dict'.*generator"):
        load_fastpitch(gen_file)
    # wrong keys: lists missing and unexpected ones and the layout expected
    sd = model.state_dict()
    sd["encoder.word_embedding.weight"] = sd.pop("encoder.word_emb.weight")
    sd.pop("proj.bias")
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": sd, "config": NVIDIA_TINY_CONFIG}, bad)
    with pytest.raises(ValueError) as info:
        load_fastpitch(bad)
    message = str(info.value)
    assert "2 missing key(s)" in message and "encoder.word_emb.weight" in message
    assert "proj.bias" in message and "encoder.word_embedding.weight" in message
    assert "NVIDIA FastPitch" in message
    # no embedded config and the defaults do not fit: shapes are reported
    no_cfg = nvidia_fastpitch_file(tmp_path / "nocfg.pt", model, config=None)
    with pytest.raises(ValueError, match=r"shape mismatch.*encoder.word_emb.weight: file \[148, 16\]"):
        load_fastpitch(no_cfg)
    # unknown embedded config key
    unknown = nvidia_fastpitch_file(tmp_path / "unk.pt", model,
                                    config={**NVIDIA_TINY_CONFIG, "use_flash": True})
    with pytest.raises(ValueError, match="use_flash"):
        load_fastpitch(unknown)
    with pytest.raises(FileNotFoundError, match="does-not-exist.pt"):
        load_fastpitch(tmp_path / "does-not-exist.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_fastpitch(garbage)


def test_pickle_needs_explicit_opt_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_fastpitch()
    path = tmp_path / "legacy.pt"
    # An old training run that saved argparse.Namespace: not loadable safely.
    torch.save({"state_dict": model.state_dict(), "config": NVIDIA_TINY_CONFIG,
                "train_setup": argparse.Namespace(sampling_rate=22050)}, path)
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_fastpitch(path)
    with caplog.at_level(logging.WARNING, logger="engines.fastpitch.checkpoint"):
        loaded = load_fastpitch(path, allow_pickle=True)
    assert "allow_pickle=True" in caplog.text and "legacy.pt" in caplog.text
    assert _same_weights(loaded.model, model)


# ---------------------------------------------------------------------------
# checkpoints: HiFi-GAN
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["nvidia_nested", "original_flat", "gen_ema",
                                    "squeezed_weight_g", "no_weight_norm"])
def test_load_hifigan_layouts(tmp_path: Path, layout: str) -> None:
    gen = tiny_hifigan(seed=4)
    mel = torch.randn(1, 80, 6)
    with torch.no_grad():
        reference = gen(mel)
    sd = gen.state_dict()
    path = tmp_path / "hifigan_gen_checkpoint_6500.pt"
    given = None
    expected_layout = "nested"
    prefer_ema = False
    if layout == "nvidia_nested":
        ckpt: dict[str, Any] = {"generator": sd, "config": NVIDIA_TINY_HIFIGAN_CONFIG,
                                "train_setup": dict(TRAIN_SETUP), "train_state": {"epoch": 6500}}
    elif layout == "original_flat":  # jik876 g_02500000: flat, no config
        ckpt = {"generator": flat_resblocks(sd, n_kernels=2)}
        given, expected_layout = HiFiGanConfig.tiny(), "flat"
    elif layout == "gen_ema":
        other = tiny_hifigan(seed=9).state_dict()
        ckpt = {"generator": other, "gen_ema": sd, "config": NVIDIA_TINY_HIFIGAN_CONFIG}
        prefer_ema = True
    elif layout == "squeezed_weight_g":  # weight_g saved as [C, 1]
        ckpt = {"generator": {k: v.squeeze(-1) if k.endswith("weight_g") else v
                              for k, v in sd.items()}, "config": NVIDIA_TINY_HIFIGAN_CONFIG}
    else:
        folded = tiny_hifigan(seed=4)
        folded.load_state_dict(sd)
        folded.remove_weight_norm()
        ckpt = {"generator": folded.state_dict(), "config": NVIDIA_TINY_HIFIGAN_CONFIG}
    torch.save(ckpt, path)
    loaded = load_hifigan(path, given, prefer_ema=prefer_ema)
    assert loaded.resblock_layout == expected_layout
    assert loaded.state_key == ("gen_ema" if prefer_ema else "generator")
    assert not loaded.model.weight_normed and not loaded.model.training
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(mel), reference, atol=1e-5, rtol=0)


def test_load_hifigan_keep_weight_norm_and_errors(tmp_path: Path) -> None:
    gen = tiny_hifigan()
    path = tmp_path / "g.pt"
    torch.save({"generator": gen.state_dict(), "config": NVIDIA_TINY_HIFIGAN_CONFIG}, path)
    kept = load_hifigan(path, remove_weight_norm=False)
    assert set(kept.model.state_dict()) == set(gen.state_dict())
    # the published default config does not fit a tiny file: shapes named
    torch.save({"generator": gen.state_dict()}, path)
    with pytest.raises(ValueError, match=r"HiFi-GAN generator.*shape mismatch.*conv_pre"):
        load_hifigan(path)
    # a FastPitch file given as HiFi-GAN
    fp_path = nvidia_fastpitch_file(tmp_path / "fp.pt", tiny_fastpitch(), config=NVIDIA_TINY_CONFIG)
    with pytest.raises(ValueError, match=r"'generator'.*'gen_ema'"):
        load_hifigan(fp_path)
    extra = {**gen.state_dict(), "mpd.discriminators.0.conv_post.weight": torch.zeros(1)}
    torch.save({"generator": extra, "config": NVIDIA_TINY_HIFIGAN_CONFIG}, path)
    with pytest.raises(ValueError, match=r"unexpected key\(s\).*mpd\.discriminators"):
        load_hifigan(path)


# ---------------------------------------------------------------------------
# the bundle
# ---------------------------------------------------------------------------


@pytest.fixture()
def tiny_checkpoints(tmp_path: Path) -> tuple[Path, Path]:
    fp = nvidia_fastpitch_file(tmp_path / "fastpitch.pt", tiny_fastpitch(frames_per_symbol=3.0),
                               config=NVIDIA_TINY_CONFIG)
    hg = tmp_path / "hifigan.pt"
    torch.save({"generator": tiny_hifigan().state_dict(), "config": NVIDIA_TINY_HIFIGAN_CONFIG,
                "train_setup": {"sampling_rate": 22050, "hop_length": 256}}, hg)
    return fp, hg


def test_tts_from_checkpoints(tiny_checkpoints: tuple[Path, Path],
                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="engines.fastpitch.synth"):
        tts = FastPitchTTS.load(*tiny_checkpoints)
    # train_setup says p_arpabet=1.0: the user is told to give a CMUdict
    assert "p_arpabet" in caplog.text and "cmudict_path" in caplog.text
    assert (tts.sample_rate, tts.hop_length) == (22050, HOP)
    assert tts.text.symbol_set.name == "english_basic"  # from train_setup
    texts = ["Hello there, Dr. Smith.", "It costs $5."]
    result = tts.synthesize(texts, pace=[1.0, 1.25], pitch_shift_hz=[0.0, 20.0])
    waves, lengths = result
    assert waves.dtype == np.float32 and waves.shape == (2, int(lengths.max()))
    assert lengths.dtype == np.int64 and all(n % HOP == 0 and n > 0 for n in lengths)
    for i, n in enumerate(lengths):
        assert np.abs(waves[i, :n]).max() == pytest.approx(1.0)  # published peak normalisation
        assert waves[i, n - 1] == 0.0                             # faded out
        assert np.all(waves[i, n:] == 0.0)
    # deterministic, and each item equals its unbatched synthesis
    again = tts.synthesize(texts, pace=[1.0, 1.25], pitch_shift_hz=[0.0, 20.0])
    np.testing.assert_array_equal(again.waveforms, waves)
    alone = tts.synthesize(texts[1:], pace=1.25, pitch_shift_hz=20.0)
    assert alone.lengths[0] == lengths[1]
    np.testing.assert_allclose(alone.waveforms[0], waves[1, :lengths[1]], atol=1e-4)
    # faster pace, shorter audio
    fast = tts.synthesize(texts[:1], pace=2.0)
    assert fast.lengths[0] < lengths[0]


def test_tts_postprocessing_options(tiny_checkpoints: tuple[Path, Path]) -> None:
    raw = FastPitchTTS.load(*tiny_checkpoints, synthesis=SynthesisConfig(fade_out_frames=0, peak=None))
    waves, lengths = raw.synthesize(["Hi."])
    assert 0.0 < np.abs(waves).max() < 1.0 and waves[0, lengths[0] - 1] != 0.0


def test_tts_errors(tiny_checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    fp, hg = tiny_checkpoints
    with pytest.raises(ValueError, match="hifigan_path"):
        FastPitchTTS.load(fp)
    with pytest.raises(ValueError, match="random_init"):
        FastPitchTTS.load(fp, hg, random_init=True)
    tts = FastPitchTTS.load(fp, hg)
    with pytest.raises(ValueError, match="nothing to speak"):
        tts.synthesize(["Hello", "  "])
    with pytest.raises(ValueError, match="U\\+4F60"):
        tts.synthesize(["Hello 你"])
    # a symbol set that does not match the model's embedding
    with pytest.raises(ValueError, match="148 symbol embeddings"):
        FastPitchTTS.load(fp, hg, symbol_set="english_basic_lowercase")


def test_tts_random_init_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="engines.fastpitch.synth"):
        tts = FastPitchTTS.load(random_init=True, fastpitch_config=FastPitchConfig.tiny(),
                                hifigan_config=HiFiGanConfig.tiny())
    assert "RANDOM WEIGHTS" in caplog.text
    waves, lengths = tts.synthesize(["A short test sentence."])
    # timing is speech-like (about RANDOM_INIT_FRAMES_PER_SYMBOL frames a symbol)
    n_symbols = len(tts.text.encode("A short test sentence."))
    assert 3 * n_symbols * HOP <= lengths[0] <= 9 * n_symbols * HOP
    same = FastPitchTTS.load(random_init=True, fastpitch_config=FastPitchConfig.tiny(),
                             hifigan_config=HiFiGanConfig.tiny()).synthesize(["A short test sentence."])
    np.testing.assert_array_equal(same.waveforms, waves)  # seeded


def test_tts_custom_symbol_set(tmp_path: Path) -> None:
    symbols = ["_", " ", ".", "ᄋ", "ᅡ", "ᆫ", "ᄂ", "ᅧ", "ᆼ"]
    sym_file = tmp_path / "ko_jamo.txt"
    sym_file.write_text("\n".join(symbols) + "\n", encoding="utf-8")
    symbol_set = SymbolSet.from_file(sym_file, unicode_form="NFD")
    fastpitch = tiny_fastpitch(n_symbols=len(symbols))
    tts = FastPitchTTS(fastpitch, tiny_hifigan(), TextProcessor(symbol_set))
    waves, lengths = tts.synthesize(["안녕. 안녕"])
    assert lengths[0] > 0 and np.isfinite(waves).all()


@pytest.mark.slow
def test_tts_random_init_published_size_speaks_a_sentence() -> None:
    tts = FastPitchTTS.load(random_init=True)
    assert len(tts.fastpitch.state_dict()) == 185
    waves, lengths = tts.synthesize(["Hi."])
    assert waves.shape == (1, lengths[0]) and lengths[0] > 0
