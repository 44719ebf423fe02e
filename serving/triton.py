"""Triton's python backend: the one generic ``TritonPythonModel``.

``triton_models/<name>/1/model.py`` is two lines: it names its served model,
``TritonPythonModel = triton_python_model("<name>")``. ``initialize`` builds
that model from the config's ``parameters`` on the instance Triton gave it
(``model_instance_kind`` / ``model_instance_device_id``); ``execute`` decodes
every request of the dynamic batch, runs all their items in one engine call
(:func:`serving.batching.run_requests`) and answers each request with its own
results or its own error.

Tensors cross the stub through DLPack (``np.from_dlpack`` in,
``pb_utils.Tensor.from_dlpack`` out), never ``as_numpy()``: Triton 2.51's stub
was built with a pybind11 that predates numpy 2, so ``as_numpy()`` turns
``[1, 2, 3]`` into ``[1, 1, 1]`` and ``pb_utils.Tensor(name, ndarray)`` sends
empty buffers. DLPack works with numpy 1.22+ as well, so there is one path.
Nothing here imports Triton at module level: the backend's ``pb_utils`` is
imported inside ``initialize``, where the stub provides it.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from serving.batching import BatchRunner, error_message, run_requests
from serving.catalog import build_model
from serving.placement import Placement
from serving.specs import Batch


def c_order(array: np.ndarray) -> np.ndarray:
    """``array`` C-contiguous with the canonical strides the python backend's DLPack import wants.

    numpy gives zero-size arrays zero strides, which the backend rejects as "not
    contiguous"; such an array has no data, so any strides describe it.
    """
    arr = np.ascontiguousarray(array)
    strides, step = [], arr.itemsize
    for dim in reversed(arr.shape):
        strides.append(step)
        step *= max(dim, 1)
    canonical = tuple(reversed(strides))
    if arr.strides != canonical:
        arr = np.lib.stride_tricks.as_strided(arr, shape=arr.shape, strides=canonical)
    return arr


def _request_batch(model: BatchRunner, request: Any, pb_utils: Any) -> Batch:
    """A Triton request's tensors as numpy arrays (zero-copy views through DLPack)."""
    batch: Batch = {}
    for spec in model.inputs:
        tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
        if tensor is not None:
            batch[spec.name] = np.from_dlpack(tensor)
    return batch


def serve_triton_requests(model: BatchRunner, requests: list[Any], pb_utils: Any) -> list[Any]:
    """Triton python-backend ``execute``: all requests' items in one engine call.

    A request that fails (bad input, an item the engine rejects) gets its own
    error response naming the problem; the others still get their results.
    """
    decoded: list[Batch | Exception] = []
    for request in requests:
        try:
            decoded.append(_request_batch(model, request, pb_utils))
        except Exception as exc:  # noqa: BLE001 - that request's own error
            decoded.append(exc)
    responses = []
    for outcome in run_requests(model, decoded):
        if isinstance(outcome, Exception):
            responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(error_message(outcome))))
            continue
        try:
            tensors = [pb_utils.Tensor.from_dlpack(name, c_order(value)) for name, value in outcome.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        except Exception as exc:  # noqa: BLE001
            responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(error_message(exc))))
    return responses


def initialize_args(args: dict[str, Any]) -> tuple[dict[str, str], Placement]:
    """The parameters and placement Triton hands ``initialize`` (args are all strings)."""
    config = json.loads(args["model_config"])
    parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    placement = Placement.from_triton(args.get("model_instance_kind"), args.get("model_instance_device_id"))
    return parameters, placement


def triton_python_model(name: str) -> type:
    """The ``TritonPythonModel`` class that serves the served model ``name``."""

    class TritonPythonModel:
        def initialize(self, args: dict[str, Any]) -> None:
            import triton_python_backend_utils as pb_utils  # only inside Triton

            parameters, placement = initialize_args(args)
            self._pb_utils = pb_utils
            self._model = build_model(name, parameters, placement)

        def execute(self, requests: list[Any]) -> list[Any]:
            return serve_triton_requests(self._model, requests, self._pb_utils)

        def finalize(self) -> None:
            self._model = None

    TritonPythonModel.__qualname__ = f"TritonPythonModel[{name}]"
    return TritonPythonModel
