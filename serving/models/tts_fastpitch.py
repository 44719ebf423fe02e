"""tts_fastpitch: NVIDIA FastPitch + HiFi-GAN behind the common TTS interface.

Weights come from local files, never a download: parameters
``fastpitch_checkpoint`` and ``hifigan_checkpoint`` (polydub fills them from
``POLYDUB_FASTPITCH_CHECKPOINT`` / ``POLYDUB_HIFIGAN_CHECKPOINT``). Without
them the model refuses to load, naming both; ``random_init: "true"`` builds
the published size with random weights instead, for compute-cost benchmarks
only (it renders noise, and says so loudly in the log).
A batch-first torch model, built on the instance's device: one batched pass
at natural pace; items longer than MAX_DURATION run again at the pace that
fits (bounded by ``max_pace``), then WSOLA closes the rest, the two together
within the speed-up bound of :mod:`serving.fitting`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.dsp.wsola import stretch_to_duration
from engines.fastpitch.synth import FastPitchTTS
from serving.fitting import fitted_duration_s, request_bound
from serving.interfaces import TTS
from serving.model import ServedModel, param
from serving.placement import Placement
from serving.specs import Item, scalar


@dataclass(frozen=True)
class FastPitchParameters:
    fastpitch_checkpoint: Path | None = param(None, "NVIDIA FastPitch checkpoint (.pt) on this host.")
    hifigan_checkpoint: Path | None = param(None, "NVIDIA HiFi-GAN checkpoint (.pt) paired with it.")
    random_init: bool = param(False, "Random weights at the published size: compute benchmarks only.")
    languages: tuple[str, ...] = param(("en",), "Languages the checkpoint speaks (comma list).")
    max_pace: float = param(1.3, "Largest pace (the model's own rate) used to fit MAX_DURATION; WSOLA does "
                            "the rest of the speed-up.")
    max_speedup: float = param(1.35, "Largest speed-up against the natural reading, pace and time-stretch "
                               "together, when a request gives no MAX_SPEEDUP.")


class FastPitchServed(ServedModel):
    name = "tts_fastpitch"
    interface = TTS
    max_batch_size = 16
    Config = FastPitchParameters

    def __init__(self, config: FastPitchParameters, placement: Placement) -> None:
        super().__init__(config, placement)
        device = self.torch_device()
        if config.random_init:
            self.tts = FastPitchTTS.load(random_init=True, device=device)
            self.version = "fastpitch random_init (untrained, benchmark only)"
        else:
            missing = [k for k in ("fastpitch_checkpoint", "hifigan_checkpoint") if getattr(config, k) is None]
            if missing:
                raise ValueError(
                    f"tts_fastpitch needs the parameter(s) {' and '.join(missing)}: NVIDIA checkpoint files "
                    "on this host (nothing is downloaded; polydub sets them from "
                    "POLYDUB_FASTPITCH_CHECKPOINT / POLYDUB_HIFIGAN_CHECKPOINT), or random_init=true for a "
                    "compute-cost benchmark"
                )
            assert config.fastpitch_checkpoint is not None and config.hifigan_checkpoint is not None
            self.tts = FastPitchTTS.load(config.fastpitch_checkpoint, config.hifigan_checkpoint, device=device)
            self.version = (f"fastpitch {config.fastpitch_checkpoint.name} + "
                            f"hifigan {config.hifigan_checkpoint.name}")
        self.pitch_mean_hz, _ = self.tts.fastpitch.pitch_stats()

    def infer_items(self, items: list[Item]) -> list[Item]:
        config = self.config
        texts = [scalar(item, "TEXT") for item in items]
        for item in items:
            lang = scalar(item, "LANG")
            if lang not in config.languages:
                raise ValueError(f"tts_fastpitch speaks {', '.join(config.languages)}, not {lang!r}; "
                                 "choose another TTS engine for this language or configure a "
                                 "checkpoint trained for it (parameter 'languages')")
        limits = [float(scalar(item, "MAX_DURATION", 0.0)) for item in items]
        bounds = [request_bound(float(scalar(item, "MAX_SPEEDUP", 0.0)), config.max_speedup) for item in items]
        targets = np.array([float(scalar(item, "PITCH_HZ", 0.0)) for item in items])
        shifts = np.where(targets > 0, targets - self.pitch_mean_hz, 0.0)
        rate = self.tts.sample_rate

        waves, lengths = self.tts.synthesize(texts, pace=1.0, pitch_shift_hz=shifts.tolist())
        natural = lengths / rate
        out = [waves[i, : lengths[i]] for i in range(len(items))]
        fitted = [fitted_duration_s(float(natural[i]), limits[i], bounds[i]) for i in range(len(items))]
        idx = [i for i in range(len(items)) if fitted[i] < natural[i]]
        if idx:
            # Pace first (the model's own rate, bounded by max_pace), one batched pass ...
            paces = [min(float(natural[i]) / fitted[i], config.max_pace) for i in idx]
            again, again_lengths = self.tts.synthesize(
                [texts[i] for i in idx], pace=paces, pitch_shift_hz=shifts[idx].tolist())
            for row, i in enumerate(idx):
                # ... then WSOLA closes the rest; the fitted length holds the total to the bound.
                paced = again[row, : again_lengths[row]]
                out[i] = stretch_to_duration(paced, max(1, int(round(fitted[i] * rate))), rate,
                                             max_speedup=bounds[i])

        results = []
        for i, wave in enumerate(out):
            results.append({
                "WAVEFORM": wave.astype(np.float32),
                "SAMPLE_RATE": np.int32(rate),
                "SPEEDUP": np.float32(natural[i] / max(wave.size / rate, 1e-6)),
                "VERSION": self.version,
            })
        return results


SERVED = FastPitchServed
