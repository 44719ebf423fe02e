"""QC: media with known defects is caught with the right reason, a clean dub passes.

The "job" here is built by the test from generated media, as merging would leave it: a
dub track of eSpeak speech fitted into subtitle slots, a mix normalised to the loudness
target, an H.264 + AAC video of a real face whose lips the mouth-warp engine moved with
the dub, and a reference clip of the speaker. Each defect test changes one thing (shift,
clip, silence, voice, duration, level) and runs the real measurements (speaker encoder
and av_sync through the local inference client) and verdicts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from scipy.signal import resample_poly

from engines.espeak.tts import EspeakTTS
from engines.mouthwarp.warp import MouthWarp
from handlers.cli import main as cli_main
from handlers.quality.measure import JobMedia, asr_languages, measure_intelligibility, measure_job
from handlers.quality.measurements import Intelligibility, Measurements, SegmentTiming, SegmentTranscript
from handlers.quality.page import render_html
from handlers.quality.report import build_report
from handlers.quality.signals import av_offset, clipped_samples, segment_timings, true_peak_dbfs
from handlers.quality.text import error_rate, normalize_for_scoring
from handlers.quality.thresholds import Thresholds, voice_engine_set
from handlers.quality.verdicts import Check, evaluate_checks
from handlers.runtime import keys
from handlers.runtime.inference import ItemsClient, LocalInferenceClient
from handlers.runtime.media import encode_mp4
from handlers.runtime.mix import normalize_loudness
from handlers.runtime.objectstore import LocalObjectStore
from handlers.runtime.served import model_parameters
from handlers.runtime.settings import Settings, get_settings
from handlers.sample import face_layout
from schemas.errors import InputError

RATE = 22_050
MIX_RATE = 48_000
FPS = 25.0
DURATION_S = 7.0
LANG = "ko"
#: (start, end, text) of the subtitle slots; the dub speaks each fitted into its slot.
SLOTS = (
    (0.5, 2.0, "여러분, 좋은 아침이에요."),
    (2.6, 3.9, "오늘 어떻게 지내세요?"),
    (4.6, 6.1, "같이 점심 먹어요."),
)
#: The source speaker: eSpeak's female variant at 210 Hz (as in ``polydub sample``).
SPEAKER_VARIANT, SPEAKER_PITCH_HZ = "f2", 210.0
REFERENCE_TEXTS = ("Good morning, everyone.", "How are you today?", "The weather is nice.",
                   "Thank you very much.")
#: A voice unlike the speaker's: eSpeak's Klatt-synthesis variant, low and male. GE2E puts
#: distinct eSpeak voices closer than real people (0.45-0.80 against this speaker), so the
#: test takes one well below the reference-engine floor (0.43 here vs 0.50).
OTHER_VARIANT, OTHER_PITCH_HZ = "klatt", 70.0
#: Chunk cores: two chunks, as the planner would cut the 7 s timeline at the pause at 4.2 s.
CHUNKS = ({"index": 0, "core_start_s": 0.0, "core_end_s": 4.2, "start_s": 0.0, "end_s": 4.7,
           "segment_indices": [0, 1]},
          {"index": 1, "core_start_s": 4.2, "core_end_s": DURATION_S, "start_s": 3.7, "end_s": DURATION_S,
           "segment_indices": [2]})
ENGINES = {"tts": "espeak", "vc": "world", "lipsync": "mouthwarp"}
BACKGROUND_DBFS = -45.0
#: Shift of the "shifted dub": above the 80 ms sync bound, below the 200 ms timing tolerance,
#: so only lip sync should catch it.
SHIFT_S = 0.16
#: Crests of the "clipped dub" are cut at this share of its peak.
CLIP_SHARE = 0.5
TOO_LOUD_DB = 8.0
WRONG_DURATION_S = DURATION_S + 0.2


# --- building the job -------------------------------------------------------------------


def speak(tts: EspeakTTS, variant: str | None, pitch: float | None,
          slots: tuple[tuple[float, float, str], ...] = SLOTS, lang: str = LANG) -> np.ndarray:
    """The dub track: each slot's text fitted into its slot, on the job's timeline."""
    track = np.zeros(int(DURATION_S * RATE), dtype=np.float32)
    for start, end, text in slots:
        audio = tts.synthesize_one(text, lang, end - start, pitch, variant).audio
        a = int(round(start * RATE))
        track[a: a + audio.size] += audio[: track.size - a]
    return track


def mix_of(dub: np.ndarray, settings: Settings) -> np.ndarray:
    """Dub over a quiet noise bed at the output rate, normalised as merging does."""
    voice = resample_poly(dub, MIX_RATE, RATE).astype(np.float32)
    noise = np.random.default_rng(7).standard_normal(voice.size).astype(np.float32) * 10 ** (BACKGROUND_DBFS / 20)
    mix, _ = normalize_loudness(voice + noise, MIX_RATE, settings.loudness_target_lufs, settings.true_peak_dbfs)
    return mix


def fits_for(slots: tuple[tuple[float, float, str], ...]) -> dict[int, dict[str, Any]]:
    return {i: {"segment_index": i, "slot_start_s": s, "slot_end_s": e, "speech_s": e - s, "speedup": 1.2}
            for i, (s, e, _) in enumerate(slots)}


def write_video(path: Path, frames: np.ndarray, mix: np.ndarray, duration_s: float) -> Path:
    return encode_mp4(path, iter(frames), FPS, mix, MIX_RATE, duration_s=duration_s)


@dataclasses.dataclass
class CleanJob:
    settings: Settings
    media: JobMedia
    frames: np.ndarray
    other_voice: np.ndarray
    tmp: Path


@pytest.fixture(scope="module")
def inference() -> LocalInferenceClient:
    return LocalInferenceClient()


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> CleanJob:
    tmp = tmp_path_factory.mktemp("qc")
    settings = Settings()
    tts = EspeakTTS()
    dub = speak(tts, SPEAKER_VARIANT, SPEAKER_PITCH_HZ)
    before = speak(tts, None, None)  # eSpeak's own voice: what VC started from
    other = speak(tts, OTHER_VARIANT, OTHER_PITCH_HZ)
    reference = np.concatenate([tts.synthesize_one(t, "en", None, SPEAKER_PITCH_HZ, SPEAKER_VARIANT).audio
                                for t in REFERENCE_TEXTS])
    face = face_layout().image
    still = np.repeat(face[None], int(round(DURATION_S * FPS)), axis=0)
    frames = MouthWarp().render_clip(still, dub, RATE, FPS)
    mix = mix_of(dub, settings)
    video = write_video(tmp / "dubbed.mp4", frames, mix, DURATION_S)
    manifest = {
        "media": {"fps": FPS, "duration_s": DURATION_S},
        "segments": [{"index": i, "start_s": s, "end_s": e, "text": t, "speaker": "default"}
                     for i, (s, e, t) in enumerate(SLOTS)],
        "target_lang": LANG,
        "engines": ENGINES,
        "speakers": {"default": "jobs/test/speakers/default.wav"},
    }
    media = JobMedia(job_id="qc-test", manifest=manifest, chunks=[dict(c) for c in CHUNKS], fits=fits_for(SLOTS),
                     dub=dub, dub_before=before, rate=RATE, mix=mix, mix_rate=MIX_RATE, video=video,
                     references={"default": (reference, RATE)})
    return CleanJob(settings, media, frames, other, tmp)


def run_qc(media: JobMedia, inference: LocalInferenceClient, settings: Settings) -> tuple[dict[str, Check], Any]:
    measurements = asyncio.run(measure_job(media, inference, settings))
    checks = evaluate_checks(measurements, Thresholds.for_job(settings, media.manifest["engines"]))
    return {c.name: c for c in checks}, measurements


def failed_gates(checks: dict[str, Check]) -> set[str]:
    return {name for name, c in checks.items() if c.gate and not c.passed}


def with_dub(job: CleanJob, dub: np.ndarray) -> JobMedia:
    """The clean job with another dub track (and the mix merging would make of it)."""
    return dataclasses.replace(job.media, dub=dub.astype(np.float32), mix=mix_of(dub, job.settings))


# --- the clean dub and each defect -------------------------------------------------------


@pytest.mark.slow
def test_clean_dub_passes_every_gate(clean: CleanJob, inference: LocalInferenceClient) -> None:
    checks, m = run_qc(clean.media, inference, clean.settings)
    assert failed_gates(checks) == set(), {n: c.reason for n, c in checks.items() if not c.passed}
    assert all(s.on_time for s in m.segments)
    assert [c.face_frames for c in m.sync] == [c.frames for c in m.sync]
    assert all(abs(c.offset_s or 1.0) < 0.04 for c in m.sync)
    (speaker,) = m.speakers
    assert speaker.before is not None and speaker.after > speaker.before
    assert abs(m.loudness.mix_lufs - clean.settings.loudness_target_lufs) < 0.5
    assert checks["intelligibility"].reason.startswith("skipped: no speech recogniser ships for ko")
    assert "POLYDUB_QC_ASR_MODELS_DIR" in checks["intelligibility"].reason


@pytest.mark.slow
def test_shifted_dub_is_caught_by_lip_sync(clean: CleanJob, inference: LocalInferenceClient) -> None:
    shift = int(round(SHIFT_S * RATE))
    late = np.concatenate([np.zeros(shift, dtype=np.float32), clean.media.dub[:-shift]])
    checks, m = run_qc(with_dub(clean, late), inference, clean.settings)
    assert failed_gates(checks) == {"av_sync"}
    assert "out of sync" in checks["av_sync"].reason
    assert checks["av_sync"].details["out_of_sync"] == [0, 1]
    # The sound is late, so the lips move first: the picture is early (negative offset).
    for chunk in m.sync:
        assert chunk.offset_s == pytest.approx(-SHIFT_S, abs=0.03)


@pytest.mark.slow
def test_clipped_dub_is_caught(clean: CleanJob, inference: LocalInferenceClient) -> None:
    dub = clean.media.dub
    ceiling = CLIP_SHARE * float(np.abs(dub).max())
    checks, _ = run_qc(with_dub(clean, np.clip(dub, -ceiling, ceiling)), inference, clean.settings)
    assert "clipping" in failed_gates(checks)
    assert "clipped samples in the dub track" in checks["clipping"].reason
    assert checks["clipping"].details["dub_clipped"] > 0


@pytest.mark.slow
def test_silent_segment_is_caught(clean: CleanJob, inference: LocalInferenceClient) -> None:
    dub = clean.media.dub.copy()
    start, end, _ = SLOTS[1]
    dub[int(start * RATE): int(SLOTS[2][0] * RATE)] = 0.0
    checks, _ = run_qc(with_dub(clean, dub), inference, clean.settings)
    assert failed_gates(checks) == {"speech_present"}
    assert checks["speech_present"].reason == "segment(s) 1 have no speech in their slot"


@pytest.mark.slow
def test_speech_that_does_not_fit_fails_timing_naming_the_segment(clean: CleanJob,
                                                                 inference: LocalInferenceClient) -> None:
    """Synthesis cut 0.4 s of segment 1 at the next segment (too long even at the bound): words lost."""
    fits = {i: dict(f) for i, f in clean.media.fits.items()}
    fits[1]["cut_s"] = 0.4
    checks, m = run_qc(dataclasses.replace(clean.media, fits=fits), inference, clean.settings)
    assert failed_gates(checks) == {"timing"}
    reason = checks["timing"].reason
    assert "1 segment(s) do not fit even at the 1.35x bound" in reason, reason
    assert "1 (does not fit: 0.40 s more than its slot and the silence after it" in reason, reason
    assert checks["timing"].details["lost"] == [{"segment": 1, "seconds": 0.4}]
    assert m.segments[1].overflow_s == pytest.approx(0.4) and not m.segments[1].on_time
    assert 0.0 <= checks["timing"].details["ends_within_tolerance_share"] <= 1.0


@pytest.mark.slow
def test_a_segment_sped_up_past_the_bound_fails(clean: CleanJob, inference: LocalInferenceClient) -> None:
    fits = {i: dict(f) for i, f in clean.media.fits.items()}
    fits[2]["speedup"] = 1.6
    checks, _ = run_qc(dataclasses.replace(clean.media, fits=fits), inference, clean.settings)
    assert failed_gates(checks) == {"speedup"}
    assert "beyond the bound of 1.35x in segment(s) 2 (1.60x)" in checks["speedup"].reason


@pytest.mark.slow
def test_different_speaker_is_caught(clean: CleanJob, inference: LocalInferenceClient) -> None:
    checks, m = run_qc(with_dub(clean, clean.other_voice), inference, clean.settings)
    assert failed_gates(checks) == {"speaker_similarity"}
    assert checks["speaker_similarity"].reason.startswith("voice does not match speaker(s) default")
    assert m.speakers[0].after < Thresholds.for_job(clean.settings, ENGINES).similarity_min


@pytest.mark.slow
def test_wrong_duration_is_caught(clean: CleanJob, inference: LocalInferenceClient) -> None:
    longer = write_video(clean.tmp / "longer.mp4", clean.frames, clean.media.mix, WRONG_DURATION_S)
    checks, _ = run_qc(dataclasses.replace(clean.media, video=longer), inference, clean.settings)
    assert failed_gates(checks) == {"duration"}
    assert "0.200 s longer" in checks["duration"].reason


@pytest.mark.slow
def test_too_loud_mix_is_caught(clean: CleanJob, inference: LocalInferenceClient) -> None:
    loud = clean.media.mix * np.float32(10 ** (TOO_LOUD_DB / 20))
    checks, _ = run_qc(dataclasses.replace(clean.media, mix=loud), inference, clean.settings)
    assert "loudness" in failed_gates(checks)
    assert f"{TOO_LOUD_DB:.1f} LU too loud" in checks["loudness"].reason
    # Louder by 8 dB also pushes the true peak over the ceiling; nothing else is wrong.
    assert failed_gates(checks) <= {"loudness", "true_peak"}


@pytest.mark.slow
def test_chunks_without_a_face_are_flagged_not_failed(clean: CleanJob, inference: LocalInferenceClient) -> None:
    grey = np.full_like(clean.frames, 128)
    video = write_video(clean.tmp / "noface.mp4", grey, clean.media.mix, DURATION_S)
    checks, m = run_qc(dataclasses.replace(clean.media, video=video), inference, clean.settings)
    assert failed_gates(checks) == set()
    assert not checks["faces"].passed and not checks["faces"].gate
    assert checks["faces"].reason.startswith("no face found in chunk(s) 0, 1")
    assert all(c.face_frames == 0 for c in m.sync)


# --- pure measurements --------------------------------------------------------------------


def test_av_offset_resolves_a_sub_frame_shift() -> None:
    rng = np.random.default_rng(3)
    n = 200
    envelope = np.convolve(rng.random(n + 40), np.ones(5) / 5, mode="same")
    t = np.arange(n)
    levels = -60 + 50 * np.interp(t, np.arange(envelope.size), envelope)
    # The mouth follows the level 2.5 frames later (the picture is late by 100 ms at 25 fps).
    mouth = np.interp(t - 2.5, np.arange(envelope.size), envelope)
    mouth[:10] = np.nan  # no face at the start
    offset, r, used = av_offset(mouth, levels, FPS, 10)
    assert offset == pytest.approx(2.5 / FPS, abs=0.25 / FPS)
    assert r is not None and r > 0.9 and used == n - 10


def test_av_offset_needs_a_face_and_speech() -> None:
    assert av_offset(np.full(50, np.nan), np.zeros(50), FPS, 5)[:2] == (None, None)
    assert av_offset(np.zeros(50), np.full(50, -100.0), FPS, 5)[:2] == (None, None)


def test_clipping_counts_flat_tops_not_float_overs() -> None:
    t = np.arange(RATE) / RATE
    voice = (0.6 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    assert clipped_samples(voice) == 0
    assert clipped_samples(voice * 1.8) == 0  # float overs above 1.0: not clipped (yet)
    clipped = np.clip(voice, -0.4, 0.4) * np.float32(0.5)  # clipped, then scaled down
    assert clipped_samples(clipped) > 100


def test_true_peak_sees_between_samples() -> None:
    # A sine at a quarter of the rate, sampled 45 degrees off its crests: samples reach 0.707.
    n = np.arange(4096)
    x = np.sin(np.pi / 2 * n + np.pi / 4).astype(np.float32)
    assert float(np.abs(x).max()) == pytest.approx(math.sqrt(0.5), abs=1e-3)
    assert true_peak_dbfs(x) == pytest.approx(0.0, abs=0.3)


def test_segment_timing_measures_offsets_overflow_and_gaps() -> None:
    segments = [{"index": 0, "start_s": 0.5, "end_s": 1.5, "speaker": "a"},
                {"index": 1, "start_s": 2.0, "end_s": 3.0, "speaker": "a"}]
    dub = np.zeros(4 * RATE, dtype=np.float32)
    tone = (0.3 * np.sin(2 * np.pi * 200 * np.arange(RATE) / RATE)).astype(np.float32)

    def put(start_s: float, end_s: float) -> None:
        a, b = round(start_s * RATE), round(end_s * RATE)
        dub[a:b] = tone[: b - a]

    put(0.8, 1.1)  # segment 0 starts 0.3 s late
    put(2.0, 2.2)  # segment 1: a 0.6 s dropout inside its speech
    put(2.8, 2.9)
    fits = {0: {"slot_start_s": 0.5, "speech_s": 1.7, "speedup": 1.4}, 1: {"slot_start_s": 2.0, "speech_s": 0.9,
                                                                           "speedup": 1.0}}
    first, second = segment_timings(dub, RATE, segments, fits, 4.0, tolerance_s=0.2)
    assert first.start_offset_s == pytest.approx(0.3, abs=0.011)
    assert first.overflow_s == pytest.approx(0.2, abs=1e-6)  # laid 0.5 + 1.7 = 2.2 > next start 2.0
    assert not first.on_time and first.speedup == 1.4
    assert second.start_offset_s == pytest.approx(0.0, abs=0.011)
    assert second.longest_gap_s == pytest.approx(0.6, abs=0.021)  # 10 ms frames at both edges
    assert second.on_time


def test_error_rates_use_characters_for_cjk_and_words_for_english() -> None:
    assert error_rate("Good morning, everyone.", "good morning everyone", "en") == 0.0
    assert error_rate("the cat sat", "the bat sat down", "en") == pytest.approx(2 / 3)
    assert error_rate("좋은 아침이에요", "좋은 아침이요", "ko") == pytest.approx(1 / 7)
    assert error_rate("你好世界", "你好", "zh") == pytest.approx(0.5)
    assert error_rate("", "", "ja") == 0.0


def test_similarity_floor_depends_on_the_engine_set() -> None:
    settings = Settings()
    reference = Thresholds.for_job(settings, {"tts": "espeak", "vc": "world", "lipsync": "mouthwarp"})
    neural = Thresholds.for_job(settings, {"tts": "espeak", "vc": "rvc", "lipsync": "wav2lip"})
    cloning = Thresholds.for_job(settings, {"tts": "vallex", "vc": "none", "lipsync": "none"})
    plain = Thresholds.for_job(settings, {"tts": "espeak", "vc": "none", "lipsync": "none"})
    assert (reference.engine_set, reference.similarity_min) == ("reference", settings.qc_similarity_min_reference)
    assert (neural.engine_set, neural.similarity_min) == ("neural", settings.qc_similarity_min_neural)
    assert neural.similarity_min == 0.85 and voice_engine_set({"tts": "vallex", "vc": "none"}) == "neural"
    assert cloning.similarity_gates and reference.similarity_gates and not plain.similarity_gates
    assert reference.av_gates and not plain.av_gates


# --- intelligibility ---------------------------------------------------------------------------


def test_scoring_normalises_both_sides_alike() -> None:
    assert normalize_for_scoring("I have 3 cats, Mr. Smith!", "en") == "i have three cats mister smith"
    assert normalize_for_scoring("It’s $5 at 3:30 -- \"really\"?", "en") == "it's five dollars at three thirty really"
    assert normalize_for_scoring("Let's go to the 2nd floor.", "en") == "let us go to the second floor"
    assert error_rate("We met 21 people.", "we met twenty one people", "en") == 0.0
    assert error_rate("I'm sorry, I won't be late.", "i am sorry i will not be late", "en") == 0.0
    assert error_rate("The cat's toy", "the cats toy", "en") == pytest.approx(1 / 3)  # "'s" is kept as written
    assert error_rate("같이 점심 먹어요!", "같이 점심 먹어요", "ko") == 0.0  # CJK: punctuation and spaces dropped


def test_recogniser_languages_come_from_the_models_folder(tmp_path: Path) -> None:
    assert asr_languages(Settings()) == {"en"}
    (tmp_path / "ko").mkdir()
    (tmp_path / "notes.txt").write_text("not a model")
    assert asr_languages(Settings(qc_asr_models_dir=tmp_path)) == {"en", "ko"}
    # The served model gets the same folder (in process and on the stack's Triton).
    assert model_parameters(Settings(qc_asr_models_dir=tmp_path))["asr"] == {"models_dir": str(tmp_path)}
    assert "asr" not in model_parameters(Settings())
    with pytest.raises(InputError, match="POLYDUB_QC_ASR_MODELS_DIR is .*missing, which is not a folder"):
        asr_languages(Settings(qc_asr_models_dir=tmp_path / "missing"))


class _HeardAsr(ItemsClient):
    """Stands in for a served ``asr`` model with a user's model: each call hears the next list of texts."""

    def __init__(self, heard: list[list[str]]) -> None:
        self.heard = heard
        self.calls: list[dict[str, np.ndarray]] = []

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert model == "asr"
        raw = [t.encode() for t in self.heard[len(self.calls)][: inputs["WAVEFORM"].shape[0]]]
        self.calls.append(inputs)
        data = np.zeros((len(raw), max(len(r) for r in raw)), dtype=np.uint8)
        for i, r in enumerate(raw):
            data[i, : len(r)] = np.frombuffer(r, dtype=np.uint8)
        return {"TEXT": data, "TEXT_LENGTH": np.array([[len(r)] for r in raw], dtype=np.int64)}

    async def close(self) -> None:
        return None


def test_a_configured_recogniser_scores_both_sides_of_conversion(tmp_path: Path) -> None:
    (tmp_path / "models" / "ko").mkdir(parents=True)
    settings = Settings(qc_asr_models_dir=tmp_path / "models")
    segments = [{"index": 0, "start_s": 0.0, "end_s": 1.0, "text": "같이 점심 먹어요", "speaker": "default"}]
    timing = [SegmentTiming(0, "default", 0.0, 1.0, 2.0, 0.1, 0.9, 0.8, 0.1, -0.1, 0.0, 1.0, 0.0, True)]
    silence = np.zeros(2 * RATE, dtype=np.float32)
    media = JobMedia(job_id="asr", manifest={"segments": segments, "target_lang": "ko"}, chunks=[], fits={},
                     dub=silence, dub_before=silence, rate=RATE, mix=np.zeros(0, dtype=np.float32),
                     mix_rate=MIX_RATE, video=tmp_path / "none.mp4", references={})
    asr = _HeardAsr([["같이 점심 먹어"], ["같이 점심 먹어요"]])
    result = asyncio.run(measure_intelligibility(asr, settings, timing, media))  # type: ignore[arg-type]
    assert result.measured and result.metric == "cer"
    assert result.error_rate == pytest.approx(1 / 7) and result.error_rate_before == 0.0
    assert result.segments[0].hypothesis_before == "같이 점심 먹어요"
    assert bytes(asr.calls[0]["LANG"][0, : int(asr.calls[0]["LANG_LENGTH"][0, 0])]) == b"ko"
    assert asr.calls[0]["WAVEFORM_LENGTH"][0, 0] == int(0.8 * RATE), "the segment's measured speech span"
    off = Settings(qc_asr=False, qc_asr_models_dir=tmp_path / "models")
    assert asyncio.run(measure_intelligibility(asr, off, timing, media)).reason == "skipped: POLYDUB_QC_ASR is off"


#: The checks the intelligibility verdict tests look at (the rest of their job is not judged).
INTELLIGIBILITY_CHECKS = {"intelligibility", "intelligibility_loss"}


def _with_intelligibility(i: Intelligibility) -> Measurements:
    """Measurements of a job that is fine in every other respect, with ``i`` as its intelligibility."""
    from handlers.quality.measurements import LoudnessStats, OutputInfo

    return Measurements(
        source_duration_s=2.0, fps=FPS,
        output=OutputInfo(duration_s=2.0, has_video=True, has_audio=True, video_codec="h264", audio_codec="aac"),
        segments=[SegmentTiming(0, "default", 0.0, 1.0, 2.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, True)],
        loudness=LoudnessStats(-23.0, -23.0, -2.0, 0, 1, 0, 1, -3.0), speakers=[], sync=[], intelligibility=i)


def _transcript(index: int, after: float, before: float | None) -> SegmentTranscript:
    return SegmentTranscript(index, "How are you today?", "how are you today", "how are you", after,
                             None if before is None else "how are you today", before)


def test_intelligibility_verdicts_name_the_rates_and_the_segments() -> None:
    t = Thresholds.for_job(Settings(), ENGINES)
    fine = Intelligibility(True, "wer by asr (en)", "wer", 0.25, 0.2, [_transcript(0, 0.25, 0.2)])
    checks = {c.name: c for c in evaluate_checks(_with_intelligibility(fine), t)}
    assert checks["intelligibility"].passed and checks["intelligibility"].gate
    assert checks["intelligibility"].reason == ("WER 25.0% of the delivered dub against the subtitles, 20.0% "
                                                "before voice conversion (limit 50%)")
    assert checks["intelligibility_loss"].passed and checks["intelligibility_loss"].gate
    assert checks["intelligibility_loss"].value == pytest.approx(0.05)

    garbled = Intelligibility(True, "wer by asr (en)", "wer", 0.9, 0.05,
                              [_transcript(0, 1.0, 0.0), _transcript(1, 0.1, 0.1)])
    checks = {c.name: c for c in evaluate_checks(_with_intelligibility(garbled), t)}
    assert failed_gates(checks) & INTELLIGIBILITY_CHECKS == {"intelligibility", "intelligibility_loss"}
    reason = checks["intelligibility"].reason
    assert reason.startswith("the delivered dub is not intelligible: WER 90.0% of the delivered dub"), reason
    assert ("worst segment(s) 0 (0% -> 100%, heard 'how are you today' before VC and 'how are you' after, "
            "for 'how are you today')") in reason
    loss = checks["intelligibility_loss"].reason
    assert loss.startswith("voice conversion made the dub harder to understand: WER 5.0% before voice "
                           "conversion, 90.0% after (+85.0 points; limit +10 points)"), loss
    assert "segment(s) that lost words: 0 (0% -> 100%" in loss

    # Exactly at the limits passes; speech unintelligible before conversion fails too.
    edge = Intelligibility(True, "wer by asr (en)", "wer", 0.5, 0.4, [_transcript(0, 0.5, 0.4)])
    checks = {c.name: c for c in evaluate_checks(_with_intelligibility(edge), t)}
    assert failed_gates(checks) & INTELLIGIBILITY_CHECKS == set()
    before_bad = Intelligibility(True, "wer by asr (en)", "wer", 0.2, 0.6, [_transcript(0, 0.2, 0.6)])
    checks = {c.name: c for c in evaluate_checks(_with_intelligibility(before_bad), t)}
    assert failed_gates(checks) & INTELLIGIBILITY_CHECKS == {"intelligibility"}
    assert checks["intelligibility"].reason.startswith("the synthesised speech (before voice conversion) is not")

    no_vc = Intelligibility(True, "wer by asr (en)", "wer", 0.1, None, [_transcript(0, 0.1, None)])
    checks = {c.name: c for c in evaluate_checks(_with_intelligibility(no_vc), t)}
    assert checks["intelligibility"].passed and not checks["intelligibility_loss"].gate
    assert checks["intelligibility_loss"].reason.startswith("skipped: no voice conversion")


#: The English job: the sample's lines, each fitted into its slot.
EN_SLOTS = (
    (0.5, 2.0, "Good morning, everyone."),
    (2.6, 3.9, "How are you today?"),
    (4.6, 6.1, "Let's have lunch together."),
)


def reverse_speech(track: np.ndarray, slots: tuple[tuple[float, float, str], ...]) -> np.ndarray:
    """Each segment's speech played backwards in place: the same sound and timing, no words."""
    out = track.copy()
    for i, (start, _, _) in enumerate(slots):
        a = int(round(start * RATE))
        b = int(round(slots[i + 1][0] * RATE)) if i + 1 < len(slots) else track.size
        voiced = np.flatnonzero(track[a:b])
        if voiced.size:
            first, last = a + voiced[0], a + voiced[-1] + 1
            out[first:last] = track[first:last][::-1]
    return out


@pytest.fixture(scope="module")
def english(clean: CleanJob) -> CleanJob:
    """The clean job in English: same speaker, face and engines, the sample's English lines."""
    tts = EspeakTTS()
    dub = speak(tts, SPEAKER_VARIANT, SPEAKER_PITCH_HZ, EN_SLOTS, "en")
    before = speak(tts, None, None, EN_SLOTS, "en")
    face = face_layout().image
    frames = MouthWarp().render_clip(np.repeat(face[None], int(round(DURATION_S * FPS)), axis=0), dub, RATE, FPS)
    mix = mix_of(dub, clean.settings)
    video = write_video(clean.tmp / "english.mp4", frames, mix, DURATION_S)
    manifest = {**clean.media.manifest, "target_lang": "en",
                "segments": [{"index": i, "start_s": s, "end_s": e, "text": t, "speaker": "default"}
                             for i, (s, e, t) in enumerate(EN_SLOTS)]}
    media = dataclasses.replace(clean.media, job_id="qc-english", manifest=manifest, fits=fits_for(EN_SLOTS),
                                dub=dub, dub_before=before, mix=mix, video=video)
    return dataclasses.replace(clean, media=media, frames=frames)


@pytest.mark.slow
def test_clean_english_dub_is_intelligible_before_and_after_conversion(english: CleanJob,
                                                                       inference: LocalInferenceClient) -> None:
    checks, m = run_qc(english.media, inference, english.settings)
    assert failed_gates(checks) == set(), {n: c.reason for n, c in checks.items() if not c.passed}
    i = m.intelligibility
    assert i.measured and i.metric == "wer" and [s.index for s in i.segments] == [0, 1, 2]
    assert i.error_rate is not None and i.error_rate <= english.settings.qc_max_wer
    assert i.error_rate_before is not None and i.error_rate_before <= english.settings.qc_max_wer
    assert i.segments[0].hypothesis == "good morning everyone"
    assert checks["intelligibility_loss"].passed and checks["intelligibility_loss"].gate


@pytest.mark.slow
def test_unintelligible_english_dub_fails_qc_on_intelligibility(english: CleanJob,
                                                                inference: LocalInferenceClient) -> None:
    garbled = reverse_speech(english.media.dub, EN_SLOTS)
    checks, m = run_qc(with_dub(english, garbled), inference, english.settings)
    assert {"intelligibility", "intelligibility_loss"} <= failed_gates(checks)
    assert checks["intelligibility"].reason.startswith("the delivered dub is not intelligible: WER "), \
        checks["intelligibility"].reason
    assert checks["intelligibility_loss"].reason.startswith("voice conversion made the dub harder to understand")
    assert m.intelligibility.error_rate is not None and m.intelligibility.error_rate > 0.8
    assert m.intelligibility.error_rate_before is not None
    assert m.intelligibility.error_rate_before <= english.settings.qc_max_wer
    # Reversing keeps the sound, the level and the timing: only the words are gone.
    assert failed_gates(checks) - {"intelligibility", "intelligibility_loss"} <= {"av_sync"}
    page = render_html(build_report("qc-english", english.media.manifest, m,
                                    list(checks.values()), Thresholds.for_job(english.settings, ENGINES), {}))
    assert "heard before VC" in page and "good morning everyone" in page


# --- the report ----------------------------------------------------------------------------


@pytest.mark.slow
def test_report_puts_failures_first_and_renders_from_the_store(clean: CleanJob, inference: LocalInferenceClient,
                                                               tmp_path: Path) -> None:
    ceiling = CLIP_SHARE * float(np.abs(clean.media.dub).max())
    media = with_dub(clean, np.clip(clean.media.dub, -ceiling, ceiling))
    measurements = asyncio.run(measure_job(media, inference, clean.settings))
    thresholds = Thresholds.for_job(clean.settings, ENGINES)
    checks = evaluate_checks(measurements, thresholds)
    report = build_report("qc-report", media.manifest, measurements, checks, thresholds, {"synthesis": 1.0})
    page = render_html(report)
    assert page.index('<li class="fail"><b>clipping</b>') < page.index("<h2>Checks</h2>")
    assert "QC FAILED" in page and page.count("<svg") == 5
    assert "src=" not in page and "<script" not in page  # self-contained: nothing to fetch

    store = LocalObjectStore(tmp_path / "store")
    store.put_bytes(keys.qc_key("qc-report"), orjson.dumps(report))
    out = tmp_path / "out"
    assert cli_main(["report", "qc-report", "--store", str(tmp_path / "store"), "-o", str(out)]) == 0
    assert (out / "qc-report.qc.html").read_text(encoding="utf-8") == page
    assert orjson.loads((out / "qc-report.qc.json").read_bytes())["failed_checks"] == ["clipping"]


# --- the README's main command -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.e2e
def test_polydub_run_writes_the_qc_report_beside_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from handlers.sample import make_sample

    sample = make_sample(tmp_path / "sample.mp4", target_lang="ko", seconds=8.0)
    out = tmp_path / "out" / "sample.ko.mp4"
    # The run's store and spans go under tmp_path, not into the checkout's .polydub/.
    monkeypatch.setenv("POLYDUB_LOCAL_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("POLYDUB_TRACE_FILE", str(tmp_path / "traces.jsonl"))
    get_settings.cache_clear()
    try:
        code = cli_main(["run", str(sample.video), "--subs", str(sample.subtitles), "--to", "ko", "-o", str(out)])
    finally:
        get_settings.cache_clear()
    assert code == 0
    report = orjson.loads(out.with_suffix(".qc.json").read_bytes())
    page = out.with_suffix(".qc.html").read_text(encoding="utf-8")
    assert report["passed"] and report["failed_checks"] == []
    assert {c["name"] for c in report["checks"]} >= {"duration", "streams", "speaker_similarity", "av_sync",
                                                     "loudness", "true_peak", "timing", "intelligibility"}
    assert all(c["face_frames"] == c["frames"] > 0 for c in report["chunks"])
    assert report["speakers"][0]["before"] is not None
    assert f"QC report: {report['job_id']}" in page and "Lip sync" in page
