"""tts_espeak: eSpeak NG text to speech behind the common TTS interface.

Thin adapter: items in, one engine call, items out (``engines.batching``).
eSpeak NG is not re-entrant; the engine serialises calls, and each Triton
instance is its own process.
"""

from __future__ import annotations

import numpy as np

from engines.batching import Item, scalar, triton_model_class
from engines.espeak import EspeakConfig, EspeakTTS
from engines.interfaces import TTS_INPUTS, TTS_OUTPUTS


# The eSpeak NG release the espeakng-loader wheel (pinned in pyproject.toml) ships.
ESPEAK_VERSION = "1.52"


class EspeakServed:
    name = "tts_espeak"
    max_batch_size = 16
    inputs = TTS_INPUTS
    outputs = TTS_OUTPUTS

    def __init__(self, parameters: dict[str, str]) -> None:
        self.engine = EspeakTTS(EspeakConfig())

    def infer_items(self, items: list[Item]) -> list[Item]:
        results = []
        for item in items:
            text = scalar(item, "TEXT")
            lang = scalar(item, "LANG")
            limit = float(scalar(item, "MAX_DURATION", 0.0))
            pitch = float(scalar(item, "PITCH_HZ", 0.0))
            variant = scalar(item, "VOICE", "") or None
            pitch_hz = pitch if pitch > 0 else None
            spoken = self.engine.synthesize_one(text, lang, None, pitch_hz, variant)
            natural = spoken.duration_s
            if limit > 0 and natural > limit:
                spoken = self.engine.synthesize_one(text, lang, limit, pitch_hz, variant)
            audio = spoken.audio.astype(np.float32)
            results.append({
                "WAVEFORM": audio,
                "SAMPLE_RATE": np.array([spoken.sample_rate], dtype=np.int32),
                "SPEEDUP": np.array([natural / max(spoken.duration_s, 1e-6)], dtype=np.float32),
                "VERSION": np.array([f"espeak-ng {ESPEAK_VERSION} voice {self.engine.voice_name(lang, variant)}"],
                                    dtype=np.object_),
            })
        return results


SERVED_CLASS = EspeakServed


def build_served_model(parameters: dict[str, str]) -> EspeakServed:
    return EspeakServed(parameters)


TritonPythonModel = triton_model_class(build_served_model)
