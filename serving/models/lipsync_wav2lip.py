"""lipsync_wav2lip: Wav2Lip re-draws the lower half of 96x96 face crops to their mel windows.

Crops in, crops out: the lipsync stage detects and tracks the face, crops it
with the published padding, computes the mel windows and pastes the result
back with a feathered, colour-matched blend over the mouth, so this model (on
a GPU in production) only ever receives small tensors, and the dynamic batcher
fills large batches from the concurrent requests of many chunks and jobs.
A batch-first torch model, built on its instance's device (fp16 on a GPU).

Weights come from a local file, never a download: parameter ``checkpoint``
(polydub fills it from ``POLYDUB_WAV2LIP_CHECKPOINT``), ``wav2lip.pth`` or
``wav2lip_gan.pth`` in the official layout. Without it the model refuses to
load, naming it; ``random_init: "true"`` builds the published size with random
weights instead, for compute-cost benchmarks only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.wav2lip.checkpoint import load_wav2lip, random_wav2lip
from engines.wav2lip.model import generate
from serving.interfaces import FACE_LIPSYNC
from serving.model import ServedModel, param
from serving.placement import Placement
from serving.specs import Item


@dataclass(frozen=True)
class Wav2LipParameters:
    checkpoint: Path | None = param(None, "wav2lip.pth or wav2lip_gan.pth (official layout) on this host.")
    random_init: bool = param(False, "Random weights at the published size: compute benchmarks only.")
    fp16: bool = param(True, "Half precision on GPU instances (ignored on the CPU).")


class Wav2LipServed(ServedModel):
    name = "lipsync_wav2lip"
    interface = FACE_LIPSYNC
    max_batch_size = 128
    preferred_batch_sizes = (64, 128)
    Config = Wav2LipParameters

    def __init__(self, config: Wav2LipParameters, placement: Placement) -> None:
        super().__init__(config, placement)
        device = self.torch_device()
        if config.random_init:
            self.model = random_wav2lip(device=device)
            self.version = "wav2lip random_init (untrained, benchmark only)"
        elif config.checkpoint is None:
            raise ValueError("lipsync_wav2lip needs the parameter checkpoint: wav2lip.pth or wav2lip_gan.pth on this "
                             "host (nothing is downloaded; polydub sets it from POLYDUB_WAV2LIP_CHECKPOINT), or "
                             "random_init=true for a compute-cost benchmark")
        else:
            self.model = load_wav2lip(config.checkpoint, device).model
            self.version = f"wav2lip {config.checkpoint.name}"
        if placement.is_gpu and config.fp16:
            self.model = self.model.half()

    def infer_items(self, items: list[Item]) -> list[Item]:
        crops = np.stack([np.asarray(item["FACES"], dtype=np.uint8) for item in items])
        mels = np.stack([np.asarray(item["MEL"], dtype=np.float32) for item in items])
        return [{"FACES": face} for face in generate(self.model, crops, mels)]


SERVED = Wav2LipServed
