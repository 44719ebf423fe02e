"""One protocol, ``await infer(model, inputs) -> outputs``, two implementations.

* :class:`LocalInferenceClient` loads the same adapters Triton serves
  (``triton_models/<model>/1/model.py``) into this process: the embedded
  default and unit tests. Engine calls run in a worker thread, so the event
  loop (and the Kafka consumer's heartbeats) never blocks on a model.
* :class:`TritonInferenceClient` calls a Triton server over gRPC
  (``tritonclient.grpc.aio``) and passes the current trace context on in the
  request headers.

Inputs and outputs are dicts of numpy arrays with a leading batch axis; model
names are the Triton model names. Text goes as UTF-8 bytes plus lengths
(:func:`text_inputs`), never as Triton BYTES (see ``engines.batching``).
Failures become :class:`~handlers.runtime.errors.InferenceError` (retryable)
with the model name and the server's reason.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from engines.batching import encode_texts, run_batch
from handlers.runtime.errors import InferenceError, InputError
from handlers.runtime.settings import PROJECT_MODEL_REPOSITORY, Settings

MODEL_REPOSITORY = PROJECT_MODEL_REPOSITORY

Arrays = dict[str, np.ndarray]
_PARAMETER = re.compile(r'parameters\s*\{\s*key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"')


def text_inputs(name: str, texts: Sequence[str]) -> Arrays:
    """A batch of texts as models take them: UTF-8 bytes ``name`` plus ``name_LENGTH``."""
    data, lengths = encode_texts(texts)
    return {name: data, f"{name}_LENGTH": lengths}


class InferenceClient(Protocol):
    async def infer(self, model: str, inputs: Arrays) -> Arrays: ...

    async def close(self) -> None: ...


def load_adapter_module(name: str, repository: Path = MODEL_REPOSITORY) -> ModuleType:
    """Import ``<repository>/<name>/1/model.py``, the adapter Triton serves."""
    path = repository / name / "1" / "model.py"
    if not path.exists():
        known = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").exists())
        raise InputError(f"no model named {name!r}", f"choose one of: {', '.join(known)}")
    spec = importlib.util.spec_from_file_location(f"polydub_served_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config_parameters(name: str, repository: Path = MODEL_REPOSITORY) -> dict[str, str]:
    """The ``parameters`` of a model's ``config.pbtxt`` (string values), as Triton passes them."""
    text = (repository / name / "config.pbtxt").read_text()
    return dict(_PARAMETER.findall(text))


def load_served_model(name: str, repository: Path = MODEL_REPOSITORY) -> Any:
    """Build the adapter of a model in process, with its config's parameters."""
    module = load_adapter_module(name, repository)
    return module.build_served_model(config_parameters(name, repository))


class LocalInferenceClient:
    """Engines in this process, one lock per model (engines are not re-entrant)."""

    def __init__(self, repository: Path = MODEL_REPOSITORY) -> None:
        self._repository = repository
        self._models: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _model(self, name: str) -> tuple[Any, threading.Lock]:
        with self._guard:
            if name not in self._models:
                self._models[name] = load_served_model(name, self._repository)
                self._locks[name] = threading.Lock()
            return self._models[name], self._locks[name]

    def infer_sync(self, model: str, inputs: Arrays) -> Arrays:
        served, lock = self._model(model)
        with lock:
            try:
                return run_batch(served, inputs)
            except ValueError as exc:
                raise InferenceError(f"model {model!r} rejected the request: {exc}") from exc

    async def infer(self, model: str, inputs: Arrays) -> Arrays:
        return await asyncio.to_thread(self.infer_sync, model, inputs)

    async def close(self) -> None:
        self._models.clear()


_NP_TO_TRITON = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.uint8): "UINT8",
}


class TritonInferenceClient:
    """Triton over gRPC; one channel per process, reused by every call."""

    def __init__(self, url: str, timeout_s: float) -> None:
        import tritonclient.grpc.aio as grpcclient

        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(url=url)
        self._timeout_s = timeout_s
        self._url = url

    async def infer(self, model: str, inputs: Arrays) -> Arrays:
        from tritonclient.utils import InferenceServerException

        from handlers.runtime.telemetry import inject_headers

        infer_inputs = []
        for name, value in inputs.items():
            array = np.ascontiguousarray(value)
            if array.dtype not in _NP_TO_TRITON:
                raise InferenceError(
                    f"input {name} of model {model!r} has dtype {array.dtype}, which polydub models do not take",
                    "send float32, int64, int32 or uint8 arrays; text as text_inputs() builds it",
                )
            tensor = self._grpc.InferInput(name, list(array.shape), _NP_TO_TRITON[array.dtype])
            tensor.set_data_from_numpy(array)
            infer_inputs.append(tensor)
        try:
            result = await self._client.infer(
                model,
                infer_inputs,
                headers=inject_headers({}),
                client_timeout=self._timeout_s,
            )
        except InferenceServerException as exc:
            raise InferenceError(
                f"Triton at {self._url} failed model {model!r}: {exc.message()}",
                "check `polydub stack status` and the tritonserver log",
            ) from exc
        response = result.get_response()
        return {out.name: result.as_numpy(out.name) for out in response.outputs}

    async def close(self) -> None:
        await self._client.close()


def open_inference(settings: Settings) -> InferenceClient:
    """The client the settings ask for."""
    if settings.inference == "triton":
        return TritonInferenceClient(settings.triton_url, settings.triton_timeout_s)
    return LocalInferenceClient()
