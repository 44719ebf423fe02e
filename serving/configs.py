"""Each served model's Triton config, generated from its class (``python -m serving.configs``).

Two files per model in ``triton_models/<name>/``:

* ``config.pbtxt``, production: torch models on ``KIND_GPU``; engines that only
  run on a CPU on ``KIND_CPU`` (they say so in every config);
* ``configs/cpu.pbtxt``, for hosts without a GPU: ``KIND_CPU`` throughout,
  selected with ``tritonserver --model-config-name=cpu`` (``polydub stack up``
  does).

A test fails when the checked-in files drift from the classes. The same
description also renders as the JSON Triton's model-control API takes
(:func:`config_json`): how the local stack, tests and benchmarks load a model
with parameters or batching other than the checked-in ones, without a second
copy of the repository.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving import MODEL_REPOSITORY
from serving.catalog import model_class, served_model_names
from serving.model import Scaling, ServedModel, config_fields, default_parameters
from serving.specs import TensorSpec

#: ``--model-config-name`` of the CPU variant (``configs/cpu.pbtxt``).
CPU_CONFIG_NAME = "cpu"
#: How long the dynamic batcher may hold a request of a batch-first model to fill a batch.
MAX_QUEUE_DELAY_US = 5000


@dataclass(frozen=True)
class Variant:
    """What differs between the configs of one model.

    The checked-in files are :data:`PRODUCTION` and :data:`CPU`; the other fields
    exist for overrides (the stack's weights, the benchmark's baselines).
    """

    gpu: bool = True
    dynamic_batching: bool = True
    parameters: Mapping[str, str] | None = None
    #: Instance count instead of the model's own.
    instances: int | None = None
    #: Batcher queue delay instead of the model's own (see :func:`queue_delay_us`).
    queue_delay_us: int | None = None

    def kind(self, served: type[ServedModel]) -> str:
        return "KIND_GPU" if self.gpu and served.runs_on == "any" else "KIND_CPU"

    def count(self, served: type[ServedModel]) -> int:
        return served.instances if self.instances is None else self.instances

    def delay_us(self, served: type[ServedModel]) -> int:
        return queue_delay_us(served) if self.queue_delay_us is None else self.queue_delay_us


PRODUCTION = Variant(gpu=True)
CPU = Variant(gpu=False)


def queue_delay_us(served: type[ServedModel]) -> int:
    """Batch-first models wait a little to fill a batch; per-item ones never wait (module doc)."""
    return MAX_QUEUE_DELAY_US if served.scaling is Scaling.BATCHED else 0


def _parameters(served: type[ServedModel], variant: Variant) -> dict[str, str]:
    values = default_parameters(served.Config)
    overrides = dict(variant.parameters or {})
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise ValueError(f"{served.name} has no parameter(s) {unknown}; its parameters are {sorted(values)}")
    return values | overrides


def render_config(served: type[ServedModel], variant: Variant = PRODUCTION, header: str = "") -> str:
    """The ``config.pbtxt`` text (comments document every tensor and parameter)."""

    def block(spec: TensorSpec, is_input: bool) -> str:
        lines = [
            "  {",
            f"    # {spec.doc}",
            f'    name: "{spec.name}"',
            f"    data_type: {spec.triton_type}",
            f"    dims: [ {', '.join(str(d) for d in spec.dims)} ]",
        ]
        if spec.length_of is not None and is_input:
            lines.append("    allow_ragged_batch: true")
        if spec.optional:
            lines.append("    optional: true")
        lines.append("  }")
        return "\n".join(lines)

    inputs = ",\n".join(block(s, True) for s in served.interface.inputs)
    outputs = ",\n".join(block(s, False) for s in served.interface.outputs)
    docs = {f.name: f.metadata.get("doc", "") for f in config_fields(served.Config)}
    params = "".join(
        f"# {docs[key]}\n" f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
        for key, value in sorted(_parameters(served, variant).items())
    )
    comment = "".join(f"# {line}\n".replace("# \n", "#\n") for line in header.strip().splitlines())
    batching = ""
    if variant.dynamic_batching:
        note = ("" if served.scaling is Scaling.BATCHED else
                "# Per-item engine: no queue delay; throughput scales with the instance count.\n")
        preferred = (f"  preferred_batch_size: [ {', '.join(str(n) for n in served.preferred_batch_sizes)} ]\n"
                     if served.preferred_batch_sizes else "")
        batching = (f"{note}dynamic_batching {{\n{preferred}"
                    f"  max_queue_delay_microseconds: {variant.delay_us(served)}\n}}\n")
    return (
        comment
        + f'name: "{served.name}"\n'
        'backend: "python"\n'
        f"max_batch_size: {served.max_batch_size}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        + batching
        + f"instance_group [ {{ kind: {variant.kind(served)}, count: {variant.count(served)} }} ]\n"
        + params
    )


def config_json(served: type[ServedModel], variant: Variant = CPU) -> str:
    """The same config as the JSON that Triton's model-control ``load`` takes as an override."""

    def tensor(spec: TensorSpec, is_input: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"name": spec.name, "data_type": spec.triton_type, "dims": list(spec.dims)}
        if spec.length_of is not None and is_input:
            out["allow_ragged_batch"] = True
        if spec.optional:
            out["optional"] = True
        return out

    document: dict[str, Any] = {
        "name": served.name,
        "backend": "python",
        "max_batch_size": served.max_batch_size,
        "input": [tensor(s, True) for s in served.interface.inputs],
        "output": [tensor(s, False) for s in served.interface.outputs],
        "instance_group": [{"kind": variant.kind(served), "count": variant.count(served)}],
        "parameters": {k: {"string_value": v} for k, v in sorted(_parameters(served, variant).items())},
    }
    if variant.dynamic_batching:
        document["dynamic_batching"] = {"max_queue_delay_microseconds": variant.delay_us(served)}
        if served.preferred_batch_sizes:
            document["dynamic_batching"]["preferred_batch_size"] = list(served.preferred_batch_sizes)
    return json.dumps(document)


def render_model_configs(name: str) -> dict[Path, str]:
    """Relative path -> text of the model's production and CPU configs."""
    served = model_class(name)
    header = (sys.modules[served.__module__].__doc__ or "").strip()
    return {
        Path(name) / "config.pbtxt": render_config(served, PRODUCTION, header),
        Path(name) / "configs" / f"{CPU_CONFIG_NAME}.pbtxt": render_config(served, CPU, header),
    }


def write_configs(repository: Path = MODEL_REPOSITORY) -> list[Path]:
    """Write every served model's configs (and its two-line ``1/model.py``) into ``repository``."""
    written = []
    for name in served_model_names():
        files = dict(render_model_configs(name))
        files[Path(name) / "1" / "model.py"] = entry_point(name)
        for relative, text in files.items():
            path = repository / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


def entry_point(name: str) -> str:
    """``triton_models/<name>/1/model.py``: it only names its served model."""
    return (
        f'"""Triton\'s python backend entry point for ``{name}`` (the model is ``serving.models.{name}``)."""\n'
        "\n"
        "from serving.triton import triton_python_model\n"
        "\n"
        f'TritonPythonModel = triton_python_model("{name}")\n'
    )


if __name__ == "__main__":
    for path in write_configs():
        sys.stdout.write(f"wrote {path}\n")
