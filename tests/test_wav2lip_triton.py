"""lipsync_wav2lip and face_tracker on the real tritonserver, with a tiny official-layout checkpoint.

The checkpoint reaches the model as its ``checkpoint`` parameter through a
config override (as the local stack gives it ``POLYDUB_WAV2LIP_CHECKPOINT``).
Concurrent crop requests are grouped by the dynamic batcher and give what the
in-process client gives; the face tracker finds the face Triton-side as it
does in process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.wav2lip.checkpoint import random_wav2lip
from engines.wav2lip.config import Wav2LipConfig
from handlers.runtime.inference import LocalInferenceClient, TritonInferenceClient
from infra.triton import TritonServer
from serving import MODEL_REPOSITORY
from serving.batching import join_items
from serving.catalog import model_class
from serving.configs import CPU_CONFIG_NAME, Variant, config_json
from serving.interfaces import FACE_LIPSYNC_INPUTS, FACE_TRACK_INPUTS
from tests.fixtures.servers import batch_statistics

MODEL = "lipsync_wav2lip"
TRACKER = "face_tracker"
REQUESTS = 8
CROPS_PER_REQUEST = 4

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wav2lip") / "wav2lip_gan.pth"
    model = random_wav2lip(Wav2LipConfig.tiny(), seed=11)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "optimizer": {},
                "global_step": 5, "global_epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def server(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> TritonServer:
    work = tmp_path_factory.mktemp("triton-wav2lip")
    config = config_json(model_class(MODEL), Variant(gpu=False, parameters={"checkpoint": str(checkpoint)}))
    triton = TritonServer(work / "run", MODEL_REPOSITORY, model_control_mode="explicit", load_models=(TRACKER,),
                          model_configs={MODEL: config}, auto_complete_config=False,
                          model_config_name=CPU_CONFIG_NAME, backend_dir=work / "backends")
    try:
        triton.start()
        yield triton
    finally:
        triton.stop()


def _requests() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [join_items([{"FACES": rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8),
                         "MEL": rng.uniform(-4, 4, size=(80, 16)).astype(np.float32)}
                        for _ in range(CROPS_PER_REQUEST)], FACE_LIPSYNC_INPUTS) for _ in range(REQUESTS)]


async def _all(url: str, model: str, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    client = TritonInferenceClient(url, 120.0)
    try:
        return list(await asyncio.gather(*(client.infer(model, r) for r in requests)))
    finally:
        await client.close()


def test_concurrent_crop_requests_are_batched_and_match_the_local_client(server: TritonServer,
                                                                         checkpoint: Path) -> None:
    requests = _requests()
    remote = asyncio.run(_all(server.grpc_url, MODEL, requests))
    local = LocalInferenceClient({MODEL: {"checkpoint": str(checkpoint)}}, device="cpu")
    for request, got in zip(requests, remote):
        want = local.infer_sync(MODEL, request)
        assert got["FACES"].shape == want["FACES"].shape == (CROPS_PER_REQUEST, 96, 96, 3)
        assert np.abs(got["FACES"].astype(int) - want["FACES"].astype(int)).max() <= 1  # batch-size rounding
    inferences, executions = batch_statistics(server.grpc_url, MODEL, settle_for=REQUESTS * CROPS_PER_REQUEST)
    assert inferences >= REQUESTS * CROPS_PER_REQUEST
    assert executions < REQUESTS, "the dynamic batcher grouped no crop requests"


def test_the_face_tracker_finds_the_face_on_triton_as_in_process(server: TritonServer) -> None:
    import cv2
    import skimage.data

    face = cv2.resize(skimage.data.astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    frames = np.stack([face, face, np.zeros_like(face), face])
    request = join_items([{"FRAMES": frames}], FACE_TRACK_INPUTS)
    (remote,) = asyncio.run(_all(server.grpc_url, TRACKER, [request]))
    local = LocalInferenceClient(device="cpu").infer_sync(TRACKER, request)
    np.testing.assert_array_equal(remote["BOXES"], local["BOXES"])
    boxes = remote["BOXES"][0]
    assert np.isfinite(boxes[0]).all() and np.isnan(boxes[2]).all(), "a face, then none in the black frame"
    assert np.isfinite(boxes[3]).all(), "the face is picked up again when it comes back"
    assert 60 < boxes[0][2] < 250, "a plausible face width at 320 px"
