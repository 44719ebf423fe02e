"""RVC's content encoder (HuBERT-Base / ContentVec, fairseq layout): keys, checkpoints, batching, frames.

No weights can be downloaded: checkpoints are written here in fairseq's layout
(``{"model": state_dict, "cfg": {...}}`` or ``{"model", "args"}``) from random
weights. Upstream equivalence was checked outside the project: fairseq's own
HubertModel (built from its source) and transformers' HubertModel (what RVC
master runs) given the same random weights agree with this module to ~3e-6
(max abs) on layer 9 + final_proj and layer 12, published and tiny sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
from pathlib import Path

import pytest
import torch

from engines.rvc.hubert import (
    PUBLISHED_CONV_LAYERS,
    RVC_FEATURES,
    HubertConfig,
    HubertModel,
    WeightNormConv1d,
    config_from_checkpoint,
    config_from_state,
    load_hubert,
    parse_conv_layers,
    random_hubert,
    read_fairseq_checkpoint,
    rvc_feature_spec,
    upsample_frames,
)

#: The published network (fairseq HuBERT-Base with final_proj 256 and 504 label embeddings), as
#: fairseq's own HubertModel lists it: 214 tensors, 94,697,600 parameters (transformers' HubertModel
#: has 94,371,712: the same minus final_proj and label_embs_concat).
PUBLISHED_TENSORS = 214
PUBLISHED_PARAMETERS = 94_697_600
#: Key shapes of the published checkpoint (MODELS.md section 2, listed from fairseq).
PUBLISHED_SHAPES = {
    "feature_extractor.conv_layers.0.0.weight": (512, 1, 10),
    "feature_extractor.conv_layers.0.2.weight": (512,),
    "feature_extractor.conv_layers.0.2.bias": (512,),
    **{f"feature_extractor.conv_layers.{i}.0.weight": (512, 512, 3) for i in range(1, 5)},
    **{f"feature_extractor.conv_layers.{i}.0.weight": (512, 512, 2) for i in range(5, 7)},
    "layer_norm.weight": (512,),
    "layer_norm.bias": (512,),
    "post_extract_proj.weight": (768, 512),
    "post_extract_proj.bias": (768,),
    "encoder.pos_conv.0.weight_g": (1, 1, 128),
    "encoder.pos_conv.0.weight_v": (768, 48, 128),
    "encoder.pos_conv.0.bias": (768,),
    "encoder.layer_norm.weight": (768,),
    **{f"encoder.layers.11.self_attn.{p}_proj.weight": (768, 768) for p in "qkv"},
    "encoder.layers.11.self_attn.out_proj.bias": (768,),
    "encoder.layers.0.self_attn_layer_norm.weight": (768,),
    "encoder.layers.0.fc1.weight": (3072, 768),
    "encoder.layers.0.fc2.weight": (768, 3072),
    "encoder.layers.0.final_layer_norm.bias": (768,),
    "mask_emb": (768,),
    "label_embs_concat": (504, 256),
    "final_proj.weight": (256, 768),
    "final_proj.bias": (256,),
}
TINY = HubertConfig.tiny()
#: The tiny config as fairseq's model cfg would state it.
TINY_FAIRSEQ = {
    "_name": "hubert", "label_rate": 50.0, "extractor_mode": "default", "encoder_layers": TINY.layers,
    "encoder_embed_dim": TINY.embed_dim, "encoder_ffn_embed_dim": TINY.ffn_dim,
    "encoder_attention_heads": TINY.attention_heads, "activation_fn": "gelu", "layer_type": "transformer",
    "dropout": 0.1, "attention_dropout": 0.1, "final_dim": TINY.final_dim, "untie_final_proj": False,
    "layer_norm_first": False, "conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
    "conv_bias": False, "mask_prob": 0.8, "conv_pos": TINY.conv_pos, "conv_pos_groups": TINY.conv_pos_groups,
}
TASK = {"_name": "hubert_pretraining", "sample_rate": 16000, "normalize": False, "labels": ["km"]}


def _waves(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero-padded batch of uniform noise in [-1, 1] (raw 16 kHz samples) and its lengths."""
    generator = torch.Generator().manual_seed(seed)
    waves = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        waves[i, :n] = torch.rand(n, generator=generator) * 2 - 1
    return waves, torch.tensor(lengths)


def _perturbed(config: HubertConfig, seed: int = 0) -> HubertModel:
    """Random weights with non-trivial norms and weight-norm gains (torch's init leaves them 1 / ||v||)."""
    model = random_hubert(config, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


@pytest.fixture(scope="module")
def published() -> HubertModel:
    return random_hubert(seed=1)


@pytest.fixture(scope="module")
def tiny() -> HubertModel:
    return _perturbed(TINY, seed=2)


def test_the_published_size_has_fairseqs_state_dict(published: HubertModel) -> None:
    state = published.state_dict()
    count = sum(p.numel() for p in published.parameters())
    print(f"published HuBERT: {len(state)} tensors, {count:,} parameters")
    assert len(state) == PUBLISHED_TENSORS
    assert count == PUBLISHED_PARAMETERS
    for key, shape in PUBLISHED_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert f"encoder.layers.{published.config.layers - 1}.fc1.weight" in state
    assert "encoder.layers.12.fc1.weight" not in state
    # fairseq's order: the model's own parameters, then the feature extractor.
    assert list(state)[:3] == ["mask_emb", "label_embs_concat", "feature_extractor.conv_layers.0.0.weight"]
    assert not any(k.startswith("feature_extractor.conv_layers.1.2") or k.endswith(".0.bias")
                   for k in state if k.startswith("feature_extractor"))


def test_the_published_state_dict_shows_the_published_config(published: HubertModel) -> None:
    assert config_from_state(published.state_dict()) == HubertConfig()
    config = HubertConfig()
    assert (config.hop, config.receptive_field, config.conv_dim) == (320, 400, 512)


def test_the_tiny_config_has_the_published_key_names(published: HubertModel, tiny: HubertModel) -> None:
    published_keys = {k for k in published.state_dict() if not k.startswith("encoder.layers.")}
    tiny_state = tiny.state_dict()
    assert {k for k in tiny_state if not k.startswith("encoder.layers.")} == published_keys
    assert {k.split(".", 3)[3] for k in tiny_state if k.startswith("encoder.layers.")} == \
        {k.split(".", 3)[3] for k in published.state_dict() if k.startswith("encoder.layers.")}
    assert sum(p.numel() for p in tiny.parameters()) < 50_000
    assert (TINY.hop, TINY.receptive_field) == (320, 400)


def test_the_positional_convolution_is_weight_norm_over_dim_2() -> None:
    conv = WeightNormConv1d(channels=8, kernel=6, groups=2)
    with torch.no_grad():
        conv.weight_g.mul_(torch.linspace(0.5, 2.0, 6).view(1, 1, 6))
    reference = torch._weight_norm(conv.weight_v, conv.weight_g, 2)
    torch.testing.assert_close(conv.weight(), reference)
    x = torch.randn(1, 8, 11)
    assert conv(x).shape == (1, 8, 12)  # "same" padding k // 2 with an even kernel: one frame over, dropped later


@pytest.mark.parametrize("samples", [400, 719, 720, 1039, 1040, 16000, 48_123])
def test_frame_counts_follow_the_conv_stack(tiny: HubertModel, samples: int) -> None:
    expected = (samples - 400) // 320 + 1  # the published stack, composed
    assert TINY.frames_for(samples) == HubertConfig().frames_for(samples) == expected
    assert int(TINY.frames_for(torch.tensor([samples]))[0]) == expected
    features, frames = tiny.extract(torch.rand(1, samples) * 2 - 1, output_layer=1)
    assert features.shape == (1, expected, TINY.embed_dim)
    assert frames.tolist() == [expected]


def test_shorter_than_one_frame_is_an_error(tiny: HubertModel) -> None:
    assert TINY.frames_for(399) == 0
    with pytest.raises(ValueError, match="shorter than one HuBERT frame"):
        tiny.extract(*_waves([8000, 399]))


def test_a_padded_batch_gives_each_item_what_it_gives_alone(tiny: HubertModel) -> None:
    lengths = [8000, 5123, 400, 6411]
    waves, lens = _waves(lengths, seed=3)
    for layer, project in [(2, True), (TINY.layers, False), (1, False)]:
        batch, frames = tiny.extract(waves, lens, output_layer=layer, project=project)
        assert frames.tolist() == [TINY.frames_for(n) for n in lengths]
        assert batch.shape == (len(lengths), max(frames.tolist()), TINY.output_dim(project))
        for i, n in enumerate(lengths):
            alone, alone_frames = tiny.extract(waves[i:i + 1, :n], output_layer=layer, project=project)
            assert alone_frames.tolist() == [frames[i].item()]
            torch.testing.assert_close(batch[i, : frames[i]], alone[0], atol=2e-5, rtol=1e-4)
            assert not batch[i, frames[i]:].any(), "padded frames are zero"
    extra_padding = torch.cat([waves, torch.rand(len(lengths), 999)], dim=1)  # junk past every length
    again, _ = tiny.extract(extra_padding, lens, output_layer=2, project=True)
    torch.testing.assert_close(again, tiny.extract(waves, lens, output_layer=2, project=True)[0])


def test_the_padding_changes_nothing_only_because_it_is_masked(tiny: HubertModel) -> None:
    """Without lengths the zero padding is signal: the short item's features change (the test above can fail)."""
    waves, lens = _waves([8000, 4000], seed=4)
    masked, frames = tiny.extract(waves, lens, output_layer=TINY.layers)
    unmasked, _ = tiny.extract(waves, None, output_layer=TINY.layers)
    assert (masked[1, : frames[1]] - unmasked[1, : frames[1]]).abs().max() > 1e-3


def test_rvc_v1_and_v2_features(published: HubertModel) -> None:
    assert rvc_feature_spec("v1") == (9, True) and rvc_feature_spec("v2") == (12, False)
    with pytest.raises(ValueError, match="unknown RVC feature version"):
        rvc_feature_spec("v3")
    waves, lens = _waves([4000, 2000], seed=5)
    expected_frames = [(4000 - 400) // 320 + 1, (2000 - 400) // 320 + 1]
    for version, dim in [("v1", 256), ("v2", 768)]:
        layer, project = RVC_FEATURES[version]
        features, frames = published.extract(waves, lens, output_layer=layer, project=project)
        assert features.shape == (2, expected_frames[0], dim)
        assert features.dtype == torch.float32
        assert frames.tolist() == expected_frames
        up, up_frames = upsample_frames(features, frames)
        assert up.shape == (2, 2 * expected_frames[0], dim) and up_frames.tolist() == [2 * f for f in expected_frames]
        torch.testing.assert_close(up[:, 0::2], features)
        torch.testing.assert_close(up[:, 1::2], features)


def test_output_layer_is_one_based_and_checked(tiny: HubertModel) -> None:
    waves, _ = _waves([2000])
    for bad in (0, TINY.layers + 1):
        with pytest.raises(ValueError, match="output_layer must be in 1"):
            tiny.extract(waves, output_layer=bad)
    first, _ = tiny.extract(waves, output_layer=1)
    last, _ = tiny.extract(waves, output_layer=TINY.layers)
    assert (first - last).abs().max() > 1e-3
    torch.testing.assert_close(tiny.extract(waves)[0], last)


def _save(path: Path, model: HubertModel, **entries: object) -> Path:
    torch.save({"model": model.state_dict(), "optimizer_history": [], "extra_state": {"epoch": 3}, **entries}, path)
    return path


def test_a_checkpoint_with_cfg_loads_strictly_and_reproduces_the_outputs(tmp_path: Path, tiny: HubertModel) -> None:
    file = _save(tmp_path / "hubert_tiny.pt", tiny, args=None,
                 cfg={"common": {"fp16": False}, "model": TINY_FAIRSEQ, "task": TASK})
    model, config = load_hubert(file, device="cpu")
    assert config == TINY
    assert not model.training and model.mask_emb.device.type == "cpu"
    waves, lens = _waves([6000, 3000], seed=6)
    for layer, project in [(2, True), (3, False)]:
        torch.testing.assert_close(model.extract(waves, lens, layer, project)[0],
                                   tiny.extract(waves, lens, layer, project)[0], atol=0, rtol=0)


def test_a_checkpoint_with_legacy_args_loads(tmp_path: Path, tiny: HubertModel) -> None:
    flat = {**TINY_FAIRSEQ, **TASK, "final_dim": TINY.final_dim}
    for name, args in [("dict", flat), ("namespace", argparse.Namespace(**flat))]:
        file = _save(tmp_path / f"hubert_{name}.pt", tiny, args=args, cfg=None)
        model, config = load_hubert(file)
        assert config == TINY, name
        waves, _ = _waves([3000], seed=7)
        torch.testing.assert_close(model.extract(waves, output_layer=2, project=True)[0],
                                   tiny.extract(waves, output_layer=2, project=True)[0])


def test_a_half_precision_checkpoint_loads_into_float32(tmp_path: Path, tiny: HubertModel) -> None:
    """RVC ships hubert_base.pt in fp16."""
    state = {k: v.half() for k, v in tiny.state_dict().items()}
    file = tmp_path / "hubert_half.pt"
    torch.save({"model": state, "cfg": {"model": TINY_FAIRSEQ, "task": TASK}}, file)
    model, _ = load_hubert(file)
    assert model.mask_emb.dtype == torch.float32
    torch.testing.assert_close(model.state_dict()["encoder.pos_conv.0.weight_v"],
                               state["encoder.pos_conv.0.weight_v"].float())


def test_missing_and_unexpected_keys_are_named(tmp_path: Path, tiny: HubertModel) -> None:
    state = tiny.state_dict()
    state.pop("encoder.layers.1.fc2.bias")
    state["w2v_encoder.proj.weight"] = torch.zeros(3, 3)
    file = tmp_path / "broken.pt"
    torch.save({"model": state, "cfg": {"model": TINY_FAIRSEQ, "task": TASK}}, file)
    with pytest.raises(ValueError, match=r"missing key\(s\) \['encoder\.layers\.1\.fc2\.bias'\].*unexpected key\(s\) "
                                         r"\['w2v_encoder\.proj\.weight'\]"):
        load_hubert(file)


def test_a_cfg_that_disagrees_with_the_tensors_is_a_shape_error(tmp_path: Path, tiny: HubertModel) -> None:
    file = _save(tmp_path / "wrong.pt", tiny, cfg={"model": {**TINY_FAIRSEQ, "encoder_ffn_embed_dim": 96}})
    with pytest.raises(ValueError, match=r"shape mismatch.*fc1\.weight: file \[64, 32\] vs model \[96, 32\]"):
        load_hubert(file)


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("layer_norm_first", True, "layer_norm_first=True"),
    ("extractor_mode", "layer_norm", "extractor_mode 'layer_norm'"),
    ("activation_fn", "relu", "activation_fn 'relu'"),
    ("untie_final_proj", True, "untie_final_proj=True"),
    ("layer_type", "conformer", "layer_type='conformer'"),
    ("conv_feature_layers", "[(16,10,5)] * __import__('os').getpid()", "only list/tuple literals"),
])
def test_unsupported_fairseq_settings_are_clear_errors(tmp_path: Path, tiny: HubertModel, setting: str,
                                                       value: object, message: str) -> None:
    file = _save(tmp_path / "unsupported.pt", tiny, cfg={"model": {**TINY_FAIRSEQ, setting: value}, "task": TASK})
    with pytest.raises(ValueError, match=message):
        load_hubert(file)


def test_a_task_that_normalises_its_input_is_refused(tiny: HubertModel) -> None:
    checkpoint = {"model": tiny.state_dict(), "cfg": {"model": TINY_FAIRSEQ, "task": {**TASK, "normalize": True}}}
    with pytest.raises(ValueError, match="normalize=True"):
        config_from_checkpoint(checkpoint)


def test_conv_feature_layers_are_parsed_without_eval() -> None:
    assert parse_conv_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == PUBLISHED_CONV_LAYERS
    assert parse_conv_layers([[8, 10, 5], [8, 3, 2]]) == ((8, 10, 5), (8, 3, 2))
    with pytest.raises(ValueError, match="list of"):
        parse_conv_layers("[(512, 10)]")


def test_without_cfg_the_tensors_give_the_config(tmp_path: Path) -> None:
    model = _perturbed(dataclasses.replace(TINY, embed_dim=64, attention_heads=1, conv_pos_groups=8, n_classes=0))
    file = tmp_path / "bare.pt"
    torch.save(model.state_dict(), file)
    loaded, config = load_hubert(file)
    assert config == model.config  # 64 wide -> one 64-d head, the published head width
    assert "label_embs_concat" not in loaded.state_dict()
    waves, _ = _waves([2400])
    torch.testing.assert_close(loaded.extract(waves)[0], model.extract(waves)[0])


class _PickledModule(torch.nn.Module):
    """A class outside fairseq's configuration types: the safe loader must refuse a file naming it."""


def test_foreign_pickled_classes_need_allow_pickle(tmp_path: Path, tiny: HubertModel) -> None:
    file = _save(tmp_path / "foreign.pt", tiny, cfg={"model": TINY_FAIRSEQ}, trainer=_PickledModule())
    with pytest.raises(ValueError, match=r"refused by the safe loader.*_PickledModule.*allow_pickle=True"):
        load_hubert(file)
    _, config = load_hubert(file, allow_pickle=True)
    assert config == TINY


def _fake_omegaconf() -> dict[str, types.ModuleType]:
    """Modules named like omegaconf's, whose classes hold data where omegaconf's do (_content, _val)."""
    base = types.ModuleType("omegaconf.dictconfig")
    nodes = types.ModuleType("omegaconf.nodes")

    class DictConfig:
        def __init__(self, content: dict) -> None:
            self._content = {k: AnyNode(v) for k, v in content.items()}
            self._parent = None

    class AnyNode:
        def __init__(self, value: object) -> None:
            self._val = DictConfig(value) if isinstance(value, dict) else value

    DictConfig.__module__, DictConfig.__qualname__ = base.__name__, "DictConfig"
    AnyNode.__module__, AnyNode.__qualname__ = nodes.__name__, "AnyNode"
    base.DictConfig, nodes.AnyNode = DictConfig, AnyNode
    return {"omegaconf": types.ModuleType("omegaconf"), base.__name__: base, nodes.__name__: nodes}


def test_pickled_config_objects_are_read_as_inert_records(tmp_path: Path, tiny: HubertModel,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """fairseq pickles omegaconf containers / Namespaces; they load without omegaconf, running none of their code."""
    modules = _fake_omegaconf()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    cfg = modules["omegaconf.dictconfig"].DictConfig({"model": TINY_FAIRSEQ, "task": TASK})
    file = _save(tmp_path / "omegaconf.pt", tiny, cfg=cfg, args=None)
    for name in modules:
        monkeypatch.delitem(sys.modules, name)  # the loader must not need (or import) them
    checkpoint = read_fairseq_checkpoint(file)
    assert checkpoint["cfg"]["model"]["encoder_layers"] == TINY.layers
    assert checkpoint["cfg"]["task"]["normalize"] is False
    _, config = load_hubert(file)
    assert config == TINY
    assert "omegaconf" not in sys.modules


def test_not_a_hubert_checkpoint(tmp_path: Path) -> None:
    file = tmp_path / "other.pt"
    torch.save({"weight": {"emb_g.weight": torch.zeros(2, 2)}, "config": [1, 2]}, file)
    with pytest.raises(ValueError, match="not a fairseq HuBERT checkpoint"):
        load_hubert(file)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_hubert(tmp_path / "absent.pt")
