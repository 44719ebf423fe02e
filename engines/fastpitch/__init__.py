"""FastPitch 1.1 + HiFi-GAN text-to-speech (NVIDIA DeepLearningExamples layout).

Own implementation whose state dicts match NVIDIA's checkpoints key for key,
so ``load_fastpitch`` / ``load_hifigan`` read the published files strictly.
``FastPitchTTS`` bundles text front end, acoustic model and vocoder.
"""

from .checkpoint import LoadedFastPitch, LoadedHiFiGan, load_fastpitch, load_hifigan
from .config import FastPitchConfig, HiFiGanConfig
from .hifigan import HiFiGan
from .model import FastPitch, FastPitchOutput
from .synth import FastPitchTTS, SynthesisConfig, SynthesisResult
from .text import PronunciationDictionary, SymbolSet, TextProcessor

__all__ = [
    "FastPitch", "FastPitchConfig", "FastPitchOutput", "FastPitchTTS", "HiFiGan",
    "HiFiGanConfig", "LoadedFastPitch", "LoadedHiFiGan", "PronunciationDictionary",
    "SymbolSet", "SynthesisConfig", "SynthesisResult", "TextProcessor", "load_fastpitch",
    "load_hifigan",
]
