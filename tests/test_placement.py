"""Every served model on the device its instance is given, GPU instances included on CPU-only hosts.

Torch models asked for a GPU that is not there refuse to load with a message
naming the missing device and the CPU config to use instead (on a host with a
GPU they load there); engines that only run on a CPU run there whatever the
instance kind (the documented fall-back, with a warning). On the CPU every
model builds and answers a request.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from serving.batching import join_items, run_batch, split_batch
from serving.catalog import build_model, model_class, served_model_names
from serving.placement import Placement, cuda_device_count
from serving.triton import initialize_args
from tests.fixtures.rvc import write_content_encoder, write_voice

RATE = 22_050
FPS = 25.0
#: What a request to a model needs beyond its family's inputs.
REQUEST_EXTRAS = {"vc_rvc": {"VOICE": "alice"}}


@pytest.fixture(scope="module")
def parameters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Parameters a model needs to build at all here (no weights ship with polydub)."""
    rvc = tmp_path_factory.mktemp("rvc")
    write_voice(rvc / "voices", "alice", seed=1)
    encoder: Path = write_content_encoder(rvc / "hubert_base.pt")
    return {"tts_fastpitch": {"random_init": "true"}, "lipsync_wav2lip": {"random_init": "true"},
            "vc_rvc": {"voices_dir": str(rvc / "voices"), "content_encoder": str(encoder)}}


def _speech() -> np.ndarray:
    """Two seconds of real (eSpeak) speech: WORLD needs a voice to estimate, not a tone."""
    espeak = build_model("tts_espeak")
    out = split_batch(run_batch(espeak, join_items(
        [{"TEXT": "Good morning, everyone. The weather is lovely today.", "LANG": "en"}], espeak.inputs)),
        espeak.outputs)
    return out[0]["WAVEFORM"]


def _one_request(name: str) -> list[dict]:
    """A small valid item for each model family."""
    family = model_class(name).interface.family
    tone = _speech() if family == "vc" else (
        0.3 * np.sin(2 * np.pi * 180 * np.arange(int(1.2 * RATE)) / RATE)).astype(np.float32)
    face = np.full((4, 64, 64, 3), 128, dtype=np.uint8)
    items = {
        "tts": [{"TEXT": "Hello there.", "LANG": "en"}],
        "vc": [{"WAVEFORM": tone[: RATE // 2], "SAMPLE_RATE": np.int32(RATE), "REFERENCE": tone}],
        "speaker": [{"WAVEFORM": tone, "SAMPLE_RATE": np.int32(RATE)}],
        "lipsync": [{"FRAMES": face, "AUDIO": tone[: int(4 / FPS * RATE)], "SAMPLE_RATE": np.int32(RATE),
                     "FPS": np.float32(FPS)}],
        "av_sync": [{"FRAMES": face, "AUDIO": tone[: int(4 / FPS * RATE)], "SAMPLE_RATE": np.int32(RATE),
                     "FPS": np.float32(FPS)}],
        "face_lipsync": [{"FACES": np.full((96, 96, 3), 128, dtype=np.uint8),
                          "MEL": np.zeros((80, 16), dtype=np.float32)}] * 2,
        "face_track": [{"FRAMES": face}],
        "asr": [{"WAVEFORM": tone, "SAMPLE_RATE": np.int32(RATE), "LANG": "en"},
                {"WAVEFORM": tone[: RATE // 4], "SAMPLE_RATE": np.int32(RATE), "LANG": "en"}],
    }
    return [{**item, **REQUEST_EXTRAS.get(name, {})} for item in items[family]]


@pytest.mark.parametrize("name", served_model_names())
def test_a_gpu_instance_fails_clearly_or_falls_back_to_the_cpu(name: str, parameters: dict[str, dict[str, str]],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    served = model_class(name)
    gpu = Placement("gpu", 0)
    if served.runs_on == "any" and cuda_device_count() > 0:  # a GPU host: the model goes there
        assert build_model(name, parameters.get(name), gpu).placement == gpu
    elif served.runs_on == "any":
        with pytest.raises(ValueError) as info:
            build_model(name, parameters.get(name), gpu)
        message = str(info.value)
        assert name in message and "GPU 0" in message and "no CUDA device" in message
        assert "--model-config-name=cpu" in message and "POLYDUB_DEVICE=cpu" in message
    else:
        with caplog.at_level(logging.WARNING, logger="serving.model"):
            model = build_model(name, parameters.get(name), gpu)
        assert model.placement == Placement("cpu"), "a CPU-only engine runs on the CPU"
        assert any("only runs on a CPU" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
@pytest.mark.parametrize("name", served_model_names())
def test_a_cpu_instance_builds_and_answers(name: str, parameters: dict[str, dict[str, str]]) -> None:
    model = build_model(name, parameters.get(name), Placement("cpu"))
    items = _one_request(name)
    out = split_batch(run_batch(model, join_items(items, model.inputs)), model.outputs)
    assert len(out) == len(items)
    for item in out:
        assert set(item) >= {s.name for s in model.outputs if s.length_of is None or s.utf8}


def test_triton_arguments_become_the_placement_and_the_parameters() -> None:
    config = {"parameters": {"random_init": {"string_value": "true"}}}
    args = {"model_config": json.dumps(config), "model_instance_kind": "GPU", "model_instance_device_id": "1"}
    parameters, placement = initialize_args(args)
    assert parameters == {"random_init": "true"} and placement == Placement("gpu", 1)
    cpu = {"model_config": "{}", "model_instance_kind": "CPU", "model_instance_device_id": "0"}
    assert initialize_args(cpu) == ({}, Placement("cpu"))


def test_the_local_device_setting_is_parsed_and_checked() -> None:
    assert Placement.parse("cpu") == Placement("cpu")
    assert Placement.parse("cuda:2") == Placement("gpu", 2)
    expected = Placement("gpu", 0) if cuda_device_count() > 0 else Placement("cpu")
    assert Placement.parse("auto") == expected, "auto is the first GPU, else the CPU"
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        Placement.parse("tpu")


def test_unknown_or_malformed_parameters_name_the_model_and_the_fix() -> None:
    with pytest.raises(ValueError, match=r"tts_fastpitch has no parameter\(s\) \['checkpoint'\]"):
        build_model("tts_fastpitch", {"checkpoint": "x.pt"})
    with pytest.raises(ValueError, match="tts_fastpitch parameter random_init='maybe': expected true or false"):
        build_model("tts_fastpitch", {"random_init": "maybe"})
    with pytest.raises(ValueError, match="tts_fastpitch needs the parameter.*fastpitch_checkpoint"):
        build_model("tts_fastpitch", {})
    with pytest.raises(ValueError, match="lipsync_wav2lip needs the parameter checkpoint.*POLYDUB_WAV2LIP_CHECKPOINT"):
        build_model("lipsync_wav2lip", {})
