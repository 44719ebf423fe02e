"""Triton's python backend entry point for ``vc_rvc`` (the model is ``serving.models.vc_rvc``)."""

from serving.triton import triton_python_model

TritonPythonModel = triton_python_model("vc_rvc")
