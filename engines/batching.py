"""Items in, one padded batch through the engine, items out.

Every served model is described by :class:`TensorSpec` lists and implements
``infer_items(items) -> items`` over unbatched, unpadded examples. The same
glue then serves it two ways, so both give the same results by construction:

* in process (the local inference client): one client batch is one request
  (:func:`run_batch`);
* in Triton's python backend: every request of a dynamic batch is decoded,
  all their items run in **one** engine call, and the results are split back
  per request (:func:`serve_triton_requests`).

Both go through :func:`run_requests`: validation (:func:`split_batch`), the one
engine call, re-joining (:func:`join_items`) and error isolation. A request
that fails validation, or whose items make the engine raise, gets its own
error naming the problem; the other requests of the batch still get results
(after a failed batched call each request is re-run alone, so a bad item can
only fail its own request).

Variable-length tensors travel padded with a companion ``*_LENGTH`` tensor,
torchaudio style; scalars travel as shape ``[1]`` per item, Triton style.

Text travels as UINT8 UTF-8 bytes plus a length (``TensorSpec(utf8=True)``),
never as Triton ``TYPE_STRING``: Triton 2.51's python backend stub (built with a
pybind11 that predates numpy 2) reads numpy 2 arrays with zero strides, so a
BYTES input is deserialised from its first byte repeated and the stub process
aborts, leaving the model instance dead for every later request. Numeric
tensors cross the stub through DLPack (``np.from_dlpack`` in,
``pb_utils.Tensor.from_dlpack`` out) for the same reason: ``as_numpy()`` turns
``[1, 2, 3]`` into ``[1, 1, 1]`` and ``pb_utils.Tensor(name, ndarray)`` sends
empty buffers. DLPack works with numpy 1.22+ as well, so there is one path.
Nothing here imports Triton: the python backend passes its ``pb_utils`` in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Item = dict[str, np.ndarray]
Batch = dict[str, np.ndarray]
#: What one request comes to: its outputs, or the error to send back instead.
Outcome = Batch | Exception

_TRITON_DTYPES = {
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.int64): "TYPE_INT64",
    np.dtype(np.int32): "TYPE_INT32",
    np.dtype(np.uint8): "TYPE_UINT8",
}
_TEXT_HINT = "text travels as UTF-8 bytes (UINT8) with a *_LENGTH tensor: build it with encode_texts()"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of a served model, without the batch axis.

    ``dims`` uses -1 for a variable axis. ``length_of`` names the INT64 ``[1]``
    tensor holding the valid length of axis 0 when that axis is variable.
    ``optional`` inputs may be left out of a request. ``utf8`` marks text: on
    the wire UINT8 UTF-8 bytes ``[-1]`` with a length, in an item a one-element
    object array holding the ``str`` (read it with :func:`scalar`).
    """

    name: str
    dtype: np.dtype
    dims: tuple[int, ...]
    doc: str
    length_of: str | None = None
    optional: bool = False
    utf8: bool = False

    def __post_init__(self) -> None:
        if np.dtype(self.dtype) not in _TRITON_DTYPES:
            raise ValueError(
                f"tensor {self.name}: dtype {np.dtype(self.dtype)} cannot be served; use one of "
                f"{sorted(str(d) for d in _TRITON_DTYPES)} ({_TEXT_HINT}, see engines.batching)"
            )
        if self.utf8 and (np.dtype(self.dtype) != np.uint8 or self.dims != (-1,) or self.length_of is None):
            raise ValueError(f"text tensor {self.name} must be uint8 with dims (-1,) and a length_of tensor")

    @property
    def triton_type(self) -> str:
        return _TRITON_DTYPES[np.dtype(self.dtype)]

    @property
    def is_scalar(self) -> bool:
        return self.dims == (1,)


class ServedModel(Protocol):
    """What a model adapter offers to both serving paths."""

    name: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def infer_items(self, items: list[Item]) -> list[Item]:
        """Run all items in one engine call; return one output item per input item."""
        ...


# --- text on the wire ------------------------------------------------------------


def encode_texts(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> ``(n, longest)`` uint8 UTF-8 bytes, zero-padded, and ``(n, 1)`` int64 byte counts.

    The wire form of a ``utf8`` tensor and its ``*_LENGTH`` companion.
    """
    encoded = [str(t).encode("utf-8") for t in texts]
    lengths = np.array([[len(b)] for b in encoded], dtype=np.int64).reshape(len(encoded), 1)
    data = np.zeros((len(encoded), max((len(b) for b in encoded), default=0)), dtype=np.uint8)
    for row, raw in enumerate(encoded):
        data[row, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return data, lengths


def decode_texts(data: np.ndarray, lengths: np.ndarray) -> list[str]:
    """The inverse of :func:`encode_texts` (raises ValueError on bytes that are not UTF-8)."""
    rows = np.asarray(data, dtype=np.uint8)
    counts = np.asarray(lengths).reshape(-1)
    return [_decode(rows[i, : int(counts[i])], "text", i) for i in range(rows.shape[0])]


def _decode(raw: np.ndarray, name: str, index: int) -> str:
    try:
        return raw.tobytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{name} of item {index} is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "encode text as UTF-8"
        ) from exc


# --- batches <-> items -------------------------------------------------------------


def _check_tensor(spec: TensorSpec, value: np.ndarray) -> None:
    """The checks Triton makes against ``config.pbtxt``, so the local path rejects the same."""
    if value.dtype != np.dtype(spec.dtype):
        hint = f"; {_TEXT_HINT}" if spec.utf8 or value.dtype == np.object_ else ""
        raise ValueError(
            f"input {spec.name} has dtype {value.dtype}, expected {np.dtype(spec.dtype)} "
            f"({spec.triton_type}){hint}"
        )
    dims = value.shape[1:]
    if len(dims) != len(spec.dims) or any(want not in (-1, got) for want, got in zip(spec.dims, dims)):
        raise ValueError(
            f"input {spec.name} has shape {list(value.shape)}, expected [batch, "
            f"{', '.join(str(d) for d in spec.dims)}] (-1: any length)"
        )


def split_batch(batch: Batch, specs: Sequence[TensorSpec]) -> list[Item]:
    """A batched request -> per-item dicts, each variable axis trimmed to its length.

    Raises ValueError naming the problem: a missing or unknown input, a wrong
    dtype or shape, a length out of range, text that is not UTF-8.
    """
    names = [s.name for s in specs]
    missing = [s.name for s in specs if s.name not in batch and not s.optional]
    if missing:
        raise ValueError(f"missing input tensor(s) {missing}; expected {names}")
    unknown = sorted(set(batch) - set(names))
    if unknown:
        raise ValueError(f"unknown input tensor(s) {unknown}; expected {names}")
    present = [s for s in specs if s.name in batch]
    arrays = {s.name: np.asarray(batch[s.name]) for s in present}
    for spec in present:
        _check_tensor(spec, arrays[spec.name])
        if spec.length_of is not None and spec.length_of not in arrays:
            raise ValueError(f"input {spec.name} needs its length tensor {spec.length_of}")
    sizes = {name: int(value.shape[0]) for name, value in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"inputs disagree on the batch size: {sizes}")
    n = next(iter(sizes.values()))
    items: list[Item] = []
    for i in range(n):
        item: Item = {}
        for spec in present:
            value = arrays[spec.name][i]
            if spec.length_of is not None:
                length = int(arrays[spec.length_of][i].reshape(-1)[0])
                if length < 0 or length > value.shape[0]:
                    raise ValueError(
                        f"{spec.length_of}={length} is outside 0..{value.shape[0]} for item {i}"
                    )
                value = value[:length]
                if spec.utf8:
                    value = np.array([_decode(value, spec.name, i)], dtype=np.object_)
            item[spec.name] = value
        items.append(item)
    return items


def join_items(items: Sequence[Item], specs: Sequence[TensorSpec]) -> Batch:
    """Per-item outputs -> a padded batch with lengths (zeros pad; text is UTF-8 encoded)."""
    batch: Batch = {}
    for spec in specs:
        if not items or spec.name not in items[0]:
            continue
        if spec.utf8:
            data, lengths = encode_texts([scalar(item, spec.name) for item in items])
            batch[spec.name], batch[str(spec.length_of)] = data, lengths
            continue
        values = [np.asarray(item[spec.name], dtype=spec.dtype) for item in items]
        if spec.length_of is not None:
            lengths = np.array([[v.shape[0]] for v in values], dtype=np.int64)
            longest = max(v.shape[0] for v in values)
            padded = [np.pad(v, [(0, longest - v.shape[0])] + [(0, 0)] * (v.ndim - 1)) for v in values]
            batch[spec.name] = np.stack(padded)
            batch[spec.length_of] = lengths
        elif spec.name not in batch:
            batch[spec.name] = np.stack([v.reshape(spec.dims) if -1 not in spec.dims else v for v in values])
    return batch


# --- the one serving path -----------------------------------------------------------


def _run_groups(model: ServedModel, groups: list[list[Item]]) -> list[list[Item] | Exception]:
    """All groups' items in one engine call; if it fails, each group alone.

    Why the retry: a dynamic batch mixes requests of unrelated clients, and one
    bad item (an unsupported language, a silent reference) must fail only its
    own request. Re-running costs time only on the failure path.
    """
    flat = [item for group in groups for item in group]
    try:
        results = model.infer_items(flat) if flat else []
        if len(results) != len(flat):
            raise RuntimeError(f"{model.name} returned {len(results)} results for {len(flat)} items")
    except Exception as exc:  # noqa: BLE001 - reported to the client(s) it belongs to
        if len(groups) == 1:
            return [exc]
        return [_run_groups(model, [group])[0] for group in groups]
    out: list[list[Item] | Exception] = []
    cursor = 0
    for group in groups:
        out.append(list(results[cursor : cursor + len(group)]))
        cursor += len(group)
    return out


def run_requests(model: ServedModel, requests: Sequence[Batch | Exception]) -> list[Outcome]:
    """Requests (or the error decoding one) -> one outcome each, all valid items in one engine call."""
    parts: list[list[Item] | Exception] = []
    for request in requests:
        if isinstance(request, Exception):
            parts.append(request)
            continue
        try:
            items = split_batch(request, model.inputs)
            if len(items) > model.max_batch_size:
                raise ValueError(
                    f"{model.name}: batch of {len(items)} exceeds max_batch_size {model.max_batch_size}"
                )
            parts.append(items)
        except Exception as exc:  # noqa: BLE001 - that request's own error
            parts.append(exc)
    valid = [part for part in parts if isinstance(part, list)]
    ran = iter(_run_groups(model, valid))
    outcomes: list[Outcome] = []
    for part in parts:
        result = part if isinstance(part, Exception) else next(ran)
        if isinstance(result, Exception):
            outcomes.append(result)
            continue
        try:
            outcomes.append(join_items(result, model.outputs))
        except Exception as exc:  # noqa: BLE001 - an adapter returned something off-spec
            outcomes.append(exc)
    return outcomes


def run_batch(model: ServedModel, batch: Batch) -> Batch:
    """The in-process path: one client batch is one request of :func:`run_requests`."""
    (outcome,) = run_requests(model, [batch])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def error_message(exc: Exception) -> str:
    """What a client reads: the reason of a ValueError as is, anything else with its type."""
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


def _c_order(array: np.ndarray) -> np.ndarray:
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


def _request_batch(model: ServedModel, request: Any, pb_utils: Any) -> Batch:
    """A Triton request's tensors as numpy arrays (zero-copy views through DLPack)."""
    batch: Batch = {}
    for spec in model.inputs:
        tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
        if tensor is not None:
            batch[spec.name] = np.from_dlpack(tensor)
    return batch


def serve_triton_requests(model: ServedModel, requests: list[Any], pb_utils: Any) -> list[Any]:
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
            tensors = [pb_utils.Tensor.from_dlpack(name, _c_order(value)) for name, value in outcome.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        except Exception as exc:  # noqa: BLE001
            responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(error_message(exc))))
    return responses


def scalar(item: Item, name: str, default: Any = None) -> Any:
    """The Python value of a ``[1]``-shaped item tensor, or the ``str`` of a text tensor."""
    if name not in item:
        return default
    value = np.asarray(item[name]).reshape(-1)[0]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value.item() if hasattr(value, "item") else value


def render_config(model: ServedModel, kind: str = "KIND_GPU", count: int = 1,
                  max_queue_delay_us: int = 5000, parameters: dict[str, str] | None = None,
                  header: str = "", dynamic_batching: bool = True) -> str:
    """The ``config.pbtxt`` text for a model (the checked-in files are tested against it).

    ``dynamic_batching=False`` leaves the block out (Triton then runs each request
    on its own): the benchmark's baseline, never a checked-in config.
    """

    def block(spec: TensorSpec) -> str:
        lines = [
            "  {",
            f"    # {spec.doc}",
            f'    name: "{spec.name}"',
            f"    data_type: {spec.triton_type}",
            f"    dims: [ {', '.join(str(d) for d in spec.dims)} ]",
        ]
        if spec.length_of is not None and spec in model.inputs:
            lines.append("    allow_ragged_batch: true")
        if spec.optional:
            lines.append("    optional: true")
        lines.append("  }")
        return "\n".join(lines)

    inputs = ",\n".join(block(s) for s in model.inputs)
    outputs = ",\n".join(block(s) for s in model.outputs)
    params = "".join(
        f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
        for key, value in sorted((parameters or {}).items())
    )
    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.strip().splitlines())
    batching = (
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}\n"
        if dynamic_batching else ""
    )
    return (
        comment
        + f'name: "{model.name}"\n'
        'backend: "python"\n'
        f"max_batch_size: {model.max_batch_size}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        + batching
        + f"instance_group [ {{ kind: {kind}, count: {count} }} ]\n"
        + params
    )


def triton_model_class(build: Any) -> type:
    """The ``TritonPythonModel`` class for a model.py: initialize builds, execute batches.

    ``build(parameters: dict[str, str])`` returns the :class:`ServedModel`;
    parameters come from the config's ``parameters`` block.
    """

    class TritonPythonModel:
        def initialize(self, args: dict[str, Any]) -> None:
            import json

            import triton_python_backend_utils as pb_utils  # only inside Triton

            config = json.loads(args["model_config"])
            parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
            self._pb_utils = pb_utils
            self._model = build(parameters)

        def execute(self, requests: list[Any]) -> list[Any]:
            return serve_triton_requests(self._model, requests, self._pb_utils)

        def finalize(self) -> None:
            self._model = None

    return TritonPythonModel
