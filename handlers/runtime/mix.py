"""Audio and frame mixing for the merge: crossfades, ducking, the dub's place, loudness.

Crossfade curve: neighbouring chunks render the *same* content in their
shared second (each chunk also speaks neighbour segments that reach into its
window, and the engines are deterministic), so the pieces being faded are
correlated. For correlated signals the fade that keeps the level is the one
whose *amplitudes* sum to one; the raised-cosine pair ``cos^2``/``sin^2`` is
that fade with the smooth, click-free shape of the equal-power sine pair, which
would instead add up to +3 dB in the middle of identical material.

Channels: the soundtrack keeps the source's layout, ``(samples, channels)`` with
FFmpeg's channel names (``FL``, ``FR``, ``FC``, ``LFE``, ``BL``, ...). The ducking
gain, computed once from the dub's speech, applies to every background channel
alike, so the background's image does not move; the dub is mono and goes where
film dialogue goes (:func:`dub_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyloudnorm
from scipy.ndimage import maximum_filter1d

# Rate (Hz) at which the ducking gain is computed before interpolation.
DUCK_CONTROL_RATE = 200
#: BS.1770 momentary-loudness block (also the shortest measurable material) and the hop of
#: the loudness-over-time series, seconds.
MOMENTARY_BLOCK_S = 0.4
MOMENTARY_HOP_S = 0.1
#: Loudness below the BS.1770 absolute gate is shown as this floor (LUFS) in the series.
LOUDNESS_FLOOR_LUFS = -70.0
#: Each channel's column in pyloudnorm's meter, which weighs ``[L, R, C, Ls, Rs]`` by
#: ``1, 1, 1, 1.41, 1.41`` (BS.1770: surrounds +1.5 dB); side, back and a single back
#: centre are all surrounds. Channels not named here (the LFE) are not measured, as
#: BS.1770 prescribes.
BS1770_COLUMNS = {"FL": 0, "FR": 1, "FC": 2, "SL": 3, "BL": 3, "BC": 3, "SR": 4, "BR": 4}
#: The dub's channels: the centre speaker, where film dialogue sits, when the layout has
#: one; else both fronts at full level, the phantom centre a stereo mix carries dialogue
#: in (a mono source's one channel is FFmpeg's FC).
CENTRE = "FC"
FRONTS = ("FL", "FR")


def fade_in(n: int) -> np.ndarray:
    """Rising half of the raised-cosine crossfade; ``fade_in(n) + fade_in(n)[::-1] == 1``."""
    if n <= 0:
        return np.zeros(0, dtype=np.float32)
    x = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (np.sin(0.5 * np.pi * x) ** 2).astype(np.float32)


def overlap_add(pieces: Sequence[tuple[int, np.ndarray]], total: int) -> np.ndarray:
    """Join ``(start_sample, audio)`` pieces in timeline order, crossfading overlaps."""
    out = np.zeros(total, dtype=np.float32)
    ordered = sorted(pieces, key=lambda p: p[0])
    for i, (start, audio) in enumerate(ordered):
        weight = np.ones(audio.size, dtype=np.float32)
        if i > 0:
            prev_start, prev = ordered[i - 1]
            shared = max(0, min(prev_start + prev.size, start + audio.size) - start)
            weight[:shared] *= fade_in(shared)
        if i + 1 < len(ordered):
            next_start = ordered[i + 1][0]
            shared = max(0, start + audio.size - next_start)
            if shared:
                weight[audio.size - shared:] *= fade_in(shared)[::-1]
        a, b = max(0, start), min(total, start + audio.size)
        if b > a:
            out[a:b] += (audio * weight)[a - start: b - start]
    return out


def frame_weight(index: int, first: int, last: int, prev_last: int | None, next_first: int | None) -> float:
    """Weight of a chunk's frame ``index`` (its frames are ``[first, last)``) in the join."""
    weight = 1.0
    if prev_last is not None and index < prev_last:
        shared = prev_last - first
        weight *= float(fade_in(shared)[index - first])
    if next_first is not None and index >= next_first:
        shared = last - next_first
        weight *= float(fade_in(shared)[::-1][index - next_first])
    return weight


def blend_frames(frames: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """Weighted sum of the frames that cover one output frame (weights sum to one)."""
    if len(frames) == 1:
        return frames[0][0]
    acc = np.zeros(frames[0][0].shape, dtype=np.float32)
    total = 0.0
    for frame, weight in frames:
        acc += frame.astype(np.float32) * weight
        total += weight
    return np.clip(np.rint(acc / max(total, 1e-6)), 0, 255).astype(np.uint8)


def speech_mask(spans: Sequence[tuple[float, float]], total: int, rate: int) -> np.ndarray:
    """True where the dub speaks."""
    mask = np.zeros(total, dtype=bool)
    for start, end in spans:
        mask[max(0, int(start * rate)): min(total, int(np.ceil(end * rate)))] = True
    return mask


def duck_gain(mask: np.ndarray, rate: int, duck_db: float, attack_s: float, release_s: float) -> np.ndarray:
    """Gain for the original soundtrack: ``duck_db`` under speech, smooth ramps around it.

    The duck is fully down when speech starts (the ramp begins ``attack_s``
    earlier, so a first syllable is never masked) and recovers over
    ``release_s`` after it. Computed at a control rate and interpolated, since
    an attack/release follower is a per-step recursion.
    """
    hop = max(1, rate // DUCK_CONTROL_RATE)
    n = int(np.ceil(mask.size / hop))
    padded = np.zeros(n * hop, dtype=bool)
    padded[: mask.size] = mask
    speaking = padded.reshape(n, hop).any(axis=1)
    low = 10 ** (duck_db / 20)
    steps_attack = max(1, int(round(attack_s * DUCK_CONTROL_RATE)))
    # Look ahead: ducking starts steps_attack control steps before the speech does.
    ahead = np.zeros(n, dtype=bool)
    for shift in range(steps_attack + 1):
        ahead[: n - shift] |= speaking[shift:]
    step_down = (1.0 - low) / steps_attack
    step_up = (1.0 - low) / max(1, int(round(release_s * DUCK_CONTROL_RATE)))
    control = np.empty(n, dtype=np.float64)
    level = 1.0
    for i in range(n):
        level = max(low, level - step_down) if ahead[i] else min(1.0, level + step_up)
        control[i] = level
    centres = (np.arange(n) + 0.5) * hop
    return np.interp(np.arange(mask.size), centres, control).astype(np.float32)


def dub_weights(channels: Sequence[str]) -> np.ndarray:
    """Gain of the (mono) dub in each channel of a layout: 1 in the centre, else in both fronts.

    Both fronts get the dub at full level rather than 3 dB down: a phantom centre
    is how a stereo mix holds its dialogue, so the dub then stands to a stereo
    background as the original dialogue did.
    """
    names = list(channels)
    weights = np.zeros(len(names), dtype=np.float32)
    if CENTRE in names:
        weights[names.index(CENTRE)] = 1.0
    elif all(front in names for front in FRONTS):
        for front in FRONTS:
            weights[names.index(front)] = 1.0
    else:
        raise ValueError(f"layout {names} has neither a centre nor a front pair to put the dub in")
    return weights


def mix_dub(background: np.ndarray, gain: np.ndarray, dub: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(samples, channels)``: the background ducked by ``gain`` in every channel, plus the dub by ``weights``."""
    bed = np.asarray(background, dtype=np.float32)
    if bed.ndim == 1:
        bed = bed[:, np.newaxis]
    return bed * gain[:, np.newaxis] + dub[:, np.newaxis] * weights[np.newaxis, :]


def _bs1770_input(audio: np.ndarray, channels: Sequence[str] | None) -> np.ndarray:
    """``audio`` as pyloudnorm's meter wants it: mono as it is, channels in their BS.1770 columns."""
    if audio.ndim == 1 or audio.shape[1] == 1:
        return audio.reshape(audio.shape[0])
    if channels is None or len(channels) != audio.shape[1]:
        raise ValueError(f"name the {audio.shape[1]} channels of multichannel audio to meter it (got {channels})")
    columns = {name: BS1770_COLUMNS[name] for name in channels if name in BS1770_COLUMNS}
    if len(set(columns.values())) != len(columns):
        raise ValueError(f"layout {list(channels)} has two channels in one BS.1770 position")
    out = np.zeros((audio.shape[0], max(columns.values(), default=0) + 1), dtype=np.float64)
    for i, name in enumerate(channels):
        if name in columns:
            out[:, columns[name]] = audio[:, i]
    return out


def loudness_profile(audio: np.ndarray, rate: int,
                     channels: Sequence[str] | None = None) -> tuple[float, np.ndarray]:
    """Integrated loudness (LUFS) and momentary loudness every :data:`MOMENTARY_HOP_S`.

    One BS.1770 pass gives both: pyloudnorm's gating blocks are exactly the 400 ms
    momentary blocks with a 100 ms hop. Too-short or silent audio gives ``-inf``.
    Merging normalises and QC checks with this one meter, so they cannot disagree.
    ``audio`` is ``(samples,)`` or ``(samples, channels)`` with ``channels`` naming
    each column (FFmpeg names): each is weighed as BS.1770 says, the LFE left out.
    """
    x = _bs1770_input(np.asarray(audio, dtype=np.float64), channels)
    if x.shape[0] < MOMENTARY_BLOCK_S * rate or not np.any(x):
        return float("-inf"), np.zeros(0)
    meter = pyloudnorm.Meter(rate, block_size=MOMENTARY_BLOCK_S, overlap=1.0 - MOMENTARY_HOP_S / MOMENTARY_BLOCK_S)
    integrated = float(meter.integrated_loudness(x))
    momentary = np.maximum(np.nan_to_num(np.asarray(meter.blockwise_loudness, dtype=np.float64),
                                         neginf=LOUDNESS_FLOOR_LUFS), LOUDNESS_FLOOR_LUFS)
    return integrated, momentary


def integrated_loudness(audio: np.ndarray, rate: int, channels: Sequence[str] | None = None) -> float:
    """BS.1770 integrated loudness in LUFS (-inf for silence or too-short audio)."""
    return loudness_profile(audio, rate, channels)[0]


def normalize_loudness(audio: np.ndarray, rate: int, target_lufs: float, peak_dbfs: float,
                       channels: Sequence[str] | None = None) -> tuple[np.ndarray, float]:
    """Scale to ``target_lufs``, then limit sample peaks to ``peak_dbfs``; returns (audio, gain dB).

    Multichannel audio (``channels`` naming its columns) is metered over its
    channels together and scaled and limited by one gain, so the image holds.
    """
    measured = integrated_loudness(audio, rate, channels)
    if not np.isfinite(measured):
        return audio.astype(np.float32), 0.0
    gain_db = target_lufs - measured
    out = audio.astype(np.float32) * np.float32(10 ** (gain_db / 20))
    return limit_peaks(out, rate, peak_dbfs), gain_db


def limit_peaks(audio: np.ndarray, rate: int, peak_dbfs: float, release_s: float = 0.05) -> np.ndarray:
    """A look-ahead peak limiter: gain dips smoothly where samples would pass the ceiling.

    ``(samples, channels)`` audio gets one gain from the loudest channel at each
    instant (a linked limiter), so a peak in one channel does not shift the image.
    """
    ceiling = 10 ** (peak_dbfs / 20)
    peaks = np.abs(audio) if audio.ndim == 1 else np.abs(audio).max(axis=1)
    if peaks.max(initial=0.0) <= ceiling:
        return audio
    needed = np.minimum(1.0, ceiling / np.maximum(peaks, 1e-12))
    window = max(1, int(release_s * rate))
    gain = -maximum_filter1d(-needed, size=window)
    kernel = np.hanning(window + 2)[1:-1]
    kernel /= kernel.sum()
    gain = np.minimum(gain, np.convolve(gain, kernel, mode="same"))
    return (audio * (gain if audio.ndim == 1 else gain[:, np.newaxis])).astype(np.float32)

