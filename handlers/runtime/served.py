"""What this deployment's settings say about the served models: parameters and availability.

The one bridge from ``POLYDUB_*`` settings to the served models' parameters
(served models read no environment): the in-process client and the local
stack's Triton both build models with :func:`model_parameters`.

Availability is checked before any work, by the CLI (``polydub run`` /
``submit``) and again by ingest, from the registry (``schemas.registry``): an
engine whose model this release does not serve, whose weights are not
configured (in-process inference) or that the Triton server has not loaded
is refused with a message naming what to set or choose.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from handlers.runtime.settings import Settings
from schemas.errors import InputError
from schemas.registry import ENGINE_KINDS, ENGINES, EngineInfo, engine, engine_names


def model_parameters(settings: Settings) -> dict[str, dict[str, str]]:
    """Each served model's parameters that the settings give (the rest keep their defaults)."""
    fastpitch: dict[str, str] = {}
    if settings.fastpitch_checkpoint is not None:
        fastpitch["fastpitch_checkpoint"] = str(settings.fastpitch_checkpoint)
    if settings.hifigan_checkpoint is not None:
        fastpitch["hifigan_checkpoint"] = str(settings.hifigan_checkpoint)
    if settings.fastpitch_random_init:
        fastpitch["random_init"] = "true"
    wav2lip: dict[str, str] = {}
    if settings.wav2lip_checkpoint is not None:
        wav2lip["checkpoint"] = str(settings.wav2lip_checkpoint)
    if settings.wav2lip_random_init:
        wav2lip["random_init"] = "true"
    rvc = {"f0_method": settings.rvc_f0_method, "index_rate": str(settings.rvc_index_rate),
           "protect": str(settings.rvc_protect)}
    if settings.rvc_voices_dir is not None:
        rvc["voices_dir"] = str(settings.rvc_voices_dir)
    if settings.rvc_content_encoder is not None:
        rvc["content_encoder"] = str(settings.rvc_content_encoder)
    if settings.rvc_random_init:
        rvc["random_init"] = "true"
    asr: dict[str, str] = {}
    if settings.qc_asr_models_dir is not None:
        asr["models_dir"] = str(settings.qc_asr_models_dir)
    parameters = {"tts_fastpitch": fastpitch, "lipsync_wav2lip": wav2lip, "vc_rvc": rvc, "asr": asr}
    return {name: values for name, values in parameters.items() if values}


def _env_name(field: str) -> str:
    return f"POLYDUB_{field.upper()}"


def _is_set(settings: Settings, field: str) -> bool:
    value = getattr(settings, field)
    return value is not None and value is not False and value != ""


def weights_configured(info: EngineInfo, settings: Settings) -> bool:
    """Whether one of the engine's alternatives of settings is fully given (True if it needs none)."""
    return not info.needs or any(all(_is_set(settings, f) for f in option) for option in info.needs)


def _needs_text(info: EngineInfo) -> str:
    return " or ".join(" and ".join(_env_name(f) for f in option) for option in info.needs)


def _alternatives(info: EngineInfo) -> str:
    others = [name for name in engine_names(info.kind) if name != info.name and engine(info.kind, name).served]
    return ", ".join(f"--{info.kind} {name}" for name in others)


def engine_problem(info: EngineInfo, settings: Settings) -> InputError | None:
    """Why the engine cannot run with these settings, or ``None`` (no Triton round trip)."""
    if info.model is None:
        return None
    if not info.served:
        return InputError(
            f"{info.kind} engine {info.name!r} ({info.description}) is not served by this release of polydub: "
            f"there is no model {info.model}",
            f"choose {_alternatives(info)}",
        )
    if settings.inference == "local" and not weights_configured(info, settings):
        return InputError(
            f"{info.kind} engine {info.name!r} needs its weights, and none are configured",
            f"set {_needs_text(info)} (local files; nothing is downloaded), or choose {_alternatives(info)}",
        )
    return None


def check_engines(engines: Mapping[str, str], settings: Settings) -> None:
    """Raise one :class:`InputError` naming every chosen engine that cannot run here."""
    problems = [p for kind in ENGINE_KINDS if (p := engine_problem(engine(kind, engines[kind]), settings))]
    _raise(problems)


async def check_served(engines: Mapping[str, str], settings: Settings, inference: Any) -> None:
    """:func:`check_engines`, and with Triton inference, that the server has each model loaded."""
    check_engines(engines, settings)
    is_ready = getattr(inference, "is_model_ready", None)
    if settings.inference != "triton" or is_ready is None:
        return
    problems = []
    for kind in ENGINE_KINDS:
        info = engine(kind, engines[kind])
        for model in info.models:
            if await is_ready(model):
                continue
            hint = f" (it needs {_needs_text(info)} on the Triton host)" if info.needs and model == info.model else ""
            problems.append(InputError(
                f"{info.kind} engine {info.name!r}: model {model} is not loaded on Triton at "
                f"{settings.triton_url}{hint}",
                f"load it on the server (`polydub stack up` loads every model whose weights are configured), "
                f"or choose {_alternatives(info)}",
            ))
    _raise(problems)


def _raise(problems: list[InputError]) -> None:
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise InputError("; ".join(p.reason for p in problems), "; ".join(p.fix or "" for p in problems))


def models_to_load(settings: Settings, repository: Path | None = None) -> list[str]:
    """The models the stack's Triton loads (``POLYDUB_TRITON_MODELS``).

    ``auto`` skips models whose weights are not configured: Triton refuses to
    start when any model fails to load, and no weights ship with polydub.
    """
    repository = Path(repository or settings.triton_model_repository)
    available = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file())
    choice = settings.triton_models.strip()
    if choice == "all":
        return available
    if choice == "auto":
        unconfigured = {e.model for e in ENGINES if e.model and not weights_configured(e, settings)}
        return [m for m in available if m not in unconfigured]
    wanted = [m.strip() for m in choice.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise InputError(
            f"POLYDUB_TRITON_MODELS names unknown model(s) {unknown}",
            f"choose from {', '.join(available)}, or `auto` / `all`",
        )
    return wanted
