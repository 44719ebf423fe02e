"""speaker_encoder: GE2E d-vectors (the weights the resemblyzer wheel carries)."""

from __future__ import annotations

import numpy as np

from engines.batching import Item, scalar, triton_model_class
from engines.interfaces import SPEAKER_INPUTS, SPEAKER_OUTPUTS
from engines.speaker import SpeakerEncoder


class SpeakerServed:
    name = "speaker_encoder"
    max_batch_size = 32
    inputs = SPEAKER_INPUTS
    outputs = SPEAKER_OUTPUTS

    def __init__(self, parameters: dict[str, str]) -> None:
        self.encoder = SpeakerEncoder.load(parameters.get("weights") or None)

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
            embeddings = self.encoder.embed(waves, lengths, rate)
            for row, i in enumerate(members):
                results[i] = {"EMBEDDING": embeddings[row].astype(np.float32)}
        return results


SERVED_CLASS = SpeakerServed


def build_served_model(parameters: dict[str, str]) -> SpeakerServed:
    return SpeakerServed(parameters)


TritonPythonModel = triton_model_class(build_served_model)
