"""Where a served model's instance runs: the CPU, or one GPU.

Triton tells each python-backend instance its kind and device
(``model_instance_kind`` and ``model_instance_device_id`` in ``initialize``'s
arguments); the local client reads ``POLYDUB_DEVICE`` (``auto``, ``cpu``,
``cuda``, ``cuda:N``). Both end up as one :class:`Placement`, and an adapter
builds its torch modules on :meth:`Placement.torch_device`.

Why a GPU placement without CUDA is an error and not a quiet fall-back: a
``KIND_GPU`` config on a host without a GPU is a deployment mistake (the CPU
variant, ``--model-config-name=cpu``, exists for such hosts), and a torch model
silently running on the CPU there would be tens of times slower with nothing
in the logs to say why. Engines that only run on a CPU (eSpeak, WORLD, the
mouth warp) say ``KIND_CPU`` in every config and ignore the device: that
fall-back is documented per model (``ServedModel.runs_on``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["cpu", "gpu"]

_CUDA = re.compile(r"cuda(?::(\d+))?")
#: Values ``POLYDUB_DEVICE`` accepts, for messages.
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


@dataclass(frozen=True)
class Placement:
    """An instance's kind and, for a GPU, its device index."""

    kind: Kind = "cpu"
    device_id: int = 0

    @classmethod
    def from_triton(cls, kind: str | None, device_id: str | int | None) -> Placement:
        """From Triton's ``model_instance_kind`` (``CPU``, ``GPU``, ``MODEL``) and device id."""
        name = (kind or "CPU").upper()
        if name not in ("CPU", "GPU", "MODEL"):
            raise ValueError(f"unknown Triton instance kind {kind!r}; expected CPU, GPU or MODEL")
        if name == "GPU":
            return cls("gpu", int(device_id or 0))
        return cls("cpu", 0)

    @classmethod
    def parse(cls, value: str) -> Placement:
        """From ``POLYDUB_DEVICE``: ``auto`` is the first GPU when torch sees one, else the CPU."""
        text = value.strip().lower()
        if text == "cpu":
            return cls("cpu")
        if text == "auto":
            return cls("gpu") if cuda_device_count() > 0 else cls("cpu")
        match = _CUDA.fullmatch(text)
        if match is None:
            raise ValueError(f"device {value!r} is not one of {DEVICE_CHOICES}")
        return cls("gpu", int(match.group(1) or 0))

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"

    def describe(self) -> str:
        return f"cuda:{self.device_id}" if self.is_gpu else "cpu"

    def torch_device(self, model: str) -> Any:
        """The ``torch.device`` to build ``model``'s modules on; a missing GPU is a clear error."""
        import torch

        if not self.is_gpu:
            return torch.device("cpu")
        count = cuda_device_count()
        if self.device_id >= count:
            seen = "no CUDA device" if count == 0 else f"{count} CUDA device(s)"
            raise ValueError(
                f"{model} was placed on GPU {self.device_id}, but torch sees {seen} on this host "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); serve it with "
                "the CPU config (tritonserver --model-config-name=cpu, as `polydub stack up` does) or "
                "set POLYDUB_DEVICE=cpu for the in-process client"
            )
        return torch.device("cuda", self.device_id)


def cuda_device_count() -> int:
    """CUDA devices torch can use here (0 on CPU-only builds and hosts)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
