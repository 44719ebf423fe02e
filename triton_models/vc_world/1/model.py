"""Triton's python backend entry point for ``vc_world`` (the model is ``serving.models.vc_world``)."""

from serving.triton import triton_python_model

TritonPythonModel = triton_python_model("vc_world")
