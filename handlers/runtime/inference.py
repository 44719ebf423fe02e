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
with the model name and the server's reason. A Triton that stops answering
opens the client's :class:`CircuitBreaker`: calls wait for it to come back
(one readiness probe at a time) instead of burning retry attempts, and fail
with the outage's length once it outlasts the retry budget.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from handlers.runtime.settings import Settings, get_settings
from schemas.errors import InferenceError, UnusableInputError
from serving.batching import join_items, run_batch, split_batch
from serving.specs import UNUSABLE_INPUT, Interface, Item, is_unusable_input

Arrays = dict[str, np.ndarray]
log = logging.getLogger(__name__)


class InferenceClient(Protocol):
    async def infer(self, model: str, inputs: Arrays) -> Arrays: ...

    async def infer_items(self, model: str, interface: Interface, items: Sequence[Item]) -> list[Item]: ...

    async def close(self) -> None: ...


def model_refusal(model: str, message: str) -> InferenceError | UnusableInputError:
    """A model's refusal of a request: the input's condition (never retried) or an inference failure."""
    if is_unusable_input(message):
        return UnusableInputError(
            f"model {model!r} cannot use the input: {message.split(UNUSABLE_INPUT, 1)[-1]}",
            "give a longer or clearer clip of that speaker's voice",
        )
    return InferenceError(f"model {model!r} rejected the request: {message}")


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
                raise model_refusal(model, str(exc)) from exc

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


#: The gRPC status of a server that does not answer at all (down, restarting, unreachable).
UNAVAILABLE = "StatusCode.UNAVAILABLE"


@dataclass(frozen=True)
class BreakerPolicy:
    """When the circuit breaker opens, how it probes, how long callers wait (see :class:`CircuitBreaker`)."""

    failures: int
    probe_s: float
    wait_s: float
    budget_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerPolicy:
        return cls(settings.inference_breaker_failures, settings.inference_breaker_probe_s,
                   settings.inference_breaker_wait_s, settings.retry_budget_s)


class CircuitBreaker:
    """Holds calls off a server that is down, so a restart costs waiting, not retry attempts.

    Closed: calls go through; ``policy.failures`` consecutive "unavailable"
    answers open it. Open: :meth:`admit` waits, and every ``policy.probe_s`` one
    caller runs the readiness probe (half-open); the first success closes it and
    releases every waiter. A caller waits at most ``policy.wait_s`` (then it fails
    as one retryable attempt, within the handler's poll interval); once the
    server has been down longer than ``policy.budget_s`` (the retry budget) the
    call fails for good, naming how long, so a dead server fails jobs instead of
    holding them forever.
    """

    def __init__(self, policy: BreakerPolicy, probe: Callable[[], Awaitable[bool]], target: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._probe = probe
        self._target = target
        self._clock = clock
        self._consecutive = 0
        #: When the breaker opened (``None``: closed).
        self.opened_at: float | None = None
        self._probing = asyncio.Lock()
        self.last_error = ""
        #: How often it opened (metrics and tests).
        self.openings = 0

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def record_success(self) -> None:
        if self.opened_at is not None:
            log.warning("inference server is back; circuit breaker closed",
                        extra={"target": self._target, "down_s": round(self._clock() - self.opened_at, 1)})
        self._consecutive = 0
        self.opened_at = None

    def record_unavailable(self, error: str) -> None:
        self.last_error = error
        self._consecutive += 1
        if self.opened_at is None and self._consecutive >= self.policy.failures:
            self.opened_at = self._clock()
            self.openings += 1
            log.warning("inference server unavailable; circuit breaker open, calls wait for it",
                        extra={"target": self._target, "failures": self._consecutive, "error": error})

    async def admit(self, model: str) -> None:
        """Return when a call may go out; raise :class:`InferenceError` when waiting must end."""
        started = self._clock()
        while self.opened_at is not None:
            down_s = self._clock() - self.opened_at
            if down_s > self.policy.budget_s:
                error = InferenceError(
                    f"{self._target} has been unreachable for {down_s:.0f} s, longer than the retry budget "
                    f"({self.policy.budget_s:.0f} s); model {model!r} was not run (last error: {self.last_error})",
                    "bring Triton back (`polydub stack status`, the tritonserver log) and resubmit the job",
                )
                error.retryable = False
                raise error
            if self._clock() - started > self.policy.wait_s:
                raise InferenceError(
                    f"{self._target} unreachable for {down_s:.0f} s; model {model!r} waited "
                    f"{self.policy.wait_s:.0f} s for it (last error: {self.last_error})",
                    "check `polydub stack status` and the tritonserver log",
                )
            if not self._probing.locked():
                async with self._probing:
                    if await self._probe():
                        self.record_success()
                        return
            await asyncio.sleep(self.policy.probe_s)


class TritonInferenceClient(ItemsClient):
    """Triton over gRPC; one channel per process, reused by every call, behind a circuit breaker."""

    def __init__(self, url: str, timeout_s: float, breaker: BreakerPolicy | None = None) -> None:
        import tritonclient.grpc.aio as grpcclient

        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(url=url)
        self._timeout_s = timeout_s
        self._url = url
        self.breaker = CircuitBreaker(
            breaker or BreakerPolicy.from_settings(get_settings()), self.is_server_ready, f"Triton at {url}")

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
        await self.breaker.admit(model)
        try:
            result = await self._client.infer(
                model,
                infer_inputs,
                headers=inject_headers({}),
                client_timeout=self._timeout_s,
            )
        except InferenceServerException as exc:
            if is_unusable_input(exc.message() or ""):  # the input's condition: the server is fine
                raise model_refusal(model, exc.message()) from exc
            if exc.status() == UNAVAILABLE:
                self.breaker.record_unavailable(exc.message() or UNAVAILABLE)
            raise InferenceError(
                f"Triton at {self._url} failed model {model!r}: {exc.message()}",
                "check `polydub stack status` and the tritonserver log",
            ) from exc
        self.breaker.record_success()
        response = result.get_response()
        return {out.name: result.as_numpy(out.name) for out in response.outputs}

    async def is_model_ready(self, model: str) -> bool:
        """Whether Triton has ``model`` loaded and ready (False when it does not answer)."""
        return await self._answers_yes(self._client.is_model_ready(model, client_timeout=self._timeout_s))

    async def is_server_ready(self) -> bool:
        """Whether Triton answers and has every model ready (the breaker's half-open probe)."""
        return await self._answers_yes(self._client.is_server_ready(client_timeout=self._timeout_s))

    @staticmethod
    async def _answers_yes(question: Awaitable[bool]) -> bool:
        """A readiness answer; a server that does not answer is not ready."""
        from tritonclient.utils import InferenceServerException

        try:
            return bool(await question)
        except (InferenceServerException, OSError):
            return False

    async def close(self) -> None:
        await self._client.close()


def open_inference(settings: Settings) -> InferenceClient:
    """The client the settings ask for."""
    if settings.inference == "triton":
        return TritonInferenceClient(settings.triton_url, settings.triton_timeout_s,
                                     BreakerPolicy.from_settings(settings))
    return LocalInferenceClient.from_settings(settings)
