"""speaker_encoder: GE2E d-vectors (the weights the resemblyzer wheel carries).

A batch-first torch model: every request of a dynamic batch is embedded in
one call per sample rate (padded, lengths masked).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.speaker import TOO_LITTLE_SPEECH, SpeakerEncoder
from serving.interfaces import SPEAKER
from serving.model import ServedModel, param
from serving.placement import Placement
from serving.specs import Item, UnusableInput, scalar


@dataclass(frozen=True)
class SpeakerParameters:
    weights: Path | None = param(None, "GE2E checkpoint ({'model_state': ...}); empty: the resemblyzer "
                                 "wheel's pretrained.pt.")


class SpeakerServed(ServedModel):
    name = "speaker_encoder"
    interface = SPEAKER
    max_batch_size = 32
    Config = SpeakerParameters

    def __init__(self, config: SpeakerParameters, placement: Placement) -> None:
        super().__init__(config, placement)
        self.encoder = SpeakerEncoder.load(config.weights, device=self.torch_device())

    def infer_items(self, items: list[Item]) -> list[Item]:
        by_rate: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            by_rate.setdefault(int(scalar(item, "SAMPLE_RATE")), []).append(i)
        results: list[Item] = [{} for _ in items]
        for rate, members in by_rate.items():
            longest = max(items[i]["WAVEFORM"].size for i in members)
            waves = np.zeros((len(members), longest), dtype=np.float32)
            lengths = np.zeros(len(members), dtype=np.int64)
            for row, i in enumerate(members):
                wave = items[i]["WAVEFORM"]
                waves[row, : wave.size] = wave
                lengths[row] = wave.size
            try:
                embeddings = self.encoder.embed(waves, lengths, rate)
            except ValueError as exc:
                if str(exc).startswith(TOO_LITTLE_SPEECH):  # the clip's condition: no retry can fix it
                    raise UnusableInput(str(exc)) from exc
                raise
            for row, i in enumerate(members):
                results[i] = {"EMBEDDING": embeddings[row].astype(np.float32)}
        return results


SERVED = SpeakerServed
