"""RVC's normalizing flow (``flow``): mean-only residual couplings conditioned on the speaker.

Training maps the posterior latent z to the prior side z_p; inference runs the
flow the other way (:meth:`CouplingFlow.inverse`), turning the text encoder's
sample z_p into the z the decoder renders. Each coupling layer keeps one half
of the channels and shifts the other half by a WaveNet-style function of the
kept half and the speaker embedding (mean-only: no scale, so the inverse is a
subtraction); a channel flip between layers swaps the halves' roles. Flips hold
no weights but keep their slot, so the couplings sit at ``flows.0/2/4/6`` as in
the published state dict.

Every activation is masked after each step, so frames past an item's length
stay zero and the dilated convolutions see the zero padding a lone item sees.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from engines.fastpitch.hifigan import WNConv1d

logger = logging.getLogger(__name__)

#: The published flow: 4 couplings, each a 3-layer WaveNet of kernel 5 with dilation rate 1.
N_COUPLINGS = 4
WAVENET_LAYERS = 3
WAVENET_KERNEL = 5
WAVENET_DILATION_RATE = 1


class WaveNet(nn.Module):
    """Gated dilated convolutions with a shared skip sum (the ``WN`` of VITS), all weight-normed.

    ``cond_layer`` turns the speaker vector into one (tanh, sigmoid) bias pair
    per layer; ``res_skip_layers`` emit residual + skip channels, except the
    last which emits skip channels only.
    """

    def __init__(self, channels: int, kernel_size: int, dilation_rate: int, n_layers: int,
                 cond_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"WaveNet kernel must be odd to keep frames aligned, got {kernel_size}")
        self.channels = channels
        self.drop = nn.Dropout(dropout)
        self.cond_layer = WNConv1d(cond_channels, 2 * channels * n_layers, 1)
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate ** i
            self.in_layers.append(WNConv1d(channels, 2 * channels, kernel_size, dilation=dilation,
                                           padding=dilation * (kernel_size - 1) // 2))
            last = i == n_layers - 1
            self.res_skip_layers.append(WNConv1d(channels, channels if last else 2 * channels, 1))

    def forward(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        """x (B, C, T) masked; mask (B, 1, T); g (B, cond, 1) -> skip sum (B, C, T)."""
        biases = self.cond_layer(g).chunk(len(self.in_layers), dim=1)
        skip = torch.zeros_like(x)
        last = len(self.in_layers) - 1
        for i, (in_layer, res_skip, bias) in enumerate(zip(self.in_layers, self.res_skip_layers, biases)):
            pre = in_layer(x) + bias
            gated = torch.tanh(pre[:, :self.channels]) * torch.sigmoid(pre[:, self.channels:])
            out = res_skip(self.drop(gated))
            if i == last:  # emits skip channels only
                skip = skip + out
            else:
                x = (x + out[:, :self.channels]) * mask
                skip = skip + out[:, self.channels:]
        return skip * mask


class MeanOnlyCoupling(nn.Module):
    """x = (x0, x1) -> (x0, x1 + m(x0, g)): a shift of one half predicted from the other (keys pre/enc/post)."""

    def __init__(self, channels: int, hidden_channels: int, cond_channels: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden_channels, 1)
        self.enc = WaveNet(hidden_channels, WAVENET_KERNEL, WAVENET_DILATION_RATE, WAVENET_LAYERS, cond_channels)
        self.post = nn.Conv1d(hidden_channels, self.half, 1)
        # Published init: the shift starts at zero, so an untrained flow is the identity.
        nn.init.zeros_(self.post.weight)
        nn.init.zeros_(self.post.bias)

    def shift(self, kept: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        """The shift m(kept, g), zero past each length."""
        h = self.pre(kept) * mask
        return self.post(self.enc(h, mask, g)) * mask

    def forward(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        kept, moved = x.split(self.half, dim=1)
        return torch.cat([kept, (moved + self.shift(kept, mask, g)) * mask], dim=1)

    def inverse(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        kept, moved = x.split(self.half, dim=1)
        return torch.cat([kept, (moved - self.shift(kept, mask, g)) * mask], dim=1)


class ChannelFlip(nn.Module):
    """Reverses the channel order (its own inverse); weightless, it only holds a slot in ``flows``."""

    def forward(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        return torch.flip(x, dims=[1])

    def inverse(self, x: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        return torch.flip(x, dims=[1])


class CouplingFlow(nn.Module):
    """``flows``: coupling, flip, coupling, flip, ... (couplings at the even indices)."""

    def __init__(self, channels: int, hidden_channels: int, cond_channels: int,
                 n_couplings: int = N_COUPLINGS) -> None:
        super().__init__()
        steps: list[nn.Module] = []
        for _ in range(n_couplings):
            steps += [MeanOnlyCoupling(channels, hidden_channels, cond_channels), ChannelFlip()]
        self.flows = nn.ModuleList(steps)

    def forward(self, z: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        """Posterior latent -> prior side (the training direction)."""
        for step in self.flows:
            z = step(z, mask, g)
        return z

    def inverse(self, z_p: Tensor, mask: Tensor, g: Tensor) -> Tensor:
        """Prior sample -> decoder latent (what inference runs)."""
        for step in reversed(self.flows):
            z_p = step.inverse(z_p, mask, g)
        return z_p


__all__ = ["ChannelFlip", "CouplingFlow", "MeanOnlyCoupling", "WaveNet"]
