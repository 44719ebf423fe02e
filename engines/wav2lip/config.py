"""The shape of a Wav2Lip generator: channel widths per block; the published ones by default.

The block structure (kernels, strides, residual units per block, the skip
concatenations) is fixed by the published architecture; only widths vary, so a
tiny config (for tests) has the published key names with smaller tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Side of the square face crop the network takes and returns, in pixels.
FACE_SIZE = 96
#: Mel frames in one audio window (0.2 s at 80 frames/s) and mel bands.
MEL_STEPS = 16
MEL_BANDS = 80
#: Rows of the target face the network sees masked (its lower half): what it re-draws.
MASKED_FROM_ROW = FACE_SIZE // 2


@dataclass(frozen=True)
class Wav2LipConfig:
    """Channel widths of every block (published values by default)."""

    #: Output channels of face-encoder blocks 0..6 (96 -> 1 px).
    face: tuple[int, ...] = (16, 32, 64, 128, 256, 512, 512)
    #: Output channels of the audio encoder's five stages (80x16 -> 1x1); the last is the
    #: embedding the decoder starts from.
    audio: tuple[int, ...] = (32, 64, 128, 256, 512)
    #: Output channels of face-decoder blocks 0..6 (before each skip concatenation).
    decoder: tuple[int, ...] = (512, 512, 512, 384, 256, 128, 64)
    #: Hidden channels of the output block.
    output_hidden: int = 32

    def __post_init__(self) -> None:
        if len(self.face) != 7 or len(self.decoder) != 7 or len(self.audio) != 5:
            raise ValueError("Wav2Lip has 7 face-encoder blocks, 5 audio stages and 7 decoder blocks")
        if self.audio[-1] != self.face[-1]:
            raise ValueError(f"the audio embedding ({self.audio[-1]}) and the face code ({self.face[-1]}) "
                             "must have the same width: the decoder starts from one and concatenates the other")
        if min(self.face + self.audio + self.decoder + (self.output_hidden,)) <= 0:
            raise ValueError("channel widths must be positive")

    @classmethod
    def tiny(cls) -> Wav2LipConfig:
        """Same structure and key names, a few thousand parameters: for tests."""
        return cls(face=(4, 4, 8, 8, 8, 16, 16), audio=(4, 8, 8, 8, 16), decoder=(16, 16, 8, 8, 8, 4, 4),
                   output_hidden=4)
