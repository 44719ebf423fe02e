"""Triton's python backend entry point for ``tts_fastpitch`` (the model is ``serving.models.tts_fastpitch``)."""

from serving.triton import triton_python_model

TritonPythonModel = triton_python_model("tts_fastpitch")
