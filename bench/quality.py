"""Quality of the reference engines, by measurement (issue 3's bars).

* ``vc_quality``: does WORLD conversion move a line towards the reference speaker, and are
  its words still understood? GE2E cosine similarity before and after, over pairs of distinct
  made voices (:mod:`bench.vc_quality`): mean gain and share of pairs improved; and the
  PocketSphinx word error rate of three English lines before and after conversion, per pair,
  with the share of pairs whose WER rose by at most 0.10. The quick run uses six
  contrasting voices in a ring of pairs; ``--full`` every ordered pair of all eleven.
* ``duration``: how close eSpeak TTS lands to a target duration of 0.8x..1.3x its natural
  length (rate control, then WSOLA), as the engine's error in percent; how far rate control
  alone got (what WSOLA had left to stretch); and through the served model, which only ever
  speeds up to fit a slot, for the targets below 1x.
* ``lipsync``: does the warped mouth open with the dub? Correlation per frame between the
  mouth-opening signal measured in the output video and the audio envelope, and the AV
  offset that best aligns the mouth with the dub's level, as QC measures it
  (``handlers.quality.signals.av_offset``, refined between frames; reported in frames, 0 is in sync).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from bench.harness import Context, Row, benchmark, median
from bench.speed import dub_speech
from bench.vc_quality import DEFAULT_VOICES, evaluate_vc_pairs, summarize
from engines.asr import PocketsphinxRecognizer
from serving.batching import join_items
from serving.interfaces import LIPSYNC_INPUTS
from serving.specs import text_inputs

#: Quick VC run: indices into DEFAULT_VOICES of six contrasting voices (eSpeak's default male,
#: a female variant, the Klatt synthesiser, a low-pitched male, and two WORLD-shifted voices).
QUICK_VOICES = (0, 3, 5, 6, 8, 10)
#: Quick VC pairs: each voice to its two ring neighbours and to the opposite voice (18 pairs).
QUICK_PAIR_STEPS = (1, 3, 5)

#: Target durations as multiples of the natural one (issue 3: within 3% for 0.8x..1.3x).
DURATION_FACTORS = (0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
#: Phrases per language for the duration benchmark (from the sample's phrase table).
DURATION_PHRASES_PER_LANG = 2

#: Frames sent per lip-sync call, as the lipsync stage sends them.
LIPSYNC_FRAMES_PER_CALL = 125
#: Largest AV offset searched, in frames (±0.2 s at 25 fps).
MAX_LAG_FRAMES = 5
#: Pause between dub phrases in the lip-sync clip, in seconds (silence must close the mouth).
LIPSYNC_PAUSE_S = 0.4


def _ring_pairs(n: int, steps: Sequence[int]) -> list[tuple[int, int]]:
    return sorted({(i, (i + step) % n) for i in range(n) for step in steps if step % n})


@benchmark("vc_quality")
def vc_quality(ctx: Context) -> list[Row]:
    """WORLD VC: speaker-similarity gain towards the reference and share of pairs improved."""
    if ctx.full:
        voices, pairs = DEFAULT_VOICES, None
    else:
        voices = tuple(DEFAULT_VOICES[i] for i in QUICK_VOICES)
        pairs = _ring_pairs(len(voices), QUICK_PAIR_STEPS)
    results = evaluate_vc_pairs(voices, pairs, recognizer=PocketsphinxRecognizer())
    summary = summarize(results)
    case = "world/" + ("all_pairs" if ctx.full else "quick_pairs")
    n = len(results)
    rows = [Row("vc_quality", case, metric, value, _vc_unit(metric), n) for metric, value in summary.items()]
    # summarize() may leave out pairs the encoder cannot tell apart; these count every pair.
    gains = np.array([r.gain for r in results])
    rows.append(Row("vc_quality", case, "fraction_improved_all_pairs", float(np.mean(gains > 0)), "fraction", n))
    rows.append(Row("vc_quality", case, "mean_gain_all_pairs", float(gains.mean()), "cosine", n))
    for r in results:  # per pair, to see which conversions fail to help
        pair = f"world/{r.source}->{r.target}"
        rows += [Row("vc_quality", pair, "similarity_before", r.similarity_before, "cosine"),
                 Row("vc_quality", pair, "similarity_after", r.similarity_after, "cosine"),
                 Row("vc_quality", pair, "gain", r.gain, "cosine"),
                 Row("vc_quality", pair, "wer_before", r.wer_before, "fraction"),
                 Row("vc_quality", pair, "wer_after", r.wer_after, "fraction")]
    return rows


def _vc_unit(metric: str) -> str:
    """Unit of a :func:`bench.vc_quality.summarize` figure, from its name (the summary may grow)."""
    if metric.endswith("pairs"):
        return "pairs"
    if "rtf" in metric:
        return "s/s"
    return "fraction" if metric.startswith("fraction") or "wer" in metric else "cosine"


def _error_pct(samples: int, rate: int, target_s: float) -> float:
    return abs(samples / rate - target_s) / target_s * 100.0


@benchmark("duration")
def duration_control(ctx: Context) -> list[Row]:
    """eSpeak duration control: error (%) against targets of 0.8x..1.3x the natural length."""
    from engines.espeak.tts import EspeakTTS
    from handlers.sample import PHRASES

    tts = EspeakTTS()
    rate = tts.config.sample_rate
    engine_errors: dict[float, list[float]] = {f: [] for f in DURATION_FACTORS}
    rate_only_errors: dict[float, list[float]] = {f: [] for f in DURATION_FACTORS}
    served_errors: dict[float, list[float]] = {f: [] for f in DURATION_FACTORS if f < 1.0}
    for lang, phrases in sorted(PHRASES.items()):
        for text in phrases[:DURATION_PHRASES_PER_LANG]:
            natural = tts.synthesize_one(text, lang).duration_s
            for factor in DURATION_FACTORS:
                target = factor * natural
                fitted = tts.synthesize_one(text, lang, target)
                engine_errors[factor].append(_error_pct(len(fitted.audio), rate, target))
                rate_only_errors[factor].append(abs(fitted.spoken_s - target) / target * 100.0)
                if factor in served_errors:
                    out = ctx.infer_local("tts_espeak", {**text_inputs("TEXT", [text]), **text_inputs("LANG", [lang]),
                                                         "MAX_DURATION": np.array([[target]], dtype=np.float32)})
                    served_rate = int(out["SAMPLE_RATE"][0, 0])
                    served_errors[factor].append(_error_pct(int(out["WAVEFORM_LENGTH"][0, 0]), served_rate, target))
    rows = [Row("duration", f"tts_espeak/rate_only/x{factor:.1f}", "median_error_pct", median(values), "%",
                len(values)) for factor, values in rate_only_errors.items()]
    for path, errors in (("engine", engine_errors), ("served", served_errors)):
        for factor, values in errors.items():
            case = f"tts_espeak/{path}/x{factor:.1f}"
            rows.append(Row("duration", case, "max_error_pct", max(values), "%", len(values)))
            rows.append(Row("duration", case, "median_error_pct", median(values), "%", len(values)))
        everything = [v for values in errors.values() for v in values]
        rows.append(Row("duration", f"tts_espeak/{path}/all", "max_error_pct", max(everything), "%", len(everything)))
    return rows


@benchmark("lipsync")
def lipsync_sync(ctx: Context) -> list[Row]:
    """Mouth-warp lip sync: mouth opening vs dub audio envelope (correlation, AV offset)."""
    from engines.dsp import frame_rms
    from engines.mouthwarp.measure import frame_levels_db, measure_mouth_signal
    from engines.mouthwarp.tracker import FaceTracker
    from handlers.quality.signals import av_offset

    media = ctx.sample
    rate, fps = media.sample_rate, media.fps
    pause = np.zeros(int(LIPSYNC_PAUSE_S * rate), dtype=np.float32)
    audio = np.concatenate([part for wave in dub_speech(ctx) for part in (pause, wave)] + [pause])
    n_frames = int(audio.size / rate * fps)
    rendered = []
    for start in range(0, n_frames, LIPSYNC_FRAMES_PER_CALL):
        count = min(LIPSYNC_FRAMES_PER_CALL, n_frames - start)
        a, b = int(round(start / fps * rate)), int(round((start + count) / fps * rate))
        out = ctx.infer_local("lipsync_mouthwarp", join_items([{
            "FRAMES": np.repeat(media.still[None], count, axis=0), "AUDIO": audio[a:b],
            "SAMPLE_RATE": np.int32(rate), "FPS": np.float32(fps)}], LIPSYNC_INPUTS))
        rendered.append(out["FRAMES"][0, : int(out["FRAMES_LENGTH"][0, 0])])
    frames = np.concatenate(rendered)
    mouth = measure_mouth_signal(frames, FaceTracker())
    rms = frame_rms(audio, rate, 1.0 / fps, n_frames)
    level_db = frame_levels_db(audio, rate, fps, n_frames)
    ok = np.isfinite(mouth)
    # The offset QC reports (refined between frames), shown here in frames.
    offset_s, r_best, _ = av_offset(mouth, level_db, fps, MAX_LAG_FRAMES)
    lag = math.nan if offset_s is None else offset_s * fps
    case = "lipsync_mouthwarp/sample_face"
    return [
        Row("lipsync", case, "r_mouth_vs_rms", float(np.corrcoef(mouth[ok], rms[ok])[0, 1]), "pearson", int(ok.sum())),
        Row("lipsync", case, "r_mouth_vs_level_db", float(np.corrcoef(mouth[ok], level_db[ok])[0, 1]), "pearson",
            int(ok.sum())),
        Row("lipsync", case, "av_offset", float(lag), "frames", int(ok.sum())),
        Row("lipsync", case, "r_at_best_offset", math.nan if r_best is None else r_best, "pearson", int(ok.sum())),
        Row("lipsync", case, "face_frames_fraction", float(ok.mean()), "fraction", n_frames),
    ]
