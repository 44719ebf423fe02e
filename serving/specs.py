"""Tensors on the wire: what a served model takes and returns, and text as bytes.

A served model is described by :class:`TensorSpec` lists; requests and
responses are dicts of numpy arrays with a leading batch axis (a
:data:`Batch`), and the models themselves work on unbatched, unpadded
examples (an :data:`Item`). Variable-length tensors travel padded with a
companion ``*_LENGTH`` tensor, torchaudio style; scalars travel as shape
``[1]`` per item, Triton style.

Text travels as UINT8 UTF-8 bytes plus a length (``TensorSpec(utf8=True)``),
never as Triton ``TYPE_STRING``: Triton 2.51's python backend stub (built with
a pybind11 that predates numpy 2) reads numpy 2 arrays with zero strides, so a
BYTES input is deserialised from its first byte repeated and the stub process
aborts, leaving the model instance dead for every later request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: One example as a model sees it: arrays trimmed to their length, text as a
#: one-element object array holding the ``str``, scalars as ``[1]`` arrays.
#: Clients may also put plain Python numbers and strings in an item they send.
Item = dict[str, Any]
#: Padded arrays with a leading batch axis: what travels to and from a model.
Batch = dict[str, np.ndarray]

_TRITON_DTYPES = {
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.int64): "TYPE_INT64",
    np.dtype(np.int32): "TYPE_INT32",
    np.dtype(np.uint8): "TYPE_UINT8",
}
TEXT_HINT = "text travels as UTF-8 bytes (UINT8) with a *_LENGTH tensor: build it with encode_texts()"


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
                f"{sorted(str(d) for d in _TRITON_DTYPES)} ({TEXT_HINT}, see serving.specs)"
            )
        if self.utf8 and (np.dtype(self.dtype) != np.uint8 or self.dims != (-1,) or self.length_of is None):
            raise ValueError(f"text tensor {self.name} must be uint8 with dims (-1,) and a length_of tensor")

    @property
    def triton_type(self) -> str:
        return _TRITON_DTYPES[np.dtype(self.dtype)]

    @property
    def is_scalar(self) -> bool:
        return self.dims == (1,)


@dataclass(frozen=True)
class Interface:
    """The tensors of a model family: every TTS model takes and returns the same ones.

    Stages are engine-agnostic because of this: a job switches engines by
    model name alone, and the stage packs its request with the family's specs.
    """

    family: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


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


def text_inputs(name: str, texts: Sequence[str]) -> Batch:
    """A batch of texts as models take them: UTF-8 bytes ``name`` plus ``name_LENGTH``."""
    data, lengths = encode_texts(texts)
    return {name: data, f"{name}_LENGTH": lengths}


def decode_text(raw: np.ndarray, name: str, index: int) -> str:
    """One item's bytes of text tensor ``name`` as ``str``, or a ValueError naming the item."""
    try:
        return raw.tobytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{name} of item {index} is not valid UTF-8 ({exc.reason} at byte {exc.start}); "
            "encode text as UTF-8"
        ) from exc


def scalar(item: Item, name: str, default: Any = None) -> Any:
    """The Python value of a ``[1]``-shaped item tensor, or the ``str`` of a text tensor."""
    if name not in item:
        return default
    value = np.asarray(item[name]).reshape(-1)[0]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value.item() if hasattr(value, "item") else value


#: How an error message starts when a model cannot use an input (a reference with too little
#: voiced speech): a condition of the input, not a fault of the server, so a client must not
#: retry it. A prefix, because over Triton only the message crosses the wire.
UNUSABLE_INPUT = "unusable input: "


class UnusableInput(ValueError):
    """A served model's refusal of an input no retry can fix; its message starts with :data:`UNUSABLE_INPUT`."""

    def __init__(self, reason: str) -> None:
        super().__init__(UNUSABLE_INPUT + reason)


def is_unusable_input(message: str) -> bool:
    """Whether an error message (in process or from Triton) is an :class:`UnusableInput`."""
    return UNUSABLE_INPUT in message

