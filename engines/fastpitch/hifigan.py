"""HiFi-GAN generator (Kong et al. 2020) with NVIDIA's state-dict layout.

At the published V1 size the generator has 234 state-dict tensors and 13.94 M
parameters while weight norm is on (``weight_g`` / ``weight_v`` per conv, as
stored in checkpoints). Residual blocks are nested ``resblocks.{stage}.{j}``
(NVIDIA's layout); :mod:`engines.fastpitch.checkpoint` remaps the original
flat ``resblocks.{stage * n_kernels + j}`` layout.

Weight norm is implemented here rather than with ``torch.nn.utils`` so the
parameter names stay ``weight_g`` / ``weight_v`` (the parametrization API
renames them) and folding it away is explicit: :meth:`HiFiGan.remove_weight_norm`.

``forward(mel, lengths)`` masks every intermediate activation past each item's
length, so a padded batch renders every item exactly as it would alone (the
zero padding a lone item's convolutions see). Without ``lengths`` it is the
plain published forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import HiFiGanConfig

#: Std of the normal init of the published generator's convs (init_weights).
INIT_STD = 0.01
#: Kernel of conv_pre / conv_post.
IO_KERNEL_SIZE = 7


def _norm_except_dim0(v: Tensor) -> Tensor:
    """L2 norm over all dims but the first, kept as (d0, 1, 1): weight_g's shape."""
    return torch.linalg.vector_norm(v, dim=tuple(range(1, v.ndim)), keepdim=True)


class _WeightNormed:
    """Mixin: replaces ``weight`` by ``weight_g * weight_v / ||weight_v||``.

    Norm over every dim except 0, as ``torch.nn.utils.weight_norm(dim=0)``:
    for Conv1d g is (out, 1, 1); for ConvTranspose1d (in, 1, 1).
    """

    _parameters: dict[str, nn.Parameter | None]

    def _init_weight_norm(self) -> None:
        weight = self._parameters.pop("weight")
        assert weight is not None
        w = weight.detach()
        self.weight_g = nn.Parameter(_norm_except_dim0(w).clone())
        self.weight_v = nn.Parameter(w.clone())

    @property
    def weight_normed(self) -> bool:
        """True while the weight is stored as (weight_g, weight_v)."""
        return "weight_v" in self._parameters

    def effective_weight(self) -> Tensor:
        """The convolution kernel actually applied."""
        if self.weight_normed:
            v = self._parameters["weight_v"]
            g = self._parameters["weight_g"]
            assert v is not None and g is not None
            return v * (g / _norm_except_dim0(v))
        w = self._parameters["weight"]
        assert w is not None
        return w

    def remove_weight_norm(self) -> None:
        """Fold (g, v) into a plain ``weight`` (inference speed; same output)."""
        if not self.weight_normed:
            return
        w = self.effective_weight().detach().clone()
        del self._parameters["weight_g"]
        del self._parameters["weight_v"]
        self._parameters["weight"] = nn.Parameter(w)


class WNConv1d(_WeightNormed, nn.Conv1d):
    """Weight-normed Conv1d (keys ``weight_g``, ``weight_v``, ``bias``)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        nn.Conv1d.__init__(self, *args, **kwargs)  # type: ignore[arg-type]
        self._init_weight_norm()

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


class WNConvTranspose1d(_WeightNormed, nn.ConvTranspose1d):
    """Weight-normed ConvTranspose1d (``weight_g`` is (in, 1, 1))."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        nn.ConvTranspose1d.__init__(self, *args, **kwargs)  # type: ignore[arg-type]
        self._init_weight_norm()

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return F.conv_transpose1d(x, self.effective_weight(), self.bias, self.stride,
                                  self.padding, self.output_padding, self.groups,
                                  self.dilation)


def _same_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


def _init_normal(conv: nn.Module) -> None:
    if isinstance(conv, _WeightNormed):
        with torch.no_grad():
            w = torch.randn_like(conv.weight_v) * INIT_STD
            conv.weight_v.copy_(w)
            conv.weight_g.copy_(_norm_except_dim0(w))


def _mask(x: Tensor, mask: Tensor | None) -> Tensor:
    return x if mask is None else x * mask


class ResBlock1(nn.Module):
    """Three (dilated conv, conv) pairs with residuals (HiFi-GAN V1/V2)."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...],
                 lrelu_slope: float) -> None:
        super().__init__()
        self.lrelu_slope = lrelu_slope
        self.convs1 = nn.Sequential(*[
            WNConv1d(channels, channels, kernel_size, 1, _same_padding(kernel_size, d), d)
            for d in dilation])
        self.convs2 = nn.Sequential(*[
            WNConv1d(channels, channels, kernel_size, 1, _same_padding(kernel_size))
            for _ in dilation])
        self.apply(_init_normal)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = _mask(c1(F.leaky_relu(x, self.lrelu_slope)), mask)
            xt = _mask(c2(F.leaky_relu(xt, self.lrelu_slope)), mask)
            x = x + xt
        return x


class ResBlock2(nn.Module):
    """Two dilated convs with residuals (HiFi-GAN V3)."""

    def __init__(self, channels: int, kernel_size: int, dilation: tuple[int, ...],
                 lrelu_slope: float) -> None:
        super().__init__()
        self.lrelu_slope = lrelu_slope
        self.convs = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, 1, _same_padding(kernel_size, d), d)
            for d in dilation)
        self.apply(_init_normal)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for c in self.convs:
            x = x + _mask(c(F.leaky_relu(x, self.lrelu_slope)), mask)
        return x


class HiFiGan(nn.Module):
    """Mel (B, n_mel, T) -> waveform (B, 1, T * hop) in [-1, 1]."""

    def __init__(self, config: HiFiGanConfig | None = None) -> None:
        super().__init__()
        cfg = config or HiFiGanConfig()
        self.config = cfg
        ch0 = cfg.upsample_initial_channel
        self.conv_pre = WNConv1d(cfg.n_mel, ch0, IO_KERNEL_SIZE, 1,
                                 padding=_same_padding(IO_KERNEL_SIZE))
        self.ups = nn.Sequential(*[
            WNConvTranspose1d(ch0 // 2 ** i, ch0 // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))])
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        self.resblocks = nn.Sequential(*[
            nn.Sequential(*[
                block(ch0 // 2 ** (i + 1), k, d, cfg.lrelu_slope)
                for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)])
            for i in range(len(cfg.upsample_rates))])
        ch_last = ch0 // 2 ** len(cfg.upsample_rates)
        self.conv_post = WNConv1d(ch_last, 1, IO_KERNEL_SIZE, 1,
                                  padding=_same_padding(IO_KERNEL_SIZE))
        self.ups.apply(_init_normal)
        _init_normal(self.conv_post)

    @property
    def hop_length(self) -> int:
        """Samples per mel frame."""
        return self.config.hop_length

    def forward(self, mel: Tensor, lengths: Tensor | None = None) -> Tensor:
        """mel (B, n_mel, T); optional lengths (B,) in frames.

        With ``lengths``, samples past ``lengths * hop`` are zero and valid
        samples do not depend on the padding.
        """
        if mel.ndim != 3 or mel.size(1) != self.config.n_mel:
            raise ValueError(f"mel must be (B, {self.config.n_mel}, T), got {tuple(mel.shape)}")
        mask = self._frame_mask(lengths, 1, mel.size(2), mel)
        x = _mask(self.conv_pre(_mask(mel, mask)), mask)
        factor = 1
        n_kernels = len(self.config.resblock_kernel_sizes)
        for up, group, rate in zip(self.ups, self.resblocks, self.config.upsample_rates):
            factor *= rate
            x = up(F.leaky_relu(x, self.config.lrelu_slope))
            mask = self._frame_mask(lengths, factor, x.size(2), x)
            x = _mask(x, mask)
            x = sum(blk(x, mask) for blk in group) / n_kernels  # type: ignore[assignment]
        x = self.conv_post(F.leaky_relu(x, self.config.final_lrelu_slope))
        return _mask(torch.tanh(x), mask)

    @staticmethod
    def _frame_mask(lengths: Tensor | None, factor: int, size: int, like: Tensor) -> Tensor | None:
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths, device=like.device)
        pos = torch.arange(size, device=like.device)
        return (pos[None, :] < lengths[:, None] * factor)[:, None, :].to(like.dtype)

    def remove_weight_norm(self) -> None:
        """Fold weight norm into plain weights (keys become ``*.weight``)."""
        for module in self.modules():
            if isinstance(module, _WeightNormed):
                module.remove_weight_norm()

    @property
    def weight_normed(self) -> bool:
        """True while any conv still stores (weight_g, weight_v)."""
        return any(isinstance(m, _WeightNormed) and m.weight_normed for m in self.modules())


__all__ = ["HiFiGan", "ResBlock1", "ResBlock2", "WNConv1d", "WNConvTranspose1d"]
