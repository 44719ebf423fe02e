"""Wav2Lip (Prajwal et al., 2020): the lower half of a face re-drawn to match 0.2 s of speech.

A re-implementation whose ``state_dict`` is exactly the published generator's
(352 tensors, 36,298,035 parameters), so ``wav2lip.pth`` and ``wav2lip_gan.pth``
load with ``strict=True``:

* :mod:`engines.wav2lip.config`: the channel widths (published and tiny) and the
  input conventions (96x96 BGR faces in [0, 1], 80x16 mel windows);
* :mod:`engines.wav2lip.model`: the face encoder, the audio encoder, the face
  decoder with its skip concatenations and the output block, and
  :func:`~engines.wav2lip.model.generate` (uint8 RGB crops and mel windows in,
  crops out);
* :mod:`engines.wav2lip.checkpoint`: the official checkpoint layout.

The mel features are ``engines.dsp.mel`` with the :data:`~engines.dsp.mel.WAV2LIP_MEL`
preset. Detecting faces, cropping and pasting back are the caller's (the
lipsync stage), so a GPU server only ever sees 96x96 crops.
"""
