"""The official Wav2Lip checkpoint layout: ``wav2lip.pth`` and ``wav2lip_gan.pth``.

Training saves ``{"state_dict", "optimizer", "global_step", "global_epoch"}``;
the generator keys may carry DataParallel ``module.`` prefixes, which the
official loader strips before ``load_state_dict(strict=True)``. The GAN-trained
file holds the same generator keys. A bare state dict (no container) loads too.

Files are read with ``torch.load(weights_only=True)``: a checkpoint cannot run
code. The widths are read off the tensors, so a smaller generator saved in this
layout (the tests' tiny one) loads without being told its config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from engines.checkpoints import layout_problems
from engines.wav2lip.config import Wav2LipConfig
from engines.wav2lip.model import Wav2Lip

logger = logging.getLogger(__name__)

__all__ = ["LoadedWav2Lip", "config_from_state", "load_wav2lip", "random_wav2lip", "strip_module_prefix"]

_PREFIX = "module."


@dataclass
class LoadedWav2Lip:
    """A generator restored from a file, in eval mode, and what the file said about its training."""

    model: Wav2Lip
    global_step: int | None
    path: Path


def strip_module_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keys without DataParallel's ``module.`` (wherever it sits, as the official loader does)."""
    return {key.replace(_PREFIX, ""): value for key, value in state.items()}


def _width(state: Mapping[str, Tensor], key: str, axis: int) -> int:
    if key not in state:
        raise KeyError(key)
    return int(state[key].shape[axis])


def config_from_state(state: Mapping[str, Tensor]) -> Wav2LipConfig:
    """The channel widths a generator state dict was built with (the layout is fixed)."""
    try:
        face = tuple(_width(state, f"face_encoder_blocks.{i}.0.conv_block.0.weight", 0) for i in range(7))
        audio_openers = (0, 3, 6, 9, 11)
        audio = tuple(_width(state, f"audio_encoder.{j}.conv_block.0.weight", 0) for j in audio_openers)
        # Transposed convolutions store (in, out, k, k): their output width is axis 1.
        decoder = (_width(state, "face_decoder_blocks.0.0.conv_block.0.weight", 0),
                   *(_width(state, f"face_decoder_blocks.{i}.0.conv_block.0.weight", 1) for i in range(1, 7)))
        hidden = _width(state, "output_block.0.conv_block.0.weight", 0)
    except KeyError as exc:
        raise ValueError(f"not a Wav2Lip generator state dict: it has no {exc.args[0]!r}") from exc
    return Wav2LipConfig(face=face, audio=audio, decoder=decoder, output_hidden=hidden)


def _generator_state(checkpoint: Any, path: Path) -> dict[str, Tensor]:
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a Wav2Lip checkpoint: expected a dict with 'state_dict' (the official "
                         f"wav2lip.pth / wav2lip_gan.pth layout) or a bare generator state dict")
    return strip_module_prefix(state)


def load_wav2lip(path: str | Path, device: str | torch.device = "cpu") -> LoadedWav2Lip:
    """Restore a generator from an official-layout file; every key must match (``strict=True``)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"Wav2Lip checkpoint {file} does not exist: give the path of wav2lip.pth or "
                                "wav2lip_gan.pth on this host (nothing is downloaded)")
    checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    state = _generator_state(checkpoint, file)
    model = Wav2Lip(config_from_state(state))
    problems = layout_problems(model.state_dict(), state)
    if problems:
        raise ValueError(f"{file} does not match the Wav2Lip generator: {'; '.join(problems)} (is it a SyncNet or "
                         "another model's file?)")
    model.load_state_dict(state, strict=True)
    step = checkpoint.get("global_step") if isinstance(checkpoint, Mapping) else None
    return LoadedWav2Lip(model.to(device).eval(), int(step) if step is not None else None, file)


def random_wav2lip(config: Wav2LipConfig | None = None, device: str | torch.device = "cpu",
                   seed: int = 0) -> Wav2Lip:
    """The published size (or ``config``) with random weights (torch's default init, seeded):
    compute-cost benchmarks only."""
    logger.warning("Wav2Lip with RANDOM weights: it draws noise over the mouth; for compute benchmarks only")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Wav2Lip(config)
    return model.to(device).eval()
