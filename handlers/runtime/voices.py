"""A job's RVC voices: which voice each speaker gets, checked against the voices directory.

A submission's ``voices`` map (speaker label -> voice and optional pitch shift,
``*`` for everyone not named) and the deployment's default voice resolve to
one voice per speaker at ingest, written into the manifest; the conversion
stage reads them from there. Everything a person can get wrong (a voice that
does not exist, a label no segment uses, voices for an engine without them,
a speaker left without a voice) is an :class:`InputError` before any work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from handlers.runtime.settings import Settings
from schemas.errors import InputError
from schemas.events import ANY_SPEAKER, SpeakerVoice
from serving.voices import VoiceDirectory

#: The vc engine whose model has named voices.
NAMED_VOICES_ENGINE = "rvc"


def _directory(settings: Settings) -> VoiceDirectory:
    if settings.rvc_voices_dir is None:
        raise InputError("vc engine 'rvc' needs a voices directory, and none is configured",
                         "set POLYDUB_RVC_VOICES_DIR to the directory of .pth voices (mounted on workers and "
                         "Triton hosts at the same path)")
    return VoiceDirectory(settings.rvc_voices_dir)


def check_voice_names(vc_engine: str, voices: Mapping[str, SpeakerVoice], settings: Settings) -> None:
    """Every voice the submission (or the default) names exists; voices only come with ``--vc rvc``."""
    if vc_engine != NAMED_VOICES_ENGINE:
        if voices:
            raise InputError(f"the submission gives voices for speakers {sorted(voices)}, but its vc engine is "
                             f"{vc_engine!r}, which has no named voices",
                             "choose --vc rvc for RVC voices, or drop `voices`")
        return
    directory = _directory(settings)
    if not voices and not settings.rvc_default_voice:
        raise InputError("vc engine 'rvc' converts to a named voice, and none is given",
                         f"add --voice NAME (or `voices` in the submission), or set POLYDUB_RVC_DEFAULT_VOICE; "
                         f"{directory.available()}")
    available = set(directory.names())
    wanted = {v.voice for v in voices.values()} | ({settings.rvc_default_voice} if settings.rvc_default_voice else set())
    missing = sorted(wanted - available)
    if missing:
        raise InputError(f"unknown RVC voice(s) {missing} in {directory.root}",
                         f"choose from the {directory.available()}, or add <name>.pth there")


def resolve_voices(vc_engine: str, voices: Mapping[str, SpeakerVoice], labels: Iterable[str],
                   settings: Settings) -> dict[str, dict[str, Any]]:
    """The voice of each speaker label, as the manifest keeps it (empty unless the engine is rvc)."""
    if vc_engine != NAMED_VOICES_ENGINE:
        return {}
    labels = sorted(set(labels))
    unknown = sorted(set(voices) - set(labels) - {ANY_SPEAKER})
    if unknown:
        raise InputError(f"voices name speakers {unknown} that no subtitle segment uses (segments use {labels})",
                         f"label the segments with those speakers, use {ANY_SPEAKER!r} for everyone, or drop them")
    default = voices.get(ANY_SPEAKER)
    if default is None and settings.rvc_default_voice:
        default = SpeakerVoice(voice=settings.rvc_default_voice)
    resolved: dict[str, dict[str, Any]] = {}
    without = []
    for label in labels:
        choice = voices.get(label, default)
        if choice is None:
            without.append(label)
        else:
            resolved[label] = choice.model_dump()
    if without:
        raise InputError(f"speakers {without} have no RVC voice",
                         f"give them one in `voices` (or {ANY_SPEAKER!r} for everyone; CLI: --voice NAME), or set "
                         "POLYDUB_RVC_DEFAULT_VOICE")
    return resolved


__all__ = ["check_voice_names", "resolve_voices"]
