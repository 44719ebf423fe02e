"""vc_world: WORLD voice conversion behind the common VC interface.

The target speaker comes as a reference clip (statistics are estimated and
returned as ``TARGET_STATS`` for the caller to cache) or as those cached
statistics. Source statistics are estimated from each item itself.

A per-item engine: WORLD's analysis (Harvest F0, CheapTrick envelope) runs
one utterance at a time, so throughput scales with the instance count, not
the batch size; the dynamic batcher only hands an idle instance what is
already queued.
"""

from __future__ import annotations

import numpy as np

from engines.world_vc import SpeakerStats, WorldVCConfig, convert, estimate_stats
from serving.interfaces import VC
from serving.model import PerItemModel
from serving.placement import Placement
from serving.specs import Item, UnusableInput, scalar

# Layout of the flat TARGET_STATS vector: these scalars, then the log envelope.
_SCALARS = ("version", "f0_log_mean", "f0_log_std", "formant_ratio", "sample_rate",
            "voiced_fraction", "voiced_seconds")


def pack_stats(stats: SpeakerStats) -> np.ndarray:
    arrays = stats.to_arrays()
    head = np.array([float(arrays[name]) for name in _SCALARS], dtype=np.float64)
    return np.concatenate([head, arrays["log_envelope"]]).astype(np.float32)


def unpack_stats(vector: np.ndarray) -> SpeakerStats:
    values = np.asarray(vector, dtype=np.float64).reshape(-1)
    if values.size <= len(_SCALARS):
        raise ValueError(f"TARGET_STATS has {values.size} values; it must come from this model's output")
    arrays = {name: values[i] for i, name in enumerate(_SCALARS)}
    arrays["version"] = int(round(arrays["version"]))
    arrays["sample_rate"] = int(round(arrays["sample_rate"]))
    arrays["log_envelope"] = values[len(_SCALARS):]
    return SpeakerStats.from_arrays(arrays)


class WorldServed(PerItemModel):
    name = "vc_world"
    interface = VC
    max_batch_size = 16
    instances = 2

    def __init__(self, config: object, placement: Placement) -> None:
        super().__init__(config, placement)
        self.world = WorldVCConfig()

    def infer_item(self, item: Item) -> Item:
        if scalar(item, "VOICE", "") or "PITCH_SHIFT" in item:
            raise ValueError("vc_world converts toward REFERENCE or TARGET_STATS only: it has no named voices and "
                             "no pitch shift (those are vc_rvc's); drop VOICE and PITCH_SHIFT")
        rate = int(scalar(item, "SAMPLE_RATE"))
        if "TARGET_STATS" in item:
            target = unpack_stats(item["TARGET_STATS"])
        elif "REFERENCE" in item:
            # Round-trip through the float32 wire format, so converting from a
            # reference gives exactly what converting from the returned (and
            # cached) statistics gives: redeliveries and neighbour chunks match.
            try:
                estimated = estimate_stats(item["REFERENCE"], rate, self.world)
            except ValueError as exc:  # too little voiced speech: the clip's condition, not a fault
                raise UnusableInput(f"REFERENCE: {exc}") from exc
            target = unpack_stats(pack_stats(estimated))
        else:
            raise ValueError("give REFERENCE (a clip of the target speaker) or TARGET_STATS")
        wave = np.asarray(item["WAVEFORM"], dtype=np.float32)
        converted = convert(wave[None], np.array([wave.size]), rate, None, target, self.world)[0]
        return {"WAVEFORM": converted, "TARGET_STATS": pack_stats(target)}


SERVED = WorldServed
