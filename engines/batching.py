"""Items in, one padded batch through the engine, items out.

Every served model is described by :class:`TensorSpec` lists and implements
``infer_items(items) -> items`` over unbatched, unpadded examples. The same
glue then serves it two ways, so both give the same results by construction:

* in process (the local inference client): a batched request is split into
  items, run, and re-joined;
* in Triton's python backend: every request of a dynamic batch is split into
  items, all items run in **one** engine call, and the results are split back
  per request (``serve_triton_requests``).

Variable-length tensors travel padded with a companion ``*_LENGTH`` tensor,
torchaudio style; scalars travel as shape ``[1]`` per item, Triton style.
Nothing here imports Triton: the python backend passes its ``pb_utils`` in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Item = dict[str, np.ndarray]
Batch = dict[str, np.ndarray]

_TRITON_DTYPES = {
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.int64): "TYPE_INT64",
    np.dtype(np.int32): "TYPE_INT32",
    np.dtype(np.uint8): "TYPE_UINT8",
    np.dtype(np.object_): "TYPE_STRING",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor of a served model, without the batch axis.

    ``dims`` uses -1 for a variable axis. ``length_of`` names the INT64 ``[1]``
    tensor holding the valid length of axis 0 when that axis is variable.
    ``optional`` inputs may be left out of a request.
    """

    name: str
    dtype: np.dtype
    dims: tuple[int, ...]
    doc: str
    length_of: str | None = None
    optional: bool = False

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


def split_batch(batch: Batch, specs: Sequence[TensorSpec]) -> list[Item]:
    """A batched request -> per-item dicts, each variable axis trimmed to its length."""
    present = [s for s in specs if s.name in batch]
    missing = [s.name for s in specs if s.name not in batch and not s.optional]
    if missing:
        raise ValueError(f"missing input tensor(s) {missing}; expected {[s.name for s in specs]}")
    unknown = sorted(set(batch) - {s.name for s in specs})
    if unknown:
        raise ValueError(f"unknown input tensor(s) {unknown}; expected {[s.name for s in specs]}")
    sizes = {s.name: int(np.asarray(batch[s.name]).shape[0]) for s in present}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"inputs disagree on the batch size: {sizes}")
    n = next(iter(sizes.values()))
    items: list[Item] = []
    for i in range(n):
        item: Item = {}
        for spec in present:
            value = np.asarray(batch[spec.name])[i]
            if spec.length_of is not None:
                length = int(np.asarray(batch[spec.length_of])[i].reshape(-1)[0])
                if length < 0 or length > value.shape[0]:
                    raise ValueError(
                        f"{spec.length_of}={length} is outside 0..{value.shape[0]} for item {i}"
                    )
                value = value[:length]
            item[spec.name] = value
        items.append(item)
    return items


def join_items(items: Sequence[Item], specs: Sequence[TensorSpec]) -> Batch:
    """Per-item outputs -> a padded batch with lengths (zeros pad, empty strings for text)."""
    batch: Batch = {}
    for spec in specs:
        if not items or spec.name not in items[0]:
            continue
        values = [np.asarray(item[spec.name], dtype=spec.dtype) for item in items]
        if spec.length_of is not None:
            lengths = np.array([[v.shape[0]] for v in values], dtype=np.int64)
            longest = max(v.shape[0] for v in values)
            padded = []
            for v in values:
                pad = [(0, longest - v.shape[0])] + [(0, 0)] * (v.ndim - 1)
                padded.append(np.pad(v, pad) if v.dtype != np.object_ else v)
            batch[spec.name] = np.stack(padded)
            batch[spec.length_of] = lengths
        elif spec.name not in batch:
            batch[spec.name] = np.stack([v.reshape(spec.dims) if -1 not in spec.dims else v for v in values])
    return batch


def run_batch(model: ServedModel, batch: Batch) -> Batch:
    """The in-process path: the same split/run/join as Triton's."""
    items = split_batch(batch, model.inputs)
    if len(items) > model.max_batch_size:
        raise ValueError(f"{model.name}: batch of {len(items)} exceeds max_batch_size {model.max_batch_size}")
    return join_items(model.infer_items(items), model.outputs)


def serve_triton_requests(model: ServedModel, requests: list[Any], pb_utils: Any) -> list[Any]:
    """Triton python-backend ``execute``: all requests' items in one engine call.

    A request that fails validation gets its own error response; the others
    still run, so one bad client cannot fail a whole dynamic batch.
    """
    per_request: list[list[Item] | Exception] = []
    for request in requests:
        try:
            batch = {}
            for spec in model.inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
                if tensor is not None:
                    batch[spec.name] = tensor.as_numpy()
            per_request.append(split_batch(batch, model.inputs))
        except Exception as exc:  # reported to that client only
            per_request.append(exc)
    flat = [item for part in per_request if isinstance(part, list) for item in part]
    try:
        results = model.infer_items(flat) if flat else []
        failure: Exception | None = None
    except Exception as exc:  # the engine failed: every request in the batch fails
        results, failure = [], exc
    responses = []
    cursor = 0
    for part in per_request:
        if isinstance(part, Exception) or failure is not None:
            error = part if isinstance(part, Exception) else failure
            responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))))
            continue
        mine = results[cursor : cursor + len(part)]
        cursor += len(part)
        joined = join_items(mine, model.outputs)
        tensors = [pb_utils.Tensor(name, value) for name, value in joined.items()]
        responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
    return responses


def scalar(item: Item, name: str, default: Any = None) -> Any:
    """The Python value of a ``[1]``-shaped item tensor (bytes decoded as UTF-8)."""
    if name not in item:
        return default
    value = np.asarray(item[name]).reshape(-1)[0]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value.item() if hasattr(value, "item") else value


def render_config(model: ServedModel, kind: str = "KIND_GPU", count: int = 1,
                  max_queue_delay_us: int = 5000, parameters: dict[str, str] | None = None,
                  header: str = "") -> str:
    """The ``config.pbtxt`` text for a model (the checked-in files are tested against it)."""

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
    return (
        comment
        + f'name: "{model.name}"\n'
        'backend: "python"\n'
        f"max_batch_size: {model.max_batch_size}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        "dynamic_batching {\n"
        f"  max_queue_delay_microseconds: {max_queue_delay_us}\n"
        "}\n"
        f"instance_group [ {{ kind: {kind}, count: {count} }} ]\n"
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
