"""Triton's python backend entry point for ``lipsync_wav2lip`` (the model is ``serving.models.lipsync_wav2lip``)."""

from serving.triton import triton_python_model

TritonPythonModel = triton_python_model("lipsync_wav2lip")
