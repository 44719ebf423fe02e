"""Signal helpers the engines share, and the pipeline's stages with them (pure numpy/scipy).

Time-stretching, loudness envelopes, resampling and exact lengths. No model
lives here: ``handlers`` may import this package directly (models only through
the inference client), so each of these exists once in the tree.
"""

from engines.dsp.envelope import frame_rms, rms_envelope
from engines.dsp.length import fit_length
from engines.dsp.resample import resample
from engines.dsp.wsola import stretch_to_duration, time_stretch

__all__ = ["fit_length", "frame_rms", "resample", "rms_envelope", "stretch_to_duration", "time_stretch"]
