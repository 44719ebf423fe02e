"""Hyperparameters of an RVC v1/v2 synthesizer, as an RVC ``.pth`` voice carries them.

An RVC voice file stores its network shape as ``config``: a positional list of
18 constructor arguments (:data:`CHECKPOINT_FIELDS`, in that order), next to a
``version`` ("v1" / "v2"; absent in old files, meaning v1) and an ``f0`` flag
(1: pitch-guided NSF decoder, 0: the ``_nono`` variant without pitch).
:class:`RvcConfig` keeps those 18 values under the published names plus
``version`` and ``f0``, so one object says exactly which of the four published
synthesizer variants to build and with which shapes.

The published training recipes differ only per sample rate (:func:`preset`):
the upsampling stages of the decoder (whose product, the hop, maps 100 content
frames per second onto the output rate) and ``spec_channels`` (n_fft/2+1 of the
training spectrogram, used only by the training-time posterior encoder).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

#: Frames per second of the content features (HuBERT at 50 Hz, repeated x2):
#: every published config has ``sampling_rate == hop * CONTENT_FRAME_RATE``.
CONTENT_FRAME_RATE = 100
#: Width of the content features per version: v1 uses HuBERT layer 9 projected
#: to 256 (``final_proj``), v2 the 768-d layer 12 output.
CONTENT_DIM = {"v1": 256, "v2": 768}
#: What a file without a ``version`` field is (RVC's loader assumes v1).
DEFAULT_VERSION = "v1"
#: The order of ``.pth["config"]``: the synthesizer's positional arguments.
CHECKPOINT_FIELDS = (
    "spec_channels", "segment_size", "inter_channels", "hidden_channels", "filter_channels",
    "n_heads", "n_layers", "kernel_size", "p_dropout", "resblock", "resblock_kernel_sizes",
    "resblock_dilation_sizes", "upsample_rates", "upsample_initial_channel",
    "upsample_kernel_sizes", "spk_embed_dim", "gin_channels", "sampling_rate",
)
#: Index of spk_embed_dim in ``config``: RVC's loader overwrites it with the
#: rows of ``emb_g.weight`` (the file's speaker table is the truth).
SPEAKER_COUNT_INDEX = CHECKPOINT_FIELDS.index("spk_embed_dim")
#: Sample-rate labels of the ``sr`` field (some old files also put one in config[-1]).
RATE_LABELS = {"32k": 32000, "40k": 40000, "48k": 48000}
#: Dilations each residual-block variant takes per block.
DILATIONS_PER_BLOCK = {"1": 3, "2": 2}


@dataclass(frozen=True)
class RvcConfig:
    """The 18 published constructor arguments, plus the variant (``version``, ``f0``).

    Field names and order are RVC's (:data:`CHECKPOINT_FIELDS`); lists are
    stored as tuples so configs are hashable and comparable.
    """

    spec_channels: int
    """n_fft/2+1 of the training spectrogram; shapes only the training-only ``enc_q``."""
    segment_size: int
    """Training crop in frames; unused at inference, kept so the list round-trips."""
    inter_channels: int
    """Latent width: ``enc_p`` predicts (m, logs) of this size; the flow and decoder take it."""
    hidden_channels: int
    """Width of the text encoder and of the flow's WaveNet layers."""
    filter_channels: int
    """Hidden width of each encoder layer's feed-forward convolutions."""
    n_heads: int
    """Attention heads of the text encoder."""
    n_layers: int
    """Post-norm attention + FFN layers of the text encoder."""
    kernel_size: int
    """Kernel of the encoder's feed-forward convolutions."""
    p_dropout: float
    """Dropout of the text encoder (training only; inference runs in eval mode)."""
    resblock: str
    """Decoder residual block: "1" (convs1/convs2 pairs, published) or "2"."""
    resblock_kernel_sizes: tuple[int, ...]
    """Kernels of the parallel residual blocks of every decoder stage (outputs averaged)."""
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    """Dilations of each of those blocks."""
    upsample_rates: tuple[int, ...]
    """Upsampling factor of each decoder stage; their product is the hop."""
    upsample_initial_channel: int
    """Decoder channels after ``conv_pre``; halved at every stage."""
    upsample_kernel_sizes: tuple[int, ...]
    """Kernel of each stage's transposed convolution."""
    spk_embed_dim: int
    """Rows of ``emb_g``: the number of speaker ids (109 at training, the file's rows on load)."""
    gin_channels: int
    """Width of the speaker embedding that conditions the flow and the decoder."""
    sampling_rate: int
    """Output sample rate in Hz (the voice's ``tgt_sr``)."""
    version: str = DEFAULT_VERSION
    """"v1" (256-d content features) or "v2" (768-d)."""
    f0: bool = True
    """Pitch-guided (``emb_pitch`` + NSF decoder) or the ``_nono`` variant."""

    def __post_init__(self) -> None:
        # Accept what a .pth holds (lists, 0/1, "40k") but store canonical values.
        tuples = {
            "resblock_kernel_sizes": tuple(int(k) for k in self.resblock_kernel_sizes),
            "resblock_dilation_sizes": tuple(tuple(int(d) for d in ds) for ds in self.resblock_dilation_sizes),
            "upsample_rates": tuple(int(u) for u in self.upsample_rates),
            "upsample_kernel_sizes": tuple(int(k) for k in self.upsample_kernel_sizes),
        }
        for name, value in tuples.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "resblock", str(self.resblock))
        object.__setattr__(self, "p_dropout", float(self.p_dropout))
        object.__setattr__(self, "f0", bool(self.f0))
        object.__setattr__(self, "sampling_rate", _rate_in_hz(self.sampling_rate))
        self._check()

    def _check(self) -> None:
        positive = ("inter_channels", "hidden_channels", "filter_channels", "n_heads", "n_layers",
                    "kernel_size", "upsample_initial_channel", "spk_embed_dim", "gin_channels",
                    "sampling_rate")
        bad = [f"{name}={getattr(self, name)!r}" for name in positive if int(getattr(self, name)) <= 0]
        if bad:
            raise ValueError(f"RvcConfig: these must be positive: {', '.join(bad)}")
        if self.version not in CONTENT_DIM:
            raise ValueError(f"RvcConfig.version must be one of {sorted(CONTENT_DIM)}, got {self.version!r}")
        if self.hidden_channels % self.n_heads:
            raise ValueError(f"RvcConfig: hidden_channels={self.hidden_channels} does not split into "
                             f"n_heads={self.n_heads} equal heads")
        if self.inter_channels % 2:
            raise ValueError(f"RvcConfig.inter_channels={self.inter_channels} must be even: each "
                             "coupling layer of the flow splits the latent in two halves")
        if self.resblock not in DILATIONS_PER_BLOCK:
            raise ValueError(f"RvcConfig.resblock must be one of {sorted(DILATIONS_PER_BLOCK)}, "
                             f"got {self.resblock!r}")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes) or not self.resblock_kernel_sizes:
            raise ValueError("RvcConfig: resblock_kernel_sizes and resblock_dilation_sizes must be non-empty "
                             f"and of one length, got {list(self.resblock_kernel_sizes)} and "
                             f"{[list(d) for d in self.resblock_dilation_sizes]}")
        wanted = DILATIONS_PER_BLOCK[self.resblock]
        if any(len(ds) != wanted for ds in self.resblock_dilation_sizes):
            raise ValueError(f"RvcConfig: resblock {self.resblock!r} takes {wanted} dilations per block, "
                             f"got {[list(d) for d in self.resblock_dilation_sizes]}")
        self._check_upsampling()

    def _check_upsampling(self) -> None:
        rates, kernels = self.upsample_rates, self.upsample_kernel_sizes
        if not rates or len(rates) != len(kernels):
            raise ValueError(f"RvcConfig: upsample_rates {list(rates)} and upsample_kernel_sizes "
                             f"{list(kernels)} must be non-empty and of one length")
        for rate, kernel in zip(rates, kernels):
            # A transposed conv with padding (k-u)/2 yields exactly u samples per input
            # sample only when k - u is even and non-negative.
            if rate <= 0 or kernel < rate or (kernel - rate) % 2:
                raise ValueError(f"RvcConfig: upsample kernel {kernel} with rate {rate} does not give an "
                                 f"exact x{rate} upsampling (need kernel >= rate and kernel - rate even)")
        if self.upsample_initial_channel % 2 ** len(rates):
            raise ValueError(f"RvcConfig.upsample_initial_channel={self.upsample_initial_channel} must be "
                             f"divisible by 2**{len(rates)} (halved at every stage)")
        if self.sampling_rate != self.hop_length * CONTENT_FRAME_RATE:
            raise ValueError(f"RvcConfig: sampling_rate={self.sampling_rate} with a hop of {self.hop_length} "
                             f"(product of upsample_rates {list(rates)}) is not {CONTENT_FRAME_RATE} frames "
                             "per second, which the content features are")
        if self.f0:
            # The NSF source enters stage i through a strided conv of stride s (the
            # product of the later rates) with padding s // 2: it lands on the
            # stage's length only for an even s.
            odd = [s for s in self.source_strides[:-1] if s % 2]
            if odd:
                raise ValueError(f"RvcConfig: with f0, the products of the later upsample rates must be even "
                                 f"(source conv strides {list(self.source_strides)})")

    # ------------------------------------------------------------------ derived

    @property
    def hop_length(self) -> int:
        """Output samples per content frame: the product of the upsample rates."""
        return math.prod(self.upsample_rates)

    @property
    def content_dim(self) -> int:
        """Width of the content features ``infer`` takes: 256 (v1) or 768 (v2)."""
        return CONTENT_DIM[self.version]

    @property
    def n_speakers(self) -> int:
        """Speaker ids the voice knows (rows of ``emb_g``)."""
        return self.spk_embed_dim

    @property
    def source_strides(self) -> tuple[int, ...]:
        """Per decoder stage, the stride that brings the sample-rate NSF source to that stage's rate."""
        rates = self.upsample_rates
        return tuple(math.prod(rates[i + 1:]) for i in range(len(rates)))

    @property
    def variant(self) -> str:
        """The published class this config builds (for logs and error messages)."""
        width = CONTENT_DIM[self.version]
        return f"SynthesizerTrnMs{width}NSFsid" + ("" if self.f0 else "_nono")

    # ------------------------------------------------------------ construction

    @classmethod
    def from_checkpoint(cls, config: Sequence[Any], version: str = DEFAULT_VERSION,
                        f0: bool | int = True) -> RvcConfig:
        """Build from a ``.pth``'s positional ``config`` list and its ``version`` / ``f0`` fields.

        Upstream builds its stages with ``zip(upsample_rates, upsample_kernel_sizes)``,
        so a surplus kernel size (which some of its own extraction code writes) is
        ignored there; it is dropped here too, with a warning. Any other
        disagreement is an error naming the field.
        """
        if isinstance(config, (str, bytes)) or not isinstance(config, Sequence):
            raise ValueError(f"an RVC config is a list of {len(CHECKPOINT_FIELDS)} values, "
                             f"got {type(config).__name__}")
        if len(config) != len(CHECKPOINT_FIELDS):
            raise ValueError(f"an RVC config has {len(CHECKPOINT_FIELDS)} values ({', '.join(CHECKPOINT_FIELDS)}), "
                             f"got {len(config)}")
        values = dict(zip(CHECKPOINT_FIELDS, config))
        for name in ("resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates",
                     "upsample_kernel_sizes"):
            if isinstance(values[name], (str, bytes)) or not isinstance(values[name], Sequence):
                raise ValueError(f"RVC config field {name} must be a list, got {values[name]!r}")
        rates, kernels = list(values["upsample_rates"]), list(values["upsample_kernel_sizes"])
        if len(kernels) > len(rates):
            logger.warning("RVC config lists %d upsample kernel sizes for %d upsample rates; the surplus %s "
                           "is ignored, as RVC does", len(kernels), len(rates), kernels[len(rates):])
            values["upsample_kernel_sizes"] = kernels[:len(rates)]
        try:
            return cls(**values, version=str(version), f0=bool(int(f0)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"inconsistent RVC config {list(config)!r}: {exc}") from exc

    def to_checkpoint(self) -> list[Any]:
        """The positional ``config`` list, as RVC's training writes it into a ``.pth``."""
        out: list[Any] = []
        for name in CHECKPOINT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out.append(value)
        return out

    def replace(self, **changes: Any) -> RvcConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(cls, version: str = DEFAULT_VERSION, f0: bool = True, **overrides: Any) -> RvcConfig:
        """A few-thousand-parameter synthesizer with the published key names, for tests.

        Two upsampling stages (hop 8, so 800 Hz at 100 frames/s) and two
        residual blocks per stage exercise every code path of the published
        decoder; the encoder keeps the published window of relative positions.
        """
        small: dict[str, Any] = dict(
            spec_channels=17, segment_size=4, inter_channels=4, hidden_channels=8, filter_channels=12,
            n_heads=2, n_layers=2, kernel_size=3, p_dropout=0.0, resblock="1",
            resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 3, 5), (1, 3, 5)),
            upsample_rates=(4, 2), upsample_initial_channel=16, upsample_kernel_sizes=(8, 4),
            spk_embed_dim=3, gin_channels=6, sampling_rate=8 * CONTENT_FRAME_RATE,
        )
        small.update(overrides)
        return cls(**small, version=version, f0=f0)


@dataclass(frozen=True)
class _RateRecipe:
    """What the published training configs change per sample rate."""

    sampling_rate: int
    spec_channels: int
    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]


#: Shared by every published config (RVC's configs/v1/*.json and configs/v2/*.json).
_PUBLISHED_COMMON: Mapping[str, Any] = dict(
    segment_size=32, inter_channels=192, hidden_channels=192, filter_channels=768, n_heads=2, n_layers=6,
    kernel_size=3, p_dropout=0.0, resblock="1", resblock_kernel_sizes=(3, 7, 11),
    resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)), upsample_initial_channel=512,
    spk_embed_dim=109, gin_channels=256,
)
_V1_32K = _RateRecipe(32000, 513, (10, 4, 2, 2, 2), (16, 16, 4, 4, 4))
_ANY_40K = _RateRecipe(40000, 1025, (10, 10, 2, 2), (16, 16, 4, 4))
_V1_48K = _RateRecipe(48000, 1025, (10, 6, 2, 2, 2), (16, 16, 4, 4, 4))
_V2_32K = _RateRecipe(32000, 513, (10, 8, 2, 2), (20, 16, 4, 4))
_V2_48K = _RateRecipe(48000, 1025, (12, 10, 2, 2), (24, 20, 4, 4))
#: (version, rate label) -> recipe. v2 has no 40k config of its own: it trains with v1's.
PUBLISHED_RECIPES: Mapping[tuple[str, str], _RateRecipe] = {
    ("v1", "32k"): _V1_32K, ("v1", "40k"): _ANY_40K, ("v1", "48k"): _V1_48K,
    ("v2", "32k"): _V2_32K, ("v2", "40k"): _ANY_40K, ("v2", "48k"): _V2_48K,
}


def preset(version: str, rate: str | int, f0: bool = True) -> RvcConfig:
    """The published config of a ``version`` ("v1"/"v2") at ``rate`` ("32k"/"40k"/"48k" or Hz)."""
    label = rate if isinstance(rate, str) else _rate_label(int(rate))
    recipe = PUBLISHED_RECIPES.get((version, label))
    if recipe is None:
        raise ValueError(f"no published RVC config for version={version!r} at {rate!r}; known: "
                         f"{sorted(f'{v}-{r}' for v, r in PUBLISHED_RECIPES)}")
    return RvcConfig(**_PUBLISHED_COMMON, sampling_rate=recipe.sampling_rate, spec_channels=recipe.spec_channels,
                     upsample_rates=recipe.upsample_rates, upsample_kernel_sizes=recipe.upsample_kernel_sizes,
                     version=version, f0=f0)


def preset_names() -> list[str]:
    """Every published config as "v1-40k" style names."""
    return [f"{version}-{label}" for version, label in PUBLISHED_RECIPES]


def parse_preset_name(name: str) -> tuple[str, str]:
    """ "v2-48k" -> ("v2", "48k"), with an error listing the known names."""
    version, _, label = name.partition("-")
    if (version, label) not in PUBLISHED_RECIPES:
        raise ValueError(f"unknown RVC preset {name!r}; known: {preset_names()}")
    return version, label


def _rate_in_hz(value: Any) -> int:
    if isinstance(value, str):
        if value in RATE_LABELS:
            return RATE_LABELS[value]
        raise ValueError(f"RvcConfig.sampling_rate: unknown rate label {value!r}, known {sorted(RATE_LABELS)}")
    return int(value)


def _rate_label(hz: int) -> str:
    for label, value in RATE_LABELS.items():
        if value == hz:
            return label
    raise ValueError(f"no published RVC config at {hz} Hz; published rates: {sorted(RATE_LABELS)}")


__all__ = [
    "CHECKPOINT_FIELDS", "CONTENT_DIM", "CONTENT_FRAME_RATE", "DEFAULT_VERSION", "PUBLISHED_RECIPES",
    "RATE_LABELS", "RvcConfig", "SPEAKER_COUNT_INDEX", "parse_preset_name", "preset", "preset_names",
]
