"""tts_fastpitch: NVIDIA FastPitch + HiFi-GAN behind the common TTS interface.

Weights come from local files, never a download: parameters
``fastpitch_checkpoint`` and ``hifigan_checkpoint`` (or the environment
variables ``POLYDUB_FASTPITCH_CHECKPOINT`` / ``POLYDUB_HIFIGAN_CHECKPOINT``).
Without them the model refuses to load, naming both; ``random_init: "true"``
builds the published size with random weights instead, for compute-cost
benchmarks only (it renders noise, and says so loudly in the log).
Slot fitting: one batched pass at natural pace; items longer than
MAX_DURATION run again at the pace that fits (bounded by ``max_pace``),
then a bounded WSOLA stretch closes the rest.
"""

from __future__ import annotations

import os

import numpy as np

from engines.batching import Item, scalar, triton_model_class
from engines.dsp.wsola import stretch_to_duration
from engines.fastpitch.synth import FastPitchTTS
from engines.interfaces import TTS_INPUTS, TTS_OUTPUTS

# Written into config.pbtxt; an empty value falls back to the POLYDUB_* variable.
PARAMETERS = {
    "fastpitch_checkpoint": "",
    "hifigan_checkpoint": "",
    "random_init": "",
    "languages": "en",
    "max_pace": "1.3",
    "max_stretch": "1.15",
}
_ENV = {
    "fastpitch_checkpoint": "POLYDUB_FASTPITCH_CHECKPOINT",
    "hifigan_checkpoint": "POLYDUB_HIFIGAN_CHECKPOINT",
    "random_init": "POLYDUB_FASTPITCH_RANDOM_INIT",
}


def _resolve(parameters: dict[str, str]) -> dict[str, str]:
    """Config parameters, then POLYDUB_* environment, then defaults."""
    resolved = dict(PARAMETERS)
    for key in PARAMETERS:
        value = parameters.get(key, "") or os.environ.get(_ENV.get(key, ""), "")
        if value:
            resolved[key] = value
    return resolved


class FastPitchServed:
    name = "tts_fastpitch"
    max_batch_size = 16
    inputs = TTS_INPUTS
    outputs = TTS_OUTPUTS

    def __init__(self, parameters: dict[str, str]) -> None:
        params = _resolve(parameters)
        random_init = params["random_init"].strip().lower() in ("1", "true", "yes")
        if random_init:
            self.tts = FastPitchTTS.load(random_init=True)
            self.version = "fastpitch random_init (untrained, benchmark only)"
        else:
            missing = [k for k in ("fastpitch_checkpoint", "hifigan_checkpoint") if not params[k]]
            if missing:
                raise ValueError(
                    f"tts_fastpitch needs {' and '.join(missing)}: set the config parameter(s) or "
                    f"{' / '.join(_ENV[k] for k in missing)} to NVIDIA checkpoint files on this host "
                    "(nothing is downloaded), or random_init=true for a compute-cost benchmark"
                )
            self.tts = FastPitchTTS.load(params["fastpitch_checkpoint"], params["hifigan_checkpoint"])
            self.version = (f"fastpitch {os.path.basename(params['fastpitch_checkpoint'])} + "
                            f"hifigan {os.path.basename(params['hifigan_checkpoint'])}")
        self.languages = tuple(x.strip() for x in params["languages"].split(",") if x.strip())
        self.max_pace = float(params["max_pace"])
        self.max_stretch = float(params["max_stretch"])
        self.pitch_mean_hz, _ = self.tts.fastpitch.pitch_stats()

    def infer_items(self, items: list[Item]) -> list[Item]:
        texts = [scalar(item, "TEXT") for item in items]
        for item in items:
            lang = scalar(item, "LANG")
            if lang not in self.languages:
                raise ValueError(f"tts_fastpitch speaks {', '.join(self.languages)}, not {lang!r}; "
                                 "choose another TTS engine for this language or configure a "
                                 "checkpoint trained for it (parameter 'languages')")
        limits = np.array([float(scalar(item, "MAX_DURATION", 0.0)) for item in items])
        targets = np.array([float(scalar(item, "PITCH_HZ", 0.0)) for item in items])
        shifts = np.where(targets > 0, targets - self.pitch_mean_hz, 0.0)
        rate = self.tts.sample_rate

        waves, lengths = self.tts.synthesize(texts, pace=1.0, pitch_shift_hz=shifts.tolist())
        natural = lengths / rate
        paces = np.ones(len(items))
        too_long = (limits > 0) & (natural > limits)
        if too_long.any():
            paces[too_long] = np.minimum(natural[too_long] / limits[too_long], self.max_pace)
            idx = np.flatnonzero(too_long)
            again, again_lengths = self.tts.synthesize(
                [texts[i] for i in idx], pace=paces[idx].tolist(), pitch_shift_hz=shifts[idx].tolist())
            out = [waves[i, : lengths[i]] for i in range(len(items))]
            for row, i in enumerate(idx):
                out[i] = again[row, : again_lengths[row]]
        else:
            out = [waves[i, : lengths[i]] for i in range(len(items))]

        results = []
        for i, wave in enumerate(out):
            if limits[i] > 0 and wave.size > limits[i] * rate:
                target = max(int(limits[i] * rate), int(np.ceil(wave.size / self.max_stretch)))
                wave = stretch_to_duration(wave, target, rate, max_speedup=self.max_stretch)
            results.append({
                "WAVEFORM": wave.astype(np.float32),
                "SAMPLE_RATE": np.array([rate], dtype=np.int32),
                "SPEEDUP": np.array([natural[i] / max(wave.size / rate, 1e-6)], dtype=np.float32),
                "VERSION": np.array([self.version], dtype=np.object_),
            })
        return results


SERVED_CLASS = FastPitchServed


def build_served_model(parameters: dict[str, str]) -> FastPitchServed:
    return FastPitchServed(parameters)


TritonPythonModel = triton_model_class(build_served_model)
