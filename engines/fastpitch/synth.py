"""FastPitch + HiFi-GAN text-to-speech bundle: texts in, padded waveforms out.

Post-processing follows NVIDIA's ``inference.py`` for HiFi-GAN:

1. the vocoder's tanh output is trimmed to ``mel_length * hop`` samples (the
   published script scales by 32768 first, which the peak step cancels);
2. the last ``fade_out_frames`` (10) frames fade linearly to zero, hiding the
   click a non-autoregressive model often leaves at the end;
3. each utterance is peak-normalised: divided by its maximum absolute value,
   so its peak is 1.0 (``SynthesisConfig.peak``; ``None`` keeps the raw level;
   a silent output stays silent instead of dividing by zero).

The published optional denoiser (bias-spectrum subtraction) is not applied.
Batches of any mix of lengths give, per item, the waveform that item gets
alone (FastPitch and HiFi-GAN both mask their padding).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .checkpoint import load_fastpitch, load_hifigan
from .config import FastPitchConfig, HiFiGanConfig
from .hifigan import HiFiGan
from .model import FastPitch
from .text import OnUnknown, SymbolSet, TextProcessor

logger = logging.getLogger(__name__)

#: Sample rate of the published LJSpeech models (Hz).
SAMPLE_RATE = 22050
#: Samples per mel frame of the published models (= product of HiFi-GAN upsampling).
HOP_LENGTH = 256
#: Frames per symbol a randomly initialised model is biased towards, close to
#: LJSpeech's average, so random-weight bundles produce realistic lengths.
RANDOM_INIT_FRAMES_PER_SYMBOL = 6.0
#: Scale on the random duration head's weights (see FastPitchTTS.load).
RANDOM_INIT_DURATION_WEIGHT_SCALE = 0.1


@dataclass(frozen=True)
class SynthesisConfig:
    """Waveform post-processing knobs (published values by default)."""

    fade_out_frames: int = 10
    """Frames (x hop samples) faded linearly to zero at each utterance's end."""
    peak: float | None = 1.0
    """Peak amplitude each utterance is normalised to; None keeps the vocoder level."""

    def __post_init__(self) -> None:
        if self.fade_out_frames < 0:
            raise ValueError(f"fade_out_frames must be >= 0, got {self.fade_out_frames}")
        if self.peak is not None and not 0.0 < self.peak <= 1.0:
            raise ValueError(f"peak must be in (0, 1] or None, got {self.peak}")


class SynthesisResult(NamedTuple):
    """Padded float32 waveforms (B, T) in [-1, 1] and valid samples per item (B,)."""

    waveforms: np.ndarray
    lengths: np.ndarray


class FastPitchTTS:
    """Text -> speech with one FastPitch and one HiFi-GAN, deterministic in eval mode."""

    def __init__(self, fastpitch: FastPitch, hifigan: HiFiGan, text: TextProcessor, *,
                 sample_rate: int = SAMPLE_RATE,
                 synthesis: SynthesisConfig | None = None,
                 device: str | torch.device = "cpu") -> None:
        fp_cfg = fastpitch.config
        if fp_cfg.n_symbols != len(text.symbol_set):
            raise ValueError(
                f"FastPitch has {fp_cfg.n_symbols} symbol embeddings but symbol set "
                f"{text.symbol_set.name!r} has {len(text.symbol_set)} symbols: use the symbol "
                "list the model was trained with")
        if fp_cfg.padding_idx != text.symbol_set.pad_id:
            raise ValueError(
                f"FastPitch padding_idx {fp_cfg.padding_idx} != pad id "
                f"{text.symbol_set.pad_id} of symbol set {text.symbol_set.name!r}")
        if fp_cfg.n_mel != hifigan.config.n_mel:
            raise ValueError(f"FastPitch emits {fp_cfg.n_mel} mel bands but HiFi-GAN expects "
                             f"{hifigan.config.n_mel}")
        self.device = torch.device(device)
        self.fastpitch = fastpitch.eval().to(self.device)
        self.hifigan = hifigan.eval().to(self.device)
        self.text = text
        self.sample_rate = int(sample_rate)
        self.hop_length = hifigan.hop_length
        self.synthesis = synthesis or SynthesisConfig()

    # -- construction ----------------------------------------------------------

    @classmethod
    def load(
        cls,
        fastpitch_path: str | Path | None = None,
        hifigan_path: str | Path | None = None,
        *,
        random_init: bool = False,
        symbol_set: SymbolSet | str | None = None,
        cmudict_path: str | Path | None = None,
        heteronyms_path: str | Path | None = None,
        on_unknown: OnUnknown = "error",
        fastpitch_config: FastPitchConfig | None = None,
        hifigan_config: HiFiGanConfig | None = None,
        prefer_ema: bool = False,
        allow_pickle: bool = False,
        synthesis: SynthesisConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> FastPitchTTS:
        """Build from NVIDIA checkpoints, or with random weights if ``random_init``.

        ``symbol_set`` defaults to the one named in the FastPitch file's
        ``train_setup``, else ``english_basic``. Sample rate and hop come from
        the files' ``train_setup`` when saved (else 22050 Hz / 256).
        ``random_init`` builds the published size (or the given configs) with
        seeded random weights: the output is noise with speech-like timing,
        for plumbing tests and benchmarks only, and a warning says so.
        """
        train_setup: dict[str, Any] = {}
        if random_init:
            if fastpitch_path is not None or hifigan_path is not None:
                raise ValueError("random_init=True builds untrained models: do not also pass "
                                 "checkpoint paths")
            logger.warning(
                "!!! FastPitchTTS with RANDOM WEIGHTS (random_init=True): it will NOT speak, "
                "it renders noise. Use only for tests and benchmarks; pass fastpitch_path and "
                "hifigan_path for real speech. !!!")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                fastpitch = FastPitch(fastpitch_config)
                hifigan = HiFiGan(hifigan_config)
            with torch.no_grad():
                # Near-constant durations: a small head weight keeps exp() from
                # amplifying random features into very long or empty outputs.
                head = fastpitch.duration_predictor.fc
                head.weight.mul_(RANDOM_INIT_DURATION_WEIGHT_SCALE)
                head.bias.fill_(math.log1p(RANDOM_INIT_FRAMES_PER_SYMBOL))
        else:
            missing = [name for name, value in (("fastpitch_path", fastpitch_path),
                                                 ("hifigan_path", hifigan_path)) if value is None]
            if missing:
                raise ValueError(f"FastPitchTTS.load needs {' and '.join(missing)} (no weights "
                                 "can be downloaded), or random_init=True for an untrained model")
            assert fastpitch_path is not None and hifigan_path is not None
            fp = load_fastpitch(fastpitch_path, fastpitch_config, prefer_ema=prefer_ema,
                                allow_pickle=allow_pickle)
            hg = load_hifigan(hifigan_path, hifigan_config, prefer_ema=prefer_ema,
                              allow_pickle=allow_pickle)
            fastpitch, hifigan = fp.model, hg.model
            train_setup = _merge_train_setups(fp.train_setup, hg.train_setup)
        hop = int(train_setup.get("hop_length", hifigan.hop_length))
        if hop != hifigan.hop_length:
            raise ValueError(f"train_setup hop_length {hop} != HiFi-GAN upsampling "
                             f"{hifigan.hop_length}")
        if symbol_set is None:
            symbol_set = train_setup.get("symbol_set", "english_basic")
        text = TextProcessor(symbol_set, cmudict_path=cmudict_path,
                             heteronyms_path=heteronyms_path, on_unknown=on_unknown)
        _warn_on_text_mismatch(train_setup, text)
        return cls(fastpitch, hifigan, text,
                   sample_rate=int(train_setup.get("sampling_rate", SAMPLE_RATE)),
                   synthesis=synthesis, device=device)

    # -- inference -------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> padded ids (B, N) long and lengths (B,)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        if not texts:
            raise ValueError("texts is empty")
        encoded = []
        for i, t in enumerate(texts):
            ids = self.text.encode(t)
            if not ids:
                raise ValueError(f"text {i} ({t!r}) has nothing to speak after normalisation")
            encoded.append(ids)
        lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
        tokens = torch.full((len(encoded), int(lengths.max())), self.text.symbol_set.pad_id,
                            dtype=torch.long)
        for i, ids in enumerate(encoded):
            tokens[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        return tokens.to(self.device), lengths.to(self.device)

    @torch.inference_mode()
    def synthesize(
        self,
        texts: Sequence[str],
        pace: float | Sequence[float] = 1.0,
        pitch_shift_hz: float | Sequence[float] = 0.0,
        pitch_scale: float | Sequence[float] = 1.0,
        speaker: int | Sequence[int] = 0,
    ) -> SynthesisResult:
        """Texts -> (waveforms (B, T) float32, lengths (B,) int64) at ``sample_rate``.

        ``pace`` (> 1 faster), ``pitch_shift_hz`` and ``pitch_scale`` are
        scalars or one value per text.
        """
        tokens, lengths = self.tokenize(texts)
        out = self.fastpitch.infer(tokens, lengths, pace=pace, pitch_shift_hz=pitch_shift_hz,
                                   pitch_scale=pitch_scale, speaker=speaker)
        audio = self.hifigan(out.mel, out.mel_lengths)[:, 0].float().cpu()
        n_samples = (out.mel_lengths.cpu() * self.hop_length).tolist()
        waves = np.zeros((len(n_samples), max(max(n_samples), 1)), dtype=np.float32)
        for i, n in enumerate(n_samples):
            waves[i, :n] = self._postprocess(audio[i, :n])
        return SynthesisResult(waves, np.asarray(n_samples, dtype=np.int64))

    def _postprocess(self, wave: torch.Tensor) -> np.ndarray:
        fade = min(self.synthesis.fade_out_frames * self.hop_length, wave.numel())
        if fade:
            wave = wave.clone()
            wave[-fade:] *= torch.linspace(1.0, 0.0, fade)
        if self.synthesis.peak is not None:
            top = float(wave.abs().max()) if wave.numel() else 0.0
            if top > 0.0:
                wave = wave * (self.synthesis.peak / top)
        return wave.numpy().astype(np.float32, copy=False)


def _warn_on_text_mismatch(train_setup: dict[str, Any], text: TextProcessor) -> None:
    """Say when the front end differs from how the checkpoint's text was prepared."""
    cleaners = train_setup.get("text_cleaners")
    if cleaners and text.symbol_set.cleaners not in cleaners:
        logger.warning("the model was trained with text cleaners %s but symbol set %r uses %r; "
                       "pronunciation may suffer", cleaners, text.symbol_set.name,
                       text.symbol_set.cleaners)
    p_arpabet = float(train_setup.get("p_arpabet", 0.0) or 0.0)
    if p_arpabet > 0.0 and text.dictionary is None:
        logger.warning("the model was trained with ARPAbet (p_arpabet=%s); pass cmudict_path "
                       "(CMUdict) so words are given the pronunciations it learned", p_arpabet)


def _merge_train_setups(fp: dict[str, Any], voc: dict[str, Any]) -> dict[str, Any]:
    """Combine the audio settings both files recorded; disagreement is an error."""
    merged = dict(voc)
    for k, v in fp.items():
        if k in ("sampling_rate", "hop_length") and k in voc and voc[k] != v:
            raise ValueError(f"FastPitch and HiFi-GAN were trained with different {k}: "
                             f"{v} vs {voc[k]}")
        merged[k] = v
    return merged


__all__ = ["HOP_LENGTH", "SAMPLE_RATE", "FastPitchTTS", "SynthesisConfig", "SynthesisResult"]
