"""Every limit QC applies, resolved from the settings for one job's engines.

The speaker-similarity floor depends on the engine set: reference engines
(eSpeak + WORLD) are held to a floor that catches gross mismatches, neural
voice conversion or a cloning TTS to the research target (the registry says
which engines give a neural voice).
"""

from __future__ import annotations

from dataclasses import dataclass

from handlers.runtime.settings import Settings
from schemas.registry import engine


@dataclass(frozen=True)
class Thresholds:
    """Every limit QC applies, resolved from settings for one job's engines."""

    engine_set: str
    similarity_min: float
    similarity_gates: bool
    timing_tolerance_s: float
    timing_min_share: float
    end_tolerance_s: float
    max_speedup: float
    max_silence_gap_s: float
    max_clipped_share: float
    loudness_target_lufs: float
    loudness_tolerance_lu: float
    true_peak_ceiling_dbfs: float
    true_peak_tolerance_db: float
    av_offset_max_s: float
    av_search_s: float
    av_min_correlation: float
    av_gates: bool
    max_wer: float
    max_wer_increase: float

    @classmethod
    def for_job(cls, settings: Settings, engines: dict[str, str]) -> Thresholds:
        """Thresholds for a job made with ``engines`` (``{"tts": .., "vc": .., "lipsync": ..}``).

        Why per engine set: GE2E similarity of eSpeak voices converted by WORLD lands at
        0.53-0.79 against a source clip, while neural VC is expected to reach 0.85. Without
        voice conversion and without a cloning TTS the dub keeps the TTS voice by the
        user's choice, so similarity is reported but only warns. Without lip sync the
        output shows the source's lips, so AV sync only warns too.

        Intelligibility gates for every engine set: a dub the audience cannot follow is
        not deliverable whichever engines made it, and neither the reference engines
        nor neural ones are excused from saying the subtitle's words. The loss from
        voice conversion gates whenever conversion runs, for the same reason: a reference
        converter gets a lower similarity floor because GE2E cannot rate it higher, not
        licence to garble words.
        """
        engine_set = voice_engine_set(engines)
        vc = engines.get("vc", "none")
        return cls(
            engine_set=engine_set,
            similarity_min=(settings.qc_similarity_min_neural if engine_set == "neural"
                            else settings.qc_similarity_min_reference),
            similarity_gates=vc != "none" or _clones_voice("tts", engines),
            timing_tolerance_s=settings.qc_timing_tolerance_s,
            timing_min_share=settings.qc_timing_min_share,
            end_tolerance_s=settings.qc_end_tolerance_s,
            max_speedup=settings.max_speedup,
            max_silence_gap_s=settings.qc_max_silence_gap_s,
            max_clipped_share=settings.qc_max_clipped_share,
            loudness_target_lufs=settings.loudness_target_lufs,
            loudness_tolerance_lu=settings.qc_loudness_tolerance_lu,
            true_peak_ceiling_dbfs=settings.true_peak_dbfs,
            true_peak_tolerance_db=settings.qc_true_peak_tolerance_db,
            av_offset_max_s=settings.qc_av_offset_max_ms / 1000.0,
            av_search_s=settings.qc_av_search_ms / 1000.0,
            av_min_correlation=settings.qc_av_min_correlation,
            av_gates=engines.get("lipsync", "none") != "none",
            max_wer=settings.qc_max_wer,
            max_wer_increase=settings.qc_max_wer_increase,
        )


def _clones_voice(kind: str, engines: dict[str, str]) -> bool:
    """Whether the job's engine of ``kind`` gives the voice by a neural model (the registry says)."""
    name = engines.get(kind, "none")
    return name != "none" and engine(kind, name).neural_voice


def voice_engine_set(engines: dict[str, str]) -> str:
    """``"neural"`` when the voice comes from neural VC or a cloning TTS, else ``"reference"``."""
    vc = engines.get("vc", "none")
    if _clones_voice("vc", engines) or (vc == "none" and _clones_voice("tts", engines)):
        return "neural"
    return "reference"
