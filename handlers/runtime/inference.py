"""One protocol, ``await infer(model, inputs) -> outputs``, two implementations.

* :class:`LocalInferenceClient` builds the same served models Triton serves
  (``serving.models.*``) in this process: the embedded default and unit tests.
  Engine calls run in a worker thread, so the event loop (and the Kafka
  consumer's heartbeats) never blocks on a model.
* :class:`TritonInferenceClient` calls a Triton server over gRPC
  (``tritonclient.grpc.aio``) and passes the current trace context on in the
  request headers.

Inputs and outputs are dicts of numpy arrays with a leading batch axis; model
names are the Triton model names. Stages rarely build those by hand:
:meth:`InferenceClient.infer_items` packs a list of items with the model
family's specs (:mod:`serving.interfaces`) and unpacks the response the same
way, so padding and lengths live in one place (:mod:`serving.batching`).
Failures become :class:`~schemas.errors.InferenceError` (retryable)
with the model name and the server's reason.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from handlers.runtime.settings import Settings
from schemas.errors import InferenceError
from serving.batching import join_items, run_batch, split_batch
from serving.specs import Interface, Item

Arrays = dict[str, np.ndarray]


class InferenceClient(Protocol):
    async def infer(self, model: str, inputs: Arrays) -> Arrays: ...

    async def infer_items(self, model: str, interface: Interface, items: Sequence[Item]) -> list[Item]: ...

    async def close(self) -> None: ...


class ItemsClient:
    """``infer_items`` on top of a client's ``infer``: items in, one request, items out."""

    async def infer(self, model: str, inputs: Arrays) -> Arrays:
        raise NotImplementedError

    async def infer_items(self, model: str, interface: Interface, items: Sequence[Item]) -> list[Item]:
        """One request carrying ``items`` (padded by the family's specs), one output item each."""
        if not items:
            return []
        outputs = await self.infer(model, join_items(list(items), interface.inputs))
        try:
            return split_batch(outputs, interface.outputs)
        except ValueError as exc:
            raise InferenceError(f"model {model!r} answered off its {interface.family} interface: {exc}") from exc


class LocalInferenceClient(ItemsClient):
    """Served models in this process, one lock per model (engines are not re-entrant).

    ``parameters`` are each model's config parameters (as ``config.pbtxt`` has
    them; the settings fill the weights, see ``handlers.runtime.served``), and
    ``device`` is ``POLYDUB_DEVICE`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
    """

    def __init__(self, parameters: Mapping[str, Mapping[str, str]] | None = None, device: str = "auto") -> None:
        self._parameters = {name: dict(values) for name, values in (parameters or {}).items()}
        self._device = device
        self._models: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalInferenceClient:
        from handlers.runtime.served import model_parameters

        return cls(model_parameters(settings), settings.device)

    def _model(self, name: str) -> tuple[Any, threading.Lock]:
        from serving.catalog import build_model
        from serving.placement import Placement

        with self._guard:
            if name not in self._models:
                try:
                    self._models[name] = build_model(name, self._parameters.get(name), Placement.parse(self._device))
                except ValueError as exc:
                    raise InferenceError(f"model {name!r} cannot load: {exc}") from exc
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


class TritonInferenceClient(ItemsClient):
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
                    "send float32, int64, int32 or uint8 arrays; text as serving.specs.text_inputs() builds it",
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

    async def is_model_ready(self, model: str) -> bool:
        """Whether Triton has ``model`` loaded and ready (False when it does not answer)."""
        from tritonclient.utils import InferenceServerException

        try:
            return bool(await self._client.is_model_ready(model, client_timeout=self._timeout_s))
        except (InferenceServerException, OSError):
            return False

    async def close(self) -> None:
        await self._client.close()


def open_inference(settings: Settings) -> InferenceClient:
    """The client the settings ask for."""
    if settings.inference == "triton":
        return TritonInferenceClient(settings.triton_url, settings.triton_timeout_s)
    return LocalInferenceClient.from_settings(settings)
