"""The checked-in Triton configs are what the served models generate, and the stack selects the CPU ones.

``config.pbtxt`` (production: KIND_GPU for torch models, KIND_CPU for engines that
only run on a CPU) and ``configs/cpu.pbtxt`` (KIND_CPU) of every model are derived
from its class in ``serving.models`` (``python -m serving.configs``); a hand edit or an
interface change without regenerating would serve tensors the model does not expect.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from handlers.localstack import stack_from_settings
from handlers.runtime.settings import Settings
from infra.triton import TritonServer
from serving import MODEL_REPOSITORY
from serving.catalog import model_class, served_model_names
from serving.configs import (
    CPU,
    CPU_CONFIG_NAME,
    Variant,
    entry_point,
    queue_delay_us,
    render_config,
    render_model_configs,
)
from serving.model import Scaling

MODELS = list(served_model_names())
REGENERATE = "run `python -m serving.configs` (make generate) and commit the result"


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
        assert path.read_text() == text, f"{relative} drifted from serving/models/{name}.py; {REGENERATE}"
    assert (MODEL_REPOSITORY / name / "1" / "model.py").read_text() == entry_point(name), REGENERATE


@pytest.mark.parametrize("name", MODELS)
def test_configs_batch_dynamically_on_the_right_device_and_carry_no_strings(name: str) -> None:
    """TYPE_STRING inputs abort Triton 2.51's python stub under numpy 2 (see serving.specs).

    Torch models run on a GPU in production; engines that only run on a CPU say so in
    both configs (a KIND_GPU instance of eSpeak would hold a GPU it never uses).
    """
    served = model_class(name)
    gpu = (MODEL_REPOSITORY / name / "config.pbtxt").read_text()
    cpu = (MODEL_REPOSITORY / name / "configs" / f"{CPU_CONFIG_NAME}.pbtxt").read_text()
    production_kind = "KIND_GPU" if served.runs_on == "any" else "KIND_CPU"
    assert f"kind: {production_kind}" in gpu and "kind: KIND_CPU" in cpu
    for text in (gpu, cpu):
        assert "dynamic_batching {" in text
        assert f'name: "{name}"' in text
        assert "TYPE_STRING" not in text
        assert f"count: {served.instances} }}" in text


@pytest.mark.parametrize("name", MODELS)
def test_batch_first_models_wait_to_fill_a_batch_and_per_item_ones_scale_by_instances(name: str) -> None:
    served = model_class(name)
    text = (MODEL_REPOSITORY / name / "configs" / f"{CPU_CONFIG_NAME}.pbtxt").read_text()
    assert f"max_queue_delay_microseconds: {queue_delay_us(served)}" in text
    if served.scaling is Scaling.PER_ITEM:
        assert queue_delay_us(served) == 0 and served.instances >= 2 and served.runs_on == "cpu"
        assert "throughput scales with the instance count" in text
    else:
        assert queue_delay_us(served) > 0


def test_the_batching_off_variant_drops_only_the_batcher() -> None:
    served = model_class("tts_espeak")
    on = render_config(served, CPU)
    off = render_config(served, Variant(gpu=False, dynamic_batching=False))
    assert "dynamic_batching" in on and "dynamic_batching" not in off
    assert f"max_batch_size: {served.max_batch_size}" in off
    block = ("# Per-item engine: no queue delay; throughput scales with the instance count.\n"
             "dynamic_batching {\n  max_queue_delay_microseconds: 0\n}\n")
    assert off == on.replace(block, "")


def test_triton_selects_the_cpu_configs_by_default(tmp_path: Path) -> None:
    assert Settings().triton_config_name == CPU_CONFIG_NAME
    ports = {"grpc": 18001, "http": 18000, "metrics": 18002}  # never bound: no server starts
    default = TritonServer(tmp_path, MODEL_REPOSITORY, ports=ports)
    assert f"--model-config-name={CPU_CONFIG_NAME}" in default.command()
    gpu = TritonServer(tmp_path, MODEL_REPOSITORY, ports=ports, model_config_name="")
    assert not any(arg.startswith("--model-config-name") for arg in gpu.command())
    stack = stack_from_settings(Settings(stack_dir=tmp_path, triton_config_name="h100"), ["triton"])
    triton = stack.servers["triton"]
    assert isinstance(triton, TritonServer) and triton.model_config_name == "h100"
    assert triton.params()["model_config_name"] == "h100", "stack status/down must rebuild it"
    assert triton.auto_complete_config is False, "the configs are complete; asking costs ~2 s a model"


def test_each_triton_stub_gets_the_configured_cpu_threads(tmp_path: Path) -> None:
    assert Settings().triton_cpu_threads == 1
    assert TritonServer(tmp_path, MODEL_REPOSITORY).environment()["OMP_NUM_THREADS"] == "1"
    stack = stack_from_settings(Settings(stack_dir=tmp_path, triton_cpu_threads=3), ["triton"])
    triton = stack.servers["triton"]
    assert isinstance(triton, TritonServer) and triton.environment()["OMP_NUM_THREADS"] == "3"
    assert triton.params()["cpu_threads"] == 3
    inherit = TritonServer(tmp_path, MODEL_REPOSITORY, cpu_threads=0).environment()
    assert inherit.get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS")


def test_config_name_must_be_a_plain_name() -> None:
    with pytest.raises(ValueError, match="triton_config_name"):
        Settings(triton_config_name="cpu --exit-on-error=false")
