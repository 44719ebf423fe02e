"""Triton's python backend entry point for ``av_sync`` (the model is ``serving.models.av_sync``)."""

from serving.triton import triton_python_model

TritonPythonModel = triton_python_model("av_sync")
