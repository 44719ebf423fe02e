"""tts_fastpitch on the real tritonserver, with checkpoints written in NVIDIA's layout.

Tiny models in the official file format (so the test runs in seconds): the
served model loads them through its ``fastpitch_checkpoint`` /
``hifigan_checkpoint`` parameters (given to Triton as a config override, as the
local stack gives the ``POLYDUB_*`` paths), answers concurrent requests that the
dynamic batcher groups, and gives what the in-process client gives.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.fastpitch.config import FastPitchConfig, HiFiGanConfig
from engines.fastpitch.hifigan import HiFiGan
from engines.fastpitch.model import FastPitch
from handlers.runtime.inference import TritonInferenceClient
from infra.triton import TritonServer
from serving import MODEL_REPOSITORY
from serving.batching import run_batch
from serving.catalog import build_model, model_class
from serving.configs import Variant, config_json
from serving.specs import encode_texts
from tests.fixtures.servers import batch_statistics

MODEL = "tts_fastpitch"
TEXTS = ["Hello there.", "A somewhat longer sentence to speak.", "Yes.", "Numbers like 42 work too.",
         "Short.", "The quick brown fox jumps over the lazy dog.", "Okay then.", "One more, please."]
TRAIN_SETUP = {"sampling_rate": 22050, "hop_length": 256, "symbol_set": "english_basic", "p_arpabet": 0.0}

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("fastpitch")
    torch.manual_seed(0)
    fastpitch = FastPitch(FastPitchConfig.tiny())
    with torch.no_grad():
        fastpitch.duration_predictor.fc.bias.fill_(math.log1p(5.0))  # speech-like lengths
    hifigan = HiFiGan(HiFiGanConfig.tiny())
    fp_path, hg_path = folder / "fastpitch.pt", folder / "hifigan.pt"
    torch.save({"epoch": 1, "iteration": 1, "config": FastPitchConfig.tiny().to_checkpoint_config(),
                "train_setup": TRAIN_SETUP, "state_dict": {f"module.{k}": v for k, v in fastpitch.state_dict().items()}},
               fp_path)
    torch.save({"generator": hifigan.state_dict(), "config": HiFiGanConfig.tiny().to_checkpoint_config(),
                "train_setup": TRAIN_SETUP}, hg_path)
    return fp_path, hg_path


def _parameters(checkpoints: tuple[Path, Path]) -> dict[str, str]:
    return {"fastpitch_checkpoint": str(checkpoints[0]), "hifigan_checkpoint": str(checkpoints[1])}


@pytest.fixture(scope="module")
def server(checkpoints: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> TritonServer:
    work = tmp_path_factory.mktemp("triton-fastpitch")
    config = config_json(model_class(MODEL), Variant(gpu=False, parameters=_parameters(checkpoints)))
    triton = TritonServer(work / "run", MODEL_REPOSITORY, model_control_mode="explicit",
                          model_configs={MODEL: config}, auto_complete_config=False, backend_dir=work / "backends")
    try:
        triton.start()
        yield triton
    finally:
        triton.stop()


def _request(text: str, max_duration: float = 0.0) -> dict[str, np.ndarray]:
    data, length = encode_texts([text])
    lang, lang_len = encode_texts(["en"])
    return {"TEXT": data, "TEXT_LENGTH": length, "LANG": lang, "LANG_LENGTH": lang_len,
            "MAX_DURATION": np.array([[max_duration]], dtype=np.float32)}


async def _concurrently(url: str, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    client = TritonInferenceClient(url, 120.0)
    try:
        return list(await asyncio.gather(*(client.infer(MODEL, r) for r in requests)))
    finally:
        await client.close()


def test_concurrent_requests_are_batched_and_match_the_local_client(
    server: TritonServer, checkpoints: tuple[Path, Path]
) -> None:

    requests = [_request(t) for t in TEXTS]
    remote = asyncio.run(_concurrently(server.grpc_url, requests))

    local_model = build_model(MODEL, _parameters(checkpoints))
    for request, got in zip(requests, remote):
        want = run_batch(local_model, request)
        n = int(want["WAVEFORM_LENGTH"][0, 0])
        assert int(got["WAVEFORM_LENGTH"][0, 0]) == n > 0
        np.testing.assert_allclose(got["WAVEFORM"][0, :n], want["WAVEFORM"][0, :n], atol=1e-4)

    inferences, executions = batch_statistics(server.grpc_url, MODEL, settle_for=len(TEXTS))
    assert inferences >= len(TEXTS)
    assert executions < inferences, "the dynamic batcher grouped nothing"


def test_max_duration_speeds_speech_up_by_pace(server: TritonServer) -> None:
    natural, = asyncio.run(_concurrently(server.grpc_url, [_request(TEXTS[5])]))
    seconds = natural["WAVEFORM_LENGTH"][0, 0] / 22050
    fitted, = asyncio.run(_concurrently(server.grpc_url, [_request(TEXTS[5], max_duration=seconds / 1.2)]))
    assert fitted["WAVEFORM_LENGTH"][0, 0] / 22050 <= seconds / 1.2 + 256 / 22050
    assert fitted["SPEEDUP"][0, 0] == pytest.approx(1.2, rel=0.05)
    # A slot half the natural length: pace and stretch together stop at the bound (1.35x),
    # and the speech comes back longer than the slot (synthesis spills it into the silence).
    bounded, = asyncio.run(_concurrently(server.grpc_url, [_request(TEXTS[5], max_duration=seconds / 2)]))
    assert bounded["SPEEDUP"][0, 0] == pytest.approx(1.35, rel=0.01)
    assert bounded["WAVEFORM_LENGTH"][0, 0] / 22050 == pytest.approx(seconds / 1.35, rel=0.01)


@pytest.mark.slow
@pytest.mark.e2e
def test_polydub_run_with_fastpitch_records_the_checkpoint(checkpoints: tuple[Path, Path], tmp_path: Path) -> None:
    """``--tts fastpitch`` runs the whole pipeline; QC names the checkpoint that spoke.

    The tiny random model renders noise, so QC rightly fails the dub: what this
    shows is the plumbing and the report, not a voice.
    """
    import json
    import os
    import subprocess
    import sys

    from handlers.sample import make_sample

    sample = make_sample(tmp_path / "en.mp4", target_lang="en", seconds=6)
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYDUB_")}
    env.update(POLYDUB_FASTPITCH_CHECKPOINT=str(checkpoints[0]), POLYDUB_HIFIGAN_CHECKPOINT=str(checkpoints[1]),
               POLYDUB_LOCAL_STORE_DIR=str(tmp_path / "store"), POLYDUB_TRACE_FILE=str(tmp_path / "spans.jsonl"))
    out = tmp_path / "out" / "dub.mp4"
    done = subprocess.run([sys.executable, "-m", "handlers.cli", "run", str(sample.video), "--subs",
                           str(sample.subtitles), "--to", "en", "--tts", "fastpitch", "--vc", "none",
                           "--lipsync", "none", "-o", str(out)],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode in (0, 3), done.stderr  # 3: QC failed the (noise) dub, with reasons
    # A failed QC keeps what it judged beside the output, named so (embedded.qc_failed_path).
    judged = out if done.returncode == 0 else out.with_name("dub.qc-failed.mp4")
    assert judged.stat().st_size > 0
    report = json.loads(judged.with_suffix(".qc.json").read_text())
    assert report["engine_versions"]["tts"] == "fastpitch fastpitch.pt + hifigan hifigan.pt"
