"""Triton's python backend entry point for ``face_tracker`` (the model is ``serving.models.face_tracker``)."""

from serving.triton import triton_python_model

TritonPythonModel = triton_python_model("face_tracker")
