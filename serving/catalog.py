"""Every served model, by its Triton name: ``serving/models/<name>.py`` defines ``SERVED``.

The module name is the model name, so the catalog is the folder itself:
adding a model is adding a module (and its ``triton_models/<name>/``, which
``python -m serving.configs`` writes and a test keeps in step).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

import serving.models
from serving.model import ServedModel
from serving.placement import Placement


def served_model_names() -> tuple[str, ...]:
    """The names of every served model, sorted."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(serving.models.__path__) if not m.ispkg))


def model_class(name: str) -> type[ServedModel]:
    """The served model class of ``name`` (imports its module and so its engine)."""
    if name not in served_model_names():
        raise ValueError(f"no served model named {name!r}; choose one of: {', '.join(served_model_names())}")
    module = importlib.import_module(f"serving.models.{name}")
    served: type[ServedModel] = module.SERVED
    if served.name != name:
        raise ValueError(f"serving/models/{name}.py serves {served.name!r}; a module serves the model it names")
    return served


def build_model(name: str, parameters: Mapping[str, str] | None = None,
                placement: Placement | None = None) -> ServedModel:
    """``name`` built from string parameters on ``placement`` (the CPU by default)."""
    return model_class(name).build(parameters, placement)
