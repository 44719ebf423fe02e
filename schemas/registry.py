"""The pipeline's stages in order, and the engine choices of each model stage: written once.

Everything else derives from these two tables: the event contract's
``Stage``/engine literals, the app that wires subscribers, the chunk state
table, job progress, the CLI's choices, QC's thresholds per engine set, the
availability check that refuses an engine before any work, and the tests.

An engine names the served model that does its work (the Triton model name)
and what it needs to run: ``needs`` lists alternatives, each a set of
``POLYDUB_*`` settings (by field name) that must all be given. An engine
without a model (``none``) means one thing everywhere: its stage passes its
input through unchanged. An engine whose model this release does not serve
yet is listed (so contract and CLI stay stable) with ``served=False``, and is
refused with what to choose instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from schemas.status import StatusCode

EngineKind = Literal["tts", "vc", "lipsync"]


@dataclass(frozen=True)
class StageInfo:
    """One pipeline stage."""

    name: str
    #: The event type it consumes (its topic has the same logical name).
    consumes: str
    #: Share of a job's progress bar; chunk stages split theirs by chunk.
    progress_weight: float
    #: Runs once per chunk (else once per job).
    per_chunk: bool
    #: The job's status once the stage is done.
    done: StatusCode
    #: The engine choice (``EngineChoice`` field) that picks its model, if any.
    engine_kind: EngineKind | None = None


STAGES: Final[tuple[StageInfo, ...]] = (
    StageInfo("ingest", "media.submitted", 0.04, False, StatusCode.INGESTED),
    StageInfo("chunking", "job.accepted", 0.02, False, StatusCode.CHUNKED),
    StageInfo("synthesis", "chunk.planned", 0.30, True, StatusCode.SYNTHESIZED, "tts"),
    StageInfo("conversion", "chunk.synthesized", 0.20, True, StatusCode.CONVERTED, "vc"),
    StageInfo("lipsync", "chunk.converted", 0.30, True, StatusCode.LIP_SYNCED, "lipsync"),
    StageInfo("merging", "chunk.rendered", 0.10, False, StatusCode.MERGED),
    StageInfo("qc", "job.merged", 0.04, False, StatusCode.COMPLETED),
)
STAGE_NAMES: Final[tuple[str, ...]] = tuple(s.name for s in STAGES)
CHUNK_STAGES: Final[tuple[str, ...]] = tuple(s.name for s in STAGES if s.per_chunk)
STAGE_BY_NAME: Final[dict[str, StageInfo]] = {s.name: s for s in STAGES}


#: The served model that tracks faces for the engines that feed on face crops.
FACE_TRACKER = "face_tracker"


@dataclass(frozen=True)
class EngineInfo:
    """One engine choice of a model stage."""

    kind: EngineKind
    name: str
    #: The served (Triton) model; ``None``: the stage passes its input through.
    model: str | None
    description: str
    #: The voice comes from a neural model (QC holds it to the neural similarity target).
    neural_voice: bool = False
    #: Alternatives, each a tuple of settings fields that must all be set (empty: nothing needed).
    needs: tuple[tuple[str, ...], ...] = ()
    #: Whether this release serves the model at all.
    served: bool = True
    #: What the stage sends the model: ``frames`` (whole frames and their audio) or, for
    #: lip sync, ``face_crops`` (96x96 face crops and mel windows: the stage tracks the face
    #: with ``face_tracker``, crops it and pastes the result back).
    feeds: Literal["frames", "face_crops"] = "frames"

    @property
    def models(self) -> tuple[str, ...]:
        """Every served model a job with this engine calls (its own, and the face tracker it needs)."""
        own = () if self.model is None else (self.model,)
        return own + ((FACE_TRACKER,) if self.feeds == "face_crops" else ())


ENGINES: Final[tuple[EngineInfo, ...]] = (
    EngineInfo("tts", "espeak", "tts_espeak", "eSpeak NG, the weight-free reference TTS"),
    EngineInfo("tts", "fastpitch", "tts_fastpitch", "NVIDIA FastPitch + HiFi-GAN (English checkpoints)",
               needs=(("fastpitch_checkpoint", "hifigan_checkpoint"), ("fastpitch_random_init",))),
    EngineInfo("tts", "vallex", "tts_vallex", "VALL-E X cross-lingual zero-shot TTS", neural_voice=True,
               served=False),
    EngineInfo("vc", "world", "vc_world", "WORLD vocoder voice conversion, the weight-free reference"),
    EngineInfo("vc", "rvc", "vc_rvc", "RVC retrieval-based voice conversion with community .pth voices",
               neural_voice=True, needs=(("rvc_voices_dir", "rvc_content_encoder"),
                                         ("rvc_voices_dir", "rvc_random_init"))),
    EngineInfo("vc", "none", None, "no conversion: the dub keeps the TTS voice"),
    EngineInfo("lipsync", "mouthwarp", "lipsync_mouthwarp", "mouth warp, the weight-free reference lip sync"),
    EngineInfo("lipsync", "wav2lip", "lipsync_wav2lip", "Wav2Lip neural lip sync over tracked face crops",
               needs=(("wav2lip_checkpoint",), ("wav2lip_random_init",)), feeds="face_crops"),
    EngineInfo("lipsync", "none", None, "no lip sync: the source frames untouched"),
)
ENGINE_KINDS: Final[tuple[EngineKind, ...]] = ("tts", "vc", "lipsync")
#: What a job uses unless it says otherwise: the engines that need no weights.
DEFAULT_ENGINES: Final[dict[EngineKind, str]] = {"tts": "espeak", "vc": "world", "lipsync": "mouthwarp"}


def engine_names(kind: EngineKind) -> tuple[str, ...]:
    """The choices of one engine kind, in the order above."""
    return tuple(e.name for e in ENGINES if e.kind == kind)


def engine(kind: str, name: str) -> EngineInfo:
    """The engine ``name`` of ``kind``; a ValueError lists the choices."""
    for info in ENGINES:
        if info.kind == kind and info.name == name:
            return info
    raise ValueError(f"unknown {kind} engine {name!r}; choose one of {', '.join(engine_names(kind))}")  # type: ignore[arg-type]


def job_progress(done: dict[str, float]) -> float:
    """Whole-job progress from each stage's done fraction (missing stages count 0)."""
    total = sum(s.progress_weight * max(0.0, min(1.0, done.get(s.name, 0.0))) for s in STAGES)
    return min(1.0, total)


def progress_at(stage: str, fraction_of_stage: float) -> float:
    """Whole-job progress when every stage before ``stage`` is done and it is ``fraction`` done."""
    names = STAGE_NAMES[: STAGE_NAMES.index(stage)]
    return job_progress({**dict.fromkeys(names, 1.0), stage: fraction_of_stage})
