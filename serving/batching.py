"""Items in, one padded batch through the engine, items out.

Every served model implements ``infer_items(items) -> items`` over unbatched,
unpadded examples (:data:`~serving.specs.Item`). The same glue serves it two
ways, so both give the same results by construction:

* in process (the local inference client): one client batch is one request
  (:func:`run_batch`);
* in Triton's python backend: every request of a dynamic batch is decoded,
  all their items run in **one** engine call, and the results are split back
  per request (:func:`serving.triton.serve_triton_requests`).

Both go through :func:`run_requests`: validation (:func:`split_batch`), the one
engine call, re-joining (:func:`join_items`) and error isolation. A request
that fails validation, or whose items make the engine raise, gets its own
error naming the problem; the other requests of the batch still get results
(after a failed batched call each request is re-run alone, so a bad item can
only fail its own request).

Clients use the same two functions the other way round: :func:`join_items`
packs the items of a request, :func:`split_batch` unpacks a response.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from serving.specs import TEXT_HINT, Batch, Item, TensorSpec, decode_text, encode_texts, scalar

#: What one request comes to: its outputs, or the error to send back instead.
Outcome = Batch | Exception


class BatchRunner(Protocol):
    """What the batching path needs of a served model."""

    name: str
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def infer_items(self, items: list[Item]) -> list[Item]:
        """Run all items in one engine call; return one output item per input item."""
        ...


# --- batches <-> items -------------------------------------------------------------


def _check_tensor(spec: TensorSpec, value: np.ndarray) -> None:
    """The checks Triton makes against ``config.pbtxt``, so the local path rejects the same."""
    if value.dtype != np.dtype(spec.dtype):
        hint = f"; {TEXT_HINT}" if spec.utf8 or value.dtype == np.object_ else ""
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
                    value = np.array([decode_text(value, spec.name, i)], dtype=np.object_)
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


def _run_groups(model: BatchRunner, groups: list[list[Item]]) -> list[list[Item] | Exception]:
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


def run_requests(model: BatchRunner, requests: Sequence[Batch | Exception]) -> list[Outcome]:
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


def run_batch(model: BatchRunner, batch: Batch) -> Batch:
    """The in-process path: one client batch is one request of :func:`run_requests`."""
    (outcome,) = run_requests(model, [batch])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def error_message(exc: Exception) -> str:
    """What a client reads: the reason of a ValueError as is, anything else with its type."""
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


