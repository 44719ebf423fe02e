"""The base of every served model: an engine behind a family interface.

A served model (``serving/models/<name>.py``) declares, as class attributes,
everything Triton's ``config.pbtxt`` says about it (its
:class:`~serving.specs.Interface`, ``max_batch_size``, how it scales, whether
it can use a GPU) and a frozen dataclass ``Config`` whose fields are its
``parameters``, one documented field each. It then writes only the engine
call. The same class is served in process (the local client) and by Triton
(``triton_models/<name>/1/model.py`` names it), built by :meth:`ServedModel.build`
from string parameters and a :class:`~serving.placement.Placement`.

Scaling says how a model uses the dynamic batcher:

* ``BATCHED``: the engine is batch-first; every request Triton groups runs in
  one engine call (padded, masked), so batching buys throughput.
* ``PER_ITEM``: the engine is inherently one item at a time (a C library
  that is not re-entrant, a per-utterance vocoder, per-clip face tracking);
  throughput scales with the instance count (``instances``, one process each),
  and the batcher waits for nothing (``max_queue_delay`` 0): an idle instance
  takes every request already queued, so at low load nothing waits.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from serving.placement import Placement
from serving.specs import Interface, Item, TensorSpec

log = logging.getLogger(__name__)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


class Scaling(Enum):
    """How a served model turns concurrency into throughput (see the module doc)."""

    BATCHED = "batched"
    PER_ITEM = "per_item"


def param(default: Any, doc: str) -> Any:
    """A ``Config`` field: its default and the one line ``config.pbtxt`` documents it with."""
    if isinstance(default, list | dict | set):
        raise TypeError("parameters are scalars, paths or tuples of strings")
    return dataclasses.field(default=default, metadata={"doc": doc})


@dataclasses.dataclass(frozen=True)
class NoParameters:
    """A model without parameters."""


class ServedModel(ABC):
    """One model as both serving paths see it; subclasses write :meth:`infer_items`."""

    name: ClassVar[str]
    interface: ClassVar[Interface]
    max_batch_size: ClassVar[int]
    scaling: ClassVar[Scaling] = Scaling.BATCHED
    #: Instances per config (processes in Triton); PER_ITEM models scale with it.
    instances: ClassVar[int] = 1
    #: Batch sizes the dynamic batcher aims for (empty: as many as arrive within the delay);
    #: sizes a GPU runs efficiently, for batch-first models whose batches can grow large.
    preferred_batch_sizes: ClassVar[tuple[int, ...]] = ()
    #: ``cpu``: the engine only runs on a CPU; both configs say KIND_CPU, and a GPU
    #: placement (an operator's override) runs it on the CPU with a warning.
    #: ``any``: a torch model; production config KIND_GPU, CPU variant KIND_CPU.
    runs_on: ClassVar[Literal["cpu", "any"]] = "any"
    Config: ClassVar[type] = NoParameters

    def __init__(self, config: Any, placement: Placement) -> None:
        self.config = config
        self.placement = placement

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.interface.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.interface.outputs

    @classmethod
    def build(cls, parameters: Mapping[str, str] | None = None, placement: Placement | None = None) -> Self:
        """The model from string ``parameters`` (config.pbtxt's block) on ``placement``."""
        placement = placement or Placement()
        if placement.is_gpu and cls.runs_on == "cpu":
            log.warning("%s only runs on a CPU; its GPU %d instance runs it on the CPU (its configs say "
                        "KIND_CPU)", cls.name, placement.device_id)
            placement = Placement()
        config = parse_config(cls.Config, parameters or {}, cls.name)
        return cls(config, placement)

    def torch_device(self) -> Any:
        """Where to build torch modules (raises naming the missing GPU)."""
        return self.placement.torch_device(self.name)

    @abstractmethod
    def infer_items(self, items: list[Item]) -> list[Item]:
        """Run all items in one engine call; return one output item per input item."""


class PerItemModel(ServedModel):
    """A PER_ITEM model writes :meth:`infer_item`; items of a batch run one after another."""

    scaling = Scaling.PER_ITEM
    runs_on = "cpu"

    @abstractmethod
    def infer_item(self, item: Item) -> Item:
        """One item's outputs."""

    def infer_items(self, items: list[Item]) -> list[Item]:
        return [self.infer_item(item) for item in items]


# --- parameters -------------------------------------------------------------------------


def config_fields(config_class: type) -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(config_class))


def parameter_text(value: Any) -> str:
    """A field value as config.pbtxt writes it (the inverse of :func:`parse_config`)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def default_parameters(config_class: type) -> dict[str, str]:
    """Every parameter of a model with its default, as strings."""
    return {f.name: parameter_text(f.default) for f in config_fields(config_class)}


def parse_config(config_class: type, parameters: Mapping[str, str], model: str) -> Any:
    """``Config`` from Triton's string parameters; unknown keys and bad values name the fix."""
    fields = {f.name: f for f in config_fields(config_class)}
    unknown = sorted(set(parameters) - set(fields))
    if unknown:
        raise ValueError(f"{model} has no parameter(s) {unknown}; its parameters are {sorted(fields) or 'none'}")
    hints = typing.get_type_hints(config_class)
    values = {}
    for name, text in parameters.items():
        try:
            values[name] = _parse(hints[name], str(text))
        except ValueError as exc:
            raise ValueError(f"{model} parameter {name}={text!r}: {exc}") from exc
    return config_class(**values)


def _parse(kind: Any, text: str) -> Any:
    optional = False
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        optional = len(args) < len(typing.get_args(kind))
        kind = args[0]
    if optional and text.strip() == "":
        return None
    if kind is bool:
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError("expected true or false")
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    if kind is Path:
        return Path(text)
    if typing.get_origin(kind) is tuple:
        return tuple(part.strip() for part in text.split(",") if part.strip())
    return text
