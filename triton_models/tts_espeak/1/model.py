"""Triton's python backend entry point for ``tts_espeak`` (the model is ``serving.models.tts_espeak``)."""

from serving.triton import triton_python_model

TritonPythonModel = triton_python_model("tts_espeak")
