"""Voice-conversion quality: does converting move speech towards the reference speaker?

The measure is the one a dubbing user cares about: the GE2E speaker-encoder cosine similarity
between the dubbed line and the original speaker's reference clip, before and after voice
conversion. With no recordings allowed in the repo, speakers are made: eSpeak NG voice variants
and pitches, plus extra voices derived from them by shifting pitch and formants with WORLD.

For each ordered pair (source voice A, target voice B):

* A speaks ``source_text`` (the line to convert);
* B speaks ``reference_texts`` (other words: the reference clip of the original speaker);
* ``before = cos(E(A line), E(B reference))``,
  ``after = cos(E(convert(A line -> stats(B reference))), E(B reference))``.

Every voice, shifted or not, goes through one WORLD analysis/resynthesis when it is made, so the
vocoder's own colouring, which conversion adds, cannot pass for similarity to WORLD-made voices.

Used by ``tests/test_world_vc.py`` (the issue's quality bar: ``after > before`` for >= 90% of
pairs) and by the benchmark runner. Measured with the default voices and ``WorldVCConfig()``:
110 pairs, 102 improved (92.7%), mean similarity 0.733 -> 0.849 (mean gain +0.116, median
+0.124). What does not improve: targets whose difference is the excitation (eSpeak's Klatt
source, which WORLD replaces with its own) and pairs that were already nearly the same voice.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from engines.asr import PocketsphinxRecognizer
from engines.espeak.tts import EspeakTTS
from engines.speaker import SpeakerEncoder, similarity
from engines.world_vc import (
    SpeakerStats,
    WorldFeatures,
    WorldVCConfig,
    analyse,
    convert_features,
    estimate_stats,
    shift_voice,
    warp_ratio,
)
from handlers.quality.text import error_rate
from handlers.runtime.settings import Settings

__all__ = ["DEFAULT_VOICES", "PairResult", "Voice", "evaluate_vc_pairs", "render_voice", "summarize"]

#: The line every source voice speaks (about 4 s in English at eSpeak's normal rate).
SOURCE_TEXT = "Every morning she walks to the old market to buy fresh bread and a little cheese."
#: The reference clip every target voice speaks: different words, about 8 s, as a scene would give.
REFERENCE_TEXTS = (
    "The quick brown fox jumps over the lazy dog while the children watch from the window.",
    "We should probably leave before the storm arrives, the roads will be flooded soon.",
)
#: Lines each source voice also speaks when intelligibility is measured: with the source line,
#: 36 words in all, so one misheard word moves a pair's WER by 0.03, not the 0.06 of the
#: source line alone.
EXTRA_INTELLIGIBILITY_TEXTS = (
    "Good morning everyone, how are you today?",
    "The weather is lovely today, let's have lunch together in the park.",
)
#: The bar of issue 12 item 3, QC's own default (``POLYDUB_QC_MAX_WER_INCREASE``): conversion
#: may raise a pair's WER by at most this much.
WER_INCREASE_BOUND: float = Settings.model_fields["qc_max_wer_increase"].default


@dataclass(frozen=True)
class Voice:
    """A made speaker: an eSpeak variant and pitch, then a WORLD pitch/formant shift."""

    name: str
    variant: str | None = None
    #: eSpeak pitch in Hz (None: the variant's own).
    pitch_hz: float | None = None
    #: WORLD shift applied after synthesis (1.0: none).
    pitch_ratio: float = 1.0
    formant_ratio: float = 1.0


#: Distinct voices: eSpeak's default male and five variants (male, female, Klatt), two
#: eSpeak pitches, and three WORLD-derived voices (a higher, shorter-tract male; a deeper,
#: longer-tract female; a child-like voice). Whisper variants are left out: they have no
#: voicing, so there is no F0 to convert.
DEFAULT_VOICES: tuple[Voice, ...] = (
    Voice("en"),
    Voice("en+m3", "m3"),
    Voice("en+m7", "m7"),
    Voice("en+f2", "f2"),
    Voice("en+f4", "f4"),
    Voice("en+klatt", "klatt"),
    Voice("en@80Hz", None, pitch_hz=80.0),
    Voice("en+f2@260Hz", "f2", pitch_hz=260.0),
    Voice("en~up", None, pitch_ratio=1.35, formant_ratio=1.12),
    Voice("en+f4~down", "f4", pitch_ratio=0.8, formant_ratio=0.9),
    Voice("en+m3~child", "m3", pitch_ratio=2.0, formant_ratio=1.2),
)


@dataclass(frozen=True)
class PairResult:
    """One source -> target conversion and its effect on speaker similarity."""

    source: str
    target: str
    similarity_before: float
    similarity_after: float
    #: Similarity of the target voice's own line to its reference: the ceiling a perfect
    #: conversion could reach (same voice, different words).
    target_self_similarity: float
    #: Formant warp the converter chose, and geometric-mean F0 (Hz) of source and target.
    warp: float
    source_f0_hz: float
    target_f0_hz: float
    #: Seconds of audio converted and wall-clock seconds the conversion took.
    audio_s: float
    convert_s: float
    #: Word error rate of the recogniser on the source line and :data:`EXTRA_INTELLIGIBILITY_TEXTS`
    #: spoken by the source voice, and on the same lines converted to the target; ``None`` when
    #: not measured.
    wer_before: float | None = None
    wer_after: float | None = None

    @property
    def distinct(self) -> bool:
        """Whether the encoder tells the two voices apart at all: the source line is less like the
        target's reference than the target's own line is. Pairs that fail this (e.g. one eSpeak
        voice at two nearby pitches) have nothing to gain; conversion can only add vocoder loss."""
        return self.similarity_before < self.target_self_similarity

    @property
    def gain(self) -> float:
        """How much closer to the target conversion brought the line (cosine units)."""
        return self.similarity_after - self.similarity_before

    @property
    def wer_increase(self) -> float | None:
        """How many more words the recogniser loses after conversion (``None``: not measured)."""
        if self.wer_before is None or self.wer_after is None:
            return None
        return self.wer_after - self.wer_before

    @property
    def rtf(self) -> float:
        """Real-time factor of the conversion (processing time / audio time)."""
        return self.convert_s / self.audio_s


def render_voice(tts: EspeakTTS, voice: Voice, texts: Sequence[str], lang: str = "en",
                 config: WorldVCConfig | None = None) -> tuple[NDArray[np.float32], NDArray[np.int64], int]:
    """``voice`` speaking ``texts``: padded ``(B, T)`` audio, lengths, sample rate."""
    n = len(texts)
    waves, lengths = tts.synthesize(list(texts), [lang] * n, None,
                                    np.full(n, np.nan if voice.pitch_hz is None else voice.pitch_hz),
                                    [voice.variant] * n)
    rate = tts.config.sample_rate
    waves = shift_voice(waves, lengths, rate, voice.pitch_ratio, voice.formant_ratio, config)
    return waves, lengths, rate


def _join(waves: NDArray[np.float32], lengths: NDArray[np.int64], rate: int, gap_s: float = 0.3) -> NDArray[np.float32]:
    """Items one after another with a short pause: one reference clip."""
    gap = np.zeros(int(gap_s * rate), dtype=np.float32)
    parts = [p for w, n in zip(waves, lengths) for p in (w[:n], gap)]
    return np.concatenate(parts[:-1])


def evaluate_vc_pairs(
    voices: Sequence[Voice] = DEFAULT_VOICES,
    pairs: Sequence[tuple[int, int]] | None = None,
    config: WorldVCConfig | None = None,
    encoder: SpeakerEncoder | None = None,
    tts: EspeakTTS | None = None,
    source_text: str = SOURCE_TEXT,
    reference_texts: Sequence[str] = REFERENCE_TEXTS,
    lang: str = "en",
    recognizer: PocketsphinxRecognizer | None = None,
    extra_texts: Sequence[str] = EXTRA_INTELLIGIBILITY_TEXTS,
) -> list[PairResult]:
    """Convert each source voice's line to each target voice; see the module docs.

    ``pairs`` are (source index, target index) into ``voices``; default: every ordered pair
    of distinct voices. With a ``recognizer``, each source voice also speaks ``extra_texts``,
    converted the same way, and the pair records the word error rate of ``source_text`` and
    those lines before and after conversion (similarity stays on ``source_text``).
    """
    cfg = config or WorldVCConfig()
    encoder = encoder or SpeakerEncoder.load()
    tts = tts or EspeakTTS()
    if pairs is None:
        pairs = list(itertools.permutations(range(len(voices)), 2))

    lines: dict[int, NDArray[np.float32]] = {}
    refs: dict[int, tuple[SpeakerStats, NDArray[np.float32]]] = {}
    rate = tts.config.sample_rate
    for i in sorted({i for pair in pairs for i in pair}):
        waves, lengths, rate = render_voice(tts, voices[i], [source_text, *reference_texts], lang, cfg)
        lines[i] = waves[0, : lengths[0]]
        reference = _join(waves[1:], lengths[1:], rate)
        refs[i] = (estimate_stats(reference, rate, cfg), encoder.embed_one(reference, rate))
    line_embeds = {i: encoder.embed_one(line, rate) for i, line in lines.items()}
    source_stats = {i: estimate_stats(line, rate, cfg) for i, line in lines.items()}
    # Each source line is analysed once and converted to every target (what `convert` does per
    # call, split in two); the analysis time counts in every pair's conversion time.
    analysed: dict[int, tuple[WorldFeatures, float]] = {}
    for i in sorted({src for src, _ in pairs}):
        start = time.perf_counter()
        analysed[i] = (analyse(lines[i], rate, cfg), time.perf_counter() - start)

    heard_texts = (source_text, *extra_texts)
    spoken: dict[int, tuple[list[WorldFeatures], float]] = {}
    if recognizer is not None:
        for i in sorted({src for src, _ in pairs}):
            waves, lengths, _ = render_voice(tts, voices[i], extra_texts, lang, cfg)
            extras = [waves[k, : lengths[k]] for k in range(len(extra_texts))]
            spoken[i] = ([analyse(c, rate, cfg) for c in extras],
                         _heard_error_rate(recognizer, [lines[i], *extras], rate, heard_texts, lang))

    results = []
    for src, tgt in pairs:
        tgt_stats, tgt_embed = refs[tgt]
        line = lines[src]
        feats, analysis_s = analysed[src]
        start = time.perf_counter()
        converted = convert_features(feats, None, tgt_stats, cfg).astype(np.float32)
        elapsed = analysis_s + time.perf_counter() - start
        results.append(PairResult(
            source=voices[src].name,
            target=voices[tgt].name,
            similarity_before=float(similarity(line_embeds[src], tgt_embed)),
            similarity_after=float(similarity(encoder.embed_one(converted, rate), tgt_embed)),
            target_self_similarity=float(similarity(line_embeds[tgt], tgt_embed)),
            warp=warp_ratio(source_stats[src], tgt_stats, cfg),
            source_f0_hz=source_stats[src].f0_mean_hz,
            target_f0_hz=tgt_stats.f0_mean_hz,
            audio_s=len(line) / rate,
            convert_s=elapsed,
            **_wer_pair(recognizer, spoken.get(src), converted, tgt_stats, cfg, rate, heard_texts, lang),
        ))
    return results


def _heard_error_rate(recognizer: PocketsphinxRecognizer, clips: Sequence[NDArray], rate: int,
                      texts: Sequence[str], lang: str) -> float:
    """WER of the recogniser over all clips, as one text (QC scores a dub's segments together)."""
    heard = " ".join(recognizer.transcribe(c, rate) for c in clips)
    return error_rate(" ".join(texts), heard, lang)


def _wer_pair(recognizer: PocketsphinxRecognizer | None, spoken: tuple[list[WorldFeatures], float] | None,
              converted_line: NDArray[np.float32], tgt_stats: SpeakerStats, cfg: WorldVCConfig, rate: int,
              texts: Sequence[str], lang: str) -> dict[str, float]:
    """``wer_before``/``wer_after`` of one pair (its source line already converted), or nothing
    when intelligibility is not measured."""
    if recognizer is None or spoken is None:
        return {}
    extras, before = spoken
    converted = [converted_line, *(convert_features(f, None, tgt_stats, cfg).astype(np.float32) for f in extras)]
    return {"wer_before": before, "wer_after": _heard_error_rate(recognizer, converted, rate, texts, lang)}


def summarize(results: Sequence[PairResult]) -> dict[str, float]:
    """Headline figures over the distinct pairs: share improved, mean/median gain, mean
    similarities; plus how many pairs there were in all and the mean RTF over all of them."""
    distinct = [r for r in results if r.distinct]
    gains = np.array([r.gain for r in distinct])
    return {
        "pairs": float(len(results)),
        "distinct_pairs": float(len(distinct)),
        "fraction_improved": float(np.mean(gains > 0)),
        "mean_gain": float(gains.mean()),
        "median_gain": float(np.median(gains)),
        "mean_before": float(np.mean([r.similarity_before for r in distinct])),
        "mean_after": float(np.mean([r.similarity_after for r in distinct])),
        "mean_rtf": float(np.mean([r.rtf for r in results])),
        **_wer_summary(results),
    }


def _wer_summary(results: Sequence[PairResult]) -> dict[str, float]:
    """Intelligibility over every measured pair: mean WER before/after, mean and largest
    increase, and the share of pairs within :data:`WER_INCREASE_BOUND` (empty if unmeasured)."""
    measured = [r for r in results if r.wer_increase is not None]
    if not measured:
        return {}
    increases = np.array([r.wer_increase for r in measured])
    return {
        "mean_wer_before": float(np.mean([r.wer_before for r in measured])),
        "mean_wer_after": float(np.mean([r.wer_after for r in measured])),
        "mean_wer_increase": float(increases.mean()),
        "max_wer_increase": float(increases.max()),
        "fraction_wer_within_bound": float(np.mean(increases <= WER_INCREASE_BOUND + 1e-9)),
    }


if __name__ == "__main__":
    found = evaluate_vc_pairs(recognizer=PocketsphinxRecognizer())
    for r in found:
        print(f"{r.source:>14} -> {r.target:<14} before {r.similarity_before:.3f} after {r.similarity_after:.3f} "
              f"gain {r.gain:+.3f} self {r.target_self_similarity:.3f} warp {r.warp:.3f} f0 {r.source_f0_hz:.0f}->{r.target_f0_hz:.0f} Hz "
              f"wer {r.wer_before:.2f}->{r.wer_after:.2f} rtf {r.rtf:.3f}")
    print(summarize(found))
