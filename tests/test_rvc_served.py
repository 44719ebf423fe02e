"""vc_rvc: voices by name from a directory, cached and reloaded, the pitch shift, and on the real tritonserver.

The content encoder is a small fairseq-layout ``hubert_base.pt`` and the voices
tiny official-layout ``.pth`` files (tests.fixtures.rvc), so the model loads
every file the way it loads the published ones.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest

from engines.dsp import resample
from engines.rvc.pitch import voiced_median_hz
from handlers.runtime.inference import LocalInferenceClient, TritonInferenceClient
from serving.batching import join_items
from serving.catalog import build_model, model_class
from serving.configs import CPU_CONFIG_NAME, Variant, config_json
from serving.interfaces import VC_INPUTS
from serving.models.vc_rvc import RvcServed
from tests.fixtures.rvc import sung_tone, voiced_speechlike, write_content_encoder, write_voice
from tests.fixtures.servers import batch_statistics

MODEL = "vc_rvc"
RATE = 22050


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rvc")
    voices = root / "voices"
    write_voice(voices, "alice", seed=1)
    write_voice(voices, "bob", seed=2, f0=False)
    return {"voices": voices, "content": write_content_encoder(root / "hubert_base.pt")}


def _parameters(files: dict[str, Path], **more: str) -> dict[str, str]:
    return {"voices_dir": str(files["voices"]), "content_encoder": str(files["content"]), **more}


@pytest.fixture(scope="module")
def served(files: dict[str, Path]) -> RvcServed:
    model = build_model(MODEL, _parameters(files))
    assert isinstance(model, RvcServed)
    return model


def _speech(seconds: float, seed: int = 0) -> np.ndarray:
    return resample(voiced_speechlike(seconds, seed=seed), 16000, RATE)


def _item(voice: str, seconds: float = 1.0, **more: object) -> dict[str, object]:
    return {"WAVEFORM": _speech(seconds), "SAMPLE_RATE": np.int32(RATE), "VOICE": voice, **more}


def test_a_voice_converts_at_the_pipeline_rate_to_the_input_length(served: RvcServed) -> None:
    (out,) = served.infer_items([_item("alice", 1.3, PITCH_SHIFT=np.float32(0))])
    assert out["WAVEFORM"].shape == (int(1.3 * RATE),) and out["WAVEFORM"].dtype == np.float32
    assert np.isfinite(out["WAVEFORM"]).all() and np.abs(out["WAVEFORM"]).max() > 0


def test_an_unknown_or_missing_voice_names_the_voices_there_are(served: RvcServed) -> None:
    with pytest.raises(ValueError, match="no RVC voice 'carol'.*voices available: alice, bob"):
        served.infer_items([_item("carol")])
    with pytest.raises(ValueError, match="needs VOICE.*alice, bob"):
        served.infer_items([{"WAVEFORM": _speech(0.5), "SAMPLE_RATE": np.int32(RATE)}])
    with pytest.raises(ValueError, match="not a voice name"):
        served.infer_items([_item("../voices/alice")])


def test_without_its_files_the_model_refuses_to_load_naming_them(files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="content_encoder.*POLYDUB_RVC_CONTENT_ENCODER.*random_init"):
        build_model(MODEL, {"voices_dir": str(files["voices"])})
    with pytest.raises(ValueError, match="voices_dir.*POLYDUB_RVC_VOICES_DIR"):
        build_model(MODEL, {"content_encoder": str(files["content"])})


def test_the_register_comes_from_the_reference_and_converts_the_same_from_its_statistics(served: RvcServed) -> None:
    """The returned TARGET_STATS (the speaker's median F0) converts exactly as the clip it came from."""
    reference = resample(sung_tone(210, 2.0), 16000, RATE)
    from_clip, = served.infer_items([_item("alice", REFERENCE=reference)])
    stats = from_clip["TARGET_STATS"]
    assert stats[1] == pytest.approx(210, rel=0.03)
    from_stats, = served.infer_items([_item("alice", TARGET_STATS=stats)])
    np.testing.assert_array_equal(from_clip["WAVEFORM"], from_stats["WAVEFORM"])


def test_the_shift_is_automatic_toward_the_register_unless_the_request_gives_one(served: RvcServed) -> None:
    """An octave-higher speaker: auto shift is +12 semitones, as an explicit PITCH_SHIFT=12 gives."""
    source = served.pipeline.analyse(voiced_speechlike(1.0), None)
    median = voiced_median_hz(source.own_f0_hz)
    assert median is not None
    stats = np.array([1.0, 2 * median], dtype=np.float32)
    auto, = served.infer_items([_item("alice", TARGET_STATS=stats)])
    octave, = served.infer_items([_item("alice", PITCH_SHIFT=np.float32(12))])
    kept, = served.infer_items([_item("alice", PITCH_SHIFT=np.float32(0))])
    np.testing.assert_allclose(auto["WAVEFORM"], octave["WAVEFORM"], atol=2e-3)
    assert not np.allclose(auto["WAVEFORM"], kept["WAVEFORM"], atol=1e-2)
    unknown, = served.infer_items([_item("alice")])  # no reference, no stats: the pitch is kept
    np.testing.assert_array_equal(unknown["WAVEFORM"], kept["WAVEFORM"])
    assert unknown["TARGET_STATS"].tolist() == [1.0, 0.0]


def test_a_batch_of_mixed_voices_gives_each_item_what_it_gets_alone(served: RvcServed) -> None:
    items = [_item("bob", 0.7), _item("alice", 1.1, PITCH_SHIFT=np.float32(3)), _item("alice", 0.4)]
    batched = served.infer_items(items)
    for item, got in zip(items, batched):
        (alone,) = served.infer_items([item])
        np.testing.assert_allclose(got["WAVEFORM"], alone["WAVEFORM"], atol=2e-5)


def test_voices_load_lazily_stay_within_the_cache_bound_and_reload_when_their_file_changes(
        files: dict[str, Path], tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    write_voice(voices, "alice", seed=1)
    write_voice(voices, "bob", seed=2, f0=False)
    model = build_model(MODEL, {**_parameters(files), "voices_dir": str(voices), "cached_voices": "1"})
    assert isinstance(model, RvcServed)
    assert model.voices.loaded() == []
    before, = model.infer_items([_item("alice", PITCH_SHIFT=np.float32(0))])
    assert model.voices.loaded() == ["alice"]
    model.infer_items([_item("bob")])
    assert model.voices.loaded() == ["bob"]  # the bound: alice was unloaded

    write_voice(voices, "alice", seed=3)  # retrained: new weights, same name
    stamp = time.time() + 5
    os.utime(voices / "alice.pth", (stamp, stamp))
    after, = model.infer_items([_item("alice", PITCH_SHIFT=np.float32(0))])
    assert not np.allclose(before["WAVEFORM"], after["WAVEFORM"], atol=1e-3)


def test_a_voice_index_beside_the_voice_is_used_and_one_of_the_wrong_width_is_refused(
        files: dict[str, Path], tmp_path: Path) -> None:
    import faiss

    voices = tmp_path / "voices"
    write_voice(voices, "alice", seed=1)
    plain = build_model(MODEL, {**_parameters(files), "voices_dir": str(voices)})
    without, = plain.infer_items([_item("alice", PITCH_SHIFT=np.float32(0))])
    rng = np.random.default_rng(0)
    index = faiss.IndexFlatL2(256)
    index.add(rng.standard_normal((32, 256)).astype(np.float32))
    faiss.write_index(index, str(voices / "alice.index"))
    with_index, = plain.infer_items([_item("alice", PITCH_SHIFT=np.float32(0))])
    assert not np.allclose(without["WAVEFORM"], with_index["WAVEFORM"], atol=1e-3)

    wrong = faiss.IndexFlatL2(768)
    wrong.add(rng.standard_normal((4, 768)).astype(np.float32))
    faiss.write_index(wrong, str(voices / "alice.index"))
    with pytest.raises(ValueError, match="768-d features but voice 'alice' is RVC v1"):
        plain.infer_items([_item("alice")])


def test_vc_world_refuses_named_voices() -> None:
    world = build_model("vc_world")
    with pytest.raises(ValueError, match="no named voices"):
        world.infer_items([{"WAVEFORM": _speech(0.5), "SAMPLE_RATE": np.int32(RATE), "VOICE": "alice",
                            "REFERENCE": _speech(0.5)}])


# --- on Triton ------------------------------------------------------------------------------


@pytest.mark.integration
def test_concurrent_requests_on_triton_are_batched_and_match_the_local_client(
        files: dict[str, Path], tmp_path: Path) -> None:
    from infra.triton import TritonServer
    from serving import MODEL_REPOSITORY

    parameters = _parameters(files)
    config = config_json(model_class(MODEL), Variant(gpu=False, parameters=parameters))
    server = TritonServer(tmp_path / "run", MODEL_REPOSITORY, model_control_mode="explicit", load_models=(),
                          model_configs={MODEL: config}, auto_complete_config=False,
                          model_config_name=CPU_CONFIG_NAME, backend_dir=tmp_path / "backends")
    requests = [join_items([_item(voice, seconds, PITCH_SHIFT=np.float32(shift))], VC_INPUTS)
                for voice, seconds, shift in [("alice", 1.0, 0), ("bob", 0.6, 0), ("alice", 1.4, 2),
                                              ("alice", 0.5, -3), ("bob", 1.2, 0), ("alice", 0.8, 0)]]
    server.start()
    try:
        async def send() -> list[dict[str, np.ndarray]]:
            client = TritonInferenceClient(server.grpc_url, 120.0)
            try:
                return list(await asyncio.gather(*(client.infer(MODEL, r) for r in requests)))
            finally:
                await client.close()

        remote = asyncio.run(send())
        inferences, executions = batch_statistics(server.grpc_url, MODEL, settle_for=len(requests))
    finally:
        server.stop()
    local = LocalInferenceClient({MODEL: parameters}, device="cpu")
    for request, got in zip(requests, remote):
        want = local.infer_sync(MODEL, request)
        assert got["WAVEFORM"].shape == want["WAVEFORM"].shape == request["WAVEFORM"].shape
        np.testing.assert_allclose(got["WAVEFORM"], want["WAVEFORM"], atol=2e-5)
    assert inferences >= len(requests)
    assert executions < len(requests), "the dynamic batcher grouped no requests"
