"""The checked-in Triton configs are what the adapters generate, and the stack selects the CPU ones.

``config.pbtxt`` (KIND_GPU) and ``configs/cpu.pbtxt`` (KIND_CPU) of every model are
derived from its ``model.py`` (``python -m infra.triton_configs``); a hand edit or an
interface change without regenerating would serve tensors the adapter does not expect.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engines.batching import render_config
from handlers.runtime.inference import MODEL_REPOSITORY, load_adapter_module
from handlers.runtime.settings import Settings
from infra.stack import Stack, TritonServer
from infra.triton_configs import CPU_CONFIG_NAME, render_model_configs, served_model_names

MODELS = served_model_names()
REGENERATE = "run `python -m infra.triton_configs` (make generate) and commit the result"


def test_every_folder_in_the_repository_is_a_model_with_both_configs() -> None:
    """A folder without a config stops tritonserver; one without a CPU config fails on CPU hosts."""
    folders = sorted(p.name for p in MODEL_REPOSITORY.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == MODELS, f"folders without 1/model.py: {sorted(set(folders) - set(MODELS))}"
    for name in folders:
        assert (MODEL_REPOSITORY / name / "config.pbtxt").is_file(), f"{name} has no config.pbtxt"
        assert (MODEL_REPOSITORY / name / "configs" / f"{CPU_CONFIG_NAME}.pbtxt").is_file(), (
            f"{name} has no configs/{CPU_CONFIG_NAME}.pbtxt")


@pytest.mark.parametrize("name", MODELS)
def test_checked_in_configs_equal_the_generated_ones(name: str) -> None:
    rendered = render_model_configs(name)
    assert len(rendered) == 2
    for relative, text in rendered.items():
        path = MODEL_REPOSITORY / relative
        assert path.is_file(), f"{relative} is missing; {REGENERATE}"
        assert path.read_text() == text, f"{relative} drifted from {name}/1/model.py; {REGENERATE}"


@pytest.mark.parametrize("name", MODELS)
def test_configs_batch_dynamically_on_the_right_device_and_carry_no_strings(name: str) -> None:
    """TYPE_STRING inputs abort Triton 2.51's python stub under numpy 2 (see engines.batching)."""
    gpu = (MODEL_REPOSITORY / name / "config.pbtxt").read_text()
    cpu = (MODEL_REPOSITORY / name / "configs" / f"{CPU_CONFIG_NAME}.pbtxt").read_text()
    assert "kind: KIND_GPU" in gpu and "kind: KIND_CPU" in cpu
    for text in (gpu, cpu):
        assert "dynamic_batching {" in text
        assert f'name: "{name}"' in text
        assert "TYPE_STRING" not in text


def test_the_batching_off_variant_drops_only_the_batcher() -> None:
    served = load_adapter_module("tts_espeak").SERVED_CLASS
    on = render_config(served, "KIND_CPU")
    off = render_config(served, "KIND_CPU", dynamic_batching=False)
    assert "dynamic_batching" in on and "dynamic_batching" not in off
    assert f"max_batch_size: {served.max_batch_size}" in off
    assert off == on.replace("dynamic_batching {\n  max_queue_delay_microseconds: 5000\n}\n", "")


def test_triton_selects_the_cpu_configs_by_default(tmp_path: Path) -> None:
    assert Settings().triton_config_name == CPU_CONFIG_NAME
    ports = {"grpc": 18001, "http": 18000, "metrics": 18002}  # never bound: no server starts
    default = TritonServer(tmp_path, MODEL_REPOSITORY, ports=ports)
    assert f"--model-config-name={CPU_CONFIG_NAME}" in default.command()
    gpu = TritonServer(tmp_path, MODEL_REPOSITORY, ports=ports, model_config_name="")
    assert not any(arg.startswith("--model-config-name") for arg in gpu.command())
    stack = Stack.from_settings(Settings(stack_dir=tmp_path, triton_config_name="h100"), ["triton"])
    triton = stack.servers["triton"]
    assert isinstance(triton, TritonServer) and triton.model_config_name == "h100"
    assert triton.params()["model_config_name"] == "h100", "stack status/down must rebuild it"
    assert triton.auto_complete_config is False, "the configs are complete; asking costs ~2 s a model"


def test_each_triton_stub_gets_the_configured_cpu_threads(tmp_path: Path) -> None:
    assert Settings().triton_cpu_threads == 1
    assert TritonServer(tmp_path, MODEL_REPOSITORY).environment()["OMP_NUM_THREADS"] == "1"
    stack = Stack.from_settings(Settings(stack_dir=tmp_path, triton_cpu_threads=3), ["triton"])
    triton = stack.servers["triton"]
    assert isinstance(triton, TritonServer) and triton.environment()["OMP_NUM_THREADS"] == "3"
    assert triton.params()["cpu_threads"] == 3
    inherit = TritonServer(tmp_path, MODEL_REPOSITORY, cpu_threads=0).environment()
    assert inherit.get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS")


def test_config_name_must_be_a_plain_name() -> None:
    with pytest.raises(ValueError, match="triton_config_name"):
        Settings(triton_config_name="cpu --exit-on-error=false")
