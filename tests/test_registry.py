"""The one registry of stages and engine choices, and everything that derives from it.

The stage list and the engine choices are written once (``schemas.registry``);
the contract, the app, the CLI, the served models, the settings and QC must
agree with it, and an engine that cannot run is refused before any work.
"""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from handlers.app import STAGE_CLASSES
from handlers.cli import build_parser
from handlers.runtime.served import check_engines, model_parameters
from handlers.runtime.settings import Settings
from schemas.errors import InputError
from schemas.events import EngineChoice, Stage
from schemas.registry import (
    CHUNK_STAGES,
    DEFAULT_ENGINES,
    ENGINE_KINDS,
    ENGINES,
    STAGE_NAMES,
    STAGES,
    engine,
    engine_names,
    job_progress,
)
from serving.catalog import served_model_names

REPO = Path(__file__).resolve().parents[1]


def test_the_app_runs_the_registry_stages_in_order() -> None:
    assert tuple(STAGE_CLASSES) == STAGE_NAMES
    for info in STAGES:
        stage = STAGE_CLASSES[info.name]
        assert stage.consumes.model_fields["event_type"].default == info.consumes
    assert CHUNK_STAGES == ("synthesis", "conversion", "lipsync")
    assert set(typing.get_args(Stage)) == set(STAGE_NAMES)
    assert job_progress(dict.fromkeys(STAGE_NAMES, 1.0)) == pytest.approx(1.0)


def test_engine_choices_are_the_registry_in_the_contract_and_the_cli() -> None:
    for kind in ENGINE_KINDS:
        field = EngineChoice.model_fields[kind]
        assert typing.get_args(field.annotation) == engine_names(kind)
        assert field.default == DEFAULT_ENGINES[kind]
    parser = build_parser()
    for command in ("run", "submit"):
        sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        options = {a.dest: a for a in sub._actions}
        for kind in ENGINE_KINDS:
            assert tuple(options[kind].choices) == engine_names(kind), (command, kind)
            assert options[kind].default == DEFAULT_ENGINES[kind]


def test_every_served_engine_has_its_model_and_names_real_settings() -> None:
    models = set(served_model_names())
    for info in ENGINES:
        if info.model is None:
            assert info.name == "none", "only `none` passes its input through"
        elif info.served:
            assert info.model in models, f"{info.kind} {info.name}: no serving/models/{info.model}.py"
        else:
            assert info.model not in models, f"{info.model} is served: mark the engine served"
        for option in info.needs:
            for field in option:
                assert field in Settings.model_fields, f"{info.name} needs unknown setting {field}"


def test_an_engine_that_cannot_run_is_refused_naming_what_to_set() -> None:
    plain = Settings(fastpitch_checkpoint=None, hifigan_checkpoint=None, fastpitch_random_init=False)
    check_engines(DEFAULT_ENGINES, plain)  # the weight-free defaults always run
    with pytest.raises(InputError) as info:
        check_engines({**DEFAULT_ENGINES, "tts": "vallex"}, plain)
    assert "'vallex'" in info.value.reason and "tts_vallex" in info.value.reason
    assert "--tts espeak" in (info.value.fix or "")
    with pytest.raises(InputError) as info:
        check_engines({**DEFAULT_ENGINES, "vc": "rvc"}, plain)
    assert "POLYDUB_RVC_VOICES_DIR and POLYDUB_RVC_CONTENT_ENCODER" in (info.value.fix or "")
    assert "--vc world" in (info.value.fix or "")
    with pytest.raises(InputError) as info:
        check_engines({**DEFAULT_ENGINES, "tts": "fastpitch"}, plain)
    assert "POLYDUB_FASTPITCH_CHECKPOINT and POLYDUB_HIFIGAN_CHECKPOINT" in (info.value.fix or "")
    assert "POLYDUB_FASTPITCH_RANDOM_INIT" in (info.value.fix or "")
    configured = plain.model_copy(update={"fastpitch_random_init": True})
    check_engines({**DEFAULT_ENGINES, "tts": "fastpitch"}, configured)
    assert model_parameters(configured)["tts_fastpitch"] == {"random_init": "true"}
    # Served by Triton, the weights live on the Triton host: the worker's settings need none.
    check_engines({**DEFAULT_ENGINES, "tts": "fastpitch"}, plain.model_copy(update={"inference": "triton"}))
    assert engine("tts", "fastpitch").model == "tts_fastpitch"


def test_polydub_run_refuses_an_unserved_engine_before_loading_anything() -> None:
    """Exit 2 with the reason and the fix, before torch or the bus are imported (so in well under a second)."""
    probe = ("import sys; from handlers.cli import main; rc = main(['run', 'v.mp4', '--subs', 's.srt', '--to', 'ko', "
             "'--tts', 'vallex']); print(rc, 'torch' in sys.modules, 'faststream' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"}, check=False)
    assert done.stdout.split() == ["2", "False", "False"], done.stdout + done.stderr
    assert "tts engine 'vallex'" in done.stderr and "fix: choose --tts espeak, --tts fastpitch" in done.stderr
