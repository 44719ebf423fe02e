"""The served models on the real ``tritonserver`` agree with the in-process client.

One Triton serves the real ``triton_models/`` repository with the CPU configs
(``--model-config-name=cpu``, as ``polydub stack up`` runs it) for the whole
module. Per model, a batch of mixed-length requests sent concurrently through
:class:`TritonInferenceClient` must give what :class:`LocalInferenceClient`
gives for the same requests, and Triton's own statistics must show that its
dynamic batcher grouped them (fewer executions than requests). Bad requests
in the same dynamic batch fail alone, with an error that names the problem,
and leave the model serving. Inputs are short so the module stays quick.

The unit tests at the bottom pin the shared glue (``serving.batching``) that
both paths run: text on the wire, error isolation, DLPack-ready strides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from handlers.runtime.inference import LocalInferenceClient, TritonInferenceClient
from infra.triton import TritonServer
from schemas.errors import InferenceError
from serving import MODEL_REPOSITORY
from serving.batching import join_items, run_batch, run_requests, split_batch
from serving.configs import CPU_CONFIG_NAME
from serving.interfaces import ASR_INPUTS, LIPSYNC_INPUTS, SPEAKER_INPUTS, TTS_INPUTS, VC_INPUTS
from serving.specs import Batch, Item, encode_texts, text_inputs
from serving.triton import c_order
from tests.fixtures.servers import TritonFactory, batch_statistics

#: The weight-free reference engines: every one must load on a CPU-only Triton.
REFERENCE_MODELS = ("tts_espeak", "vc_world", "lipsync_mouthwarp", "speaker_encoder", "asr")
#: Requests sent at once: enough that the dynamic batcher has something to group.
CONCURRENT_REQUESTS = 8
#: How long Triton's counters may lag the responses a client already holds.
STATISTICS_SETTLE_S = 5.0
#: Deadline of one Triton call in these tests, in seconds (a hang fails, it does not block).
CALL_TIMEOUT_S = 60.0
#: Float outputs may differ by batch composition (padding in batched torch ops); engines
#: that run item by item agree exactly, and this bound is far below any audible change.
FLOAT_ATOL = 1e-4
RATE = 22_050
FPS = 25.0
FACE_SIZE = 160
#: Longest wave sent to the audio models, in seconds: short keeps the module quick.
MAX_WAVE_S = 1.2
#: Longest wave sent to WORLD VC, in seconds (Harvest F0 runs at about real time on one core).
VC_WAVE_S = 0.35
#: Length of the VC reference clip, in seconds (WORLD statistics need about a second of voice).
REFERENCE_S = 1.5

#: (text, lang) pairs of different lengths and scripts.
PHRASES = (
    ("Hi.", "en"),
    ("Good morning, everyone.", "en"),
    ("안녕하세요", "ko"),
    ("こんにちは、元気ですか", "ja"),
    ("你好，世界", "zh"),
    ("The weather is lovely today.", "en"),
    ("감사합니다, 또 만나요", "ko"),
    ("See you.", "en"),
)


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def triton(triton_server: TritonFactory) -> TritonServer:
    """One Triton for the module over the checked-in repository, CPU configs.

    Explicit model control loads only the reference engines: models needing
    weights that this machine lacks (e.g. ``tts_fastpitch``) would refuse to load.
    Auto-complete is off: the generated configs are complete, and it costs seconds.
    """
    return triton_server(
        MODEL_REPOSITORY,
        model_control_mode="explicit",
        load_models=REFERENCE_MODELS,
        auto_complete_config=False,
        model_config_name=CPU_CONFIG_NAME,
    )


@pytest.fixture(scope="module")
def local() -> LocalInferenceClient:
    return LocalInferenceClient()


@pytest.fixture(scope="module")
def speech(local: LocalInferenceClient) -> list[np.ndarray]:
    """Real speech of different lengths (eSpeak through the local client), at :data:`RATE`."""
    out = local.infer_sync("tts_espeak", {
        **text_inputs("TEXT", [text for text, _ in PHRASES]),
        **text_inputs("LANG", [lang for _, lang in PHRASES]),
    })
    assert int(out["SAMPLE_RATE"][0, 0]) == RATE
    lengths = out["WAVEFORM_LENGTH"].reshape(-1)
    return [out["WAVEFORM"][i, : lengths[i]] for i in range(len(PHRASES))]


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    import cv2
    import skimage.data

    return cv2.resize(skimage.data.astronaut(), (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)


# --- requests ----------------------------------------------------------------------------


def tts_requests(speech: list[np.ndarray], face: np.ndarray) -> list[Batch]:
    """One or two phrases per request; some with a slot to fit, a pitch, a voice variant."""
    requests = []
    for i, (text, lang) in enumerate(PHRASES):
        items: list[Item] = [{"TEXT": text, "LANG": lang, "MAX_DURATION": np.float32(0.6 if i % 3 == 1 else 0.0),
                              "PITCH_HZ": np.float32(180.0 if i % 4 == 2 else 0.0),
                              "VOICE": "f2" if i % 2 else ""}]
        if i % 2:
            other, other_lang = PHRASES[(i + 3) % len(PHRASES)]
            items.append({**items[0], "TEXT": other, "LANG": other_lang})
        requests.append(join_items(items, TTS_INPUTS))
    return requests


def vc_requests(speech: list[np.ndarray], face: np.ndarray) -> list[Batch]:
    """Mixed-length waves; most with cached statistics, the first with a reference clip."""
    reference = max(speech, key=len)[: int(REFERENCE_S * RATE)]
    out = LocalInferenceClient().infer_sync("vc_world", join_items(
        [{"WAVEFORM": reference[: RATE // 4], "SAMPLE_RATE": np.int32(RATE), "REFERENCE": reference}], VC_INPUTS))
    stats = out["TARGET_STATS"][0, : int(out["TARGET_STATS_LENGTH"][0, 0])]
    requests = []
    for i, wave in enumerate(speech):
        target = {"REFERENCE": reference} if i == 0 else {"TARGET_STATS": stats}
        items = [{"WAVEFORM": wave[: int(VC_WAVE_S * RATE)], "SAMPLE_RATE": np.int32(RATE), **target}]
        if i % 3 == 2:
            items.append({**items[0], "WAVEFORM": speech[(i + 1) % len(speech)][: int(VC_WAVE_S * RATE) // 2]})
        requests.append(join_items(items, VC_INPUTS))
    return requests


def speaker_requests(speech: list[np.ndarray], face: np.ndarray) -> list[Batch]:
    """Every phrase long enough to embed (cut to :data:`MAX_WAVE_S`), one or two per request."""
    waves = [w[: int(MAX_WAVE_S * RATE)] for w in speech if w.size > RATE * 0.8]
    requests = []
    for i in range(CONCURRENT_REQUESTS):
        items = [{"WAVEFORM": waves[i % len(waves)], "SAMPLE_RATE": np.int32(RATE)}]
        if i % 2:
            items.append({"WAVEFORM": waves[(i + 1) % len(waves)], "SAMPLE_RATE": np.int32(RATE)})
        requests.append(join_items(items, SPEAKER_INPUTS))
    return requests


def asr_requests(speech: list[np.ndarray], face: np.ndarray) -> list[Batch]:
    """Every phrase (cut to :data:`MAX_WAVE_S`) to the English recogniser, one or two per request."""
    waves = [w[: int(MAX_WAVE_S * RATE)] for w in speech]
    requests = []
    for i in range(CONCURRENT_REQUESTS):
        items = [{"WAVEFORM": waves[i], "SAMPLE_RATE": np.int32(RATE), "LANG": "en"}]
        if i % 3 == 1:
            items.append({**items[0], "WAVEFORM": waves[(i + 1) % len(waves)]})
        requests.append(join_items(items, ASR_INPUTS))
    return requests


def lipsync_requests(speech: list[np.ndarray], face: np.ndarray) -> list[Batch]:
    """A few frames of a real face with the matching span of speech, 3 to 10 frames long."""
    requests = []
    for i, wave in enumerate(speech):
        n = 3 + i
        audio = np.zeros(int(n / FPS * RATE), dtype=np.float32)
        piece = wave[: audio.size]
        audio[: piece.size] = piece
        items = [{"FRAMES": np.repeat(face[None], n, axis=0), "AUDIO": audio,
                  "SAMPLE_RATE": np.int32(RATE), "FPS": np.float32(FPS)}]
        requests.append(join_items(items, LIPSYNC_INPUTS))
    return requests


REQUESTS: dict[str, Callable[[list[np.ndarray], np.ndarray], list[Batch]]] = {
    "tts_espeak": tts_requests,
    "vc_world": vc_requests,
    "speaker_encoder": speaker_requests,
    "lipsync_mouthwarp": lipsync_requests,
    "asr": asr_requests,
}


# --- helpers ---------------------------------------------------------------------------------


async def settled_statistics(triton: TritonServer, model: str, inferences: int) -> tuple[int, int]:
    """Statistics once they count ``inferences`` items (bounded wait).

    Triton records a request's statistics after it has sent the response, so a
    client can hold every result a moment before the counters include them.
    """
    deadline = asyncio.get_running_loop().time() + STATISTICS_SETTLE_S
    while True:
        counts = statistics(triton, model)
        if counts[0] >= inferences or asyncio.get_running_loop().time() > deadline:
            return counts
        await asyncio.sleep(0.05)


def statistics(triton: TritonServer, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) now: items, and model executions (dynamic batches)."""
    return batch_statistics(triton.grpc_url, model)


async def infer_all(triton: TritonServer, model: str, requests: list[Batch]) -> list[Any]:
    """Every request at once through the polydub Triton client; results or exceptions."""
    client = TritonInferenceClient(triton.grpc_url, CALL_TIMEOUT_S)
    try:
        return list(await asyncio.gather(*(client.infer(model, r) for r in requests), return_exceptions=True))
    finally:
        await client.close()


def assert_same_outputs(model: str, remote: Batch, local: Batch) -> None:
    assert set(remote) == set(local), f"{model}: output names differ"
    for name, want in local.items():
        got = remote[name]
        assert got.shape == want.shape and got.dtype == want.dtype, (
            f"{model}.{name}: Triton {got.shape} {got.dtype} vs local {want.shape} {want.dtype}")
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(got, want, atol=FLOAT_ATOL, rtol=0, err_msg=f"{model}.{name}")
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"{model}.{name}")


# --- integration: Triton vs local ---------------------------------------------------------------


@pytest.mark.integration
def test_every_reference_model_loads_with_the_cpu_config(triton: TritonServer) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        for model in REFERENCE_MODELS:
            assert client.is_model_ready(model), f"{model} is not ready"
            config = client.get_model_config(model, as_json=True)["config"]
            assert [g["kind"] for g in config["instance_group"]] == ["KIND_CPU"], f"{model} runs the GPU config"
            assert "dynamic_batching" in config, f"{model} has no dynamic batching"
    finally:
        client.close()


@pytest.mark.integration
@pytest.mark.parametrize("model", sorted(REQUESTS))
async def test_concurrent_mixed_length_requests_match_local_and_are_batched(
    model: str, triton: TritonServer, local: LocalInferenceClient, speech: list[np.ndarray], face: np.ndarray
) -> None:
    requests = REQUESTS[model](speech, face)
    assert len(requests) == CONCURRENT_REQUESTS
    expected = [local.infer_sync(model, r) for r in requests]
    items = sum(next(iter(r.values())).shape[0] for r in requests)

    inferences_before, executions_before = statistics(triton, model)
    results = await infer_all(triton, model, requests)
    inferences_after, executions_after = await settled_statistics(triton, model, inferences_before + items)

    for i, (got, want) in enumerate(zip(results, expected)):
        assert not isinstance(got, BaseException), f"{model} request {i} failed: {got}"
        assert_same_outputs(f"{model}[{i}]", got, want)
    assert inferences_after - inferences_before == items
    executions = executions_after - executions_before
    assert 1 <= executions < CONCURRENT_REQUESTS, (
        f"{model}: {CONCURRENT_REQUESTS} concurrent requests took {executions} executions: "
        "the dynamic batcher grouped nothing")


@pytest.mark.integration
async def test_bad_items_fail_alone_in_a_dynamic_batch(
    triton: TritonServer, local: LocalInferenceClient, speech: list[np.ndarray], face: np.ndarray
) -> None:
    good = tts_requests(speech, face)[:6]
    bad_lang = join_items([{"TEXT": "Hello", "LANG": "xx"}], TTS_INPUTS)
    bad_utf8 = join_items([{"TEXT": "Hello", "LANG": "en"}], TTS_INPUTS)
    bad_utf8["TEXT"][0, 0] = 0xFF  # not a valid UTF-8 start byte
    _, executions_before = statistics(triton, "tts_espeak")
    results = await infer_all(triton, "tts_espeak", [good[0], bad_lang, *good[1:3], bad_utf8, *good[3:]])
    _, executions_after = statistics(triton, "tts_espeak")
    assert executions_after - executions_before < len(results), "the bad requests were not batched with others"

    lang_error, utf8_error = results[1], results[4]
    assert isinstance(lang_error, InferenceError)
    assert "'xx'" in lang_error.reason and "supported languages" in lang_error.reason
    assert isinstance(utf8_error, InferenceError)
    assert "TEXT" in utf8_error.reason and "UTF-8" in utf8_error.reason
    oks = [r for i, r in enumerate(results) if i not in (1, 4)]
    for request, got in zip(good, oks):
        assert not isinstance(got, BaseException), f"a good request failed next to a bad one: {got}"
        assert_same_outputs("tts_espeak", got, local.infer_sync("tts_espeak", request))


@pytest.mark.integration
async def test_missing_inputs_are_named(triton: TritonServer, speech: list[np.ndarray], face: np.ndarray) -> None:
    good = vc_requests(speech, face)[1:4]
    no_target = join_items([{"WAVEFORM": speech[0], "SAMPLE_RATE": np.int32(RATE)}], VC_INPUTS)
    no_length = dict(good[0])
    del no_length["TARGET_STATS_LENGTH"]
    no_rate = {k: v for k, v in good[0].items() if k != "SAMPLE_RATE"}
    results = await infer_all(triton, "vc_world", [good[0], no_target, good[1], no_length, no_rate, good[2]])

    assert isinstance(results[1], InferenceError) and "REFERENCE" in results[1].reason
    assert "TARGET_STATS" in results[1].reason
    # An optional tensor without its length reaches the model; the shared glue names it.
    assert isinstance(results[3], InferenceError) and "TARGET_STATS_LENGTH" in results[3].reason
    # A required input missing: Triton itself refuses, naming it.
    assert isinstance(results[4], InferenceError) and "SAMPLE_RATE" in results[4].reason
    for i, request in ((0, good[0]), (2, good[1]), (5, good[2])):
        assert not isinstance(results[i], BaseException), f"request {i} failed: {results[i]}"
        np.testing.assert_array_equal(results[i]["WAVEFORM_LENGTH"], request["WAVEFORM_LENGTH"])


@pytest.mark.integration
def test_string_tensor_is_refused_by_triton_and_the_model_keeps_serving(
    triton: TritonServer, local: LocalInferenceClient
) -> None:
    """A BYTES tensor aborts Triton 2.51's python stub under numpy 2; the UINT8 config keeps it out."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    def tensor(name: str, value: np.ndarray, dtype: str) -> Any:
        t = grpcclient.InferInput(name, list(value.shape), dtype)
        t.set_data_from_numpy(value)
        return t

    dtypes = {np.dtype(np.uint8): "UINT8", np.dtype(np.int64): "INT64", np.dtype(np.object_): "BYTES"}
    request = text_inputs("TEXT", ["Still here"]) | text_inputs("LANG", ["en"])
    as_bytes = request | {"TEXT": np.array([[b"Still here"]], dtype=np.object_)}
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    try:
        with pytest.raises(InferenceServerException) as info:
            client.infer("tts_espeak", [tensor(k, v, dtypes[v.dtype]) for k, v in as_bytes.items()])
        assert "'TEXT'" in info.value.message() and "'UINT8'" in info.value.message()
        result = client.infer("tts_espeak", [tensor(k, v, dtypes[v.dtype]) for k, v in request.items()])
        np.testing.assert_array_equal(result.as_numpy("WAVEFORM"), local.infer_sync("tts_espeak", request)["WAVEFORM"])
    finally:
        client.close()


# --- unit: the shared glue ------------------------------------------------------------------------


class _Echo:
    """A served model that fails on a marked item, to see what the others get."""

    name = "echo"
    max_batch_size = 4
    inputs = TTS_INPUTS[:4]
    outputs = TTS_INPUTS[:2]

    def __init__(self) -> None:
        self.calls: list[int] = []

    def infer_items(self, items: list[Item]) -> list[Item]:
        self.calls.append(len(items))
        if any(item["LANG"][0] == "bad" for item in items):
            raise ValueError("LANG 'bad' is not spoken here")
        return [{"TEXT": item["TEXT"][0][::-1]} for item in items]


def _text_request(texts: list[str], lang: str = "en") -> Batch:
    return text_inputs("TEXT", texts) | text_inputs("LANG", [lang] * len(texts))


def test_text_round_trips_as_utf8_bytes() -> None:
    texts = ["", "a", "안녕하세요", "こんにちは 🙂"]
    data, lengths = encode_texts(texts)
    assert data.dtype == np.uint8 and lengths.dtype == np.int64 and lengths.shape == (4, 1)
    items = split_batch({"TEXT": data, "TEXT_LENGTH": lengths}, TTS_INPUTS[:2])
    assert [item["TEXT"][0] for item in items] == texts
    items = split_batch(_text_request(texts), TTS_INPUTS)
    assert [item["TEXT"][0] for item in items] == texts


def test_text_as_objects_is_rejected_with_a_hint() -> None:
    request = _text_request(["hi"])
    request["TEXT"] = np.array([["hi"]], dtype=np.object_)
    with pytest.raises(ValueError, match="TEXT has dtype object.*encode_texts"):
        split_batch(request, TTS_INPUTS)


def test_one_bad_request_fails_alone_and_the_rest_run_batched() -> None:
    model = _Echo()
    outcomes = run_requests(model, [_text_request(["abc", "de"]), _text_request(["x"], "bad"),
                                    {"TEXT": np.zeros((1, 2), np.uint8)}, _text_request(["한국"])])
    assert isinstance(outcomes[1], ValueError) and "'bad'" in str(outcomes[1])
    assert isinstance(outcomes[2], ValueError) and "missing input" in str(outcomes[2])
    assert [item["TEXT"][0] for item in split_batch(outcomes[0], model.outputs)] == ["cba", "ed"]
    assert [item["TEXT"][0] for item in split_batch(outcomes[3], model.outputs)] == ["국한"]
    assert model.calls == [4, 2, 1, 1], "one batched call first, then each request alone"
    assert run_batch(model, _text_request(["ok"]))["TEXT"].tobytes() == b"ko"


def test_outputs_get_the_strides_the_backend_accepts() -> None:
    empty = np.zeros((3, 0), dtype=np.float32)
    assert empty.strides == (0, 0), "numpy's zero-size strides, which the backend rejects"
    assert c_order(empty).strides == (4, 4) and c_order(empty).shape == (3, 0)
    view = np.arange(24, dtype=np.int64).reshape(4, 6)[:, ::2]
    fixed = c_order(view)
    assert fixed.strides == (24, 8)
    np.testing.assert_array_equal(fixed, view)
