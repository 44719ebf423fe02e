"""RVC v1/v2 synthesizers and the ``.pth`` voice loader: published layouts, inference, files.

No RVC voice can be downloaded here, so published-size models are built on the
meta device (shapes without memory) to check every key, shape and count
against RVC's published layout, one published model runs a short forward, and
behaviour is tested on tiny configs with the same key names. Voice files are
synthetic, written by hand in the layout RVC's export uses.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch

from engines.rvc.attention import RELATIVE_WINDOW, RelativePositionAttention
from engines.rvc.config import CHECKPOINT_FIELDS, PUBLISHED_RECIPES, RvcConfig, preset, preset_names
from engines.rvc.flow import CouplingFlow
from engines.rvc.nsf import SineSource
from engines.rvc.randomness import ItemDraws, item_generators
from engines.rvc.synthesizer import PUBLISHED_NOISE_SCALE, RvcSynthesizer
from engines.rvc.voice import (
    LoadedVoice,
    load_rvc_voice,
    random_voice,
    randomize_parameters,
    save_rvc_voice,
    voice_file_contents,
)

#: (version, rate, f0) -> (state-dict tensors, parameters), enc_q excluded. Counted from
#: RVC master's own classes built at the published configs (they agree key for key), and
#: matching MODELS.md: v1-40k 457 / 27.44 M, v2-48k 28.72 M, five-stage configs 516.
PUBLISHED_COUNTS: dict[tuple[str, str, bool], tuple[int, int]] = {
    ("v1", "32k", True): (516, 27471170),
    ("v1", "32k", False): (503, 27402432),
    ("v1", "40k", True): (457, 27439042),
    ("v1", "40k", False): (446, 27367616),
    ("v1", "48k", True): (516, 27479362),
    ("v1", "48k", False): (503, 27402432),
    ("v2", "32k", True): (457, 28057538),
    ("v2", "32k", False): (446, 27990208),
    ("v2", "40k", True): (457, 27537346),
    ("v2", "40k", False): (446, 27465920),
    ("v2", "48k", True): (457, 28716994),
    ("v2", "48k", False): (446, 28645568),
}
VARIANTS = [("v1", True), ("v1", False), ("v2", True), ("v2", False)]
VARIANT_IDS = ["v1-f0", "v1-nono", "v2-f0", "v2-nono"]


@pytest.fixture(autouse=True, scope="module")
def _two_threads() -> Any:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@functools.lru_cache(maxsize=None)
def published_shapes(version: str, rate: str, f0: bool) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the published-size model, built once on the meta device."""
    with torch.device("meta"):
        model = RvcSynthesizer(preset(version, rate, f0))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def tiny_inputs(cfg: RvcConfig, lengths: list[int], seed: int = 0) -> dict[str, Any]:
    """A padded batch of content features, coarse pitch, F0 (with an unvoiced stretch) and speakers."""
    g = torch.Generator().manual_seed(seed)
    batch, frames = len(lengths), max(lengths)
    f0 = 90 + 250 * torch.rand(batch, frames, generator=g)
    f0[:, 3:6] = 0
    pitch = torch.randint(1, 256, (batch, frames), generator=g)
    with_pitch = cfg.f0
    return dict(phone=torch.randn(batch, frames, cfg.content_dim, generator=g), lengths=torch.tensor(lengths),
                pitch=pitch if with_pitch else None, nsff0=f0 if with_pitch else None,
                sid=torch.arange(batch) % cfg.n_speakers)


def item(inputs: dict[str, Any], b: int) -> dict[str, Any]:
    """Item b of a padded batch, cut to its own length (a batch of one)."""
    n = int(inputs["lengths"][b])
    cut = {k: (v[b:b + 1, :n] if v is not None else None) for k, v in inputs.items() if k in ("phone", "pitch", "nsff0")}
    return dict(cut, lengths=inputs["lengths"][b:b + 1], sid=inputs["sid"][b:b + 1])


@functools.lru_cache(maxsize=None)
def tiny_voice(version: str, f0: bool, seed: int = 3) -> RvcSynthesizer:
    return random_voice(RvcConfig.tiny(version=version, f0=f0), seed=seed).model


# ---------------------------------------------------------------------------
# published layouts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version,rate,f0", sorted(PUBLISHED_COUNTS), ids=lambda v: str(v))
def test_published_tensor_and_parameter_counts(version: str, rate: str, f0: bool) -> None:
    shapes = published_shapes(version, rate, f0)
    n_tensors, n_params = PUBLISHED_COUNTS[(version, rate, f0)]
    assert len(shapes) == n_tensors
    assert sum(math.prod(s) for s in shapes.values()) == n_params
    assert not [k for k in shapes if "enc_q" in k]
    stages = len(preset(version, rate).upsample_rates)
    resblocks = {int(k.split(".")[2]) for k in shapes if k.startswith("dec.resblocks.")}
    assert resblocks == set(range(3 * stages))  # 15 for the five-stage configs
    couplings = {int(k.split(".")[2]) for k in shapes if k.startswith("flow.flows.")}
    assert couplings == {0, 2, 4, 6}


def test_published_counts_match_models_md() -> None:
    assert PUBLISHED_COUNTS[("v1", "40k", True)][0] == 457
    assert round(PUBLISHED_COUNTS[("v1", "40k", True)][1] / 1e6, 2) == 27.44
    assert round(PUBLISHED_COUNTS[("v2", "48k", True)][1] / 1e6, 2) == 28.72
    assert PUBLISHED_COUNTS[("v1", "32k", True)][0] == PUBLISHED_COUNTS[("v1", "48k", True)][0] == 516


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_published_key_shapes(version: str) -> None:
    s = published_shapes(version, "40k", True)
    assert s["enc_p.emb_phone.weight"] == (192, 256 if version == "v1" else 768)
    assert s["enc_p.emb_pitch.weight"] == (256, 192)
    assert s["enc_p.encoder.attn_layers.0.emb_rel_k"] == (1, 2 * RELATIVE_WINDOW + 1, 96) == (1, 21, 96)
    assert s["enc_p.encoder.attn_layers.5.emb_rel_v"] == (1, 21, 96)
    assert s["enc_p.encoder.attn_layers.0.conv_q.weight"] == (192, 192, 1)
    assert s["enc_p.encoder.norm_layers_1.0.gamma"] == s["enc_p.encoder.norm_layers_2.5.beta"] == (192,)
    assert s["enc_p.encoder.ffn_layers.0.conv_1.weight"] == (768, 192, 3)
    assert s["enc_p.encoder.ffn_layers.0.conv_2.weight"] == (192, 768, 3)
    assert s["enc_p.proj.weight"] == (384, 192, 1)
    assert s["flow.flows.0.pre.weight"] == (192, 96, 1)
    assert s["flow.flows.0.enc.in_layers.0.weight_v"] == (384, 192, 5)
    assert s["flow.flows.0.enc.in_layers.0.weight_g"] == (384, 1, 1)
    assert [s[f"flow.flows.6.enc.res_skip_layers.{i}.weight_v"] for i in range(3)] == [
        (384, 192, 1), (384, 192, 1), (192, 192, 1)]
    assert s["flow.flows.0.enc.cond_layer.weight_v"] == (1152, 256, 1)
    assert s["flow.flows.0.post.weight"] == (96, 192, 1)
    assert s["dec.conv_pre.weight"] == (512, 192, 7)
    assert s["dec.cond.weight"] == (512, 256, 1)
    assert s["dec.ups.0.weight_v"] == (512, 256, 16)
    assert s["dec.ups.0.weight_g"] == (512, 1, 1)  # ConvTranspose: per *input* channel
    assert s["dec.noise_convs.0.weight"] == (256, 1, 80)  # stride 10*2*2 = 40, kernel 80
    assert s["dec.noise_convs.3.weight"] == (32, 1, 1)
    assert s["dec.resblocks.0.convs1.0.weight_v"] == (256, 256, 3)
    assert s["dec.resblocks.11.convs2.2.weight_v"] == (32, 32, 11)
    assert s["dec.conv_post.weight"] == (1, 32, 7)
    assert "dec.conv_post.bias" not in s
    assert s["dec.m_source.l_linear.weight"] == (1, 1)
    assert s["emb_g.weight"] == (109, 256)


def test_published_rate_specific_shapes() -> None:
    assert published_shapes("v2", "48k", True)["dec.ups.0.weight_v"] == (512, 256, 24)
    assert published_shapes("v2", "32k", True)["dec.ups.0.weight_v"] == (512, 256, 20)
    five_stage = published_shapes("v1", "48k", True)
    assert five_stage["dec.conv_post.weight"] == (1, 16, 7)
    assert five_stage["dec.noise_convs.0.weight"] == (256, 1, 96)  # stride 6*2*2*2 = 48
    assert published_shapes("v1", "32k", True)["dec.noise_convs.0.weight"] == (256, 1, 64)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_nono_variant_has_no_pitch_path(version: str) -> None:
    with_f0, nono = published_shapes(version, "40k", True), published_shapes(version, "40k", False)
    dropped = set(with_f0) - set(nono)
    assert not set(nono) - set(with_f0)
    assert {k.split(".")[1] for k in dropped if k.startswith("dec.")} == {"m_source", "noise_convs"}
    assert "enc_p.emb_pitch.weight" in dropped
    assert len(dropped) == 11  # emb_pitch + l_linear weight/bias + 4 noise convs x (weight, bias)


def test_published_model_runs_a_short_forward() -> None:
    voice = random_voice("v1-40k", seed=0)
    cfg = voice.config
    inputs = tiny_inputs(cfg, [8])
    out = voice.model.infer(**inputs, generator=torch.Generator().manual_seed(1))
    assert out.audio.shape == (1, 8 * 400)
    assert out.audio_lengths.tolist() == [3200]
    assert torch.isfinite(out.audio).all() and out.audio.abs().max() <= 1
    assert out.audio.abs().max() > 1e-3


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------


def test_presets_match_the_published_table() -> None:
    table = {("v1", "32k"): (320, 513, (10, 4, 2, 2, 2), (16, 16, 4, 4, 4)),
             ("v1", "40k"): (400, 1025, (10, 10, 2, 2), (16, 16, 4, 4)),
             ("v1", "48k"): (480, 1025, (10, 6, 2, 2, 2), (16, 16, 4, 4, 4)),
             ("v2", "32k"): (320, 513, (10, 8, 2, 2), (20, 16, 4, 4)),
             ("v2", "40k"): (400, 1025, (10, 10, 2, 2), (16, 16, 4, 4)),
             ("v2", "48k"): (480, 1025, (12, 10, 2, 2), (24, 20, 4, 4))}
    assert set(table) == set(PUBLISHED_RECIPES)
    for (version, rate), (hop, spec, rates, kernels) in table.items():
        cfg = preset(version, rate)
        assert (cfg.hop_length, cfg.spec_channels, cfg.upsample_rates, cfg.upsample_kernel_sizes) == (
            hop, spec, rates, kernels)
        assert cfg.sampling_rate == hop * 100 == preset(version, cfg.sampling_rate).sampling_rate
        assert cfg.to_checkpoint()[-3:] == [109, 256, cfg.sampling_rate]
    assert preset("v1", "40k").to_checkpoint() == [
        1025, 32, 192, 192, 768, 2, 6, 3, 0.0, "1", [3, 7, 11], [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
        [10, 10, 2, 2], 512, [16, 16, 4, 4], 109, 256, 40000]
    assert preset_names() == ["v1-32k", "v1-40k", "v1-48k", "v2-32k", "v2-40k", "v2-48k"]


def test_config_round_trips_through_the_checkpoint_list() -> None:
    for version, rate in PUBLISHED_RECIPES:
        for f0 in (True, False):
            cfg = preset(version, rate, f0)
            assert RvcConfig.from_checkpoint(cfg.to_checkpoint(), version, int(f0)) == cfg
    tiny = RvcConfig.tiny(version="v2", f0=False)
    assert len(tiny.to_checkpoint()) == len(CHECKPOINT_FIELDS) == 18
    assert RvcConfig.from_checkpoint(tiny.to_checkpoint(), "v2", 0) == tiny
    assert tiny.variant == "SynthesizerTrnMs768NSFsid_nono" and tiny.content_dim == 768


def test_config_accepts_what_old_files_hold(caplog: pytest.LogCaptureFixture) -> None:
    listed = preset("v1", "40k").to_checkpoint()
    listed[-1] = "40k"  # a rate label instead of Hz
    listed[14] = [16, 16, 4, 4, 4]  # a surplus kernel size, as RVC's own extraction wrote for 40k
    with caplog.at_level(logging.WARNING, logger="engines.rvc.config"):
        cfg = RvcConfig.from_checkpoint(listed)
    assert cfg == preset("v1", "40k")
    assert "surplus" in caplog.text


@pytest.mark.parametrize("change,message", [
    ({14: [16, 16, 4]}, "upsample_rates"),
    ({17: 44100}, "frames per second"),
    ({3: 191}, "n_heads"),
    ({2: 191}, "even"),
    ({9: "3"}, "resblock"),
    ({12: [10, 10, 2, 3], 14: [16, 16, 4, 5], 17: 60000}, "even"),
])
def test_inconsistent_configs_are_refused(change: dict[int, Any], message: str) -> None:
    listed = preset("v1", "40k").to_checkpoint()
    for index, value in change.items():
        listed[index] = value
    with pytest.raises(ValueError, match=message):
        RvcConfig.from_checkpoint(listed)
    with pytest.raises(ValueError, match="18 values"):
        RvcConfig.from_checkpoint(listed[:-1])


# ---------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------


def brute_force_relative_attention(attn: RelativePositionAttention, x: torch.Tensor, valid: int) -> torch.Tensor:
    """The textbook definition, pair by pair (one item, no padding past ``valid``)."""
    _, c, _ = x.shape
    h, d, w = attn.n_heads, attn.head_dim, attn.window
    x = x[:, :, :valid]
    q = attn.conv_q(x)[0].view(h, d, valid) / math.sqrt(d)
    k = attn.conv_k(x)[0].view(h, d, valid)
    v = attn.conv_v(x)[0].view(h, d, valid)
    ek, ev = attn.emb_rel_k[0], attn.emb_rel_v[0]
    out = torch.zeros(h, d, valid)
    for head in range(h):
        scores = torch.zeros(valid, valid)
        for i in range(valid):
            for j in range(valid):
                rel = ek[j - i + w] @ q[head, :, i] if abs(j - i) <= w else 0.0
                scores[i, j] = q[head, :, i] @ k[head, :, j] + rel
        probs = torch.softmax(scores, dim=1)
        for i in range(valid):
            acc = v[head] @ probs[i]
            for j in range(valid):
                if abs(j - i) <= w:
                    acc = acc + probs[i, j] * ev[j - i + w]
            out[head, :, i] = acc
    return attn.conv_o(out.reshape(1, c, valid))


@pytest.mark.parametrize("frames,valid", [(5, 5), (14, 14), (27, 19)])
def test_relative_attention_matches_its_definition(frames: int, valid: int) -> None:
    torch.manual_seed(0)
    attn = RelativePositionAttention(8, 2).eval()
    x = torch.randn(1, 8, frames)
    mask = (torch.arange(frames) < valid).float()[None, None]
    with torch.no_grad():
        fast = attn(x * mask, mask)[:, :, :valid]
        slow = brute_force_relative_attention(attn, x, valid)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_flow_inverse_undoes_forward() -> None:
    flow = CouplingFlow(4, 8, 6).eval()
    randomize_parameters(flow, torch.Generator().manual_seed(0))
    z = torch.randn(2, 4, 11)
    mask = torch.ones(2, 1, 11)
    g = torch.randn(2, 6, 1)
    with torch.no_grad():
        z_p = flow(z, mask, g)
        assert (z_p - z).abs().max() > 0.1  # random weights: not the identity
        assert torch.allclose(flow.inverse(z_p, mask, g), z, atol=1e-5)


def test_sine_source_phase_runs_on_across_frames() -> None:
    sr, hop = 800, 8
    source = SineSource(sr, hop)
    source.voiced_noise_std = 0.0  # the sine alone
    f0 = torch.tensor([[50.0, 75.0, 120.0, 120.0, 30.0]])
    exc = source.excitation(f0, torch.tensor([5]), ItemDraws(None, 1))[0, :, 0]
    cycles = torch.cumsum((f0.double() / sr).repeat_interleave(hop, dim=1)[0], dim=0)
    assert torch.allclose(exc.double(), 0.1 * torch.sin(2 * math.pi * cycles), atol=1e-6)


def test_sine_source_unvoiced_frames_are_noise() -> None:
    source = SineSource(800, 8)
    f0 = torch.zeros(1, 400)
    exc = source.excitation(f0, torch.tensor([400]), ItemDraws(torch.Generator().manual_seed(0), 1))
    assert abs(exc.std().item() - 0.1 / 3) < 0.002  # noise of std amplitude / 3, no sine


# ---------------------------------------------------------------------------
# inference on tiny models
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("version,f0", VARIANTS, ids=VARIANT_IDS)
def test_infer_length_and_range(version: str, f0: bool) -> None:
    model = tiny_voice(version, f0)
    inputs = tiny_inputs(model.config, [23, 9])
    out = model.infer(**inputs, generator=torch.Generator().manual_seed(0))
    hop = model.hop_length
    assert out.audio.shape == (2, 23 * hop) and out.audio.dtype == torch.float32
    assert out.audio_lengths.tolist() == [23 * hop, 9 * hop]
    assert torch.isfinite(out.audio).all() and out.audio.abs().max() <= 1
    assert out.audio[0].abs().max() > 1e-3
    assert out.audio[1, 9 * hop:].abs().max() == 0  # silence past the item's end


@pytest.mark.parametrize("version,f0", VARIANTS, ids=VARIANT_IDS)
def test_padded_batch_gives_each_item_what_it_gets_alone(version: str, f0: bool) -> None:
    model = tiny_voice(version, f0)
    lengths = [31, 17, 4]
    inputs = tiny_inputs(model.config, lengths, seed=1)
    seeds = [11, 12, 13]
    batch = model.infer(**inputs, generator=item_generators(seeds)).audio
    hop = model.hop_length
    for b, n in enumerate(lengths):
        alone = model.infer(**item(inputs, b), generator=item_generators([seeds[b]])).audio
        assert alone.shape == (1, n * hop)
        assert torch.allclose(batch[b, :n * hop], alone[0], atol=1e-5), (b, (batch[b, :n * hop] - alone[0]).abs().max())


@pytest.mark.parametrize("version,f0", VARIANTS, ids=VARIANT_IDS)
def test_seeded_generators_are_deterministic(version: str, f0: bool) -> None:
    model = tiny_voice(version, f0)
    inputs = tiny_inputs(model.config, [20, 13], seed=2)
    first = model.infer(**inputs, generator=item_generators([5, 6])).audio
    again = model.infer(**inputs, generator=item_generators([5, 6])).audio
    assert torch.equal(first, again)  # byte-identical redelivery
    shared = model.infer(**inputs, generator=torch.Generator().manual_seed(5)).audio
    assert torch.equal(shared, model.infer(**inputs, generator=torch.Generator().manual_seed(5)).audio)
    other = model.infer(**inputs, generator=item_generators([5, 7])).audio
    assert torch.equal(first[0], other[0])  # item 0 does not hear item 1's seed
    assert (first[1] - other[1]).abs().max() > 1e-4


def test_without_latent_noise_a_nono_voice_needs_no_randomness() -> None:
    model = tiny_voice("v1", False)
    inputs = tiny_inputs(model.config, [15])
    a = model.infer(**inputs, noise_scale=0.0, generator=torch.Generator().manual_seed(1)).audio
    b = model.infer(**inputs, noise_scale=0.0, generator=torch.Generator().manual_seed(2)).audio
    assert torch.equal(a, b)
    noisy = model.infer(**inputs, generator=torch.Generator().manual_seed(1)).audio
    assert (noisy - a).abs().max() > 1e-4
    assert PUBLISHED_NOISE_SCALE == 0.66666


def test_infer_refuses_inputs_that_do_not_fit_the_voice() -> None:
    f0_voice, nono = tiny_voice("v2", True), tiny_voice("v1", False)
    good = tiny_inputs(f0_voice.config, [6])
    with pytest.raises(ValueError, match="768"):
        f0_voice.infer(**dict(good, phone=torch.randn(1, 6, 256)))
    with pytest.raises(ValueError, match="needs pitch"):
        f0_voice.infer(**dict(good, pitch=None))
    with pytest.raises(ValueError, match="without F0"):
        nono.infer(**dict(tiny_inputs(nono.config, [6]), pitch=good["pitch"], nsff0=good["nsff0"]))
    with pytest.raises(ValueError, match="lengths"):
        f0_voice.infer(**dict(good, lengths=torch.tensor([7])))
    with pytest.raises(ValueError, match="speaker ids"):
        f0_voice.infer(**dict(good, sid=torch.tensor([3])))
    with pytest.raises(ValueError, match="coarse pitch"):
        f0_voice.infer(**dict(good, pitch=torch.full((1, 6), 256)))
    with pytest.raises(ValueError, match="one per item"):
        f0_voice.infer(**good, generator=item_generators([1, 2]))


@pytest.mark.parametrize("f0", [True, False], ids=["f0", "nono"])
def test_half_precision_follows_the_module(f0: bool) -> None:
    # What a GPU runs; CPU kernels stand in. Nothing in the forward may pin float32.
    cfg = RvcConfig.tiny(version="v2", f0=f0)
    full = random_voice(cfg, seed=5).model
    half = random_voice(cfg, seed=5, dtype=torch.float16).model
    inputs = tiny_inputs(cfg, [16, 10])
    out = half.infer(**inputs, generator=item_generators([1, 2])).audio
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    reference = full.infer(**inputs, generator=item_generators([1, 2])).audio
    assert (out.float() - reference).abs().max() < 0.05


def test_folding_weight_norm_keeps_the_output() -> None:
    model = random_voice(RvcConfig.tiny(), seed=4).model
    inputs = tiny_inputs(model.config, [12])
    before = model.infer(**inputs, generator=item_generators([1])).audio
    model.fold_weight_norm()
    assert not [k for k in model.state_dict() if k.endswith("weight_v")]
    assert torch.allclose(model.infer(**inputs, generator=item_generators([1])).audio, before, atol=1e-5)


# ---------------------------------------------------------------------------
# voice files
# ---------------------------------------------------------------------------


def official_file(model: RvcSynthesizer, path: Path, *, with_version: bool = True, spk_in_config: int = 109,
                  sr_label: str = "40k", enc_q: bool = True) -> Path:
    """What RVC's export writes, by hand: fp16 weights without enc_q (here one is left in), the config list, fields."""
    cfg = model.config
    weight = {k: v.detach().half() for k, v in model.state_dict().items()}
    if enc_q:
        weight["enc_q.enc.in_layers.0.weight_v"] = torch.zeros(2, 2, 5, dtype=torch.float16)
    config = cfg.to_checkpoint()
    config[15] = spk_in_config  # training writes spk_embed_dim (109); the loader trusts emb_g's rows
    contents: dict[str, Any] = OrderedDict(weight=weight, config=config, info="300epoch", sr=sr_label,
                                           f0=int(cfg.f0))
    if with_version:
        contents["version"] = cfg.version
    torch.save(contents, path)
    return path


def fp16_rounded(model: RvcSynthesizer) -> RvcSynthesizer:
    """The source model with its weights rounded through fp16, as the file stores them."""
    copy = RvcSynthesizer(model.config).eval()
    copy.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    return copy


@pytest.mark.parametrize("version,f0", VARIANTS, ids=VARIANT_IDS)
def test_voice_file_loads_and_reproduces_the_source(tmp_path: Path, version: str, f0: bool) -> None:
    source = tiny_voice(version, f0)
    path = official_file(source, tmp_path / f"tiny-{version}.pth", sr_label="8k")
    voice = load_rvc_voice(path)
    assert isinstance(voice, LoadedVoice)
    assert (voice.version, voice.f0, voice.sample_rate, voice.info, voice.name) == (
        version, f0, 800, "300epoch", f"tiny-{version}")
    assert voice.config.n_speakers == 3  # emb_g's rows, not the config's 109
    assert not voice.model.training
    assert next(voice.model.parameters()).dtype == torch.float32
    inputs = tiny_inputs(source.config, [19, 8], seed=4)
    expected = fp16_rounded(source).infer(**inputs, generator=item_generators([3, 4])).audio
    got = voice.model.infer(**inputs, generator=item_generators([3, 4])).audio
    assert torch.allclose(got, expected, atol=1e-6)


def test_a_file_without_version_is_v1(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = official_file(tiny_voice("v1", True), tmp_path / "old.pth", with_version=False)
    with caplog.at_level(logging.INFO, logger="engines.rvc.voice"):
        voice = load_rvc_voice(path)
    assert voice.version == "v1" and voice.config.content_dim == 256
    assert "no 'version'" in caplog.text and "enc_q" in caplog.text


def test_a_v2_file_labelled_v1_is_refused_with_the_cause(tmp_path: Path) -> None:
    path = official_file(tiny_voice("v2", True), tmp_path / "v2.pth", with_version=False)
    with pytest.raises(ValueError, match="768-d features, i.e. a \\['v2'\\] voice"):
        load_rvc_voice(path)


def test_a_wrong_f0_flag_is_refused_with_the_cause(tmp_path: Path) -> None:
    path = official_file(tiny_voice("v1", True), tmp_path / "f0.pth")
    contents = torch.load(path, weights_only=True)
    contents["f0"] = 0
    torch.save(contents, path)
    with pytest.raises(ValueError, match="unexpected .*emb_pitch.* f0 field says 0"):
        load_rvc_voice(path)


class NotATensor:
    """Anything a weights-only load refuses."""


@pytest.mark.parametrize("contents,message", [
    ([1, 2, 3], "got a list"),
    ({"model": {}, "iteration": 3, "optimizer": {}, "learning_rate": 1e-4}, "training checkpoint"),
    ({"weight": {"emb_g.weight": torch.zeros(2, 6)}}, "missing \\['config'\\]"),
    ({"config": [1]}, "missing \\['weight'\\]"),
    ({"weight": {"x": torch.zeros(1)}, "config": [1]}, "emb_g.weight"),
    ({"weight": {"emb_g.weight": torch.zeros(2, 6)}, "config": [1, 2]}, "18 values"),
    ({"weight": {"emb_g.weight": torch.zeros(2, 6)}, "config": [1], "version": "v3"}, "unknown RVC version"),
    ({"weight": {"emb_g.weight": torch.zeros(2, 6)}, "config": [1], "extra": NotATensor()}, "safe loader"),
])
def test_files_that_are_not_rvc_voices_are_refused(tmp_path: Path, contents: Any, message: str) -> None:
    path = tmp_path / "bad.pth"
    torch.save(contents, path)
    with pytest.raises(ValueError, match=message):
        load_rvc_voice(path)


def test_missing_or_misshapen_weights_are_named(tmp_path: Path) -> None:
    source = tiny_voice("v1", True)
    path = official_file(source, tmp_path / "v.pth")
    contents = torch.load(path, weights_only=True)
    del contents["weight"]["dec.conv_post.weight"]
    contents["weight"]["enc_p.proj.bias"] = torch.zeros(3, dtype=torch.float16)
    torch.save(contents, path)
    with pytest.raises(ValueError, match="1 missing key\\(s\\) \\['dec.conv_post.weight'\\].*enc_p.proj.bias: file \\[3\\]"):
        load_rvc_voice(path)
    with pytest.raises(FileNotFoundError):
        load_rvc_voice(tmp_path / "absent.pth")


def test_saved_voice_round_trips(tmp_path: Path) -> None:
    voice = random_voice("v2-32k", f0=False, seed=9)
    contents = voice_file_contents(voice.model, info="bench")
    assert (contents["sr"], contents["f0"], contents["version"], contents["info"]) == ("32k", 0, "v2", "bench")
    assert {v.dtype for v in contents["weight"].values()} == {torch.float16}
    loaded = load_rvc_voice(save_rvc_voice(voice.model, tmp_path / "bench.pth", info="bench"))
    assert loaded.config == voice.config and loaded.sample_rate == 32000
    assert torch.equal(loaded.model.state_dict()["emb_g.weight"],
                       voice.model.state_dict()["emb_g.weight"].half().float())


def test_random_voices_are_reproducible() -> None:
    a = random_voice(RvcConfig.tiny(), version="v2", seed=1)
    b = random_voice(RvcConfig.tiny(), version="v2", seed=1)
    c = random_voice(RvcConfig.tiny(), version="v2", seed=2)
    assert a.version == "v2" and a.f0 and a.sample_rate == 800
    key = "flow.flows.0.post.weight"  # zero in the published init; random here
    assert torch.equal(a.model.state_dict()[key], b.model.state_dict()[key])
    assert not torch.equal(a.model.state_dict()[key], c.model.state_dict()[key])
    assert a.model.state_dict()[key].abs().max() > 0
    with pytest.raises(ValueError, match="unknown RVC preset"):
        random_voice("v3-40k")
