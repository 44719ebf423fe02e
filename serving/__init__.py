"""The serving protocol both inference paths share: tensor specs, batching, Triton glue, configs.

``serving.specs`` (tensors, text on the wire), ``serving.interfaces`` (each model
family's tensors), ``serving.batching`` (items <-> padded batches, one engine
call per batch), ``serving.model`` (the served-model base and its parameters),
``serving.placement`` (CPU or GPU), ``serving.catalog`` (every model by name),
``serving.triton`` (the python backend's generic model) and ``serving.configs``
(``config.pbtxt`` generation). The adapters themselves are ``serving.models.*``.
"""

from pathlib import Path

#: The checked-in Triton model repository (``triton_models/`` beside this package).
MODEL_REPOSITORY = Path(__file__).resolve().parents[1] / "triton_models"
