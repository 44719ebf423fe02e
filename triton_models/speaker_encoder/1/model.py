"""Triton's python backend entry point for ``speaker_encoder`` (the model is ``serving.models.speaker_encoder``)."""

from serving.triton import triton_python_model

TritonPythonModel = triton_python_model("speaker_encoder")
