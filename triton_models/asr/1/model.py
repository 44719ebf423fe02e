"""Triton's python backend entry point for ``asr`` (the model is ``serving.models.asr``)."""

from serving.triton import triton_python_model

TritonPythonModel = triton_python_model("asr")
