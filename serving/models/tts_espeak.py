"""tts_espeak: eSpeak NG text to speech behind the common TTS interface.

A per-item engine: eSpeak NG is a C library that is not re-entrant, so items
run one after another and throughput scales with the instance count (each
Triton instance is its own process with its own copy of the library); the
dynamic batcher only hands an idle instance what is already queued.
Speech too long for MAX_DURATION is sped up by the eSpeak rate, then WSOLA,
within the bound of :mod:`serving.fitting`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.espeak.tts import EspeakConfig, EspeakTTS
from serving.fitting import fitted_duration_s, request_bound
from serving.interfaces import TTS
from serving.model import PerItemModel, param
from serving.placement import Placement
from serving.specs import Item, scalar

# The eSpeak NG release the espeakng-loader wheel (pinned in pyproject.toml) ships.
ESPEAK_VERSION = "1.52"


@dataclass(frozen=True)
class EspeakParameters:
    max_speedup: float = param(EspeakConfig.max_speedup, "Largest speed-up against the natural reading, rate "
                               "and time-stretch together, when a request gives no MAX_SPEEDUP.")


class EspeakServed(PerItemModel):
    name = "tts_espeak"
    interface = TTS
    max_batch_size = 16
    instances = 2
    Config = EspeakParameters

    def __init__(self, config: EspeakParameters, placement: Placement) -> None:
        super().__init__(config, placement)
        self.engine = EspeakTTS(EspeakConfig(max_speedup=config.max_speedup))

    def infer_item(self, item: Item) -> Item:
        text = scalar(item, "TEXT")
        lang = scalar(item, "LANG")
        limit = float(scalar(item, "MAX_DURATION", 0.0))
        bound = request_bound(float(scalar(item, "MAX_SPEEDUP", 0.0)), self.config.max_speedup)
        pitch = float(scalar(item, "PITCH_HZ", 0.0))
        variant = scalar(item, "VOICE", "") or None
        pitch_hz = pitch if pitch > 0 else None
        spoken = self.engine.synthesize_one(text, lang, None, pitch_hz, variant)
        natural = spoken.duration_s
        target = fitted_duration_s(natural, limit, bound)
        if target < natural:
            # Rate first, then the stretch; the target already holds the total to the bound.
            spoken = self.engine.synthesize_one(text, lang, target, pitch_hz, variant, bound)
        return {
            "WAVEFORM": spoken.audio.astype(np.float32),
            "SAMPLE_RATE": np.int32(spoken.sample_rate),
            "SPEEDUP": np.float32(natural / max(spoken.duration_s, 1e-6)),
            "VERSION": f"espeak-ng {ESPEAK_VERSION} voice {self.engine.voice_name(lang, variant)}",
        }


SERVED = EspeakServed
