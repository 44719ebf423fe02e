"""RVC's decoders (``dec``): the NSF-HiFi-GAN of pitch-guided voices and the plain HiFi-GAN of ``_nono`` ones.

Both turn the latent z (B, inter, T) at 100 frames/s into a waveform at the
voice's rate: ``conv_pre`` plus the speaker's ``cond``, then one stage per
upsample rate (LeakyReLU, a weight-normed transposed conv, the average of the
stage's residual blocks), then ``conv_post`` (no bias) and tanh.

The neural source-filter (NSF) decoder also gets an excitation built from F0:
:class:`SineSource` (``m_source``) renders a sine at F0 for voiced frames and
noise for unvoiced ones, at the output rate, merged through ``l_linear`` and
tanh; ``noise_convs.i`` strides it down to each stage's rate and adds it
after that stage's upsampling, so the harmonics are placed by F0, not guessed.

Residual blocks come from :mod:`engines.fastpitch.hifigan` (the same HiFi-GAN
blocks, ``convs1`` / ``convs2`` weight-normed); RVC stores them flat as
``resblocks.{stage * n_kernels + j}``.

Padding: given per-item frame lengths, every activation is zeroed past each
item's end before the next convolution reads it (the published decoder does
not mask, so there the last samples of a short item hear its padding); an
unpadded item gets exactly the published computation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engines.fastpitch.hifigan import ResBlock1, ResBlock2, WNConvTranspose1d

from .config import RvcConfig
from .randomness import ItemDraws

logger = logging.getLogger(__name__)

#: LeakyReLU slope inside the decoder and its residual blocks (published LRELU_SLOPE).
LRELU_SLOPE = 0.1
#: Slope of the LeakyReLU before ``conv_post`` (published: torch's default).
FINAL_LRELU_SLOPE = 0.01
#: Kernel of ``conv_pre`` and ``conv_post``.
IO_KERNEL = 7
#: Published sine source: fundamental only, amplitude 0.1, noise std 0.003 on voiced samples,
#: voiced when F0 > 0 Hz. Unvoiced samples get noise of std amplitude / 3 instead.
HARMONICS = 0
SINE_AMPLITUDE = 0.1
VOICED_NOISE_STD = 0.003
VOICED_THRESHOLD_HZ = 0.0
UNVOICED_NOISE_RATIO = 1.0 / 3.0
#: Dtype of the frame-by-frame phase accumulation. Summing cycles over minutes of
#: frames in float32 would lose ~1e-3 cycles; float64 keeps the phase exact, and it is
#: only one value per frame (the per-sample phase is then small and float32-safe).
PHASE_ACCUMULATOR_DTYPE = torch.float64


def frame_mask(lengths: Tensor, factor: int, size: int, like: Tensor) -> Tensor:
    """(B, 1, size) mask of the samples before ``lengths * factor``, in ``like``'s dtype."""
    positions = torch.arange(size, device=like.device)
    return (positions[None, :] < lengths.to(like.device)[:, None] * factor)[:, None, :].to(like.dtype)


class SineSource(nn.Module):
    """F0 (B, T) in Hz at 100 frames/s -> excitation (B, 1, T * hop) in (-1, 1), keys ``l_linear.*``.

    Sample n of frame t (n = t * hop + k) has the phase
    ``init + hop * sum_{s<t} f(s) / sr + (k + 1) * f(t) / sr`` in cycles:
    the frequency is held over each frame, and the phase runs on across frames
    without resetting. Overtones (``harmonics`` > 0) start at a random phase;
    the fundamental at 0. A lone item consumes the random stream as the
    published source does: one uniform per partial (the fundamental's unused),
    then the additive noise.
    """

    def __init__(self, sampling_rate: int, hop_length: int, harmonics: int = HARMONICS,
                 amplitude: float = SINE_AMPLITUDE, voiced_noise_std: float = VOICED_NOISE_STD,
                 voiced_threshold_hz: float = VOICED_THRESHOLD_HZ) -> None:
        super().__init__()
        self.sampling_rate = sampling_rate
        self.hop_length = hop_length
        self.partials = harmonics + 1
        self.amplitude = amplitude
        self.voiced_noise_std = voiced_noise_std
        self.unvoiced_noise_std = amplitude * UNVOICED_NOISE_RATIO
        self.voiced_threshold_hz = voiced_threshold_hz
        self.l_linear = nn.Linear(self.partials, 1)

    def _initial_phases(self, batch: int, draws: ItemDraws, like: Tensor) -> Tensor:
        if not batch:
            return like.new_zeros(0, 1, 1, self.partials)
        phases = torch.cat([draws.uniform(b, (1, self.partials), like) for b in range(batch)])
        phases[:, 0] = 0  # the fundamental starts at phase 0
        return phases[:, None, None, :]  # (B, 1, 1, partials)

    def excitation(self, f0: Tensor, lengths: Tensor, draws: ItemDraws, phase: Tensor | None = None) -> Tensor:
        """The sine-plus-noise excitation (B, T * hop, partials), in at least float32.

        ``phase`` (B,): the fundamental's phase at the first sample, in cycles
        (default 0, as RVC starts every call). A piece of a longer utterance
        passes the phase the utterance has there, so pieces join without a
        jump in the sine (partial p starts at p times it).
        """
        batch, frames = f0.shape
        work = torch.promote_types(f0.dtype, torch.float32)
        f0 = f0.to(work)
        multiples = torch.arange(1, self.partials + 1, device=f0.device, dtype=work)
        cycles_per_sample = (f0[:, :, None] * multiples / self.sampling_rate) % 1  # (B, T, P)
        per_frame = cycles_per_sample.to(PHASE_ACCUMULATOR_DTYPE) * self.hop_length
        frame_start = ((torch.cumsum(per_frame, dim=1) - per_frame) % 1).to(work)
        within = torch.arange(1, self.hop_length + 1, device=f0.device, dtype=work)[None, None, :, None]
        start = frame_start[:, :, None, :] + self._initial_phases(batch, draws, frame_start)
        if phase is not None:
            offset = (phase.to(device=f0.device, dtype=PHASE_ACCUMULATOR_DTYPE)[:, None] * multiples) % 1
            start = start + offset.to(work)[:, None, None, :]
        phase = start + cycles_per_sample[:, :, None, :] * within  # (B, T, hop, P)
        sine = torch.sin(2 * math.pi * phase).reshape(batch, frames * self.hop_length, self.partials)
        voiced = (f0 > self.voiced_threshold_hz).to(work)
        voiced = voiced.repeat_interleave(self.hop_length, dim=1)[:, :, None]
        noise_std = voiced * self.voiced_noise_std + (1 - voiced) * self.unvoiced_noise_std
        noise = draws.padded_normal((lengths * self.hop_length).tolist(), sine, time_dim=1)
        return sine * self.amplitude * voiced + noise_std * noise

    def forward(self, f0: Tensor, lengths: Tensor, draws: ItemDraws, phase: Tensor | None = None) -> Tensor:
        dtype = self.l_linear.weight.dtype
        merged = torch.tanh(self.l_linear(self.excitation(f0, lengths, draws, phase).to(dtype)))
        merged = merged.transpose(1, 2)  # (B, 1, T * hop)
        return merged * frame_mask(lengths, self.hop_length, merged.size(2), merged)


def _residual_block(config: RvcConfig, channels: int, kernel: int, dilations: Sequence[int]) -> nn.Module:
    block = ResBlock1 if config.resblock == "1" else ResBlock2
    return block(channels, kernel, tuple(dilations), LRELU_SLOPE)


class HifiGanDecoder(nn.Module):
    """The plain HiFi-GAN of the ``_nono`` variants; :class:`NsfDecoder` adds the F0 source."""

    def __init__(self, config: RvcConfig) -> None:
        super().__init__()
        self.config = config
        width = config.upsample_initial_channel
        self.stage_channels = [width // 2 ** (i + 1) for i in range(len(config.upsample_rates))]
        self.conv_pre = nn.Conv1d(config.inter_channels, width, IO_KERNEL, padding=IO_KERNEL // 2)
        self.cond = nn.Conv1d(config.gin_channels, width, 1)
        self.ups = nn.ModuleList(
            WNConvTranspose1d(2 * out, out, kernel, rate, padding=(kernel - rate) // 2)
            for out, rate, kernel in zip(self.stage_channels, config.upsample_rates,
                                         config.upsample_kernel_sizes))
        self.resblocks = nn.ModuleList(
            _residual_block(config, channels, kernel, dilations)
            for channels in self.stage_channels
            for kernel, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes))
        self.conv_post = nn.Conv1d(self.stage_channels[-1], 1, IO_KERNEL, padding=IO_KERNEL // 2, bias=False)
        self.n_kernels = len(config.resblock_kernel_sizes)

    def _stage_source(self, stage: int, source: Tensor | None) -> Tensor | None:
        return None

    def render(self, z: Tensor, lengths: Tensor, g: Tensor, source: Tensor | None) -> Tensor:
        """z (B, inter, T) zero past lengths; g (B, gin, 1) -> audio (B, 1, T * hop), zero past lengths * hop."""
        x = self.conv_pre(z) + self.cond(g)
        x = x * frame_mask(lengths, 1, x.size(2), x)
        factor = 1
        for stage, (up, rate) in enumerate(zip(self.ups, self.config.upsample_rates)):
            factor *= rate
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            added = self._stage_source(stage, source)
            if added is not None:
                x = x + added
            mask = frame_mask(lengths, factor, x.size(2), x)
            x = x * mask
            blocks = self.resblocks[stage * self.n_kernels:(stage + 1) * self.n_kernels]
            x = sum((block(x, mask) for block in blocks), torch.zeros_like(x)) / self.n_kernels
        audio = torch.tanh(self.conv_post(F.leaky_relu(x, FINAL_LRELU_SLOPE)))
        return audio * frame_mask(lengths, factor, audio.size(2), audio)

    def forward(self, z: Tensor, lengths: Tensor, g: Tensor) -> Tensor:
        return self.render(z, lengths, g, None)


class NsfDecoder(HifiGanDecoder):
    """HiFi-GAN plus the F0-driven source (``m_source``, ``noise_convs``): the ``GeneratorNSF`` layout."""

    def __init__(self, config: RvcConfig) -> None:
        super().__init__(config)
        self.m_source = SineSource(config.sampling_rate, config.hop_length)
        # Stage i runs at hop / stride_i samples per frame; the last runs at the output rate.
        last = len(self.stage_channels) - 1
        self.noise_convs = nn.ModuleList(
            nn.Conv1d(1, channels, 2 * stride, stride=stride, padding=stride // 2) if stage < last
            else nn.Conv1d(1, channels, 1)
            for stage, (channels, stride) in enumerate(zip(self.stage_channels, config.source_strides)))

    def _stage_source(self, stage: int, source: Tensor | None) -> Tensor | None:
        assert source is not None
        return self.noise_convs[stage](source)

    def forward(self, z: Tensor, lengths: Tensor, g: Tensor, f0: Tensor,  # type: ignore[override]
                draws: ItemDraws, phase: Tensor | None = None) -> Tensor:
        """f0 (B, T) Hz; the source is zero past each item's end, so the strided convs see zero padding."""
        return self.render(z, lengths, g, self.m_source(f0, lengths, draws, phase))


__all__ = ["HifiGanDecoder", "NsfDecoder", "SineSource", "frame_mask"]
