"""The one place polydub reads its configuration.

Every knob is a ``POLYDUB_*`` environment variable, read once into a typed,
validated :class:`Settings` object. Handlers receive the object; none of them
reads the environment or carries its own copy of a default. The README's
configuration table is generated from the field descriptions here
(``polydub config --markdown``), so the docs cannot drift from the code.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving import MODEL_REPOSITORY

ObjectStoreKind = Literal["local", "s3"]
#: The rates a low-rate source's dubbed soundtrack may be written at: full audio band,
#: and ones every player and AAC decoder takes.
FULL_BAND_RATES = (44_100, 48_000)
InferenceKind = Literal["local", "triton"]


class Settings(BaseSettings):
    """Typed configuration for every polydub process."""

    model_config = SettingsConfigDict(env_prefix="POLYDUB_", extra="ignore", frozen=True)

    # --- event bus -----------------------------------------------------------
    bootstrap_servers: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated."
    )
    consumer_group_prefix: str = Field(
        "polydub", description="Prefix of every stage's consumer group (`<prefix>.<stage>`)."
    )
    topic_prefix: str = Field(
        "", description="Prefix added to every topic name, to share one cluster between deployments."
    )

    # --- object store --------------------------------------------------------
    object_store: ObjectStoreKind = Field(
        "local", description="`local` (a folder, the embedded default) or `s3`."
    )
    local_store_dir: Path = Field(
        Path(".polydub/store"), description="Root folder of the `local` object store."
    )
    s3_endpoint: str | None = Field(
        None, description="S3 endpoint URL (SeaweedFS, MinIO, ...); unset means AWS."
    )
    s3_bucket: str = Field("polydub", description="Bucket holding every job's media.")
    s3_region: str = Field("us-east-1", description="S3 region name.")
    s3_access_key: str | None = Field(None, description="S3 access key id.")
    s3_secret_key: str | None = Field(None, description="S3 secret access key.")

    # --- inference -----------------------------------------------------------
    inference: InferenceKind = Field(
        "local", description="`local` runs engines in process; `triton` calls a Triton server."
    )
    triton_url: str = Field("127.0.0.1:8001", description="Triton gRPC endpoint (host:port).")
    triton_timeout_s: float = Field(
        120.0, gt=0, description="Deadline of one Triton inference call, in seconds."
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="Where the in-process client builds torch models: `auto` (the first GPU torch sees, "
        "else the CPU), `cpu`, `cuda` or `cuda:N`. Triton instances take their device from their config.",
    )

    # --- neural model files (read by the served models, never downloaded) ------
    fastpitch_checkpoint: Path | None = Field(
        None, description="NVIDIA FastPitch checkpoint (.pt) for `--tts fastpitch`."
    )
    hifigan_checkpoint: Path | None = Field(
        None, description="NVIDIA HiFi-GAN checkpoint (.pt) paired with FastPitch."
    )
    fastpitch_random_init: bool = Field(
        False, description="Run FastPitch with random weights (compute benchmarks only: it renders noise)."
    )
    wav2lip_checkpoint: Path | None = Field(
        None, description="Wav2Lip generator (`wav2lip.pth` or `wav2lip_gan.pth`) for `--lipsync wav2lip`."
    )
    wav2lip_random_init: bool = Field(
        False, description="Run Wav2Lip with random weights (compute benchmarks only: it draws noise on the mouth)."
    )
    rvc_voices_dir: Path | None = Field(
        None, description="Directory of RVC voices for `--vc rvc`: `<name>.pth` (official layout) with an optional "
        "`<name>.index` (its faiss feature index). Mount it at the same path on workers (ingest lists it) and "
        "Triton hosts (the model loads from it).",
    )
    rvc_content_encoder: Path | None = Field(
        None, description="RVC's content encoder `hubert_base.pt` (ContentVec, fairseq layout) for `--vc rvc`."
    )
    rvc_random_init: bool = Field(
        False, description="Run RVC's content encoder with random weights (compute benchmarks only: the voices "
        "still come from POLYDUB_RVC_VOICES_DIR)."
    )
    rvc_default_voice: str = Field(
        "", description="RVC voice for speakers a job's `voices` map leaves out (empty: every speaker needs one)."
    )
    rvc_f0_method: Literal["dio", "harvest", "pm"] = Field(
        "dio", description="RVC pitch tracker: `dio` (WORLD DIO + StoneMask), `harvest` (slower, steadier) or "
        "`pm` (Praat)."
    )
    rvc_index_rate: float = Field(
        0.75, ge=0.0, le=1.0, description="Share of features retrieved from a voice's `.index` (0: ignore indexes)."
    )
    rvc_protect: float = Field(
        0.33, ge=0.0, le=0.5, description="Share of RVC's converted features kept on unvoiced frames, protecting "
        "consonants (0.5: off)."
    )

    # --- pipeline ------------------------------------------------------------
    chunk_seconds: float = Field(
        10.0, gt=1.0, description="Longest chunk of timeline one handler call works on, in seconds."
    )
    chunk_overlap_seconds: float = Field(
        1.0, ge=0.0, description="Context shared by neighbouring chunks, crossfaded at merge."
    )
    sample_rate: int = Field(
        22050, ge=8000, description="Sample rate of the dub track inside the pipeline, in Hz."
    )
    max_speedup: float = Field(
        1.35, ge=1.0, description="Largest speed-up of a dubbed segment against its natural reading, the TTS "
        "rate and the time-stretch together; speech still too long spills into the silence after its slot, "
        "and QC fails speech that neither fits nor spills and any segment sped up beyond this.",
    )
    consumer_session_timeout_ms: int = Field(
        10000,
        ge=1000,
        description="Kafka consumer session timeout; a worker silent this long leaves its group.",
    )
    shutdown_grace_s: float = Field(
        15.0,
        ge=0.0,
        description="On SIGTERM, how long an in-flight handler may finish before it is cancelled "
        "(uncommitted, so redelivered).",
    )
    max_handler_seconds: float = Field(
        600.0,
        gt=0,
        description="Longest one event may take in a handler before the consumer leaves its group.",
    )
    lipsync_frames_per_call: int = Field(
        125,
        ge=1,
        description="Frames sent to the lip-sync model in one inference call (bounds request size).",
    )
    lipsync_crops_per_request: int = Field(
        16,
        ge=1,
        description="Face crops per request to a crop-based lip-sync model (Wav2Lip): a chunk's crops go as "
        "concurrent requests of this size, which the server batches across chunks and jobs.",
    )
    face_track_max_side: int = Field(
        320,
        ge=64,
        description="Frames sent to face tracking are downscaled to this many pixels on the longer side "
        "(the tracker works at 320 px; the boxes are scaled back).",
    )
    intermediate_crf: int = Field(
        12, ge=0, le=51, description="H.264 CRF of lip-synced chunk videos (re-encoded once more at merge)."
    )
    duck_db: float = Field(
        -14.0, le=0.0, description="Gain of the original soundtrack under the dub while it speaks, in dB."
    )
    duck_attack_s: float = Field(0.08, ge=0.0, description="How fast the original ducks before speech, in seconds.")
    duck_release_s: float = Field(0.3, ge=0.0, description="How fast it comes back after speech, in seconds.")
    loudness_target_lufs: float = Field(
        -23.0, le=0.0, description="Integrated loudness of the output mix (-23 broadcast, -16 web)."
    )
    true_peak_dbfs: float = Field(-1.0, le=0.0, description="Peak ceiling of the output mix, in dBFS.")
    output_audio_rate: int = Field(
        48000, description="Sample rate of the output soundtrack when the source's is below 44.1 kHz (or one AAC "
        "cannot carry), in Hz: 48000 (video's rate) or 44100. A source at 44.1 kHz or more keeps its own rate.",
    )
    # --- failures: retry budget, inference circuit breaker, stalled work -----------
    retry_budget_s: float = Field(
        600.0,
        gt=0,
        description="Retry budget of one event, in seconds: a retryable failure is retried with capped "
        "exponential backoff until the backoffs so far would pass this time, then the job fails with the "
        "error's code and reason. Minutes, so a rolling restart of Triton or the object store is ridden out.",
    )
    retry_max_attempts: int = Field(
        0, ge=0, description="Optional bound on the attempts of one event besides the time budget; 0: "
        "only `POLYDUB_RETRY_BUDGET_S` bounds them.",
    )
    inference_breaker_failures: int = Field(
        3, ge=1, description="Consecutive `UNAVAILABLE` answers from Triton that open the inference client's "
        "circuit breaker: calls then wait for Triton to come back instead of failing attempt after attempt.",
    )
    inference_breaker_probe_s: float = Field(
        1.0, gt=0, description="While the breaker is open, how often one readiness probe (half-open) asks "
        "Triton whether it is back, in seconds.",
    )
    inference_breaker_wait_s: float = Field(
        60.0, gt=0, description="Longest one inference call waits on an open breaker before it fails as one "
        "attempt (and is retried within the budget); keep it under `POLYDUB_MAX_HANDLER_SECONDS`.",
    )
    stage_timeout_s: float = Field(
        480.0, gt=0, description="Longest one stage may work on one event, in seconds; past it the work counts "
        "as stuck and is retried within `POLYDUB_RETRY_BUDGET_S`, then fails with code 140 (timeout). Keep it "
        "under `POLYDUB_MAX_HANDLER_SECONDS`, or the broker takes the partition away first.",
    )
    status_stalled_after_s: float = Field(
        300.0, gt=0, description="`polydub status` calls a running job stalled when none of its objects has "
        "changed for this long, in seconds, and says which stage it waits for (is a worker consuming it?).",
    )
    retry_backoff_s: float = Field(
        0.5, ge=0.0, description="First retry delay in seconds; doubles on every attempt."
    )
    retry_backoff_max_s: float = Field(
        30.0, ge=0.0, description="Upper bound of one retry delay, in seconds."
    )
    retry_relay_max_pending: int = Field(
        1000,
        ge=1,
        description="Retries one relay holds in memory waiting for their backoff; at the bound it reads "
        "no more of `dub.retry` until one is republished (backpressure). Waiting retries are uncommitted.",
    )

    # --- input tolerance ---------------------------------------------------
    subtitle_max_overlap_s: float = Field(
        0.5, ge=0.0, description="Longest overlap between consecutive cues of one speaker that ingest trims "
        "(the earlier cue ends where the next begins, with a warning in the QC report), in seconds; longer "
        "overlaps are refused. Cues of different speakers may overlap freely (both voices are dubbed).",
    )
    min_clip_s: float = Field(
        1.0, gt=0.0, description="Shortest video polydub dubs, in seconds; shorter clips are refused at ingest "
        "(there is no room for a dubbed line).",
    )

    # --- submissions: where sources may come from, and how big a job may be ----
    allow_file_sources: bool | None = Field(
        None, description="Accept `file://` sources and references outside the object store: unset allows them "
        "with the `local` object store (one machine: `polydub run`) and refuses them with `s3` (workers read "
        "only their bucket); `true`/`false` force it.",
    )
    source_hosts: str = Field(
        "", description="Hosts (`host` or `host:port`, comma separated) from which workers may fetch "
        "`http(s)://` sources and references, redirects included; empty refuses every HTTP fetch.",
    )
    max_event_bytes: int = Field(
        1_048_576, ge=1024, description="Largest event a consumer accepts, in bytes; a larger one goes to the "
        "dead-letter topic with the reason.",
    )
    max_source_bytes: int = Field(
        8 * 1024**3, ge=1, description="Largest source video or reference audio ingest copies, in bytes.",
    )
    max_subtitle_bytes: int = Field(
        4 * 1024**2, ge=1, description="Largest subtitle file ingest reads, in bytes.",
    )
    max_segments: int = Field(
        5000, ge=1, description="Most subtitle segments one job may have.",
    )
    max_segment_chars: int = Field(
        500, ge=1, description="Most characters of text one subtitle segment may have.",
    )
    max_job_chars: int = Field(
        200_000, ge=1, description="Most characters of subtitle text one job may have, all segments together.",
    )
    max_duration_s: float = Field(
        4 * 3600.0, gt=0, description="Longest source video a job may dub, in seconds.",
    )
    max_video_side: int = Field(
        4096, ge=16, description="Largest width or height of a source video, in pixels.",
    )

    # --- quality control -----------------------------------------------------
    qc_similarity_min_reference: float = Field(
        0.50, ge=-1.0, le=1.0,
        description="Lowest speaker similarity (GE2E cosine, dub vs the speaker's reference) when the "
        "voice comes from a reference engine (vc `world`, or `none`): a floor against gross mismatches, "
        "since WORLD dubs of the samples measure 0.53-0.79 and distinct eSpeak voices 0.45-0.80.",
    )
    qc_similarity_min_neural: float = Field(
        0.85, ge=-1.0, le=1.0,
        description="Lowest speaker similarity with neural voice cloning (vc `rvc`, or tts `vallex` "
        "without vc); the research target is 0.85 (0.87 hoped for).",
    )
    qc_timing_tolerance_s: float = Field(
        0.2, gt=0.0, description="How far a segment's speech may start from its slot's start and still count "
        "as on time, in seconds (its end may spill into the silence before the next segment).",
    )
    qc_timing_min_share: float = Field(
        0.9, ge=0.0, le=1.0, description="Share of segments that must be on time for QC to pass.",
    )
    qc_end_tolerance_s: float = Field(
        0.1, gt=0.0, description="A segment's speech ending this close to its slot's end (either side) counts "
        "as fitted to the slot; the report gives the share of such segments, in seconds.",
    )
    qc_max_silence_gap_s: float = Field(
        0.8, gt=0.0, description="Longest silence inside a segment's speech before QC calls it a gap "
        "(a dropout where speech was expected), in seconds.",
    )
    qc_max_clipped_share: float = Field(
        0.0001, ge=0.0, le=1.0,
        description="Share of clipped samples (full scale, or flat-topped runs at the peak) that fails QC.",
    )
    qc_loudness_tolerance_lu: float = Field(
        1.0, gt=0.0, description="How far the mix's integrated loudness may miss its target, in LU.",
    )
    qc_true_peak_tolerance_db: float = Field(
        0.5, ge=0.0, description="How far the mix's true peak (4x oversampled) may pass "
        "`POLYDUB_TRUE_PEAK_DBFS` before QC fails, in dB.",
    )
    qc_av_offset_max_ms: float = Field(
        80.0, gt=0.0, description="Largest audio-visual offset of a chunk (lips vs dub) that passes QC, in ms.",
    )
    qc_av_search_ms: float = Field(
        400.0, gt=0.0, description="How far either way QC searches for the audio-visual offset, in ms.",
    )
    qc_av_min_correlation: float = Field(
        0.3, ge=-1.0, le=1.0, description="Below this correlation between mouth and dub level a chunk's "
        "lips are reported as not following the dub (its offset is unreliable).",
    )
    qc_asr: bool = Field(
        True, description="Re-transcribe the dub with the served `asr` model for the intelligibility check "
        "(English ships; see `POLYDUB_QC_ASR_MODELS_DIR`); off reports the check as skipped.",
    )
    qc_asr_models_dir: Path | None = Field(
        None, description="Speech recognisers for languages other than English (none ships for ko, ja, zh): "
        "a folder with one PocketSphinx model per language code (`ko/`, `ja/`, `zh/`; `en/` replaces the "
        "shipped English), each holding its acoustic-model folder, a word language model (`*.lm.bin`, `*.lm`) "
        "and a dictionary (`*.dict`, `*.dic`); served by the `asr` model.",
    )
    qc_max_wer: float = Field(
        0.5, ge=0.0, description="Largest word error rate (character error rate for ko, ja, zh) of the "
        "re-transcribed dub against the subtitles, before and after voice conversion alike; above it the dub "
        "is unintelligible and QC fails. With the shipped recogniser clean eSpeak English measures 0.15-0.22 "
        "(0.38 at worst over four lines), time-reversed speech above 1.",
    )
    qc_max_wer_increase: float = Field(
        0.10, ge=0.0, description="Largest rise of that error rate from the synthesised speech to the delivered "
        "dub (after minus before voice conversion); above it conversion has cost intelligibility and QC fails.",
    )

    # --- local stack ---------------------------------------------------------
    stack_dir: Path = Field(
        Path(".polydub/stack"),
        description="Where `polydub stack` keeps server data, logs and its state file.",
    )
    stack_broker_port: int = Field(
        0, ge=0, le=65535, description="Kafka port of the stack's broker; 0 picks a free port."
    )
    stack_broker_storage: Literal["memory", "s3"] = Field(
        "memory",
        description="Stack broker storage: `memory` (lost on stop) or `s3` (durable, on the "
        "stack's SeaweedFS).",
    )
    stack_s3_port: int = Field(
        0, ge=0, le=65535, description="S3 port of the stack's SeaweedFS; 0 picks a free port."
    )
    stack_triton_grpc_port: int = Field(
        0, ge=0, le=65535, description="gRPC port of the stack's Triton; 0 picks a free port."
    )
    stack_triton_http_port: int = Field(
        0, ge=0, le=65535, description="HTTP port of the stack's Triton; 0 picks a free port."
    )
    stack_startup_timeout_s: float = Field(
        120.0, gt=0, description="Longest wait for one stack server to become healthy, in seconds."
    )
    triton_model_repository: Path = Field(
        MODEL_REPOSITORY,
        description="Model repository the stack's Triton serves (default: this checkout's `triton_models/`).",
    )
    triton_models: str = Field(
        "auto",
        description="Models the stack's Triton loads: `auto` (every model that needs no weights, plus "
        "`tts_fastpitch` once its checkpoints or random init are configured), `all`, or a comma list.",
    )
    triton_config_name: str = Field(
        "cpu",
        pattern=r"^[A-Za-z0-9_.-]*$",
        description="Model config variant the stack's Triton loads (`--model-config-name`): `cpu` "
        "takes each model's `configs/cpu.pbtxt` (KIND_CPU instances); empty takes `config.pbtxt` "
        "(KIND_GPU, needs a GPU).",
    )
    triton_cpu_threads: int = Field(
        1,
        ge=0,
        description="CPU threads of each Triton model instance (`OMP_NUM_THREADS` of the python "
        "stubs); 0 leaves `OMP_NUM_THREADS` as the environment has it (unset: every core). Scale "
        "a CPU host with instances, not threads: torch instances that each take every core stall "
        "each other.",
    )

    # --- telemetry -----------------------------------------------------------
    otlp_endpoint: str | None = Field(
        None, description="OTLP gRPC endpoint for traces; unset writes JSON lines instead."
    )
    trace_file: Path = Field(
        Path(".polydub/traces.jsonl"), description="JSON-lines span file used without OTLP."
    )
    log_level: str = Field("INFO", description="Log level of the structured JSON logs.")
    log_format: Literal["json", "text"] = Field(
        "json", description="`json` for machines, `text` for a person at a terminal."
    )
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of a worker's `/metrics` (Prometheus) and `/healthz` endpoints; 0 turns them off.",
    )
    metrics_host: str = Field(
        "0.0.0.0",
        description="Address the metrics and health endpoints listen on (`127.0.0.1` keeps them local).",
    )

    @field_validator("output_audio_rate")
    @classmethod
    def _full_band_rate(cls, value: int) -> int:
        if value not in FULL_BAND_RATES:
            raise ValueError(f"{value} Hz is not a full-band rate; use one of {', '.join(map(str, FULL_BAND_RATES))}")
        return value

    @model_validator(mode="after")
    def _timeout_inside_the_poll_interval(self) -> Settings:
        if self.stage_timeout_s >= self.max_handler_seconds:
            raise ValueError(f"POLYDUB_STAGE_TIMEOUT_S ({self.stage_timeout_s:g}) must be below "
                             f"POLYDUB_MAX_HANDLER_SECONDS ({self.max_handler_seconds:g}): a stuck handler must "
                             "time out before the broker gives its partition to another consumer")
        return self

    @model_validator(mode="after")
    def _bounded_retries(self) -> Settings:
        # With no backoff the time budget never runs out: an attempt bound must stand in.
        if self.retry_max_attempts == 0 and min(self.retry_backoff_s, self.retry_backoff_max_s) <= 0:
            raise ValueError("POLYDUB_RETRY_BACKOFF_S and POLYDUB_RETRY_BACKOFF_MAX_S must be above 0 unless "
                             "POLYDUB_RETRY_MAX_ATTEMPTS bounds the retries")
        return self

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(
                f"unknown log level {value!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
        return level


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()


def settings_markdown() -> str:
    """A Markdown table of every setting, for the README."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, Path) and default.is_absolute():
            # Paths inside the checkout print relative, so the docs match every clone.
            default = default.relative_to(MODEL_REPOSITORY.parent)
        if default is None:
            shown = "unset"
        elif default == "":
            shown = "empty"
        else:
            shown = f"`{default}`"
        rows.append(f"| `POLYDUB_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)
