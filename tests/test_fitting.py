"""The speed-up bound every TTS engine holds: rate and stretch together, never past MAX_SPEEDUP."""

from __future__ import annotations

import numpy as np
import pytest

from serving.batching import join_items, run_batch, split_batch
from serving.catalog import build_model
from serving.fitting import fitted_duration_s, request_bound
from serving.specs import scalar

LONG_LINE = "The committee will meet again next Thursday to discuss the budget for the coming year."


@pytest.mark.parametrize("natural, slot, bound, expected", [
    (2.0, 3.0, 1.35, 2.0),        # fits: natural, never slowed down
    (2.0, 0.0, 1.35, 2.0),        # no slot: natural
    (2.0, 1.8, 1.35, 1.8),        # a little long: exactly the slot
    (2.7, 1.0, 1.35, 2.0),        # far too long: stops at the bound, longer than the slot
    (2.0, 1.0, 1.0, 2.0),         # bound 1: never faster
])
def test_the_fitted_length_is_the_slot_within_the_bound(natural: float, slot: float, bound: float,
                                                        expected: float) -> None:
    assert fitted_duration_s(natural, slot, bound) == pytest.approx(expected)


def test_bad_bounds_are_refused_and_the_request_overrides_the_model() -> None:
    with pytest.raises(ValueError, match="max_speedup must be >= 1"):
        fitted_duration_s(1.0, 0.5, 0.9)
    with pytest.raises(ValueError, match="natural duration must be positive"):
        fitted_duration_s(0.0, 0.5, 1.35)
    assert request_bound(1.2, 1.35) == 1.2 and request_bound(0.0, 1.35) == 1.35


def _speak(model: object, **extra: object) -> dict[str, np.ndarray]:
    items = [{"TEXT": LONG_LINE, "LANG": "en", **extra}]
    (out,) = split_batch(run_batch(model, join_items(items, model.inputs)), model.outputs)  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("bound", [1.2, 1.35])
def test_espeak_holds_the_bound_rate_and_stretch_together(bound: float) -> None:
    """eSpeak's rate control could reach 2.6x and WSOLA 1.35x more; together they stop at the bound."""
    model = build_model("tts_espeak")
    natural = _speak(model)
    seconds = natural["WAVEFORM"].size / int(scalar(natural, "SAMPLE_RATE"))
    squeezed = _speak(model, MAX_DURATION=np.float32(seconds / 3), MAX_SPEEDUP=np.float32(bound))
    length = squeezed["WAVEFORM"].size / int(scalar(squeezed, "SAMPLE_RATE"))
    assert float(scalar(squeezed, "SPEEDUP")) == pytest.approx(bound, rel=0.01)
    assert length == pytest.approx(seconds / bound, rel=0.01)
    slightly = _speak(model, MAX_DURATION=np.float32(seconds / 1.1), MAX_SPEEDUP=np.float32(bound))
    assert slightly["WAVEFORM"].size / int(scalar(slightly, "SAMPLE_RATE")) == pytest.approx(seconds / 1.1, abs=0.002)
