"""The bridge from settings to the stack launcher (``handlers.localstack``); no server starts.

``infra`` imports nothing of ``handlers``, so where it mirrors a settings default
the two must be kept equal by a test, and the bridge must hand served models
their weights as parameters and infra's errors are polydub's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from handlers.localstack import stack_from_settings, triton_models
from handlers.runtime.settings import Settings
from infra.errors import StackError, StackInputError
from infra.triton import (
    DEFAULT_TRITON_CONFIG_NAME,
    DEFAULT_TRITON_CPU_THREADS,
    TritonServer,
)
from schemas.errors import InputError, PolydubError
from serving import MODEL_REPOSITORY

ROOT = Path(__file__).resolve().parents[1]


def test_infra_defaults_mirror_the_settings_defaults() -> None:
    settings = Settings()
    assert settings.triton_config_name == DEFAULT_TRITON_CONFIG_NAME
    assert settings.triton_cpu_threads == DEFAULT_TRITON_CPU_THREADS


def test_infra_imports_nothing_of_handlers() -> None:
    """DESIGN "Layout": importing every infra module must not load a handlers module."""
    modules = sorted(p.stem for p in (ROOT / "infra").glob("*.py") if p.stem != "__init__")
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module('infra.' + name)\n"
        "print(sorted(m for m in sys.modules if m == 'handlers' or m.startswith('handlers.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_stack_errors_are_polydub_errors_with_the_same_sentences() -> None:
    with pytest.raises(InputError) as usage:
        raise StackInputError("no such service", "choose another")
    assert (usage.value.reason, usage.value.fix) == ("no such service", "choose another")
    with pytest.raises(PolydubError) as failure:
        raise StackError("triton exited", "read the log")
    assert not isinstance(failure.value, InputError)  # the CLI exits 3 for it, not 2
    assert (failure.value.reason, failure.value.fix) == ("triton exited", "read the log")


def test_models_with_weights_get_them_as_parameters_not_environment(tmp_path: Path) -> None:
    checkpoints = {"fastpitch_checkpoint": tmp_path / "fp.pt", "hifigan_checkpoint": tmp_path / "hg.pt"}
    settings = Settings(stack_dir=tmp_path, triton_model_repository=MODEL_REPOSITORY, **checkpoints)
    by_name, configs = triton_models(settings)
    assert list(configs) == ["tts_fastpitch"] and "tts_fastpitch" not in by_name
    assert "tts_espeak" in by_name
    config = json.loads(configs["tts_fastpitch"])
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert params["fastpitch_checkpoint"] == str(checkpoints["fastpitch_checkpoint"])
    assert params["hifigan_checkpoint"] == str(checkpoints["hifigan_checkpoint"])
    assert {g["kind"] for g in config["instance_group"]} == {"KIND_CPU"}  # the stack's cpu variant

    triton = stack_from_settings(settings, ["triton"]).servers["triton"]
    assert isinstance(triton, TritonServer)
    assert triton.model_configs == configs and "tts_fastpitch" not in triton.load_models
    assert triton.params()["model_configs"] == configs, "stack status/down must rebuild it"
    assert str(checkpoints["fastpitch_checkpoint"]) not in triton.environment().values()


def test_gpu_variant_when_no_config_name(tmp_path: Path) -> None:
    settings = Settings(stack_dir=tmp_path, triton_model_repository=MODEL_REPOSITORY,
                        fastpitch_random_init=True, triton_config_name="")
    _, configs = triton_models(settings)
    config = json.loads(configs["tts_fastpitch"])
    assert config["parameters"]["random_init"]["string_value"] == "true"
    assert {g["kind"] for g in config["instance_group"]} == {"KIND_GPU"}


def test_broker_on_external_s3_needs_an_endpoint(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="S3 endpoint"):
        stack_from_settings(Settings(stack_dir=tmp_path, stack_broker_storage="s3"), ["broker"])
