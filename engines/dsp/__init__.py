"""Signal helpers the engines share: time-stretching and loudness envelopes (pure numpy/scipy)."""

from engines.dsp.envelope import rms_envelope
from engines.dsp.wsola import stretch_to_duration, time_stretch

__all__ = ["rms_envelope", "stretch_to_duration", "time_stretch"]
