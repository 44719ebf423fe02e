"""Voice activity from the Silero VAD model that the ``silero-vad`` wheel carries.

The chunk planner asks "how speech-like is time t?" to put cuts in the
quietest part of a pause; this module answers from one pass of the model over
the whole soundtrack (about 1.4 s of CPU per minute of audio).
"""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Callable
from functools import lru_cache

import numpy as np

from engines.dsp import resample

VAD_RATE = 16000
VAD_WINDOW = 512  # samples per probability at 16 kHz (32 ms), fixed by the model
_lock = threading.Lock()


@lru_cache(maxsize=1)
def _model():  # type: ignore[no-untyped-def]
    import torch

    path = importlib.resources.files("silero_vad") / "data" / "silero_vad.jit"
    model = torch.jit.load(str(path), map_location="cpu")
    model.eval()
    return model


def speech_probabilities(audio: np.ndarray, rate: int) -> tuple[np.ndarray, float]:
    """Speech probability per 32 ms window, and the window length in seconds."""
    import torch

    mono = np.asarray(audio, dtype=np.float32)
    if rate != VAD_RATE:
        mono = resample(mono, rate, VAD_RATE)
    if mono.size < VAD_WINDOW:
        return np.zeros(1, dtype=np.float32), VAD_WINDOW / VAD_RATE
    with _lock, torch.no_grad():
        model = _model()
        model.reset_states()
        probs = model.audio_forward(torch.from_numpy(mono), sr=VAD_RATE)
    return probs.numpy().reshape(-1).astype(np.float32), VAD_WINDOW / VAD_RATE


def speech_probability_function(audio: np.ndarray, rate: int) -> Callable[[np.ndarray], np.ndarray]:
    """``f(times_s) -> probabilities``, interpolated between window centres."""
    probs, hop = speech_probabilities(audio, rate)
    centres = (np.arange(probs.size) + 0.5) * hop

    def at(times_s: np.ndarray) -> np.ndarray:
        return np.interp(times_s, centres, probs)

    return at
