"""How long a TTS model makes a segment's speech: the one speed-up policy every TTS engine serves.

A dub is only as good as a listener can follow, so the speed-up is a bound,
not a wish: an engine speaks the text at its natural rate, and when that
overruns the slot (``MAX_DURATION``) it speeds up, by its own rate or pace
first and a time-stretch after, never more than ``MAX_SPEEDUP`` times the
natural reading in total. Speech that is still too long comes back longer
than the slot; the synthesis stage lays it into the silence that follows,
and QC names what still did not fit. Speech is never slowed down to fill a
slot: a short line stays natural and the rest of the slot is silence.
"""

from __future__ import annotations

import math


def fitted_duration_s(natural_s: float, max_duration_s: float, max_speedup: float) -> float:
    """The length to render: natural when it fits (or no slot is given), else the slot, but never
    shorter than ``natural_s / max_speedup``."""
    if not (math.isfinite(natural_s) and natural_s > 0):
        raise ValueError(f"natural duration must be positive, got {natural_s}")
    if max_speedup < 1.0:
        raise ValueError(f"max_speedup must be >= 1 (1: never faster than natural), got {max_speedup}")
    if not (math.isfinite(max_duration_s) and max_duration_s > 0) or natural_s <= max_duration_s:
        return natural_s
    return max(max_duration_s, natural_s / max_speedup)


def request_bound(requested: float, configured: float) -> float:
    """The request's ``MAX_SPEEDUP`` when it gives one (> 0), else the model's configured bound."""
    return float(requested) if requested > 0 else float(configured)


__all__ = ["fitted_duration_s", "request_bound"]
