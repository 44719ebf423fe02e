"""Triton's python backend entry point for ``lipsync_mouthwarp`` (the model is ``serving.models.lipsync_mouthwarp``)."""

from serving.triton import triton_python_model

TritonPythonModel = triton_python_model("lipsync_mouthwarp")
