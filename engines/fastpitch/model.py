"""FastPitch 1.1 (Łańcucki 2021, NVIDIA DeepLearningExamples), inference side.

The module tree reproduces the published parameter names and shapes exactly
(185 state-dict entries at the published size, 12 of them the training-only
``attention.*`` aligner), so NVIDIA checkpoints load with ``strict=True``.

Where this implementation differs from the published code, it differs only in
what padded positions see, so that a padded batch gives the same result for
every item as running that item alone:

* the published code masks only after whole sublayers; here the activations
  are also masked between the two convs of each feed-forward block and after
  every predictor conv layer (otherwise the second conv reads bias/LayerNorm
  output at padded positions, which leaks into the last symbols or frames of
  shorter items);
* transformed pitch is re-masked before ``pitch_emb`` (a Hz shift would
  otherwise make the padding non-zero and leak through the k=3 embedding);
* attention uses a large finite negative instead of ``-inf`` so a (degenerate)
  item whose durations all round to zero gives silence instead of NaN.

For a single unpadded utterance these masks are identities: outputs equal the
published model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import FastPitchConfig

#: LJSpeech-1.1 pitch statistics the published infer() falls back to when the
#: checkpoint's ``pitch_mean`` / ``pitch_std`` buffers were never filled (== 0).
DEFAULT_PITCH_MEAN_HZ = 218.14
DEFAULT_PITCH_STD_HZ = 67.24
#: Base of the sinusoidal position frequencies (Vaswani et al.).
POSITIONAL_BASE = 10000.0
#: Scale of the squared key-query distance in the aligner's Gaussian
#: (isotropic) attention, as published.
ALIGNER_DISTANCE_SCALE = 0.0005
#: Added inside the log of the aligner's attention prior to avoid log(0).
ALIGNER_PRIOR_EPS = 1e-8
#: Value of padded mel frames: ln(1e-5), the published log-mel of silence
#: (features are ln(clamp(magnitude, 1e-5))). A vocoder run over the padding
#: without lengths therefore renders near-silence, not noise.
MEL_PAD_VALUE = math.log(1e-5)

PitchTransform = Callable[[Tensor, Tensor, float | Tensor, float | Tensor], Tensor]
"""``(pitch (B,F,N) normalised, lengths (B,), mean_hz, std_hz) -> pitch``,
the published custom-transform signature."""


def mask_from_lengths(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True on valid positions."""
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] < lengths[:, None]


class FastPitchOutput(NamedTuple):
    """What :meth:`FastPitch.infer` returns (padded arrays plus lengths)."""

    mel: Tensor
    """(B, n_mel, T) log-mel; frames at and after ``mel_lengths`` hold MEL_PAD_VALUE."""
    mel_lengths: Tensor
    """(B,) long, valid frames per item."""
    durations: Tensor
    """(B, N) predicted frames per symbol before pace/rounding (0 on padding)."""
    pitch: Tensor
    """(B, F, N) per-symbol pitch, normalised ((Hz - mean) / std), after transforms."""
    energy: Tensor | None
    """(B, N) per-symbol log energy, or None without energy conditioning."""


# --------------------------------------------------------------------------
# transformer pieces
# --------------------------------------------------------------------------


class PositionalEmbedding(nn.Module):
    """Sinusoidal positions, [sin | cos] halves (buffer ``inv_freq`` [d/2])."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        inv_freq = 1.0 / (POSITIONAL_BASE ** (torch.arange(0.0, d_model, 2.0) / d_model))
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, positions: Tensor) -> Tensor:
        """(T,) float positions -> (1, T, d_model)."""
        angles = positions[:, None] * self.inv_freq[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)[None]


class MultiHeadAttn(nn.Module):
    """Post-LN self-attention with a fused qkv projection and bias-free output."""

    def __init__(self, n_head: int, d_model: int, d_head: int, dropout: float,
                 dropatt: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.d_head = d_head
        self.scale = 1.0 / math.sqrt(d_head)
        self.qkv_net = nn.Linear(d_model, 3 * n_head * d_head)
        self.drop = nn.Dropout(dropout)
        self.dropatt = nn.Dropout(dropatt)
        self.o_net = nn.Linear(n_head * d_head, d_model, bias=False)
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, key_padding: Tensor) -> Tensor:
        """x (B,T,d); key_padding (B,T) bool, True where the key is padding."""
        b, t, _ = x.shape
        q, k, v = torch.chunk(self.qkv_net(x), 3, dim=2)
        # (B, T, H*dh) -> (B, H, T, dh); heads are contiguous blocks of dh.
        q, k, v = (z.view(b, t, self.n_head, self.d_head).transpose(1, 2) for z in (q, k, v))
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale
        scores = scores.masked_fill(key_padding[:, None, None, :], torch.finfo(scores.dtype).min)
        probs = self.dropatt(torch.softmax(scores, dim=3))
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, self.n_head * self.d_head)
        return self.layer_norm(x + self.drop(self.o_net(ctx)))


class PositionwiseConvFF(nn.Module):
    """Conv1d -> ReLU -> Conv1d (+ dropout), residual, post-LayerNorm."""

    def __init__(self, d_model: int, d_inner: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.CoreNet = nn.Sequential(  # noqa: N815 - published parameter name
            nn.Conv1d(d_model, d_inner, kernel_size, 1, pad),
            nn.ReLU(),
            nn.Conv1d(d_inner, d_model, kernel_size, 1, pad),
            nn.Dropout(dropout),
        )
        self.layer_norm = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """x (B,T,d), zero on padding; mask (B,T,1) float.

        The hidden activations are masked between the two convs: the first
        conv's bias makes them non-zero on padding, which the second conv
        would otherwise read at the last valid positions.
        """
        conv1, relu, conv2, drop = self.CoreNet
        h = relu(conv1(x.transpose(1, 2)))
        if mask is not None:
            h = h * mask.transpose(1, 2)
        return self.layer_norm(x + drop(conv2(h)).transpose(1, 2))


class TransformerLayer(nn.Module):
    """One FFT block: attention then conv feed-forward, masked after each."""

    def __init__(self, n_head: int, d_model: int, d_head: int, d_inner: int,
                 kernel_size: int, dropout: float, dropatt: float) -> None:
        super().__init__()
        self.dec_attn = MultiHeadAttn(n_head, d_model, d_head, dropout, dropatt)
        self.pos_ff = PositionwiseConvFF(d_model, d_inner, kernel_size, dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B,T,d); mask (B,T,1) float, 1 on valid positions."""
        x = self.dec_attn(x, key_padding=mask[..., 0] == 0) * mask
        return self.pos_ff(x, mask) * mask


class FFTransformer(nn.Module):
    """Stack of FFT blocks; the encoder variant embeds token ids first."""

    def __init__(self, n_layer: int, n_head: int, d_model: int, d_head: int,
                 d_inner: int, kernel_size: int, dropout: float, dropatt: float,
                 dropemb: float, n_embed: int | None = None, padding_idx: int = 0) -> None:
        super().__init__()
        self.word_emb: nn.Embedding | None = (
            nn.Embedding(n_embed, d_model, padding_idx=padding_idx) if n_embed else None)
        self.pos_emb = PositionalEmbedding(d_model)
        self.drop = nn.Dropout(dropemb)
        self.layers = nn.ModuleList(
            TransformerLayer(n_head, d_model, d_head, d_inner, kernel_size, dropout, dropatt)
            for _ in range(n_layer))

    def forward(self, inputs: Tensor, lengths: Tensor,
                conditioning: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
        """inputs: (B,N) ids (encoder) or (B,T,d) features (decoder).

        Returns the output (B,T,d) and the float mask (B,T,1).
        """
        x = self.word_emb(inputs) if self.word_emb is not None else inputs
        mask = mask_from_lengths(lengths, x.size(1)).unsqueeze(2).to(x.dtype)
        positions = torch.arange(x.size(1), device=x.device, dtype=x.dtype)
        out = self.drop(x + self.pos_emb(positions) * mask + conditioning)
        for layer in self.layers:
            out = layer(out, mask)
        return out, mask


# --------------------------------------------------------------------------
# predictors
# --------------------------------------------------------------------------


class ConvReLUNorm(nn.Module):
    """Conv1d -> ReLU -> LayerNorm over channels -> dropout, on (B,C,T)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.conv(x))
        return self.dropout(self.norm(out.transpose(1, 2)).transpose(1, 2))


class TemporalPredictor(nn.Module):
    """Predicts ``n_predictions`` values per symbol (duration, pitch, energy)."""

    def __init__(self, input_size: int, filter_size: int, kernel_size: int,
                 dropout: float, n_layers: int, n_predictions: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[
            ConvReLUNorm(input_size if i == 0 else filter_size, filter_size, kernel_size, dropout)
            for i in range(n_layers)])
        self.fc = nn.Linear(filter_size, n_predictions)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B,N,d), mask (B,N,1) -> (B,N,n_predictions), zero on padding."""
        out = (x * mask).transpose(1, 2)
        channel_mask = mask.transpose(1, 2)
        for layer in self.layers:
            # Re-mask so the next conv sees zeros past the end, as a lone item does.
            out = layer(out) * channel_mask
        return self.fc(out.transpose(1, 2)) * mask


# --------------------------------------------------------------------------
# training-only aligner
# --------------------------------------------------------------------------


class ConvNorm(nn.Module):
    """A Conv1d with "same" padding, wrapped to keep the published key names."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size,
                              padding=(kernel_size - 1) // 2)
        nn.init.xavier_uniform_(self.conv.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class ConvAttention(nn.Module):
    """Unsupervised text-mel aligner (RAD-TTS style), used only in training.

    FastPitch 1.1 learns symbol durations by aligning mel frames (queries) to
    symbol embeddings (keys) with this soft attention and binarising it with
    monotonic alignment search. Inference predicts durations instead, so
    :meth:`FastPitch.infer` never calls this module: it exists so that NVIDIA
    checkpoints (which always contain ``attention.*``) load strictly and so a
    fine-tuning loop could use it. ``attn_proj`` is stored but, as published,
    unused by the forward pass.
    """

    def __init__(self, n_mel_channels: int, n_text_channels: int, n_att_channels: int) -> None:
        super().__init__()
        # Registration order follows the published module so state_dict()
        # lists keys in the same order as NVIDIA's files.
        self.query_proj = nn.Sequential(
            ConvNorm(n_mel_channels, 2 * n_mel_channels, kernel_size=3),
            nn.ReLU(),
            ConvNorm(2 * n_mel_channels, n_mel_channels, kernel_size=1),
            nn.ReLU(),
            ConvNorm(n_mel_channels, n_att_channels, kernel_size=1),
        )
        self.attn_proj = nn.Conv2d(n_att_channels, 1, kernel_size=1)
        self.key_proj = nn.Sequential(
            ConvNorm(n_text_channels, 2 * n_text_channels, kernel_size=3),
            nn.ReLU(),
            ConvNorm(2 * n_text_channels, n_att_channels, kernel_size=1),
        )

    def forward(self, queries: Tensor, keys: Tensor, key_padding: Tensor | None = None,
                attn_prior: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Soft alignment of mel frames to symbols.

        queries (B, n_mel, T1) mel; keys (B, d, T2) symbol embeddings;
        key_padding (B, T2) bool, True on padded symbols; attn_prior (B, T1, T2).
        Returns the attention (B,1,T1,T2), summing to 1 over symbols, and the
        unmasked log-probabilities used by the alignment (CTC) loss.
        """
        keys_enc = self.key_proj(keys)        # B x A x T2
        queries_enc = self.query_proj(queries)  # B x A x T1
        dist = (queries_enc[:, :, :, None] - keys_enc[:, :, None, :]).pow(2).sum(1, keepdim=True)
        logits = -ALIGNER_DISTANCE_SCALE * dist
        if attn_prior is not None:
            logits = torch.log_softmax(logits, dim=3) + torch.log(attn_prior[:, None] + ALIGNER_PRIOR_EPS)
        logprob = logits.clone()
        if key_padding is not None:
            logits = logits.masked_fill(key_padding[:, None, None, :], float("-inf"))
        return torch.softmax(logits, dim=3), logprob


# --------------------------------------------------------------------------
# FastPitch
# --------------------------------------------------------------------------


def _per_item(value: float | Sequence[float] | Tensor | None, batch: int, name: str,
              device: torch.device, default: float) -> Tensor:
    """Broadcast a scalar / (B,) knob to a float (B,) tensor on ``device``."""
    if value is None:
        value = default
    out = torch.as_tensor(value, dtype=torch.float32, device=device)
    if out.ndim == 0:
        out = out.expand(batch)
    if out.shape != (batch,):
        raise ValueError(f"{name} must be a scalar or have shape ({batch},), got {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        raise ValueError(f"{name} must be finite, got {out.tolist()}")
    return out


def regulate_length(durations: Tensor, enc_out: Tensor, pace: Tensor) -> tuple[Tensor, Tensor]:
    """Repeat each symbol's vector int(dur / pace + 0.5) times (published rounding).

    durations (B,N) frames (0 on padding), enc_out (B,N,d), pace (B,) > 0 where
    pace > 1 speaks faster. Returns frames (B,T,d), zero past each length, and
    lengths (B,) long.
    """
    reps = torch.floor(durations.float() / pace[:, None] + 0.5).long().clamp_min(0)
    lengths = reps.sum(dim=1)
    n_frames = max(int(lengths.max().item()) if lengths.numel() else 0, 1)
    ends = reps.cumsum(dim=1)                                   # (B, N)
    frames = torch.arange(n_frames, device=enc_out.device)
    # Symbol of frame t: the first symbol whose cumulative end exceeds t.
    index = torch.searchsorted(ends, frames.expand(ends.size(0), n_frames).contiguous(), right=True)
    index = index.clamp_max(enc_out.size(1) - 1)
    out = torch.gather(enc_out, 1, index[..., None].expand(-1, -1, enc_out.size(2)))
    out = out * mask_from_lengths(lengths, n_frames)[..., None].to(out.dtype)
    return out, lengths


class FastPitch(nn.Module):
    """FastPitch 1.1 with NVIDIA's state-dict layout; see :meth:`infer`."""

    def __init__(self, config: FastPitchConfig | None = None) -> None:
        super().__init__()
        cfg = config or FastPitchConfig()
        self.config = cfg
        d = cfg.symbols_embedding_dim
        self.encoder = FFTransformer(
            cfg.encoder_n_layers, cfg.encoder_n_heads, d, cfg.encoder_d_head,
            cfg.encoder_conv_filter_size, cfg.encoder_conv_kernel_size,
            cfg.encoder_dropout, cfg.encoder_dropatt, cfg.encoder_dropemb,
            n_embed=cfg.n_symbols, padding_idx=cfg.padding_idx)
        self.speaker_emb: nn.Embedding | None = (
            nn.Embedding(cfg.n_speakers, d) if cfg.n_speakers > 1 else None)
        self.duration_predictor = TemporalPredictor(
            cfg.encoder_output_size, cfg.duration_predictor_filter_size,
            cfg.duration_predictor_kernel_size, cfg.duration_predictor_dropout,
            cfg.duration_predictor_n_layers)
        self.decoder = FFTransformer(
            cfg.decoder_n_layers, cfg.decoder_n_heads, d, cfg.decoder_d_head,
            cfg.decoder_conv_filter_size, cfg.decoder_conv_kernel_size,
            cfg.decoder_dropout, cfg.decoder_dropatt, cfg.decoder_dropemb)
        self.pitch_predictor = TemporalPredictor(
            cfg.encoder_output_size, cfg.pitch_predictor_filter_size,
            cfg.pitch_predictor_kernel_size, cfg.pitch_predictor_dropout,
            cfg.pitch_predictor_n_layers, n_predictions=cfg.pitch_conditioning_formants)
        self.pitch_emb = nn.Conv1d(cfg.pitch_conditioning_formants, d,
                                   kernel_size=cfg.pitch_embedding_kernel_size,
                                   padding=cfg.pitch_embedding_kernel_size // 2)
        # Training-set pitch statistics, saved with the weights; zero when the
        # training run did not record them (then the LJSpeech defaults apply).
        self.register_buffer("pitch_mean", torch.zeros(1))
        self.register_buffer("pitch_std", torch.zeros(1))
        self.energy_predictor: TemporalPredictor | None = None
        self.energy_emb: nn.Conv1d | None = None
        if cfg.energy_conditioning:
            self.energy_predictor = TemporalPredictor(
                cfg.encoder_output_size, cfg.energy_predictor_filter_size,
                cfg.energy_predictor_kernel_size, cfg.energy_predictor_dropout,
                cfg.energy_predictor_n_layers)
            self.energy_emb = nn.Conv1d(1, d, kernel_size=cfg.energy_embedding_kernel_size,
                                        padding=cfg.energy_embedding_kernel_size // 2)
        self.proj = nn.Linear(cfg.decoder_output_size, cfg.n_mel)
        self.attention = ConvAttention(cfg.n_mel, d, cfg.attention_n_channels)

    def pitch_stats(self) -> tuple[float, float]:
        """(mean, std) in Hz used to convert normalised pitch; see DEFAULT_PITCH_*."""
        std = float(self.pitch_std[0])
        if std == 0.0:
            return DEFAULT_PITCH_MEAN_HZ, DEFAULT_PITCH_STD_HZ
        return float(self.pitch_mean[0]), std

    def _speaker_conditioning(self, speaker: int | Sequence[int] | Tensor, batch: int,
                              device: torch.device) -> Tensor | float:
        if self.speaker_emb is None:
            return 0.0
        ids = torch.as_tensor(speaker, dtype=torch.long, device=device)
        if ids.ndim == 0:
            ids = ids.expand(batch)
        if ids.shape != (batch,):
            raise ValueError(f"speaker must be an int or have shape ({batch},), got {tuple(ids.shape)}")
        n = self.speaker_emb.num_embeddings
        if bool(((ids < 0) | (ids >= n)).any()):
            raise ValueError(f"speaker ids {ids.tolist()} outside [0, {n}) of this model")
        return self.speaker_emb(ids)[:, None, :] * self.config.speaker_emb_weight

    @torch.no_grad()
    def infer(
        self,
        tokens: Tensor,
        lengths: Tensor,
        pace: float | Sequence[float] | Tensor = 1.0,
        pitch_shift_hz: float | Sequence[float] | Tensor | None = None,
        pitch_scale: float | Sequence[float] | Tensor | None = None,
        speaker: int | Sequence[int] | Tensor = 0,
        pitch_transform: PitchTransform | None = None,
        dur_tgt: Tensor | None = None,
        pitch_tgt: Tensor | None = None,
        energy_tgt: Tensor | None = None,
        max_duration: float | None = None,
    ) -> FastPitchOutput:
        """Symbols -> mel spectrogram, batch-first.

        Args:
            tokens: (B, N) long symbol ids, padded with ``padding_idx``.
            lengths: (B,) valid symbols per item, each >= 1.
            pace: speaking-rate factor per item (scalar or (B,)); > 1 is
                faster. Frames per symbol are ``int(dur / pace + 0.5)``.
            pitch_shift_hz: added to the predicted F0 (Hz), per item.
            pitch_scale: multiplies the predicted F0 (Hz), per item (2.0 = one
                octave up). Applied before the shift.
            speaker: speaker id(s) for a multi-speaker model.
            pitch_transform: published-style custom transform on normalised
                pitch, applied after shift/scale.
            dur_tgt / pitch_tgt / energy_tgt: (B,N) (pitch: (B,F,N) or (B,N))
                values that replace the predictions, e.g. to copy a prosody.
            max_duration: clamp on predicted frames per symbol (config default 75).

        Run in eval mode for deterministic output (dropout otherwise).
        """
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be (B, N), got shape {tuple(tokens.shape)}")
        batch, n_sym = tokens.shape
        device = tokens.device
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=device)
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
        if batch and (int(lengths.min()) < 1 or int(lengths.max()) > n_sym):
            raise ValueError(f"lengths must be in [1, {n_sym}], got {lengths.tolist()}")
        pace_t = _per_item(pace, batch, "pace", device, 1.0)
        if bool((pace_t <= 0).any()):
            raise ValueError(f"pace must be > 0, got {pace_t.tolist()}")
        shift = _per_item(pitch_shift_hz, batch, "pitch_shift_hz", device, 0.0)
        scale = _per_item(pitch_scale, batch, "pitch_scale", device, 1.0)
        if bool((scale <= 0).any()):
            raise ValueError(f"pitch_scale must be > 0, got {scale.tolist()}")
        max_dur = self.config.max_duration if max_duration is None else max_duration

        spk = self._speaker_conditioning(speaker, batch, device)
        enc_out, enc_mask = self.encoder(tokens, lengths, conditioning=spk)
        sym_mask = enc_mask[..., 0]                                    # (B, N)

        log_dur = self.duration_predictor(enc_out, enc_mask).squeeze(-1)
        dur_pred = torch.clamp(torch.exp(log_dur) - 1.0, 0.0, max_dur)

        pitch = self.pitch_predictor(enc_out, enc_mask).transpose(1, 2)  # (B, F, N)
        transform_pitch = (pitch_shift_hz is not None or pitch_scale is not None
                           or pitch_transform is not None)
        if transform_pitch:
            mean, std = self.pitch_stats()
            # Normalised p <-> Hz f = p*std + mean;  f' = f*scale + shift.
            pitch = pitch * scale[:, None, None] + (mean * (scale - 1.0) + shift)[:, None, None] / std
            if pitch_transform is not None:
                pitch = pitch_transform(pitch, lengths, mean, std)
            pitch = pitch * sym_mask[:, None, :]
        if pitch_tgt is not None:
            pitch_in = pitch_tgt if pitch_tgt.ndim == 3 else pitch_tgt[:, None, :]
            pitch_in = pitch_in.to(enc_out.dtype) * sym_mask[:, None, :]
        else:
            pitch_in = pitch
        enc_out = enc_out + self.pitch_emb(pitch_in).transpose(1, 2)

        energy: Tensor | None = None
        if self.energy_predictor is not None and self.energy_emb is not None:
            energy = self.energy_predictor(enc_out, enc_mask).squeeze(-1)
            energy_in = energy if energy_tgt is None else energy_tgt.to(enc_out.dtype) * sym_mask
            enc_out = enc_out + self.energy_emb(energy_in[:, None, :]).transpose(1, 2)

        durations = dur_pred if dur_tgt is None else dur_tgt.to(enc_out.dtype)
        frames, mel_lengths = regulate_length(durations * sym_mask, enc_out, pace_t)
        dec_out, dec_mask = self.decoder(frames, mel_lengths)
        mel = self.proj(dec_out).masked_fill(dec_mask == 0, MEL_PAD_VALUE)
        return FastPitchOutput(mel.transpose(1, 2), mel_lengths, dur_pred, pitch, energy)

    def forward(self, tokens: Tensor, lengths: Tensor, **kwargs: object) -> FastPitchOutput:
        """Alias of :meth:`infer` (only inference is implemented)."""
        return self.infer(tokens, lengths, **kwargs)  # type: ignore[arg-type]


__all__ = [
    "DEFAULT_PITCH_MEAN_HZ", "DEFAULT_PITCH_STD_HZ", "MEL_PAD_VALUE", "ConvAttention",
    "FastPitch", "FastPitchOutput", "FFTransformer", "PitchTransform", "TemporalPredictor",
    "mask_from_lengths", "regulate_length",
]
