"""The Wav2Lip generator: a U-Net over a masked face, conditioned on 0.2 s of mel.

Layout (``state_dict`` keys as published, widths from :class:`Wav2LipConfig`):

* ``face_encoder_blocks.{0..6}``: 96 -> 48 -> 24 -> 12 -> 6 -> 3 -> 1 px; each
  block opens with a strided unit and adds residual units (2, 3, 2, 2, 1);
* ``audio_encoder.{0..12}``: one flat sequence, 80x16 -> 27x16 -> 9x6 -> 3x3 -> 1x1;
* ``face_decoder_blocks.{0..6}``: from the audio embedding up to 96 px; after
  every block the matching face-encoder output is concatenated (deepest first);
* ``output_block``: a unit, a 1x1 convolution to 3 channels, a sigmoid.

Every unit is ``conv_block = [Conv2d (or ConvTranspose2d), BatchNorm2d]``, an
optional residual add of its input, then ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from engines.wav2lip.config import FACE_SIZE, MASKED_FROM_ROW, MEL_BANDS, MEL_STEPS, Wav2LipConfig

__all__ = ["Wav2Lip", "face_inputs", "generate"]

Stride = int | tuple[int, int]
#: Residual units after the opening unit of face-encoder blocks 1..5.
_FACE_RESIDUALS = (2, 3, 2, 2, 1)
#: Audio-encoder stages: (stride of the opening unit, residual units after it).
_AUDIO_STAGES: tuple[tuple[Stride, int], ...] = ((1, 2), ((3, 1), 2), (3, 2), ((3, 2), 1))


class ConvUnit(nn.Module):
    """Conv2d (with bias) + BatchNorm2d, plus the input when ``residual``, then ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: Stride, padding: int, residual: bool = False) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_block(x)
        return torch.relu(out + x if self.residual else out)


class UpUnit(nn.Module):
    """ConvTranspose2d + BatchNorm2d, then ReLU (never residual: it changes the size)."""

    def __init__(self, cin: int, cout: int, stride: int, padding: int, output_padding: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.ConvTranspose2d(cin, cout, 3, stride, padding, output_padding),
                                        nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv_block(x))


def _residuals(channels: int, count: int) -> list[nn.Module]:
    return [ConvUnit(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


def _face_encoder(face: Sequence[int]) -> nn.ModuleList:
    blocks: list[list[nn.Module]] = [[ConvUnit(6, face[0], 7, 1, 3)]]
    for i, repeats in enumerate(_FACE_RESIDUALS, start=1):
        blocks.append([ConvUnit(face[i - 1], face[i], 3, 2, 1), *_residuals(face[i], repeats)])
    blocks.append([ConvUnit(face[5], face[6], 3, 1, 0), ConvUnit(face[6], face[6], 1, 1, 0)])
    return nn.ModuleList(nn.Sequential(*block) for block in blocks)


def _audio_encoder(audio: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 1
    for cout, (stride, repeats) in zip(audio, _AUDIO_STAGES, strict=False):
        layers += [ConvUnit(cin, cout, 3, stride, 1), *_residuals(cout, repeats)]
        cin = cout
    layers += [ConvUnit(cin, audio[-1], 3, 1, 0), ConvUnit(audio[-1], audio[-1], 1, 1, 0)]
    return nn.Sequential(*layers)


def _face_decoder(face: Sequence[int], audio: Sequence[int], decoder: Sequence[int]) -> nn.ModuleList:
    blocks: list[list[nn.Module]] = [[ConvUnit(audio[-1], decoder[0], 1, 1, 0)]]
    # Block i takes the previous block's output plus the face encoder's block 7 - i.
    blocks.append([UpUnit(decoder[0] + face[6], decoder[1], 1, 0, 0), *_residuals(decoder[1], 1)])
    for i in range(2, 7):
        blocks.append([UpUnit(decoder[i - 1] + face[7 - i], decoder[i], 2, 1, 1), *_residuals(decoder[i], 2)])
    return nn.ModuleList(nn.Sequential(*block) for block in blocks)


class Wav2Lip(nn.Module):
    """``forward(mel (B, 1, 80, 16), faces (B, 6, 96, 96)) -> (B, 3, 96, 96)`` in [0, 1], BGR."""

    def __init__(self, config: Wav2LipConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or Wav2LipConfig()
        self.face_encoder_blocks = _face_encoder(cfg.face)
        self.audio_encoder = _audio_encoder(cfg.audio)
        self.face_decoder_blocks = _face_decoder(cfg.face, cfg.audio, cfg.decoder)
        self.output_block = nn.Sequential(ConvUnit(cfg.decoder[6] + cfg.face[0], cfg.output_hidden, 3, 1, 1),
                                          nn.Conv2d(cfg.output_hidden, 3, 1, 1, 0), nn.Sigmoid())

    def forward(self, mel: Tensor, faces: Tensor) -> Tensor:
        if mel.shape[1:] != (1, MEL_BANDS, MEL_STEPS) or faces.shape[1:] != (6, FACE_SIZE, FACE_SIZE):
            raise ValueError(f"Wav2Lip takes mel (B, 1, {MEL_BANDS}, {MEL_STEPS}) and faces "
                             f"(B, 6, {FACE_SIZE}, {FACE_SIZE}); got {tuple(mel.shape)} and {tuple(faces.shape)}")
        skips = []
        x = faces
        for block in self.face_encoder_blocks:
            x = block(x)
            skips.append(x)
        x = self.audio_encoder(mel)
        for block in self.face_decoder_blocks:
            x = torch.cat((block(x), skips.pop()), dim=1)
        return self.output_block(x)

    @property
    def device(self) -> torch.device:
        return self.output_block[1].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.output_block[1].weight.dtype


def face_inputs(crops: NDArray[np.uint8]) -> NDArray[np.float32]:
    """``(B, 96, 96, 3)`` uint8 RGB crops -> the network's ``(B, 6, 96, 96)`` input.

    Channels 0-2: the crop in BGR (the colour order Wav2Lip was trained in, through
    OpenCV) in [0, 1] with its lower half zeroed, what the network re-draws;
    channels 3-5: the same crop unmasked, the identity reference.
    """
    faces = np.asarray(crops)
    if faces.ndim != 4 or faces.shape[1:] != (FACE_SIZE, FACE_SIZE, 3) or faces.dtype != np.uint8:
        raise ValueError(f"face crops must be (B, {FACE_SIZE}, {FACE_SIZE}, 3) uint8 RGB, "
                         f"got shape {faces.shape} dtype {faces.dtype}")
    bgr = faces[..., ::-1].astype(np.float32) / np.float32(255.0)
    masked = bgr.copy()
    masked[:, MASKED_FROM_ROW:] = 0.0
    return np.ascontiguousarray(np.concatenate((masked, bgr), axis=3).transpose(0, 3, 1, 2))


def generate(model: Wav2Lip, crops: NDArray[np.uint8], mels: NDArray[np.floating]) -> NDArray[np.uint8]:
    """Re-drawn crops, ``(B, 96, 96, 3)`` uint8 RGB, for crops and their ``(B, 80, 16)`` mel windows.

    Runs on the model's device and in its dtype (fp16 on a GPU when the model was halved).
    """
    windows = np.asarray(mels, dtype=np.float32)
    if windows.ndim != 3 or windows.shape[1:] != (MEL_BANDS, MEL_STEPS) or windows.shape[0] != len(crops):
        raise ValueError(f"need one ({MEL_BANDS}, {MEL_STEPS}) mel window per crop; got {windows.shape} "
                         f"for {len(crops)} crops")
    if len(crops) == 0:
        return np.zeros((0, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    faces = torch.from_numpy(face_inputs(crops)).to(model.device, model.dtype)
    audio = torch.from_numpy(windows[:, None]).to(model.device, model.dtype)
    with torch.inference_mode():
        out = model(audio, faces).float().cpu().numpy()
    bgr = np.clip(np.rint(out.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(bgr[..., ::-1])
