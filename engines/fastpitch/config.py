"""Hyperparameters of FastPitch and of its HiFi-GAN vocoder.

Defaults are the published ones (NVIDIA DeepLearningExamples, FastPitch 1.1 on
LJSpeech, the NGC ``nvidia_fastpitch_210824`` and ``hifigan_gen_checkpoint_*``
files), so ``FastPitchConfig()`` / ``HiFiGanConfig()`` build modules whose
state dicts load those files with ``strict=True``.

NVIDIA checkpoints carry their hyperparameters as a flat dict of constructor
kwargs (``ckpt["config"]``) under names such as ``in_fft_n_layers``.
:meth:`FastPitchConfig.from_checkpoint_config` and
:meth:`HiFiGanConfig.from_checkpoint_config` translate those names into the
fields below; a key that is neither mapped nor known-irrelevant is an error,
because silently ignoring a hyperparameter would build the wrong network.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

logger = logging.getLogger(__name__)

#: Size of ``english_basic``: "_", "-", 10 punctuation marks, 52 letters, 84 ARPAbet.
ENGLISH_BASIC_N_SYMBOLS = 148


def _check_positive(obj: object, names: list[str]) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be > 0, got {value!r}")


def _check_odd(obj: object, names: list[str]) -> None:
    # Every 1-D convolution here uses "same" padding (k // 2); only odd kernels
    # keep the output aligned with the input, which the masking relies on.
    for name in names:
        value = getattr(obj, name)
        if value % 2 != 1:
            raise ValueError(f"{type(obj).__name__}.{name} must be odd, got {value!r}")


def _check_probability(obj: object, names: list[str]) -> None:
    for name in names:
        value = getattr(obj, name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{type(obj).__name__}.{name} must be in [0, 1), got {value!r}")


@dataclass(frozen=True)
class FastPitchConfig:
    """Every hyperparameter of the FastPitch 1.1 network.

    Field names are ours; :attr:`NVIDIA_KEYS` maps NVIDIA's constructor kwargs
    onto them. Dropouts only matter in training: inference runs in eval mode.
    """

    # --- input / output ----------------------------------------------------
    n_mel: int = 80
    """Mel bands produced by ``proj``; must match the vocoder's input channels."""
    n_symbols: int = ENGLISH_BASIC_N_SYMBOLS
    """Rows of ``encoder.word_emb``: the size of the text symbol set."""
    padding_idx: int = 0
    """Symbol id used for padding; its embedding row is zero and never trained."""
    symbols_embedding_dim: int = 384
    """Model width d_model, shared by encoder, decoder and both embeddings."""

    # --- encoder FFT (over symbols) ----------------------------------------
    encoder_n_layers: int = 6
    """Feed-forward transformer blocks over the symbol sequence."""
    encoder_n_heads: int = 1
    """Attention heads per encoder block."""
    encoder_d_head: int = 64
    """Width of each encoder attention head (qkv_net emits 3*heads*d_head)."""
    encoder_conv_kernel_size: int = 3
    """Kernel of the two position-wise Conv1d layers in each encoder block."""
    encoder_conv_filter_size: int = 1536
    """Hidden channels of the encoder's position-wise convolution."""
    encoder_output_size: int = 384
    """Encoder output width fed to the predictors; equals symbols_embedding_dim."""
    encoder_dropout: float = 0.1
    """Dropout after attention / conv sublayers (training only)."""
    encoder_dropatt: float = 0.1
    """Dropout on attention probabilities (training only)."""
    encoder_dropemb: float = 0.0
    """Dropout on word + positional embeddings (training only)."""

    # --- decoder FFT (over mel frames) -------------------------------------
    decoder_n_layers: int = 6
    """Feed-forward transformer blocks over the length-regulated frames."""
    decoder_n_heads: int = 1
    """Attention heads per decoder block."""
    decoder_d_head: int = 64
    """Width of each decoder attention head."""
    decoder_conv_kernel_size: int = 3
    """Kernel of the decoder's position-wise Conv1d layers."""
    decoder_conv_filter_size: int = 1536
    """Hidden channels of the decoder's position-wise convolution."""
    decoder_output_size: int = 384
    """Decoder output width fed to ``proj``; equals symbols_embedding_dim."""
    decoder_dropout: float = 0.1
    """Dropout after decoder sublayers (training only)."""
    decoder_dropatt: float = 0.1
    """Dropout on decoder attention probabilities (training only)."""
    decoder_dropemb: float = 0.0
    """Dropout on decoder input + positional embedding (training only)."""

    # --- duration predictor ------------------------------------------------
    duration_predictor_kernel_size: int = 3
    """Conv kernel of the duration predictor's ConvReLUNorm layers."""
    duration_predictor_filter_size: int = 256
    """Channels of the duration predictor's conv layers."""
    duration_predictor_dropout: float = 0.1
    """Dropout inside the duration predictor (training only)."""
    duration_predictor_n_layers: int = 2
    """ConvReLUNorm layers before the duration predictor's linear head."""

    # --- pitch predictor and embedding -------------------------------------
    pitch_predictor_kernel_size: int = 3
    """Conv kernel of the pitch predictor's layers."""
    pitch_predictor_filter_size: int = 256
    """Channels of the pitch predictor's conv layers."""
    pitch_predictor_dropout: float = 0.1
    """Dropout inside the pitch predictor (training only)."""
    pitch_predictor_n_layers: int = 2
    """ConvReLUNorm layers before the pitch predictor's linear head."""
    pitch_embedding_kernel_size: int = 3
    """Kernel of ``pitch_emb``, the Conv1d that embeds per-symbol pitch."""
    pitch_conditioning_formants: int = 1
    """Pitch values predicted per symbol (1 = F0 only, the published setting)."""

    # --- energy predictor and embedding ------------------------------------
    energy_conditioning: bool = True
    """Predict and embed per-symbol energy (FastPitch 1.1 / NGC: True)."""
    energy_predictor_kernel_size: int = 3
    """Conv kernel of the energy predictor's layers."""
    energy_predictor_filter_size: int = 256
    """Channels of the energy predictor's conv layers."""
    energy_predictor_dropout: float = 0.1
    """Dropout inside the energy predictor (training only)."""
    energy_predictor_n_layers: int = 2
    """ConvReLUNorm layers before the energy predictor's linear head."""
    energy_embedding_kernel_size: int = 3
    """Kernel of ``energy_emb``, the Conv1d that embeds per-symbol energy."""

    # --- speakers ------------------------------------------------------------
    n_speakers: int = 1
    """Speakers of a multi-speaker model; ``speaker_emb`` exists only when > 1."""
    speaker_emb_weight: float = 1.0
    """Scale applied to the speaker embedding before it is added to the input."""

    # --- training-only aligner (ConvAttention) -------------------------------
    attention_n_channels: int = 80
    """Width of the aligner's key/query projections (published default 80)."""

    # --- inference -----------------------------------------------------------
    max_duration: float = 75.0
    """Upper clamp on predicted frames per symbol, as in the published infer()."""

    #: NVIDIA constructor kwarg -> field name.
    NVIDIA_KEYS: ClassVar[dict[str, str]] = {
        "n_mel_channels": "n_mel",
        "n_symbols": "n_symbols",
        "padding_idx": "padding_idx",
        "symbols_embedding_dim": "symbols_embedding_dim",
        "in_fft_n_layers": "encoder_n_layers",
        "in_fft_n_heads": "encoder_n_heads",
        "in_fft_d_head": "encoder_d_head",
        "in_fft_conv1d_kernel_size": "encoder_conv_kernel_size",
        "in_fft_conv1d_filter_size": "encoder_conv_filter_size",
        "in_fft_output_size": "encoder_output_size",
        "p_in_fft_dropout": "encoder_dropout",
        "p_in_fft_dropatt": "encoder_dropatt",
        "p_in_fft_dropemb": "encoder_dropemb",
        "out_fft_n_layers": "decoder_n_layers",
        "out_fft_n_heads": "decoder_n_heads",
        "out_fft_d_head": "decoder_d_head",
        "out_fft_conv1d_kernel_size": "decoder_conv_kernel_size",
        "out_fft_conv1d_filter_size": "decoder_conv_filter_size",
        "out_fft_output_size": "decoder_output_size",
        "p_out_fft_dropout": "decoder_dropout",
        "p_out_fft_dropatt": "decoder_dropatt",
        "p_out_fft_dropemb": "decoder_dropemb",
        "dur_predictor_kernel_size": "duration_predictor_kernel_size",
        "dur_predictor_filter_size": "duration_predictor_filter_size",
        "p_dur_predictor_dropout": "duration_predictor_dropout",
        "dur_predictor_n_layers": "duration_predictor_n_layers",
        "pitch_predictor_kernel_size": "pitch_predictor_kernel_size",
        "pitch_predictor_filter_size": "pitch_predictor_filter_size",
        "p_pitch_predictor_dropout": "pitch_predictor_dropout",
        "pitch_predictor_n_layers": "pitch_predictor_n_layers",
        "pitch_embedding_kernel_size": "pitch_embedding_kernel_size",
        "pitch_conditioning_formants": "pitch_conditioning_formants",
        "energy_conditioning": "energy_conditioning",
        "energy_predictor_kernel_size": "energy_predictor_kernel_size",
        "energy_predictor_filter_size": "energy_predictor_filter_size",
        "p_energy_predictor_dropout": "energy_predictor_dropout",
        "energy_predictor_n_layers": "energy_predictor_n_layers",
        "energy_embedding_kernel_size": "energy_embedding_kernel_size",
        "n_speakers": "n_speakers",
        "speaker_emb_weight": "speaker_emb_weight",
    }
    #: NVIDIA kwargs that exist in older checkpoints but shape nothing.
    NVIDIA_IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset({"max_seq_len"})
    #: Mapped kwargs NVIDIA's training does not write (constructor defaults).
    NVIDIA_OPTIONAL_KEYS: ClassVar[frozenset[str]] = frozenset({"pitch_conditioning_formants"})

    def __post_init__(self) -> None:
        _check_positive(self, [
            "n_mel", "n_symbols", "symbols_embedding_dim",
            "encoder_n_layers", "encoder_n_heads", "encoder_d_head",
            "encoder_conv_filter_size", "decoder_n_layers", "decoder_n_heads",
            "decoder_d_head", "decoder_conv_filter_size",
            "duration_predictor_filter_size", "duration_predictor_n_layers",
            "pitch_predictor_filter_size", "pitch_predictor_n_layers",
            "pitch_conditioning_formants", "energy_predictor_filter_size",
            "energy_predictor_n_layers", "n_speakers", "attention_n_channels",
            "max_duration",
        ])
        _check_odd(self, [
            "encoder_conv_kernel_size", "decoder_conv_kernel_size",
            "duration_predictor_kernel_size", "pitch_predictor_kernel_size",
            "energy_predictor_kernel_size", "pitch_embedding_kernel_size",
            "energy_embedding_kernel_size",
        ])
        _check_probability(self, [
            "encoder_dropout", "encoder_dropatt", "encoder_dropemb",
            "decoder_dropout", "decoder_dropatt", "decoder_dropemb",
            "duration_predictor_dropout", "pitch_predictor_dropout",
            "energy_predictor_dropout",
        ])
        if not 0 <= self.padding_idx < self.n_symbols:
            raise ValueError(
                f"FastPitchConfig.padding_idx={self.padding_idx} is outside the "
                f"symbol table of size n_symbols={self.n_symbols}")
        # The residual stream has one width: the published model ties the
        # encoder/decoder output sizes to the embedding size.
        for name in ("encoder_output_size", "decoder_output_size"):
            if getattr(self, name) != self.symbols_embedding_dim:
                raise ValueError(
                    f"FastPitchConfig.{name}={getattr(self, name)} must equal "
                    f"symbols_embedding_dim={self.symbols_embedding_dim} (the "
                    "transformer's residual width)")
        if self.symbols_embedding_dim % 2:
            raise ValueError("FastPitchConfig.symbols_embedding_dim must be even "
                             "(sinusoidal positions use sin/cos halves)")

    @classmethod
    def from_checkpoint_config(
        cls, ckpt_config: Mapping[str, Any], base: FastPitchConfig | None = None,
    ) -> FastPitchConfig:
        """Build a config from NVIDIA's ``ckpt["config"]`` kwargs.

        Keys missing from ``ckpt_config`` keep their value in ``base`` (the
        published defaults unless given) and are logged, mirroring NVIDIA's
        loader which fills gaps from its argument parser. Unknown keys raise.
        """
        return _from_nvidia(cls, ckpt_config, base or cls())

    @classmethod
    def tiny(cls, **overrides: Any) -> FastPitchConfig:
        """A few-thousand-parameter FastPitch for fast tests (same code paths)."""
        small: dict[str, Any] = dict(
            symbols_embedding_dim=16, encoder_n_layers=2, encoder_n_heads=2,
            encoder_d_head=4, encoder_conv_filter_size=24, encoder_output_size=16,
            decoder_n_layers=2, decoder_n_heads=2, decoder_d_head=4,
            decoder_conv_filter_size=24, decoder_output_size=16,
            duration_predictor_filter_size=8, pitch_predictor_filter_size=8,
            energy_predictor_filter_size=8,
        )
        small.update(overrides)
        return cls(**small)

    def to_checkpoint_config(self) -> dict[str, Any]:
        """The NVIDIA-named kwargs dict, as NVIDIA's training stores in ``ckpt["config"]``.

        ``pitch_conditioning_formants`` is a constructor default NVIDIA never
        writes; it is included only when it differs from 1.
        """
        out = {nv: getattr(self, ours) for nv, ours in self.NVIDIA_KEYS.items()}
        if out["pitch_conditioning_formants"] == 1:
            del out["pitch_conditioning_formants"]
        return out


@dataclass(frozen=True)
class HiFiGanConfig:
    """Every hyperparameter of the HiFi-GAN generator (V1 by default)."""

    n_mel: int = 80
    """Input mel bands (``conv_pre`` in-channels); NVIDIA hard-codes 80."""
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    """Stride of each ``ups`` transposed conv; their product is the hop size."""
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    """Kernel of each ``ups`` transposed conv (padding (k - u) // 2)."""
    upsample_initial_channel: int = 512
    """Channels after ``conv_pre``; halved at every upsampling stage."""
    resblock: str = "1"
    """Residual block variant: "1" (convs1/convs2 pairs, V1/V2) or "2" (V3)."""
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    """Kernel of each parallel residual block in a stage (outputs averaged)."""
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    """Dilations of each residual block's convs (3 for "1", 2 for "2")."""
    lrelu_slope: float = 0.1
    """LeakyReLU slope inside the generator (published LRELU_SLOPE)."""
    final_lrelu_slope: float = 0.01
    """LeakyReLU slope before ``conv_post`` (published: torch's default 0.01)."""

    #: NVIDIA / original HiFi-GAN config key -> field name.
    NVIDIA_KEYS: ClassVar[dict[str, str]] = {
        "upsample_rates": "upsample_rates",
        "upsample_kernel_sizes": "upsample_kernel_sizes",
        "upsample_initial_channel": "upsample_initial_channel",
        "resblock": "resblock",
        "resblock_kernel_sizes": "resblock_kernel_sizes",
        "resblock_dilation_sizes": "resblock_dilation_sizes",
        "num_mels": "n_mel",
    }
    #: Keys of the original HiFi-GAN ``config.json`` (jik876) and of NVIDIA's
    #: train setup that describe training or audio framing, not the generator.
    NVIDIA_IGNORED_KEYS: ClassVar[frozenset[str]] = frozenset({
        "num_gpus", "batch_size", "learning_rate", "adam_b1", "adam_b2",
        "lr_decay", "seed", "segment_size", "n_fft", "num_freq", "hop_size",
        "win_size", "sampling_rate", "fmin", "fmax", "fmax_for_loss",
        "num_workers", "dist_config", "mpd_periods", "concat_fwd",
    })
    #: Mapped keys only the original HiFi-GAN config.json has.
    NVIDIA_OPTIONAL_KEYS: ClassVar[frozenset[str]] = frozenset({"num_mels"})

    def __post_init__(self) -> None:
        # Accept lists (JSON / checkpoint configs) but store hashable tuples.
        object.__setattr__(self, "upsample_rates", tuple(int(v) for v in self.upsample_rates))
        object.__setattr__(self, "upsample_kernel_sizes",
                           tuple(int(v) for v in self.upsample_kernel_sizes))
        object.__setattr__(self, "resblock_kernel_sizes",
                           tuple(int(v) for v in self.resblock_kernel_sizes))
        object.__setattr__(self, "resblock_dilation_sizes",
                           tuple(tuple(int(d) for d in ds) for ds in self.resblock_dilation_sizes))
        object.__setattr__(self, "resblock", str(self.resblock))
        _check_positive(self, ["n_mel", "upsample_initial_channel"])
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("HiFiGanConfig: upsample_rates and upsample_kernel_sizes "
                             "must have the same length")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if u <= 0 or k < u or (k - u) % 2:
                raise ValueError(
                    f"HiFiGanConfig: upsample kernel {k} with rate {u} does not give an "
                    "exact x{u} upsampling (need k >= u and k - u even)")
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            raise ValueError("HiFiGanConfig.upsample_initial_channel must be divisible "
                             f"by 2**{len(self.upsample_rates)} (halved per stage)")
        if self.resblock not in ("1", "2"):
            raise ValueError(f"HiFiGanConfig.resblock must be '1' or '2', got {self.resblock!r}")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("HiFiGanConfig: resblock_kernel_sizes and "
                             "resblock_dilation_sizes must have the same length")
        n_dil = 3 if self.resblock == "1" else 2
        for ds in self.resblock_dilation_sizes:
            if len(ds) != n_dil:
                raise ValueError(f"HiFiGanConfig: resblock '{self.resblock}' takes "
                                 f"{n_dil} dilations per block, got {list(ds)}")
        even = [k for k in self.resblock_kernel_sizes if k % 2 != 1]
        if even:
            raise ValueError(f"HiFiGanConfig.resblock_kernel_sizes must be odd, got {even}")

    @property
    def hop_length(self) -> int:
        """Output samples per mel frame: the product of the upsample rates."""
        hop = 1
        for u in self.upsample_rates:
            hop *= u
        return hop

    @classmethod
    def from_checkpoint_config(
        cls, ckpt_config: Mapping[str, Any], base: HiFiGanConfig | None = None,
    ) -> HiFiGanConfig:
        """Build a config from a HiFi-GAN ``ckpt["config"]`` or ``config.json``."""
        return _from_nvidia(cls, ckpt_config, base or cls())

    @classmethod
    def tiny(cls, **overrides: Any) -> HiFiGanConfig:
        """A small generator with the published hop (256) for fast tests."""
        small: dict[str, Any] = dict(
            upsample_initial_channel=16, resblock_kernel_sizes=(3, 5),
            resblock_dilation_sizes=((1, 3, 5), (1, 3, 5)),
        )
        small.update(overrides)
        return cls(**small)

    def to_checkpoint_config(self) -> dict[str, Any]:
        """The NVIDIA-named kwargs dict, as stored in ``ckpt["config"]``."""
        out: dict[str, Any] = {}
        for nv, ours in self.NVIDIA_KEYS.items():
            if nv in self.NVIDIA_OPTIONAL_KEYS:  # NVIDIA's generator config does not store it
                continue
            value = getattr(self, ours)
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[nv] = value
        return out


def _from_nvidia(cls: type, ckpt_config: Mapping[str, Any], base: Any) -> Any:
    if not isinstance(ckpt_config, Mapping):
        raise ValueError(f"{cls.__name__}.from_checkpoint_config expects a dict of "
                         f"constructor kwargs, got {type(ckpt_config).__name__}")
    mapping: dict[str, str] = cls.NVIDIA_KEYS
    ignored: frozenset[str] = cls.NVIDIA_IGNORED_KEYS
    field_names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in ckpt_config if k not in mapping and k not in ignored)
    if unknown:
        raise ValueError(
            f"{cls.__name__}: unknown checkpoint config keys {unknown}; known keys are "
            f"{sorted(mapping)} (ignored: {sorted(ignored)}). A newer or modified model "
            "needs code support; do not drop these keys blindly.")
    values = {mapping[k]: v for k, v in ckpt_config.items() if k in mapping}
    assert set(values) <= field_names
    missing = sorted(k for k in mapping if k not in ckpt_config and k not in cls.NVIDIA_OPTIONAL_KEYS)
    if missing:
        logger.info("%s: checkpoint config lacks %s; keeping %s values",
                    cls.__name__, missing, "given" if base != cls() else "published default")
    return dataclasses.replace(base, **values)


__all__ = ["ENGLISH_BASIC_N_SYMBOLS", "FastPitchConfig", "HiFiGanConfig"]
