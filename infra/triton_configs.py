"""Generate each served model's ``config.pbtxt`` from its adapter's tensor specs.

Two files per model: ``config.pbtxt`` (``KIND_GPU``, for production) and
``configs/cpu.pbtxt`` (``KIND_CPU``), which hosts without a GPU select with
``tritonserver --model-config-name=cpu`` (the local stack does). Run
``python -m infra.triton_configs`` after changing an adapter or interface; a
test fails when the checked-in files drift.
"""

from __future__ import annotations

import sys
from pathlib import Path

from engines.batching import render_config
from handlers.runtime.inference import MODEL_REPOSITORY, load_adapter_module

CPU_CONFIG_NAME = "cpu"
# How long the dynamic batcher may hold a request to fill a batch.
MAX_QUEUE_DELAY_US = 5000


def served_model_names(repository: Path = MODEL_REPOSITORY) -> list[str]:
    return sorted(p.parent.parent.name for p in repository.glob("*/1/model.py"))


def render_model_configs(name: str, repository: Path = MODEL_REPOSITORY) -> dict[Path, str]:
    """Relative path -> text of the model's GPU and CPU configs."""
    module = load_adapter_module(name, repository)
    spec = module.SERVED_CLASS
    header = (module.__doc__ or "").strip()
    params = getattr(module, "PARAMETERS", {})
    gpu = render_config(spec, "KIND_GPU", 1, MAX_QUEUE_DELAY_US, params, header)
    cpu = render_config(spec, "KIND_CPU", 1, MAX_QUEUE_DELAY_US, params, header)
    return {
        Path(name) / "config.pbtxt": gpu,
        Path(name) / "configs" / f"{CPU_CONFIG_NAME}.pbtxt": cpu,
    }


def write_configs(repository: Path = MODEL_REPOSITORY) -> list[Path]:
    written = []
    for name in served_model_names(repository):
        for relative, text in render_model_configs(name, repository).items():
            path = repository / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


if __name__ == "__main__":
    for path in write_configs():
        sys.stdout.write(f"wrote {path}\n")
