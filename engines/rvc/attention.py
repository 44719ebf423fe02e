"""The attention encoder inside RVC's text encoder (``enc_p.encoder``), VITS style.

Post-norm layers of self-attention with *relative* position embeddings (Shaw et
al. 2018, as in VITS): besides the usual content score q.k, a query at frame i
scores the key at frame j with q.E_k[j - i] and reads E_v[j - i] weighted by
its attention, for offsets |j - i| <= ``window``; farther offsets get no
positional term. One embedding table serves every head (shape
[1, 2*window+1, head_dim], the published layout), and 1x1 convolutions
project queries, keys, values and the output over (B, C, T) tensors.

The relative terms are computed one offset at a time on the diagonals of the
(T x T) score matrix: 2*window+1 strided views instead of padding and
reshaping the whole matrix, and only the embeddings actually in the window
are touched.

Padding: keys past an item's length are excluded from the softmax, and the
feed-forward convolutions read zeros there, so a valid frame's output does not
depend on how much padding follows it.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

#: Relative offsets each side that get their own embedding (published: 10 frames, 0.1 s).
RELATIVE_WINDOW = 10
#: Score given to masked (query, key) pairs, as published: exp() of it underflows to
#: exactly 0 after the softmax's max subtraction, in fp32 and in fp16 alike.
MASKED_SCORE = -1e4
#: Epsilon of the channel LayerNorm (published value).
LAYER_NORM_EPS = 1e-5


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a (B, C, T) tensor, with the published ``gamma`` / ``beta`` names."""

    def __init__(self, channels: int, eps: float = LAYER_NORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        normed = F.layer_norm(x.transpose(1, 2), (self.gamma.numel(),), self.gamma, self.beta, self.eps)
        return normed.transpose(1, 2)


class RelativePositionAttention(nn.Module):
    """Multi-head self-attention over (B, C, T) with head-shared relative position embeddings."""

    def __init__(self, channels: int, n_heads: int, dropout: float = 0.0,
                 window: int = RELATIVE_WINDOW) -> None:
        super().__init__()
        if channels % n_heads:
            raise ValueError(f"{channels} channels do not split into {n_heads} heads")
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.window = window
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        self.drop = nn.Dropout(dropout)
        # Offset j - i = r lives in row r + window of both tables.
        table = (1, 2 * window + 1, self.head_dim)
        self.emb_rel_k = nn.Parameter(torch.randn(table) * self.head_dim ** -0.5)
        self.emb_rel_v = nn.Parameter(torch.randn(table) * self.head_dim ** -0.5)
        for conv in (self.conv_q, self.conv_k, self.conv_v):
            nn.init.xavier_uniform_(conv.weight)

    def _heads(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, heads, T, head_dim); heads are contiguous channel blocks."""
        b, _, t = x.shape
        return x.view(b, self.n_heads, self.head_dim, t).transpose(2, 3)

    def _offsets(self, length: int) -> range:
        """Relative offsets inside the window that occur in a sequence of ``length``."""
        reach = min(self.window, length - 1)
        return range(-reach, reach + 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, C, T); mask (B, 1, T) float, 1 on valid frames -> (B, C, T)."""
        b, c, t = x.shape
        q = self._heads(self.conv_q(x)) / math.sqrt(self.head_dim)
        k = self._heads(self.conv_k(x))
        v = self._heads(self.conv_v(x))
        scores = torch.matmul(q, k.transpose(2, 3))  # (B, H, T_query, T_key)
        rel_k = self.emb_rel_k[0]  # (2w+1, d)
        # q_i . E_k[r] for every query and every offset r, then added where j - i = r.
        rel_scores = torch.matmul(q, rel_k.transpose(0, 1))  # (B, H, T, 2w+1)
        for r in self._offsets(t):
            rows = slice(max(0, -r), t - max(0, r))
            scores.diagonal(offset=r, dim1=2, dim2=3).add_(rel_scores[:, :, rows, r + self.window])
        pair_mask = mask[:, :, :, None] * mask[:, :, None, :]  # (B, 1, T, T)
        scores = scores.masked_fill(pair_mask == 0, MASKED_SCORE)
        probs = self.drop(torch.softmax(scores, dim=-1))
        out = torch.matmul(probs, v)
        # Attention mass at offset r, gathered per query, reads the value embedding of r.
        mass_by_offset = probs.new_zeros(b, self.n_heads, t, 2 * self.window + 1)
        for r in self._offsets(t):
            rows = slice(max(0, -r), t - max(0, r))
            mass_by_offset[:, :, rows, r + self.window] = probs.diagonal(offset=r, dim1=2, dim2=3)
        out = out + torch.matmul(mass_by_offset, self.emb_rel_v[0])
        return self.conv_o(out.transpose(2, 3).reshape(b, c, t))


class FeedForward(nn.Module):
    """conv_1 -> ReLU -> conv_2 over (B, C, T), each conv reading zeros past the item's end."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)
        self.drop = nn.Dropout(dropout)
        # "Same" padding, explicit so an even kernel pads like the published one (more on the right).
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = torch.relu(self.conv_1(F.pad(x * mask, self.pad)))
        h = self.conv_2(F.pad(self.drop(h) * mask, self.pad))
        return h * mask


class AttentionEncoder(nn.Module):
    """``n_layers`` post-norm (attention, feed-forward) layers; keys ``attn_layers.i``, ``norm_layers_1.i``, ..."""

    def __init__(self, channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int,
                 dropout: float = 0.0, window: int = RELATIVE_WINDOW) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.attn_layers = nn.ModuleList(
            RelativePositionAttention(channels, n_heads, dropout, window) for _ in range(n_layers))
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            FeedForward(channels, filter_channels, kernel_size, dropout) for _ in range(n_layers))
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, C, T); mask (B, 1, T) float -> (B, C, T), zero past each length."""
        x = x * mask
        for attn, norm_1, ffn, norm_2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers,
                                             self.norm_layers_2):
            x = norm_1(x + self.drop(attn(x, mask)))
            x = norm_2(x + self.drop(ffn(x, mask)))
        return x * mask


__all__ = ["AttentionEncoder", "ChannelLayerNorm", "FeedForward", "RelativePositionAttention",
           "RELATIVE_WINDOW"]
