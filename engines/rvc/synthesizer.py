"""The RVC v1/v2 synthesizers, with and without F0: content features + pitch + speaker -> waveform.

One class, :class:`RvcSynthesizer`, builds each of the four published variants
from its :class:`~engines.rvc.config.RvcConfig` (``version`` and ``f0``):

=============  ===========================  ================  ==============
version, f0    published class              content features  decoder
=============  ===========================  ================  ==============
v1, 1          SynthesizerTrnMs256NSFsid    256-d             NSF-HiFi-GAN
v1, 0          SynthesizerTrnMs256NSFsid_   256-d             HiFi-GAN
               nono
v2, 1          SynthesizerTrnMs768NSFsid    768-d             NSF-HiFi-GAN
v2, 0          SynthesizerTrnMs768NSFsid_   768-d             HiFi-GAN
               nono
=============  ===========================  ================  ==============

Its state dict has the published names and shapes minus ``enc_q.*`` (the
posterior encoder, which only training uses and voice files do not carry):
``enc_p`` (:class:`TextEncoder`), ``flow``, ``dec`` and ``emb_g``.

Inference (:meth:`RvcSynthesizer.infer`) is VITS's: the text encoder predicts
a Gaussian (m, logs) per frame, z_p = m + e^logs * N(0, 1) * noise_scale is
sampled, the flow runs backwards to z, and the decoder renders z (with the
F0 excitation in the NSF variants). Batches are padded and carry lengths; an
item's audio does not depend on the padding, and with one generator per item
(:func:`~engines.rvc.randomness.item_generators`) nor on the other items.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AttentionEncoder
from .config import RvcConfig
from .flow import CouplingFlow
from .nsf import HifiGanDecoder, NsfDecoder
from .randomness import GeneratorArg, ItemDraws

logger = logging.getLogger(__name__)

#: Coarse pitch bins of ``emb_pitch``: 1..255 from the mel-scaled F0, 0 for unvoiced.
PITCH_BINS = 256
#: Slope of the LeakyReLU after the content and pitch embeddings.
EMBEDDING_LRELU_SLOPE = 0.1
#: The latent temperature RVC's inference hard-codes.
PUBLISHED_NOISE_SCALE = 0.66666


class SynthesisOutput(NamedTuple):
    """What :meth:`RvcSynthesizer.infer` returns: padded audio plus lengths."""

    audio: Tensor
    """(B, T * hop) in [-1, 1], the module's dtype; zero past ``audio_lengths``."""
    audio_lengths: Tensor
    """(B,) long: ``lengths * hop``."""


class TextEncoder(nn.Module):
    """``enc_p``: content features (+ coarse pitch) -> prior (m, logs) per frame."""

    def __init__(self, config: RvcConfig) -> None:
        super().__init__()
        self.hidden_channels = config.hidden_channels
        self.inter_channels = config.inter_channels
        self.emb_phone = nn.Linear(config.content_dim, config.hidden_channels)
        self.emb_pitch = nn.Embedding(PITCH_BINS, config.hidden_channels) if config.f0 else None
        self.encoder = AttentionEncoder(config.hidden_channels, config.filter_channels, config.n_heads,
                                        config.n_layers, config.kernel_size, config.p_dropout)
        self.proj = nn.Conv1d(config.hidden_channels, 2 * config.inter_channels, 1)

    def forward(self, phone: Tensor, pitch: Tensor | None, mask: Tensor) -> tuple[Tensor, Tensor]:
        """phone (B, T, content_dim); pitch (B, T) long or None; mask (B, 1, T) -> m, logs (B, inter, T)."""
        x = self.emb_phone(phone)
        if self.emb_pitch is not None:
            assert pitch is not None
            x = x + self.emb_pitch(pitch)
        x = F.leaky_relu(x * math.sqrt(self.hidden_channels), EMBEDDING_LRELU_SLOPE).transpose(1, 2)
        stats = self.proj(self.encoder(x * mask, mask)) * mask
        m, logs = stats.split(self.inter_channels, dim=1)
        return m, logs


class RvcSynthesizer(nn.Module):
    """An RVC voice's network (any of the four variants), for inference."""

    def __init__(self, config: RvcConfig) -> None:
        super().__init__()
        self.config = config
        self.enc_p = TextEncoder(config)
        self.dec: HifiGanDecoder = NsfDecoder(config) if config.f0 else HifiGanDecoder(config)
        self.flow = CouplingFlow(config.inter_channels, config.hidden_channels, config.gin_channels)
        self.emb_g = nn.Embedding(config.spk_embed_dim, config.gin_channels)

    @property
    def hop_length(self) -> int:
        """Output samples per content frame."""
        return self.config.hop_length

    @property
    def sampling_rate(self) -> int:
        """Output sample rate in Hz."""
        return self.config.sampling_rate

    def fold_weight_norm(self) -> None:
        """Fold every (weight_g, weight_v) into a plain weight: faster, same output, other key names."""
        for module in self.modules():
            if module is not self and callable(getattr(module, "remove_weight_norm", None)):
                module.remove_weight_norm()

    @torch.no_grad()
    def infer(self, phone: Tensor, lengths: Tensor, pitch: Tensor | None, nsff0: Tensor | None, sid: Tensor,
              noise_scale: float = PUBLISHED_NOISE_SCALE, generator: GeneratorArg = None,
              source_phase: Tensor | None = None) -> SynthesisOutput:
        """Render a padded batch.

        ``phone`` (B, T, 256 | 768) content features at 100 frames/s; ``lengths``
        (B,) valid frames; ``pitch`` (B, T) long coarse pitch 1..255 (0 unvoiced)
        and ``nsff0`` (B, T) F0 in Hz, both required by F0 voices and refused by
        the others; ``sid`` (B,) speaker ids. ``noise_scale`` scales the latent
        noise (0 gives the mean). ``generator``: None (the global RNG), one
        ``torch.Generator`` shared by the batch, or one per item (an item's
        audio then depends only on its own inputs and generator).
        ``source_phase`` (B,) cycles: where F0 voices start their sine source
        (default 0, RVC's; a piece of a longer utterance passes the phase the
        utterance has there). The outputs follow the module's device and dtype.
        """
        param = self._anchor()
        phone, lengths, pitch, nsff0, sid = self._checked(phone, lengths, pitch, nsff0, sid, param)
        draws = ItemDraws(generator, phone.size(0))
        mask = (torch.arange(phone.size(1), device=param.device)[None, :] < lengths[:, None])[:, None, :]
        mask = mask.to(param.dtype)
        g = self.emb_g(sid)[:, :, None]
        m, logs = self.enc_p(phone, pitch, mask)
        noise = draws.padded_normal(lengths.tolist(), m, time_dim=2)
        z_p = (m + torch.exp(logs) * noise * noise_scale) * mask
        z = self.flow.inverse(z_p, mask, g) * mask
        if isinstance(self.dec, NsfDecoder):
            assert nsff0 is not None
            audio = self.dec(z, lengths, g, nsff0, draws, source_phase)
        else:
            audio = self.dec(z, lengths, g)
        return SynthesisOutput(audio[:, 0], lengths * self.hop_length)

    def _anchor(self) -> Tensor:
        """A parameter that says where the module lives and in which dtype it computes."""
        return self.enc_p.emb_phone.weight

    def _checked(self, phone: Tensor, lengths: Tensor, pitch: Tensor | None, nsff0: Tensor | None, sid: Tensor,
                 param: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor]:
        """Validate shapes and ranges; move everything to the module's device (phone to its dtype)."""
        cfg = self.config
        device = param.device
        phone = torch.as_tensor(phone)
        if phone.ndim != 3 or phone.size(2) != cfg.content_dim:
            raise ValueError(f"phone must be (B, T, {cfg.content_dim}) content features for an RVC {cfg.version} "
                             f"voice, got {tuple(phone.shape)}")
        batch, frames = phone.shape[:2]
        lengths = torch.as_tensor(lengths, device=device).long()
        sid = torch.as_tensor(sid, device=device).long()
        if lengths.shape != (batch,) or sid.shape != (batch,):
            raise ValueError(f"lengths and sid must be ({batch},), got {tuple(lengths.shape)} and {tuple(sid.shape)}")
        if batch and (int(lengths.min()) < 0 or int(lengths.max()) > frames):
            raise ValueError(f"lengths must lie in [0, {frames}], got {lengths.tolist()}")
        if batch and (int(sid.min()) < 0 or int(sid.max()) >= cfg.n_speakers):
            raise ValueError(f"speaker ids must lie in [0, {cfg.n_speakers}), got {sid.tolist()}")
        if not cfg.f0:
            if pitch is not None or nsff0 is not None:
                raise ValueError(f"this {cfg.variant} voice was trained without F0: pass pitch=None and nsff0=None")
            return phone.to(device=device, dtype=param.dtype), lengths, None, None, sid
        if pitch is None or nsff0 is None:
            raise ValueError(f"this {cfg.variant} voice needs pitch (coarse, 1..255) and nsff0 (F0 in Hz)")
        pitch = torch.as_tensor(pitch, device=device)
        nsff0 = torch.as_tensor(nsff0, device=device)
        if pitch.shape != (batch, frames) or nsff0.shape != (batch, frames):
            raise ValueError(f"pitch and nsff0 must be ({batch}, {frames}) like phone's frames, got "
                             f"{tuple(pitch.shape)} and {tuple(nsff0.shape)}")
        if pitch.is_floating_point():
            raise ValueError("pitch must hold integer coarse-pitch bins (long), not floats; F0 in Hz goes to nsff0")
        if pitch.numel() and (int(pitch.min()) < 0 or int(pitch.max()) >= PITCH_BINS):
            raise ValueError(f"coarse pitch must lie in [0, {PITCH_BINS - 1}], got "
                             f"[{int(pitch.min())}, {int(pitch.max())}]")
        return phone.to(device=device, dtype=param.dtype), lengths, pitch.long(), nsff0, sid


__all__ = ["PITCH_BINS", "PUBLISHED_NOISE_SCALE", "RvcSynthesizer", "SynthesisOutput", "TextEncoder"]
