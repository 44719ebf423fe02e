"""WORLD voice conversion: the reference VC engine that needs no trained weights.

Why WORLD: it splits speech into F0, a smooth spectral envelope and aperiodicity, and puts it
back together losslessly enough for speech. A voice's identity lives mostly in the F0 range
(pitch level and liveliness) and the envelope (vocal-tract length -> formant positions, plus
the voice's overall spectral colour). So a speaker is summarised by :class:`SpeakerStats`
(a few numbers and one average envelope, cheap to cache as an ``.npz`` per job and speaker),
and conversion moves the input's statistics to the target's:

* **F0**: log-linear mapping, ``log f0' = mu_t + (log f0 - mu_s) * sigma_t / sigma_s`` on
  voiced frames (the standard Gaussian-normalised F0 transform). The std ratio is bounded so
  that statistics from a short, monotone clip cannot flatten or exaggerate the melody.
* **Formants**: the envelope is warped on the frequency axis, ``env'(f) = env(f / alpha)``
  (linear interpolation of the log envelope between FFT bins). ``alpha`` is picked by a grid
  search (``warp_grid``, 0.80..1.25) for the warp that best aligns the source's average log
  envelope with the target's: the distance is the RMS dB difference on a mel-spaced grid in
  ``warp_band_hz`` (mel spacing weights the formant region as hearing does) after removing its
  best straight line (level and spectral tilt are loudness, phonation and microphone, not
  formant positions; the envelope correction below takes care of them), plus a small penalty
  on ``|ln alpha|`` (``warp_penalty``) so a warp has to earn its keep. A grid rather than a
  closed form because the distance is not smooth in ``alpha`` (formant peaks pass over each
  other) and 19 candidates cost microseconds. :attr:`SpeakerStats.formant_ratio` (spectral
  centroid, per speaker) is the cheaper alternative, ``warp_method="centroid"``; on synthetic
  voices with random vowel content its warp error was 4x the grid search's.
* **Timbre**: after warping, the remaining difference of average log envelopes (target minus
  warped source) is smoothed over ``envelope_smoothing_hz``, made level-free and bounded to
  ``max_envelope_correction_db``, then added to the voiced frames (with short fades; the
  averages describe voiced speech, not fricatives or silence). Smoothing and the bound keep the
  correction a colour filter: the two averages come from different words, and a sharp or large
  correction would imprint one text's vowels on the other.
* **Aperiodicity** is kept (breathiness follows the input's phonation), and the output is cut
  or zero-padded to exactly the input length (WORLD's synthesis length is frame-quantised).

:func:`convert` is the batch entry point; :func:`analyse` + :func:`convert_features` are its two
halves, for converting one analysed line to several voices (the benchmark does).

F0 analysis: **Harvest** by default, for the reference statistics and for the audio being
converted. Dio + StoneMask is ~20x faster but not robust enough even on our own TTS output:
on eSpeak NG's Klatt voices it found 0.3 s of voicing in a 4.2 s sentence (Harvest: 2.7 s) and
locked onto ~550 Hz, which turns a conversion into squeaks. Harvest costs ~0.27x real time
here (one core; pyworld holds the GIL), about 80% of a conversion's time. ``"dio"`` stays
selectable (:class:`WorldVCConfig`) for clean modal voices when speed matters more.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import gaussian_filter1d

from engines.dsp import fit_length

with warnings.catch_warnings():
    # pyworld's __init__ imports pkg_resources only to read its own version, which warns on
    # recent setuptools; the warning is about pyworld's packaging, not about our use of it.
    warnings.simplefilter("ignore")
    import pyworld

__all__ = [
    "SpeakerStats",
    "WorldFeatures",
    "WorldVCConfig",
    "analyse",
    "convert",
    "convert_features",
    "estimate_stats",
    "shift_voice",
    "warp_ratio",
]

logger = logging.getLogger(__name__)

#: Bump when the meaning of a :class:`SpeakerStats` field changes, so cached ``.npz`` files
#: from an older release are refused instead of silently misread.
STATS_VERSION = 1
#: dB per natural-log unit of a *power* spectrum: 10 / ln(10).
DB_PER_NEPER_POWER = 10.0 / math.log(10.0)
#: Fixed centroid (Hz) that :attr:`SpeakerStats.formant_ratio` is relative to: roughly the
#: centroid of an adult voice's average envelope in the default centroid band. Only ratios of
#: two speakers' values are used, so its exact value does not matter.
REFERENCE_CENTROID_HZ = 1500.0
#: Points of the mel-spaced grid on which average envelopes are compared.
MEL_GRID_POINTS = 256
#: Below this RMS (dBFS) a reference counts as silent.
SILENCE_DBFS = -70.0
#: Smallest input (in WORLD frames) worth analysing; shorter items are returned unchanged.
MIN_FRAMES = 3
#: Floor of the log envelope (power), so log never sees 0.
ENVELOPE_FLOOR = 1e-16

F0Method = Literal["harvest", "dio"]
WarpMethod = Literal["envelope", "centroid", "none"]


@dataclass(frozen=True)
class WorldVCConfig:
    """Knobs of WORLD analysis and of the conversion; defaults measured on eSpeak voices
    with ``bench/vc_quality.py`` where a number is quoted."""

    #: WORLD frame period in ms. 5 ms is WORLD's default and follows F0 and formant motion of
    #: fast speech; 10 ms halves the CheapTrick/D4C/synthesis cost (not Harvest's).
    frame_period_ms: float = 5.0
    #: F0 search range in Hz. 60 Hz covers low male voices; 700 Hz covers children and
    #: raised female voices. The floor also fixes CheapTrick's FFT size (lower -> longer).
    f0_floor_hz: float = 60.0
    f0_ceil_hz: float = 700.0
    #: F0 estimator for reference statistics: ``harvest`` (robust, ~0.27x real time) or
    #: ``dio`` (Dio + StoneMask, ~20x faster, loses voicing on Klatt-type and noisy voices).
    estimate_f0_method: F0Method = "harvest"
    #: F0 estimator for the audio being converted (and for :func:`shift_voice`).
    convert_f0_method: F0Method = "harvest"
    #: Minimum voiced speech in a reference, in seconds: below ~1 s the F0 spread and the
    #: average envelope are dominated by the few phonemes that happen to be there.
    min_voiced_s: float = 1.0
    #: Minimum voiced speech when the source statistics are estimated from the input itself;
    #: a dubbed line can be short, and only its own mean/std are needed.
    min_self_voiced_s: float = 0.1
    #: Bounds of the F0 std ratio sigma_t / sigma_s (monotone clips give tiny sigmas).
    f0_std_ratio_bounds: tuple[float, float] = (0.5, 2.0)
    #: How the formant warp is chosen: ``envelope`` (grid search aligning average envelopes),
    #: ``centroid`` (ratio of the speakers' ``formant_ratio``), or ``none`` (no warp).
    warp_method: WarpMethod = "envelope"
    #: Candidate warp factors alpha (output formant = input formant * alpha).
    warp_grid: tuple[float, ...] = tuple(np.round(np.geomspace(0.8, 1.25, 19), 4).tolist())
    #: Prior against warping: a warp alpha must lower the envelope distance by more than
    #: ``warp_penalty * |ln alpha|`` of the unwarped distance (score = d(alpha) +
    #: penalty * |ln alpha| * d(1)). Average envelopes of different words differ in shape
    #: for reasons other than vocal-tract length; without the prior those differences pull
    #: alpha off 1. On eSpeak voices with known formant scaling, 1.0 cut the warp error from
    #: 5.1% to 3.4% (0.5: 4.1%, 2: 4.7%).
    warp_penalty: float = 1.0
    #: Band (Hz) where envelopes are compared for the warp and the centroid: the formant
    #: region F1..F4; below it the F0 region, above it mostly frication and noise.
    warp_band_hz: tuple[float, float] = (200.0, 5000.0)
    #: Strength of the average-envelope correction (0 = off, 1 = full).
    envelope_correction: float = 1.0
    #: Gaussian smoothing (std, Hz) of the envelope correction along frequency. On the eSpeak
    #: benchmark 150 Hz beat 300 and 600 Hz (91.8% vs 90.0% of pairs improved); narrower
    #: starts to copy the reference's words rather than its voice.
    envelope_smoothing_hz: float = 150.0
    #: Bound of the envelope correction in dB, either way.
    max_envelope_correction_db: float = 12.0
    #: 1: the envelope correction applies to voiced frames only (where the averages were
    #: measured); 0: to every frame. Fricatives and silence have their own spectra, and
    #: colouring them with a voiced-speech difference of up to 12 dB made voices less alike.
    correction_voiced_only: float = 1.0
    #: Std (ms) of the Gaussian fade of that voiced-only weight between frames.
    correction_fade_ms: float = 10.0
    #: Band (Hz) where the envelope correction applies; it fades to 0 outside (the DC region
    #: and the top octave carry no reliable voice information in an average).
    correction_band_hz: tuple[float, float] = (80.0, 7000.0)

    def __post_init__(self) -> None:
        if not 0 < self.f0_floor_hz < self.f0_ceil_hz:
            raise ValueError(f"need 0 < f0_floor_hz < f0_ceil_hz, got {self.f0_floor_hz}, {self.f0_ceil_hz}")
        if self.frame_period_ms <= 0:
            raise ValueError(f"frame_period_ms must be positive, got {self.frame_period_ms}")
        if not self.warp_grid or min(self.warp_grid) <= 0:
            raise ValueError(f"warp_grid must hold positive factors, got {self.warp_grid}")
        lo, hi = self.f0_std_ratio_bounds
        if not 0 < lo <= hi:
            raise ValueError(f"f0_std_ratio_bounds must satisfy 0 < low <= high, got {self.f0_std_ratio_bounds}")


@dataclass
class SpeakerStats:
    """What WORLD VC needs to know about a voice; cache it with ``np.savez(path, **s.to_arrays())``."""

    #: Mean of log F0 (natural log of Hz) over voiced frames.
    f0_log_mean: float
    #: Standard deviation of log F0 over voiced frames.
    f0_log_std: float
    #: Mean natural-log power envelope over voiced frames, on WORLD's FFT grid
    #: (``fft_size // 2 + 1`` bins from 0 Hz to ``sample_rate / 2``).
    log_envelope: NDArray[np.float64]
    #: Spectral centroid of the average envelope in ``warp_band_hz`` divided by
    #: ``REFERENCE_CENTROID_HZ``: > 1 means formants higher than the reference (shorter
    #: vocal tract). The ratio of two speakers' values estimates their formant warp.
    formant_ratio: float
    #: Sample rate of the audio the statistics came from (defines the envelope's grid).
    sample_rate: int
    #: Share of analysed frames that were voiced (0..1): a quality hint for callers.
    voiced_fraction: float
    #: Voiced speech measured, in seconds.
    voiced_seconds: float = 0.0
    version: int = field(default=STATS_VERSION)

    @property
    def f0_mean_hz(self) -> float:
        """Geometric mean F0 in Hz (``exp`` of the log mean)."""
        return float(math.exp(self.f0_log_mean))

    @property
    def frequencies_hz(self) -> NDArray[np.float64]:
        """Frequency (Hz) of each bin of :attr:`log_envelope`."""
        return np.linspace(0.0, self.sample_rate / 2.0, len(self.log_envelope))

    def to_arrays(self) -> dict[str, NDArray]:
        """Plain arrays for ``np.savez`` (no pickles, so ``np.load`` needs no ``allow_pickle``)."""
        return {
            "version": np.asarray(self.version, dtype=np.int64),
            "f0_log_mean": np.asarray(self.f0_log_mean, dtype=np.float64),
            "f0_log_std": np.asarray(self.f0_log_std, dtype=np.float64),
            "log_envelope": np.asarray(self.log_envelope, dtype=np.float64),
            "formant_ratio": np.asarray(self.formant_ratio, dtype=np.float64),
            "sample_rate": np.asarray(self.sample_rate, dtype=np.int64),
            "voiced_fraction": np.asarray(self.voiced_fraction, dtype=np.float64),
            "voiced_seconds": np.asarray(self.voiced_seconds, dtype=np.float64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, ArrayLike] | np.lib.npyio.NpzFile) -> SpeakerStats:
        """Inverse of :meth:`to_arrays`; accepts the mapping ``np.load`` returns."""
        names = ("version", "f0_log_mean", "f0_log_std", "log_envelope", "formant_ratio",
                 "sample_rate", "voiced_fraction", "voiced_seconds")
        missing = [n for n in names if n not in arrays]
        if missing:
            raise ValueError(f"speaker statistics are missing {missing}: they were not written by "
                             "SpeakerStats.to_arrays; estimate them again from the reference audio")
        version = int(np.asarray(arrays["version"]))
        if version != STATS_VERSION:
            raise ValueError(f"speaker statistics have version {version}, this engine reads version "
                             f"{STATS_VERSION}; delete the cached file and estimate them again")
        return cls(
            f0_log_mean=float(np.asarray(arrays["f0_log_mean"])),
            f0_log_std=float(np.asarray(arrays["f0_log_std"])),
            log_envelope=np.asarray(arrays["log_envelope"], dtype=np.float64).copy(),
            formant_ratio=float(np.asarray(arrays["formant_ratio"])),
            sample_rate=int(np.asarray(arrays["sample_rate"])),
            voiced_fraction=float(np.asarray(arrays["voiced_fraction"])),
            voiced_seconds=float(np.asarray(arrays["voiced_seconds"])),
            version=version,
        )


# --------------------------------------------------------------------------- WORLD analysis


@dataclass
class WorldFeatures:
    """WORLD decomposition of one waveform, so one analysis can be converted to several voices.

    Input too short to analyse (fewer than ``MIN_FRAMES`` frames) or all zeros has no frames;
    converting it returns ``wave`` unchanged.
    """

    f0: NDArray[np.float64]  # (frames,), 0 where unvoiced
    envelope: NDArray[np.float64]  # (frames, fft_size // 2 + 1), power spectral envelope
    aperiodicity: NDArray[np.float64]  # same shape; empty when not computed
    fft_size: int
    sample_rate: int
    wave: NDArray[np.float64]  # the analysed samples

    @property
    def n_frames(self) -> int:
        return len(self.f0)


def analyse(wave: ArrayLike, sample_rate: int, config: WorldVCConfig | None = None,
            f0_method: F0Method | None = None, with_aperiodicity: bool = True) -> WorldFeatures:
    """F0 (Harvest, or Dio + StoneMask), CheapTrick envelope and D4C aperiodicity of one waveform.

    ``f0_method`` defaults to ``config.convert_f0_method``.
    """
    cfg = config or WorldVCConfig()
    x = np.ascontiguousarray(np.asarray(wave, dtype=np.float64).reshape(-1))
    fft_size = int(pyworld.get_cheaptrick_fft_size(sample_rate, cfg.f0_floor_hz))
    fp = cfg.frame_period_ms
    if len(x) < MIN_FRAMES * fp * sample_rate / 1000.0 or not np.any(x):
        bins = fft_size // 2 + 1
        return WorldFeatures(np.zeros(0), np.zeros((0, bins)), np.zeros((0, bins)), fft_size, sample_rate, x)
    method = f0_method or cfg.convert_f0_method
    if method == "harvest":
        f0, times = pyworld.harvest(x, sample_rate, f0_floor=cfg.f0_floor_hz, f0_ceil=cfg.f0_ceil_hz, frame_period=fp)
    elif method == "dio":
        f0, times = pyworld.dio(x, sample_rate, f0_floor=cfg.f0_floor_hz, f0_ceil=cfg.f0_ceil_hz, frame_period=fp)
        f0 = pyworld.stonemask(x, f0, times, sample_rate)
    else:
        raise ValueError(f"unknown F0 method {method!r}: use 'harvest' or 'dio'")
    envelope = pyworld.cheaptrick(x, f0, times, sample_rate, f0_floor=cfg.f0_floor_hz, fft_size=fft_size)
    aperiodicity = (pyworld.d4c(x, f0, times, sample_rate, fft_size=fft_size)
                    if with_aperiodicity else np.zeros((0, fft_size // 2 + 1)))
    return WorldFeatures(f0, envelope, aperiodicity, fft_size, sample_rate, x)


def _hz_to_mel(hz: NDArray[np.float64] | float) -> NDArray[np.float64]:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: NDArray[np.float64]) -> NDArray[np.float64]:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def _mel_grid(band_hz: tuple[float, float], nyquist: float) -> NDArray[np.float64]:
    """Mel-spaced frequencies in ``band_hz`` (clipped below Nyquist) for envelope comparison."""
    lo, hi = band_hz[0], min(band_hz[1], nyquist * 0.98)
    return _mel_to_hz(np.linspace(_hz_to_mel(lo), _hz_to_mel(hi), MEL_GRID_POINTS))


def _centroid_ratio(log_envelope: NDArray[np.float64], sample_rate: int, config: WorldVCConfig) -> float:
    """Centroid of the average envelope's *dB above its band minimum* on a mel grid, over the reference.

    The dB-above-minimum weighting follows the formant peaks rather than the steep low-frequency
    energy that a power-weighted centroid would sit on.
    """
    freqs = np.linspace(0.0, sample_rate / 2.0, len(log_envelope))
    grid = _mel_grid(config.warp_band_hz, sample_rate / 2.0)
    db = np.interp(grid, freqs, log_envelope) * DB_PER_NEPER_POWER
    weight = db - db.min()
    if weight.sum() <= 0:
        return 1.0
    return float(np.sum(grid * weight) / np.sum(weight) / REFERENCE_CENTROID_HZ)


def _stats_from_features(feats: WorldFeatures, config: WorldVCConfig, min_voiced_s: float,
                         what: str) -> SpeakerStats:
    """Statistics of one analysed waveform; ``ValueError`` when it has too little voicing."""
    sample_rate = feats.sample_rate
    voiced = feats.f0 > 0
    voiced_s = float(voiced.sum()) * config.frame_period_ms / 1000.0
    if voiced_s < min_voiced_s:
        raise ValueError(
            f"{what} has {voiced_s:.2f} s of voiced speech, at least {min_voiced_s:.2f} s is needed "
            "to estimate a voice; give a longer clip of the speaker talking (not silence, music or whispering)")
    log_f0 = np.log(feats.f0[voiced])
    log_env = np.log(np.maximum(feats.envelope[voiced], ENVELOPE_FLOOR)).mean(axis=0)
    return SpeakerStats(
        f0_log_mean=float(log_f0.mean()),
        f0_log_std=float(log_f0.std()),
        log_envelope=log_env,
        formant_ratio=_centroid_ratio(log_env, sample_rate, config),
        sample_rate=int(sample_rate),
        voiced_fraction=float(voiced.mean()) if len(voiced) else 0.0,
        voiced_seconds=voiced_s,
    )


def estimate_stats(reference_wave: ArrayLike, sample_rate: int,
                   config: WorldVCConfig | None = None) -> SpeakerStats:
    """Summarise a speaker from a reference clip (mono float audio, ideally several seconds).

    Raises ``ValueError`` when the clip is silent or has less than ``config.min_voiced_s`` of
    voiced speech, saying what was found and what to give instead.
    """
    cfg = config or WorldVCConfig()
    wave = np.asarray(reference_wave, dtype=np.float64).reshape(-1)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    rms = float(np.sqrt(np.mean(wave**2))) if len(wave) else 0.0
    if rms <= 10.0 ** (SILENCE_DBFS / 20.0):
        level = f"{20 * math.log10(rms):.0f} dBFS" if rms > 0 else "digital silence"
        raise ValueError(
            f"the reference audio is silent ({level}, {len(wave) / sample_rate:.2f} s): the speaker's voice "
            "cannot be estimated; give a clip where the speaker talks for at least "
            f"{cfg.min_voiced_s:.0f} s")
    if len(wave) < MIN_FRAMES * cfg.frame_period_ms * sample_rate / 1000.0:
        raise ValueError(f"the reference audio is {len(wave)} samples long, far too short to estimate a voice; "
                         f"give a clip with at least {cfg.min_voiced_s:.0f} s of voiced speech")
    feats = analyse(wave, sample_rate, cfg, cfg.estimate_f0_method, with_aperiodicity=False)
    return _stats_from_features(feats, cfg, cfg.min_voiced_s, "the reference audio")


# --------------------------------------------------------------------------- envelope maths


def _envelope_on_grid(stats: SpeakerStats, freqs: NDArray[np.float64]) -> NDArray[np.float64]:
    """The stats' average log envelope at ``freqs`` (any sample rate / FFT size)."""
    return np.interp(freqs, stats.frequencies_hz, stats.log_envelope)


def _warp_log_envelope(log_env: NDArray[np.float64], alpha: float) -> NDArray[np.float64]:
    """``out(f) = in(f / alpha)`` on the same linear bin grid (last axis), by linear interpolation.

    ``alpha > 1`` moves formants up; bins whose source lies above Nyquist take the top bin.
    """
    if alpha == 1.0:
        return log_env.copy()
    n = log_env.shape[-1]
    pos = np.minimum(np.arange(n) / alpha, n - 1.0)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    frac = pos - i0
    return log_env[..., i0] * (1.0 - frac) + log_env[..., i1] * frac


def _shape_distance(a_db: NDArray[np.float64], b_db: NDArray[np.float64]) -> float:
    """RMS of ``a - b`` after removing its best straight line: a log-spectral distance of shape only.

    The line (over the mel-grid index) takes out the level and the spectral tilt, which depend
    on loudness, phonation and microphone rather than on where the formants sit; on synthetic
    voices with random vowel content this halved the warp error (mean 4.3% -> 2.4%).
    """
    d = a_db - b_db
    x = np.linspace(-1.0, 1.0, len(d))
    slope, offset = np.polyfit(x, d, 1)
    return float(np.sqrt(np.mean((d - slope * x - offset) ** 2)))


def warp_ratio(src: SpeakerStats, tgt: SpeakerStats, config: WorldVCConfig | None = None) -> float:
    """Formant warp factor alpha that takes ``src``'s formants to ``tgt``'s (see module docs)."""
    cfg = config or WorldVCConfig()
    lo, hi = min(cfg.warp_grid), max(cfg.warp_grid)
    if cfg.warp_method == "none":
        return 1.0
    if cfg.warp_method == "centroid":
        return float(np.clip(tgt.formant_ratio / src.formant_ratio, lo, hi))
    if cfg.warp_method != "envelope":
        raise ValueError(f"unknown warp_method {cfg.warp_method!r}: use 'envelope', 'centroid' or 'none'")
    nyquist = min(src.sample_rate, tgt.sample_rate) / 2.0
    grid = _mel_grid(cfg.warp_band_hz, nyquist)
    tgt_db = _envelope_on_grid(tgt, grid) * DB_PER_NEPER_POWER
    alphas = np.asarray(cfg.warp_grid, dtype=np.float64)
    # The warped source at f is the source at f / alpha.
    dists = np.array([_shape_distance(_envelope_on_grid(src, grid / a) * DB_PER_NEPER_POWER, tgt_db) for a in alphas])
    unwarped = _shape_distance(_envelope_on_grid(src, grid) * DB_PER_NEPER_POWER, tgt_db)
    scores = dists + cfg.warp_penalty * np.abs(np.log(alphas)) * unwarped
    best = np.flatnonzero(scores <= scores.min() + 1e-12)
    return float(alphas[best[np.argmin(np.abs(np.log(alphas[best])))]])  # ties: the smaller warp


def _band_weight(freqs: NDArray[np.float64], band_hz: tuple[float, float], nyquist: float) -> NDArray[np.float64]:
    """1 inside ``band_hz`` (clipped to ``nyquist``), raised-cosine fades of 1/4 octave outside."""
    lo, hi = band_hz[0], min(band_hz[1], nyquist)
    w = np.ones_like(freqs)
    fade = 2.0 ** 0.25
    below = freqs < lo
    w[below] = 0.5 - 0.5 * np.cos(np.pi * np.clip((freqs[below] - lo / fade) / (lo - lo / fade), 0.0, 1.0))
    above = freqs > hi
    w[above] = 0.5 + 0.5 * np.cos(np.pi * np.clip((freqs[above] - hi) / (hi * fade - hi), 0.0, 1.0))
    return w


def _envelope_correction(src: SpeakerStats, tgt: SpeakerStats, alpha: float, freqs: NDArray[np.float64],
                         config: WorldVCConfig) -> NDArray[np.float64]:
    """Log-power correction per bin of ``freqs``: smoothed, level-free, bounded tgt - warped src."""
    if config.envelope_correction <= 0:
        return np.zeros_like(freqs)
    nyquist = min(src.sample_rate, tgt.sample_rate) / 2.0
    diff_db = (_envelope_on_grid(tgt, freqs) - _envelope_on_grid(src, freqs / alpha)) * DB_PER_NEPER_POWER
    weight = _band_weight(freqs, config.correction_band_hz, nyquist)
    bin_hz = freqs[1] - freqs[0]
    smoothed = gaussian_filter1d(diff_db, sigma=max(config.envelope_smoothing_hz / bin_hz, 1e-3), mode="nearest")
    smoothed -= np.sum(smoothed * weight) / max(np.sum(weight), 1e-12)  # keep loudness: no net gain
    bound = config.max_envelope_correction_db
    corr_db = np.clip(smoothed, -bound, bound) * weight * config.envelope_correction
    return corr_db / DB_PER_NEPER_POWER


# --------------------------------------------------------------------------- conversion


def _voicing_weight(f0: NDArray[np.float64], config: WorldVCConfig) -> NDArray[np.float64]:
    """Per-frame weight of the envelope correction: 1 on voiced frames, 0 on the others, with
    ``correction_fade_ms`` ramps so the colour does not switch on and off abruptly."""
    voiced = (f0 > 0).astype(np.float64)
    if config.correction_voiced_only <= 0:
        return np.ones_like(voiced)
    sigma = config.correction_fade_ms / config.frame_period_ms
    smooth = gaussian_filter1d(voiced, sigma, mode="nearest") if sigma > 0 else voiced
    return 1.0 - config.correction_voiced_only * (1.0 - smooth)


def _map_f0(f0: NDArray[np.float64], src: SpeakerStats, tgt: SpeakerStats,
            config: WorldVCConfig) -> NDArray[np.float64]:
    """Gaussian log-F0 mapping of voiced frames; unvoiced frames stay 0."""
    voiced = f0 > 0
    out = np.zeros_like(f0)
    lo, hi = config.f0_std_ratio_bounds
    ratio = float(np.clip(tgt.f0_log_std / max(src.f0_log_std, 1e-6), lo, hi))
    log_f0 = tgt.f0_log_mean + (np.log(f0[voiced]) - src.f0_log_mean) * ratio
    out[voiced] = np.exp(log_f0)
    return out


def convert_features(feats: WorldFeatures, src_stats: SpeakerStats | None, tgt_stats: SpeakerStats,
                     config: WorldVCConfig | None = None) -> NDArray[np.float64]:
    """Convert one analysed waveform (see :func:`analyse`) to the target voice; same length.

    ``src_stats=None`` estimates them from the features. Features without frames or without
    voiced speech come back as the analysed samples, unchanged.
    """
    cfg = config or WorldVCConfig()
    n, sample_rate = len(feats.wave), feats.sample_rate
    if feats.n_frames == 0:
        return feats.wave.copy()
    src = src_stats
    if src is None:
        try:
            src = _stats_from_features(feats, cfg, cfg.min_self_voiced_s, "the input")
        except ValueError:
            logger.info("WORLD VC: %.2f s input has almost no voiced speech; returned unchanged", n / sample_rate)
            return feats.wave.copy()
    alpha = warp_ratio(src, tgt_stats, cfg)
    freqs = np.linspace(0.0, sample_rate / 2.0, feats.fft_size // 2 + 1)
    correction = _envelope_correction(src, tgt_stats, alpha, freqs, cfg)
    log_env = _warp_log_envelope(np.log(np.maximum(feats.envelope, ENVELOPE_FLOOR)), alpha)
    log_env += _voicing_weight(feats.f0, cfg)[:, None] * correction[None, :]
    f0 = _map_f0(feats.f0, src, tgt_stats, cfg)
    y = pyworld.synthesize(f0, np.ascontiguousarray(np.exp(log_env)), feats.aperiodicity,
                           sample_rate, cfg.frame_period_ms)
    return fit_length(y, n)


def _check_batch(waves: ArrayLike, lengths: ArrayLike | None) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Validate a padded batch; a 1-D waveform is a batch of one."""
    x = np.asarray(waves, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"waves must be (B, T), got shape {x.shape}")
    lens = (np.full(len(x), x.shape[1], dtype=np.int64) if lengths is None
            else np.asarray(lengths, dtype=np.int64).reshape(-1))
    if len(lens) != len(x) or (lens < 0).any() or (lens > x.shape[1]).any():
        raise ValueError(f"lengths {lens.tolist()} do not fit waves of shape {x.shape}")
    return x, lens


def convert(waves: ArrayLike, lengths: ArrayLike | None, sample_rate: int,
            src_stats: SpeakerStats | Sequence[SpeakerStats | None] | None, tgt_stats: SpeakerStats,
            config: WorldVCConfig | None = None) -> NDArray[np.float32]:
    """Convert a padded batch ``(B, T)`` to the target voice; returns ``(B, T)`` float32.

    Every item keeps exactly its length (``lengths`` stay valid; padding stays zero).
    ``src_stats=None`` (or ``None`` for an item) estimates the source statistics from that
    item itself, which is what a dubbing pipeline wants for TTS output. Items shorter than a
    few frames, silent, or without voiced speech are returned unchanged.
    """
    cfg = config or WorldVCConfig()
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    x, lens = _check_batch(waves, lengths)
    srcs: list[SpeakerStats | None]
    if src_stats is None or isinstance(src_stats, SpeakerStats):
        srcs = [src_stats] * len(x)
    else:
        srcs = list(src_stats)
        if len(srcs) != len(x):
            raise ValueError(f"got {len(srcs)} source statistics for a batch of {len(x)}")
    out = np.zeros_like(x)
    for i, (n, src) in enumerate(zip(lens, srcs)):
        out[i, :n] = convert_features(analyse(x[i, :n], sample_rate, cfg), src, tgt_stats, cfg)
    return out


def shift_voice(waves: ArrayLike, lengths: ArrayLike | None, sample_rate: int, pitch_ratio: float = 1.0,
                formant_ratio: float = 1.0, config: WorldVCConfig | None = None) -> NDArray[np.float32]:
    """Scale pitch and formants by fixed ratios (WORLD analysis/resynthesis), keeping lengths.

    A voice-design tool: it makes new, consistent voices from one TTS voice (a benchmark needs
    many distinct speakers) or nudges a voice by hand. ``formant_ratio > 1`` shortens the
    apparent vocal tract.
    """
    cfg = config or WorldVCConfig()
    if pitch_ratio <= 0 or formant_ratio <= 0:
        raise ValueError(f"pitch_ratio and formant_ratio must be positive, got {pitch_ratio}, {formant_ratio}")
    x, lens = _check_batch(waves, lengths)
    out = np.zeros_like(x)
    for i, n in enumerate(lens):
        feats = analyse(x[i, :n], sample_rate, cfg)
        if feats.n_frames == 0:
            out[i, :n] = x[i, :n]
            continue
        log_env = _warp_log_envelope(np.log(np.maximum(feats.envelope, ENVELOPE_FLOOR)), formant_ratio)
        y = pyworld.synthesize(feats.f0 * pitch_ratio, np.ascontiguousarray(np.exp(log_env)),
                               feats.aperiodicity, sample_rate, cfg.frame_period_ms)
        out[i, :n] = fit_length(y, int(n))
    return out
