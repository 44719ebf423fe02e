"""RVC's content encoder: HuBERT-Base in the fairseq layout of ``hubert_base.pt`` (ContentVec).

RVC turns 16 kHz speech into speaker-poor content features with a HuBERT-Base
network; the file it ships, ``hubert_base.pt``, is ContentVec (500 clusters)
saved as a fairseq HuBERT checkpoint::

    {"model": state_dict, "cfg": {..., "model": {...}, "task": {...}} | None,
     "args": argparse.Namespace | None, "optimizer_history", "extra_state", ...}

The network (:class:`HubertModel`) has exactly fairseq's state-dict keys and
shapes, so the file loads with ``strict=True`` (the parameters only training
uses, ``mask_emb`` and ``label_embs_concat``, are kept for that reason):

* a 7-layer convolutional feature extractor over the raw waveform (512
  channels, no bias, GELU; GroupNorm on layer 0 only, fairseq's "default"
  extractor mode): 20 ms frames, 50 per second at 16 kHz;
* ``layer_norm`` (512) and ``post_extract_proj`` (512 -> 768);
* ``encoder.pos_conv``, a grouped weight-normed convolution whose output is
  added to its input, then ``encoder.layer_norm``;
* 12 post-LN transformer layers (768 wide, 12 heads, FFN 3072, GELU);
* ``final_proj`` (768 -> 256).

RVC v1 voices read layer 9 through ``final_proj`` (256-d), v2 voices the 768-d
output of layer 12 (:func:`rvc_feature_spec`); both then repeat each frame
twice to reach the synthesizer's 100 frames per second (:func:`upsample_frames`,
the caller's step).

Batches: :meth:`HubertModel.extract` takes padded waveforms plus lengths. A
padded item gives what it gives alone: the layer-0 GroupNorm (statistics over
time) sees only the item's own frames, padded frames are zeroed before the
positional convolution (as fairseq does) and masked out of attention, and
padded output frames are zero. (fairseq itself derives its frame mask with an
approximate ratio and normalises layer 0 over the padding too; RVC feeds one
unpadded item at a time, where all of these agree.)

Checkpoints are read with ``torch.load(weights_only=True)``. fairseq pickles
its configuration as ``argparse.Namespace`` / omegaconf objects, which that
loader refuses; :func:`read_fairseq_checkpoint` then reads those few classes
as inert records (no code of theirs runs, so omegaconf and fairseq need not be
installed), and only a file naming other classes needs ``allow_pickle=True``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import logging
import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.checkpoints import first_keys, layout_problems

logger = logging.getLogger(__name__)

__all__ = [
    "HubertConfig", "HubertModel", "PUBLISHED_CONV_LAYERS", "RVC_FEATURES", "SAMPLE_RATE",
    "config_from_checkpoint", "config_from_state", "load_hubert", "random_hubert",
    "WeightNormConv1d", "parse_conv_layers", "read_fairseq_checkpoint", "rvc_feature_spec", "upsample_frames",
]

#: The sample rate HuBERT / ContentVec were trained at; input must already be at this rate.
SAMPLE_RATE = 16_000
#: fairseq's conv feature extractor, as (channels, kernel, stride) per layer ("conv_feature_layers").
PUBLISHED_CONV_LAYERS: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
#: Rows of ``label_embs_concat`` in ContentVec / HuBERT iteration 2: 500 clusters plus
#: the 4 special symbols every fairseq dictionary starts with.
PUBLISHED_N_CLASSES = 504
#: Width of one attention head in every published HuBERT (Base 768/12, Large 1024/16):
#: the head count a checkpoint without a config is assumed to have follows from it.
PUBLISHED_HEAD_DIM = 64
#: eps of every LayerNorm and of the layer-0 GroupNorm (torch's default, which fairseq keeps).
NORM_EPS = 1e-5
#: (output_layer, project through final_proj) per RVC feature version.
RVC_FEATURES: dict[str, tuple[int, bool]] = {"v1": (9, True), "v2": (12, False)}
#: Repetition of each 50 Hz HuBERT frame that yields RVC's 100 Hz synthesizer frames.
RVC_FRAME_UPSAMPLING = 2
#: The state-dict entry of a fairseq checkpoint, and its configuration entries (preferred first).
STATE_KEY = "model"
CONFIG_KEYS = ("cfg", "args")
#: A key every HuBERT state dict has; a bare state dict (no container) is recognised by it.
PROBE_KEY = "feature_extractor.conv_layers.0.0.weight"
#: Top-level modules whose pickled objects in a fairseq checkpoint are configuration or
#: bookkeeping records (argparse.Namespace, omegaconf containers and their type annotations,
#: enums, numpy scalars in training meters): read as inert records, never run.
CONFIG_PICKLE_MODULES = frozenset({
    "argparse", "omegaconf", "fairseq", "typing", "types", "enum", "operator", "builtins", "collections",
    "numpy", "pathlib", "datetime",
})

# fairseq setting -> HubertConfig field, for the settings that shape the network.
_FAIRSEQ_FIELDS = {
    "encoder_embed_dim": "embed_dim",
    "encoder_layers": "layers",
    "encoder_attention_heads": "attention_heads",
    "encoder_ffn_embed_dim": "ffn_dim",
    "final_dim": "final_dim",
    "conv_feature_layers": "conv_layers",
    "conv_bias": "conv_bias",
    "conv_pos": "conv_pos",
    "conv_pos_groups": "conv_pos_groups",
    "extractor_mode": "extractor_mode",
    "layer_norm_first": "layer_norm_first",
    "activation_fn": "activation_fn",
}
# fairseq settings this network does not implement, with the one value it supports.
_FAIRSEQ_REQUIRED = {
    "layer_type": "transformer",
    "untie_final_proj": False,
    "target_glu": False,
    "conv_pos_batch_norm": False,
    "pos_conv_depth": 1,
}


# --------------------------------------------------------------------------- config


def _conv_output_length(length: Any, kernel: int, stride: int) -> Any:
    """Frames one unpadded convolution yields: ``floor((L - k) / s) + 1``, 0 when L < k."""
    if isinstance(length, Tensor):
        return torch.where(length >= kernel, torch.div(length - kernel, stride, rounding_mode="floor") + 1,
                           torch.zeros_like(length))
    return (length - kernel) // stride + 1 if length >= kernel else 0


@dataclass(frozen=True)
class HubertConfig:
    """Every hyperparameter that shapes the network (fairseq HuBERT-Base / ContentVec by default).

    Field names are ours; :meth:`from_fairseq` reads fairseq's names. The
    settings fairseq offers but this network does not implement are fields
    only where a checkpoint states them (``extractor_mode``,
    ``layer_norm_first``, ``activation_fn``): any value but the published one
    is a ValueError rather than a silently wrong network.
    """

    conv_layers: tuple[tuple[int, int, int], ...] = PUBLISHED_CONV_LAYERS
    """(channels, kernel, stride) of each feature-extractor convolution; the strides multiply
    to the frame hop (320 samples = 20 ms)."""
    conv_bias: bool = False
    """Whether the feature-extractor convolutions have a bias (``conv_layers.N.0.bias``)."""
    extractor_mode: str = "default"
    """fairseq's extractor norm: "default" is one GroupNorm(C, C) on layer 0 (the only mode
    implemented; "layer_norm", per-layer LayerNorm for normalised input, is HuBERT-Large's)."""
    embed_dim: int = 768
    """Transformer width; ``post_extract_proj`` maps the last conv width onto it (and is absent
    when the two are equal, as in fairseq)."""
    layers: int = 12
    """Transformer layers; ``output_layer`` counts them from 1."""
    attention_heads: int = 12
    """Self-attention heads per layer; must divide ``embed_dim``."""
    ffn_dim: int = 3072
    """Hidden width of each layer's feed-forward block (``fc1`` / ``fc2``)."""
    final_dim: int = 256
    """Output width of ``final_proj``, the projection RVC v1 reads (fairseq's 0 means
    ``embed_dim``; :meth:`from_fairseq` resolves it)."""
    conv_pos: int = 128
    """Kernel of the positional convolution ``encoder.pos_conv`` (padding ``conv_pos // 2``;
    an even kernel drops the last output frame to keep the length)."""
    conv_pos_groups: int = 16
    """Groups of the positional convolution; must divide ``embed_dim``."""
    n_classes: int = PUBLISHED_N_CLASSES
    """Rows of ``label_embs_concat`` (training targets, unused at inference; 0 when the
    checkpoint has none, as fairseq builds it without dictionaries)."""
    layer_norm_first: bool = False
    """Pre-LN transformer layers (HuBERT-Large); only post-LN (False) is implemented."""
    activation_fn: str = "gelu"
    """Transformer feed-forward activation; only "gelu" (exact, erf-based) is implemented."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv_layers", tuple(tuple(int(v) for v in layer) for layer in self.conv_layers))
        if not self.conv_layers or any(len(layer) != 3 or min(layer) <= 0 for layer in self.conv_layers):
            raise ValueError(f"HubertConfig.conv_layers must be a non-empty list of positive (channels, kernel, "
                             f"stride) triples, got {self.conv_layers!r}")
        for name in ("embed_dim", "layers", "attention_heads", "ffn_dim", "final_dim", "conv_pos", "conv_pos_groups"):
            if getattr(self, name) <= 0:
                raise ValueError(f"HubertConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.n_classes < 0:
            raise ValueError(f"HubertConfig.n_classes must be >= 0, got {self.n_classes!r}")
        if self.embed_dim % self.attention_heads:
            raise ValueError(f"HubertConfig: {self.attention_heads} attention heads do not divide "
                             f"embed_dim {self.embed_dim}")
        if self.embed_dim % self.conv_pos_groups:
            raise ValueError(f"HubertConfig: {self.conv_pos_groups} positional-conv groups do not divide "
                             f"embed_dim {self.embed_dim}")
        if self.extractor_mode != "default":
            raise ValueError(f"unsupported fairseq extractor_mode {self.extractor_mode!r}: only 'default' (one "
                             "GroupNorm on conv layer 0, HuBERT-Base / ContentVec) is implemented; 'layer_norm' "
                             "(HuBERT-Large, normalised input) is not")
        if self.layer_norm_first:
            raise ValueError("unsupported fairseq layer_norm_first=True (pre-LN transformer, HuBERT-Large): only "
                             "the post-LN layers of HuBERT-Base / ContentVec are implemented")
        if self.activation_fn != "gelu":
            raise ValueError(f"unsupported fairseq activation_fn {self.activation_fn!r}: only 'gelu' is implemented")

    @classmethod
    def tiny(cls) -> HubertConfig:
        """Same key names and the same conv strides (20 ms frames), some 36 thousand parameters:
        for tests. The conv width differs from ``embed_dim`` so ``post_extract_proj`` exists."""
        narrow = 16
        return cls(conv_layers=tuple((narrow, k, s) for _, k, s in PUBLISHED_CONV_LAYERS), embed_dim=32, layers=3,
                   attention_heads=4, ffn_dim=64, final_dim=24, conv_pos=16, conv_pos_groups=4, n_classes=12)

    @property
    def conv_dim(self) -> int:
        """Channels of the last feature-extractor convolution (the width ``layer_norm`` normalises)."""
        return self.conv_layers[-1][0]

    @property
    def has_post_extract_proj(self) -> bool:
        """fairseq builds ``post_extract_proj`` only when the conv width differs from ``embed_dim``."""
        return self.conv_dim != self.embed_dim

    @property
    def hop(self) -> int:
        """Samples between consecutive frames: the product of the conv strides (320)."""
        return math.prod(stride for _, _, stride in self.conv_layers)

    @property
    def receptive_field(self) -> int:
        """Samples one frame sees, which is also the shortest input giving a frame (400)."""
        field, step = self.conv_layers[0][1], self.conv_layers[0][2]
        for _, kernel, stride in self.conv_layers[1:]:
            field += (kernel - 1) * step
            step *= stride
        return field

    def frames_for(self, lengths: Any) -> Any:
        """Frames the conv stack yields for inputs of ``lengths`` samples (int or integer Tensor).

        Each layer maps L to ``floor((L - k) / s) + 1``; composed over the
        published stack this is ``floor((L - 400) / 320) + 1`` for
        L >= 400 (:attr:`receptive_field`, :attr:`hop`) and 0 below.
        """
        for _, kernel, stride in self.conv_layers:
            lengths = _conv_output_length(lengths, kernel, stride)
        return lengths

    def output_dim(self, project: bool) -> int:
        """Width of :meth:`HubertModel.extract`'s features: ``final_dim`` projected, else ``embed_dim``."""
        return self.final_dim if project else self.embed_dim

    @classmethod
    def from_fairseq(cls, settings: Mapping[str, Any], base: HubertConfig | None = None) -> HubertConfig:
        """The config a fairseq model config (``cfg["model"]`` or the legacy flat ``args``) describes.

        Settings it does not state keep ``base``'s values (the published ones
        by default; :func:`config_from_checkpoint` passes what the tensors
        show). Settings that only matter in training (dropouts, masking,
        label rate, ...) are ignored; the ones that would change the network
        in a way this module does not implement are a ValueError.
        """
        for key, supported in _FAIRSEQ_REQUIRED.items():
            value = settings.get(key)
            if value is not None and value != supported:
                raise ValueError(f"unsupported fairseq setting {key}={value!r}: this HuBERT implements only "
                                 f"{key}={supported!r} (HuBERT-Base / ContentVec)")
        changes: dict[str, Any] = {}
        for key, name in _FAIRSEQ_FIELDS.items():
            value = settings.get(key)
            if value is None:
                continue
            if name == "conv_layers":
                value = parse_conv_layers(value)
            changes[name] = value
        if changes.get("final_dim", 1) <= 0:  # fairseq: "set to encoder_embed_dim if <= 0"
            changes["final_dim"] = changes.get("embed_dim", (base or cls()).embed_dim)
        return dataclasses.replace(base or cls(), **changes)


def parse_conv_layers(spec: Any) -> tuple[tuple[int, int, int], ...]:
    """fairseq's ``conv_feature_layers``: a Python expression such as
    ``"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"`` (or the list itself).

    fairseq ``eval``s the string; here only list/tuple literals of integers,
    ``+`` and ``* int`` are evaluated, so a checkpoint cannot run code.
    """
    if not isinstance(spec, str):
        return tuple(tuple(int(v) for v in layer) for layer in spec)

    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [evaluate(item) for item in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = evaluate(node.left), evaluate(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"conv_feature_layers {spec!r}: only list/tuple literals of integers, '+' and '*' are "
                         f"understood, not {ast.dump(node)}")

    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"conv_feature_layers {spec!r} is not a Python list expression: {exc}") from exc
    value = evaluate(tree.body)
    if not isinstance(value, list) or not all(isinstance(layer, tuple) and len(layer) == 3 for layer in value):
        raise ValueError(f"conv_feature_layers {spec!r} must evaluate to a list of (channels, kernel, stride)")
    return tuple(value)


def rvc_feature_spec(version: str) -> tuple[int, bool]:
    """(output_layer, project) RVC reads for a voice of ``version``: v1 (9, True), v2 (12, False)."""
    try:
        return RVC_FEATURES[version]
    except KeyError:
        raise ValueError(f"unknown RVC feature version {version!r}: expected one of {sorted(RVC_FEATURES)}") from None


# --------------------------------------------------------------------------- modules


def _valid_mask(lengths: Tensor, size: int) -> Tensor:
    """(B, size) bool, True on each item's first ``lengths`` positions."""
    return torch.arange(size, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def _masked_group_norm(x: Tensor, lengths: Tensor, norm: nn.GroupNorm) -> Tensor:
    """GroupNorm(C, C) over time with each item's statistics from its own ``lengths`` frames.

    fairseq normalises layer 0 over the whole (padded) tensor, in float32
    (``Fp32GroupNorm``); padding would shift an item's statistics, so with
    padding present the mean and biased variance are taken over valid frames
    only. Without padding this is exactly the plain GroupNorm.
    """
    dtype = x.dtype
    x = x.float()
    weight = norm.weight.float() if norm.weight is not None else None
    bias = norm.bias.float() if norm.bias is not None else None
    if bool((lengths == x.size(-1)).all()):
        return F.group_norm(x, norm.num_groups, weight, bias, norm.eps).to(dtype)
    mask = _valid_mask(lengths, x.size(-1)).unsqueeze(1).to(x.dtype)
    count = lengths.to(x.dtype).view(-1, 1, 1)
    mean = (x * mask).sum(-1, keepdim=True) / count
    variance = ((x - mean) * mask).pow(2).sum(-1, keepdim=True) / count
    y = (x - mean) * torch.rsqrt(variance + norm.eps)
    if weight is not None:
        y = y * weight.view(1, -1, 1)
    if bias is not None:
        y = y + bias.view(1, -1, 1)
    return y.to(dtype)


class ConvFeatureExtractor(nn.Module):
    """fairseq's ``ConvFeatureExtractionModel`` in "default" mode: waveform -> (B, C, frames).

    Each layer is a ``Sequential`` so the keys are fairseq's: ``0`` the
    convolution, ``1`` the place of fairseq's (parameterless) dropout, ``2``
    the GroupNorm on layer 0, then GELU.
    """

    def __init__(self, config: HubertConfig) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList()
        in_channels = 1
        for index, (channels, kernel, stride) in enumerate(config.conv_layers):
            parts: list[nn.Module] = [nn.Conv1d(in_channels, channels, kernel, stride=stride, bias=config.conv_bias),
                                      nn.Identity()]
            if index == 0:
                parts.append(nn.GroupNorm(channels, channels, eps=NORM_EPS, affine=True))
            parts.append(nn.GELU())
            self.conv_layers.append(nn.Sequential(*parts))
            in_channels = channels

    def forward(self, waves: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) samples and (B,) lengths -> (B, C, frames) features and (B,) frame lengths."""
        x = waves.unsqueeze(1)
        for block in self.conv_layers:
            conv = block[0]
            x = conv(x)
            lengths = _conv_output_length(lengths, conv.kernel_size[0], conv.stride[0])
            if isinstance(block[2], nn.GroupNorm):
                x = _masked_group_norm(x, lengths, block[2])
            x = block[-1](x)
        return x, lengths


class WeightNormConv1d(nn.Module):
    """A Conv1d with weight norm over ``dim=2``, stored as fairseq (old ``torch.nn.utils.weight_norm``) does.

    ``weight = weight_v * weight_g / ||weight_v||`` with the norm taken over
    output and input channels for each kernel tap, so ``weight_g`` is
    [1, 1, k] and ``weight_v`` [out, in / groups, k]: the keys and shapes of
    ``encoder.pos_conv.0`` in the checkpoint. Kept unfolded, so a loaded model
    also round-trips to the same file layout.
    """

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.kernel, self.groups = kernel, groups
        # Registered in the order fairseq's state dict lists them (weight norm re-adds g and v after the bias).
        self.bias = nn.Parameter(torch.empty(channels))
        self.weight_g = nn.Parameter(torch.empty(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """fairseq's init: normal weights with std sqrt(4 / (k * C)), zero bias, g = ||v||."""
        std = math.sqrt(4.0 / (self.kernel * self.weight_v.size(0)))
        with torch.no_grad():
            nn.init.normal_(self.weight_v, mean=0.0, std=std)
            self.weight_g.copy_(self._norm(self.weight_v))
            self.bias.zero_()

    @staticmethod
    def _norm(v: Tensor) -> Tensor:
        return v.float().pow(2).sum(dim=(0, 1), keepdim=True).sqrt()

    def weight(self) -> Tensor:
        """The effective kernel, computed in float32 (the norm sums ~37k squares) then cast back."""
        v = self.weight_v
        return (v.float() * (self.weight_g.float() / self._norm(v))).to(v.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, F) -> (B, C, F + 1 - k % 2): "same" padding ``k // 2``."""
        return F.conv1d(x, self.weight(), self.bias, padding=self.kernel // 2, groups=self.groups)


class DropTrailingFrame(nn.Module):
    """fairseq's ``SamePad``: an even kernel with padding k // 2 yields one frame too many; drop it."""

    def __init__(self, kernel: int) -> None:
        super().__init__()
        self.extra = 1 if kernel % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, F') -> (B, C, F' - extra)."""
        return x[..., : x.size(-1) - self.extra] if self.extra else x


class SelfAttention(nn.Module):
    """Multi-head self-attention with fairseq's ``{q,k,v,out}_proj`` (all with bias).

    fairseq scales q by head_dim^-0.5 after projecting; scaled_dot_product_attention
    applies the same scale to q·k. Padded keys are masked out.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, valid: Tensor | None) -> Tensor:
        """(B, F, D) and (B, F) bool (True: a real frame; None: no padding) -> (B, F, D)."""
        batch, frames, dim = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, frames, self.heads, dim // self.heads).transpose(1, 2)

        mask = valid[:, None, None, :] if valid is not None else None
        out = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)),
                                             attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(batch, frames, dim))


class EncoderLayer(nn.Module):
    """fairseq's ``TransformerSentenceEncoderLayer`` with ``layer_norm_first=False`` (post-LN)."""

    def __init__(self, config: HubertConfig) -> None:
        super().__init__()
        self.self_attn = SelfAttention(config.embed_dim, config.attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(config.embed_dim, eps=NORM_EPS)
        self.fc1 = nn.Linear(config.embed_dim, config.ffn_dim)
        self.fc2 = nn.Linear(config.ffn_dim, config.embed_dim)
        self.final_layer_norm = nn.LayerNorm(config.embed_dim, eps=NORM_EPS)

    def forward(self, x: Tensor, valid: Tensor | None) -> Tensor:
        """(B, F, D) -> (B, F, D); ``valid`` masks padded keys."""
        x = self.self_attn_layer_norm(x + self.self_attn(x, valid))
        # fairseq's gelu runs in float32 whatever the activations' dtype.
        hidden = F.gelu(self.fc1(x).float()).to(x.dtype)
        return self.final_layer_norm(x + self.fc2(hidden))


class TransformerEncoder(nn.Module):
    """``encoder.*``: positional convolution (added), LayerNorm, then the layers."""

    def __init__(self, config: HubertConfig) -> None:
        super().__init__()
        self.pos_conv = nn.Sequential(
            WeightNormConv1d(config.embed_dim, config.conv_pos, config.conv_pos_groups),
            DropTrailingFrame(config.conv_pos), nn.GELU())
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.layers))
        self.layer_norm = nn.LayerNorm(config.embed_dim, eps=NORM_EPS)

    def forward(self, x: Tensor, valid: Tensor | None, output_layer: int) -> Tensor:
        """(B, F, D) -> the output of layer ``output_layer`` (1-based), (B, F, D).

        Padded frames are zeroed before the positional convolution, as fairseq
        does, so they add nothing to their real neighbours (an item alone sees
        the convolution's zero padding there).
        """
        if valid is not None:
            x = x.masked_fill(~valid.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.layer_norm(x)
        for layer in self.layers[:output_layer]:
            x = layer(x, valid)
        return x


class HubertModel(nn.Module):
    """HuBERT-Base / ContentVec with fairseq's exact state-dict keys; inference only.

    Parameters are registered in fairseq's order (``mask_emb`` and
    ``label_embs_concat`` first), so ``state_dict()`` lists keys as the
    checkpoint does. ``mask_emb`` (training-time masking) and
    ``label_embs_concat`` (cluster embeddings of the training loss) are
    loaded and never used.
    """

    def __init__(self, config: HubertConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or HubertConfig()
        self.feature_extractor = ConvFeatureExtractor(config)
        self.post_extract_proj = nn.Linear(config.conv_dim, config.embed_dim) if config.has_post_extract_proj else None
        self.mask_emb = nn.Parameter(torch.empty(config.embed_dim).uniform_())
        self.encoder = TransformerEncoder(config)
        self.layer_norm = nn.LayerNorm(config.conv_dim, eps=NORM_EPS)
        self.final_proj = nn.Linear(config.embed_dim, config.final_dim)
        if config.n_classes:
            self.label_embs_concat = nn.Parameter(torch.empty(config.n_classes, config.final_dim).uniform_())
        else:
            self.label_embs_concat = None

    def forward(self, waves: Tensor, lengths: Tensor | None = None, output_layer: int | None = None,
                project: bool = False) -> tuple[Tensor, Tensor]:
        """Features of transformer layer ``output_layer`` (1-based; default the last), optionally
        through ``final_proj``; see :meth:`extract`."""
        config = self.config
        layer = config.layers if output_layer is None else int(output_layer)
        if not 1 <= layer <= config.layers:
            raise ValueError(f"output_layer must be in 1..{config.layers} (fairseq counts layers from 1), got {layer}")
        waves, lengths = self._check_inputs(waves, lengths)
        features, frame_lengths = self.feature_extractor(waves, lengths)
        x = self.layer_norm(features.transpose(1, 2))
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        valid = _valid_mask(frame_lengths, x.size(1))
        padded = not bool(valid.all())
        x = self.encoder(x, valid if padded else None, layer)
        if project:
            x = self.final_proj(x)
        if padded:
            x = x.masked_fill(~valid.unsqueeze(-1), 0.0)
        return x, frame_lengths

    @torch.no_grad()
    def extract(self, waves: Tensor, lengths: Tensor | None = None, output_layer: int | None = None,
                project: bool = False) -> tuple[Tensor, Tensor]:
        """Content features of a padded batch, as RVC reads them.

        ``waves``: (B, T) raw 16 kHz samples in [-1, 1], not normalised
        (ContentVec / HuBERT-Base were trained on raw audio); ``lengths``:
        (B,) valid samples per item (default: all T), each at least
        :attr:`HubertConfig.receptive_field` (400 samples, 25 ms). Returns
        (B, frames, D) features at 50 Hz (hop 320) and (B,) frame lengths
        (:meth:`HubertConfig.frames_for`); frames past an item's length are
        zero. RVC v1: ``output_layer=9, project=True`` (D = 256); v2:
        ``output_layer=12`` (D = 768); :func:`rvc_feature_spec`.
        """
        return self(waves, lengths, output_layer, project)

    def _check_inputs(self, waves: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        if waves.dim() != 2:
            raise ValueError(f"waves must be (batch, samples), got shape {tuple(waves.shape)}")
        parameter = self.mask_emb
        waves = waves.to(device=parameter.device, dtype=parameter.dtype)
        if lengths is None:
            lengths = torch.full((waves.size(0),), waves.size(1), dtype=torch.long, device=waves.device)
        lengths = torch.as_tensor(lengths, device=waves.device).long()
        if lengths.shape != (waves.size(0),):
            raise ValueError(f"lengths must be ({waves.size(0)},) for {waves.size(0)} waveforms, "
                             f"got shape {tuple(lengths.shape)}")
        if waves.size(0) == 0:
            raise ValueError("empty batch: give at least one waveform")
        shortest, longest = int(lengths.min()), int(lengths.max())
        if longest > waves.size(1):
            raise ValueError(f"a length ({longest}) exceeds the padded batch ({waves.size(1)} samples)")
        minimum = self.config.receptive_field
        if shortest < minimum:
            raise ValueError(f"an item of {shortest} samples is shorter than one HuBERT frame ({minimum} samples, "
                             f"{1000 * minimum / SAMPLE_RATE:g} ms at {SAMPLE_RATE} Hz): pad or drop it")
        return waves[:, :longest], lengths


def upsample_frames(features: Tensor, frame_lengths: Tensor,
                    factor: int = RVC_FRAME_UPSAMPLING) -> tuple[Tensor, Tensor]:
    """Nearest-neighbour upsampling along time: each frame ``factor`` times (RVC: 50 Hz -> 100 Hz).

    (B, F, D), (B,) -> (B, F * factor, D), (B,) * factor; what RVC's
    ``F.interpolate(scale_factor=2)`` (nearest) gives.
    """
    return features.repeat_interleave(factor, dim=1), frame_lengths * factor


# --------------------------------------------------------------------------- checkpoints


class _ConfigRecord:
    """Stands in for a class a checkpoint's config pickles (Namespace, omegaconf nodes, enums, ...).

    It keeps what the pickle hands it (constructor arguments, state) and runs
    no code of the class it replaces; :func:`_plain` turns a tree of them
    into dicts, lists and scalars.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> _ConfigRecord:
        record = object.__new__(cls)
        record.__dict__["_record_args"] = args
        return record

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_record_state"] = state


def _record_class(full_name: str) -> type:
    module, _, name = full_name.rpartition(".")
    return type(name or full_name, (_ConfigRecord,), {"__module__": f"inert:{module}"})


def _plain(value: Any, depth: int = 0) -> Any:
    """Dicts, lists and scalars from a config tree of records (omegaconf containers keep their data in
    ``_content``, value nodes in ``_val``, a Namespace in its attributes, an enum member in its argument)."""
    if depth > 64:  # a cycle other than omegaconf's _parent (never followed): stop rather than recurse forever
        return None
    if isinstance(value, _ConfigRecord):
        state = value.__dict__.get("_record_state")
        if isinstance(state, tuple) and len(state) == 2:  # pickle's (state, slotstate)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, Mapping):
            if "_content" in state:
                return _plain(state["_content"], depth + 1)
            if "_val" in state:
                return _plain(state["_val"], depth + 1)
            return {str(k): _plain(v, depth + 1) for k, v in state.items()}
        args = value.__dict__.get("_record_args", ())
        return _plain(args[0], depth + 1) if len(args) == 1 else None
    if isinstance(value, argparse.Namespace):
        return {k: _plain(v, depth + 1) for k, v in vars(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    return value


def _load_with_records(path: Path, names: Sequence[str]) -> Any:
    records = [(_record_class(name), name) for name in names]
    with torch.serialization.safe_globals(records):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_fairseq_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """A fairseq checkpoint as a dict, ``cfg`` / ``args`` as plain dicts; no code in the file runs.

    First ``torch.load(weights_only=True)``. If the file pickles classes that
    loader refuses and every one comes from configuration modules
    (:data:`CONFIG_PICKLE_MODULES`: argparse, omegaconf, fairseq, typing,
    numpy, ...), it is read again with those classes replaced by inert
    records. A file naming anything else is refused unless ``allow_pickle``
    (full unpickling, which can execute code: only for files you trust).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"HuBERT checkpoint {file} does not exist: give the path of RVC's hubert_base.pt "
                                "(ContentVec, fairseq layout) on this host; nothing is downloaded")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as refused:
        try:
            names = list(torch.serialization.get_unsafe_globals_in_checkpoint(file))
        except Exception as exc:  # a legacy (non-zip) file cannot be listed: report the refusal below
            logger.debug("%s: cannot list the pickled classes (%s)", file, exc)
            names = []
        foreign = [name for name in names if name.split(".", 1)[0] not in CONFIG_PICKLE_MODULES]
        if names and not foreign:
            logger.info("%s: reading %d pickled configuration class(es) as inert records: %s", file, len(names),
                        first_keys(names))
            checkpoint = _load_with_records(file, names)
        elif allow_pickle:
            logger.warning("loading %s with allow_pickle=True: the file can execute arbitrary code while loading; "
                           "only do this for files you trust", file)
            try:
                checkpoint = torch.load(file, map_location="cpu", weights_only=False)
            except ModuleNotFoundError as exc:
                raise ValueError(f"{file}: unpickling needs the module {exc.name!r}, which is not installed") from exc
        else:
            # torch's own message suggests weights_only=False; name the classes instead.
            why = (f"it pickles {first_keys(foreign)}, not fairseq configuration data" if foreign
                   else str(refused).strip().splitlines()[0])
            raise ValueError(f"{file}: refused by the safe loader (weights_only=True): {why}. If you trust the "
                             "file, load it with allow_pickle=True.") from refused
    except (RuntimeError, EOFError, OSError) as exc:
        raise ValueError(f"{file}: not a readable torch checkpoint ({exc})") from exc
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{file}: expected a fairseq checkpoint dict, got {type(checkpoint).__name__}")
    checkpoint = dict(checkpoint)
    for key in CONFIG_KEYS:
        if checkpoint.get(key) is not None:
            checkpoint[key] = _plain(checkpoint[key])
    return checkpoint


def _model_settings(checkpoint: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(model settings, task settings, where they came from) of a fairseq checkpoint.

    fairseq prefers ``cfg`` (hydra: ``cfg["model"]``, ``cfg["task"]``) and
    falls back to the legacy flat ``args``; either may be None.
    """
    for key in CONFIG_KEYS:
        value = _plain(checkpoint.get(key))
        if isinstance(value, Mapping) and value:
            if isinstance(value.get("model"), Mapping):
                task = value.get("task")
                return dict(value["model"]), dict(task) if isinstance(task, Mapping) else {}, f"{key}['model']"
            return dict(value), dict(value), key
    return {}, {}, "tensor shapes"


def _shape(state: Mapping[str, Tensor], key: str) -> tuple[int, ...]:
    if key not in state:
        raise ValueError(f"not a fairseq HuBERT state dict: it has no {key!r}")
    return tuple(state[key].shape)


def config_from_state(state: Mapping[str, Tensor]) -> HubertConfig:
    """The config a HuBERT state dict's tensor shapes show.

    Widths, layer count, conv channels and kernels, positional-conv kernel and
    groups, ``final_dim`` and ``n_classes`` are read off the tensors. Two
    settings leave no trace in shapes: the conv strides (the published ones
    are assumed, so the conv stack must have the published 7 layers) and the
    head count (``embed_dim / 64``, the published head width).
    """
    conv_layers = []
    index = 0
    while f"feature_extractor.conv_layers.{index}.0.weight" in state:
        channels, _, kernel = _shape(state, f"feature_extractor.conv_layers.{index}.0.weight")
        conv_layers.append((channels, kernel))
        index += 1
    if not conv_layers:
        _shape(state, PROBE_KEY)
    if len(conv_layers) != len(PUBLISHED_CONV_LAYERS):
        raise ValueError(f"the state dict has {len(conv_layers)} conv layers, the published HuBERT "
                         f"{len(PUBLISHED_CONV_LAYERS)}: the strides cannot be inferred; the checkpoint needs its "
                         "cfg/args (conv_feature_layers)")
    strides = [stride for _, _, stride in PUBLISHED_CONV_LAYERS]
    embed_dim = _shape(state, "encoder.layer_norm.weight")[0]
    layers = 0
    while f"encoder.layers.{layers}.fc1.weight" in state:
        layers += 1
    pos_channels, pos_in, pos_kernel = _shape(state, "encoder.pos_conv.0.weight_v")
    label = state.get("label_embs_concat")
    heads = max(1, embed_dim // PUBLISHED_HEAD_DIM)
    if embed_dim % heads:
        heads = 1
    return HubertConfig(
        conv_layers=tuple((c, k, s) for (c, k), s in zip(conv_layers, strides, strict=True)),
        conv_bias="feature_extractor.conv_layers.0.0.bias" in state,
        embed_dim=embed_dim, layers=max(layers, 1), attention_heads=heads,
        ffn_dim=_shape(state, "encoder.layers.0.fc1.weight")[0],
        final_dim=_shape(state, "final_proj.weight")[0],
        conv_pos=pos_kernel, conv_pos_groups=max(1, pos_channels // pos_in),
        n_classes=int(label.shape[0]) if isinstance(label, Tensor) else 0)


def config_from_checkpoint(checkpoint: Mapping[str, Any]) -> HubertConfig:
    """The network a fairseq checkpoint describes: its ``cfg`` / ``args`` over what its tensors show.

    ``n_classes`` always comes from ``label_embs_concat`` (fairseq takes it
    from the task's dictionaries, not the model config). A task that expects
    normalised input (``normalize=True``) is refused: this encoder feeds raw
    samples, as ContentVec / HuBERT-Base were trained.
    """
    state = _state_dict(checkpoint, "<checkpoint>")
    settings, task, source = _model_settings(checkpoint)
    if task.get("normalize"):
        raise ValueError(f"unsupported fairseq task setting normalize=True ({source}): the model expects "
                         "zero-mean unit-variance input (HuBERT-Large style); only raw-input models are implemented")
    base = config_from_state(state)
    if not settings:
        logger.info("no cfg/args in the checkpoint: shapes give the config; assuming %d heads and the published "
                    "conv strides", base.attention_heads)
        return base
    return HubertConfig.from_fairseq(settings, base=base)


def _state_dict(checkpoint: Mapping[str, Any], where: str) -> dict[str, Tensor]:
    state = checkpoint.get(STATE_KEY)
    if state is None and PROBE_KEY in checkpoint:
        state = checkpoint  # a bare state dict
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        top = sorted(str(k) for k in checkpoint)[:12]
        raise ValueError(f"{where}: not a fairseq HuBERT checkpoint: expected a dict with {STATE_KEY!r} (the state "
                         f"dict) and 'cfg'/'args', found top-level keys {top}")
    return dict(state)


def _load_strict(model: HubertModel, state: Mapping[str, Tensor], where: str) -> None:
    expected = model.state_dict()
    problems = layout_problems(expected, state)
    if problems:
        raise ValueError(f"{where} does not match fairseq HuBERT-Base ({len(expected)} keys for {model.config}): "
                         + "; ".join(problems) + ". Is it a fine-tuned (w2v_encoder.*) or non-legacy ContentVec file?")
    model.load_state_dict(state, strict=True)


def load_hubert(path: str | Path, device: str | torch.device = "cpu", *,
                allow_pickle: bool = False) -> tuple[HubertModel, HubertConfig]:
    """Restore RVC's content encoder from a fairseq-layout file (``hubert_base.pt``), strict, in eval mode.

    The config comes from the file (:func:`config_from_checkpoint`); every
    key must match. Half-precision files (RVC ships ``hubert_base.pt`` in
    fp16) load into float32 parameters; call ``.half()`` for fp16 inference.
    """
    file = Path(path)
    checkpoint = read_fairseq_checkpoint(file, allow_pickle=allow_pickle)
    state = _state_dict(checkpoint, str(file))
    try:
        config = config_from_checkpoint(checkpoint)
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from exc
    model = HubertModel(config)
    _load_strict(model, state, str(file))
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    logger.info("loaded HuBERT %s (%d layers, %d-d, %d classes; file dtype %s) on %s", file.name, config.layers,
                config.embed_dim, config.n_classes, "/".join(dtypes), device)
    return model.to(device).eval(), config


def random_hubert(config: HubertConfig | None = None, seed: int = 0,
                  device: str | torch.device = "cpu") -> HubertModel:
    """The published size (or ``config``) with random weights (seeded), in eval mode: for compute
    benchmarks and tests only."""
    logger.warning("HuBERT with RANDOM weights: its features carry no content; for benchmarks and tests only")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HubertModel(config)
    return model.to(device).eval()
