"""The tensor interfaces of each model family, as Triton and the local client see them.

Every TTS model has the same inputs and outputs, and so has every VC and every
lip-sync model: the stage handlers are engine-agnostic, and a job switches
engines by model name alone (``tts_espeak`` vs ``tts_fastpitch``). The
``config.pbtxt`` of each model is generated from these specs
(``python -m serving.configs``) and a test keeps them equal.

Shapes exclude the batch axis. Variable-length tensors come with an INT64
``*_LENGTH`` tensor of shape ``[1]``. Text is UINT8 UTF-8 bytes with such a
length (``utf8=True``; clients build it with ``serving.specs.encode_texts``),
not Triton ``TYPE_STRING``: Triton 2.51's python backend aborts on BYTES
tensors under numpy 2 (see ``serving.specs``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.wav2lip.config import FACE_SIZE, MEL_BANDS, MEL_STEPS
from serving.specs import Interface, TensorSpec

F32 = np.dtype(np.float32)
I64 = np.dtype(np.int64)
I32 = np.dtype(np.int32)
U8 = np.dtype(np.uint8)

TTS_INPUTS = (
    TensorSpec("TEXT", U8, (-1,), "Text to speak, UTF-8 bytes.", length_of="TEXT_LENGTH", utf8=True),
    TensorSpec("TEXT_LENGTH", I64, (1,), "Bytes of TEXT."),
    TensorSpec("LANG", U8, (-1,), "Language: ko, en, ja or zh (UTF-8 bytes).", length_of="LANG_LENGTH", utf8=True),
    TensorSpec("LANG_LENGTH", I64, (1,), "Bytes of LANG."),
    TensorSpec("MAX_DURATION", F32, (1,),
               "Seconds the speech should fit in (<= 0: natural length). Speech is sped up, "
               "by rate then time-stretch, at most by MAX_SPEEDUP; never slowed down. What still "
               "does not fit comes back longer than MAX_DURATION.",
               optional=True),
    TensorSpec("MAX_SPEEDUP", F32, (1,),
               "Largest speed-up against the natural reading, rate and time-stretch together "
               "(<= 0 or absent: the model's configured bound).", optional=True),
    TensorSpec("PITCH_HZ", F32, (1,), "Mean pitch to aim for in Hz (<= 0: the voice's own).", optional=True),
    TensorSpec("VOICE", U8, (-1,), "Engine-specific voice or variant name, UTF-8 bytes (empty: default).",
               length_of="VOICE_LENGTH", optional=True, utf8=True),
    TensorSpec("VOICE_LENGTH", I64, (1,), "Bytes of VOICE.", optional=True),
)
TTS_OUTPUTS = (
    TensorSpec("WAVEFORM", F32, (-1,), "Mono speech in [-1, 1], zero-padded.", length_of="WAVEFORM_LENGTH"),
    TensorSpec("WAVEFORM_LENGTH", I64, (1,), "Valid samples of WAVEFORM."),
    TensorSpec("SAMPLE_RATE", I32, (1,), "Sample rate of WAVEFORM in Hz."),
    TensorSpec("SPEEDUP", F32, (1,), "Speed-up applied to fit MAX_DURATION, rate and stretch together "
               "(natural length / output length; 1 = natural)."),
    TensorSpec("VERSION", U8, (-1,), "Engine, voice and checkpoint that spoke (UTF-8), for the QC report.",
               length_of="VERSION_LENGTH", utf8=True),
    TensorSpec("VERSION_LENGTH", I64, (1,), "Bytes of VERSION."),
)

VC_INPUTS = (
    TensorSpec("WAVEFORM", F32, (-1,), "Speech to convert, mono.", length_of="WAVEFORM_LENGTH"),
    TensorSpec("WAVEFORM_LENGTH", I64, (1,), "Valid samples of WAVEFORM."),
    TensorSpec("SAMPLE_RATE", I32, (1,), "Sample rate of WAVEFORM and REFERENCE in Hz."),
    TensorSpec("REFERENCE", F32, (-1,), "Reference clip of the target speaker (or give TARGET_STATS).",
               length_of="REFERENCE_LENGTH", optional=True),
    TensorSpec("REFERENCE_LENGTH", I64, (1,), "Valid samples of REFERENCE.", optional=True),
    TensorSpec("TARGET_STATS", F32, (-1,), "Speaker statistics returned by an earlier call (opaque).",
               length_of="TARGET_STATS_LENGTH", optional=True),
    TensorSpec("TARGET_STATS_LENGTH", I64, (1,), "Valid values of TARGET_STATS.", optional=True),
    TensorSpec("VOICE", U8, (-1,), "Voice to convert to, for engines with named voices (vc_rvc: a voice of "
               "its voices directory), UTF-8 bytes.", length_of="VOICE_LENGTH", optional=True, utf8=True),
    TensorSpec("VOICE_LENGTH", I64, (1,), "Bytes of VOICE.", optional=True),
    TensorSpec("PITCH_SHIFT", F32, (1,), "Pitch shift in semitones (absent: the engine moves the pitch to the "
               "target speaker's register when it knows it, else keeps it).", optional=True),
)
VC_OUTPUTS = (
    TensorSpec("WAVEFORM", F32, (-1,), "Converted speech, same length as the input.", length_of="WAVEFORM_LENGTH"),
    TensorSpec("WAVEFORM_LENGTH", I64, (1,), "Valid samples of WAVEFORM."),
    TensorSpec("TARGET_STATS", F32, (-1,), "The target speaker's statistics, to cache and send next time.",
               length_of="TARGET_STATS_LENGTH"),
    TensorSpec("TARGET_STATS_LENGTH", I64, (1,), "Valid values of TARGET_STATS."),
)

LIPSYNC_INPUTS = (
    TensorSpec("FRAMES", U8, (-1, -1, -1, 3), "RGB frames (N, H, W, 3).", length_of="FRAMES_LENGTH"),
    TensorSpec("FRAMES_LENGTH", I64, (1,), "Valid frames of FRAMES."),
    TensorSpec("AUDIO", F32, (-1,), "Dubbed speech for the same span, mono.", length_of="AUDIO_LENGTH"),
    TensorSpec("AUDIO_LENGTH", I64, (1,), "Valid samples of AUDIO."),
    TensorSpec("SAMPLE_RATE", I32, (1,), "Sample rate of AUDIO in Hz."),
    TensorSpec("FPS", F32, (1,), "Frame rate of FRAMES."),
)
LIPSYNC_OUTPUTS = (
    TensorSpec("FRAMES", U8, (-1, -1, -1, 3), "Re-synced RGB frames, same count and size.", length_of="FRAMES_LENGTH"),
    TensorSpec("FRAMES_LENGTH", I64, (1,), "Valid frames of FRAMES."),
    TensorSpec("FACE_FRAMES", I64, (1,), "How many frames had a face (the others pass through)."),
)

FACE_LIPSYNC_INPUTS = (
    TensorSpec("FACES", U8, (FACE_SIZE, FACE_SIZE, 3), f"Face crop, RGB, resized to {FACE_SIZE}x{FACE_SIZE} (the "
               "stage crops with the published padding and pastes the result back)."),
    TensorSpec("MEL", F32, (MEL_BANDS, MEL_STEPS), "The Wav2Lip log-mel window of the 0.2 s from the crop's frame "
               "on (engines.dsp.mel.WAV2LIP_MEL: 16 kHz, 80 bands, values in [-4, 4])."),
)
FACE_LIPSYNC_OUTPUTS = (
    TensorSpec("FACES", U8, (FACE_SIZE, FACE_SIZE, 3), "The crop with the lower face re-drawn to the speech, RGB."),
)

FACE_TRACK_INPUTS = (
    TensorSpec("FRAMES", U8, (-1, -1, -1, 3), "Consecutive RGB frames (N, H, W, 3), downscaled as the caller "
               "likes (the tracker works at 320 px on the longer side).", length_of="FRAMES_LENGTH"),
    TensorSpec("FRAMES_LENGTH", I64, (1,), "Valid frames of FRAMES."),
)
FACE_TRACK_OUTPUTS = (
    TensorSpec("BOXES", F32, (-1, 4), "The main face's box per frame, x, y, width, height in the sent frames' "
               "pixels, smoothed over the clip; NaN where there is no face.", length_of="BOXES_LENGTH"),
    TensorSpec("BOXES_LENGTH", I64, (1,), "Valid rows of BOXES (one per frame)."),
)

SPEAKER_INPUTS = (
    TensorSpec("WAVEFORM", F32, (-1,), "Speech, mono.", length_of="WAVEFORM_LENGTH"),
    TensorSpec("WAVEFORM_LENGTH", I64, (1,), "Valid samples of WAVEFORM."),
    TensorSpec("SAMPLE_RATE", I32, (1,), "Sample rate of WAVEFORM in Hz."),
)
SPEAKER_OUTPUTS = (
    TensorSpec("EMBEDDING", F32, (256,), "L2-normalised GE2E d-vector."),
)

AV_SYNC_INPUTS = (
    TensorSpec("FRAMES", U8, (-1, -1, -1, 3), "RGB frames of the delivered video (N, H, W, 3).",
               length_of="FRAMES_LENGTH"),
    TensorSpec("FRAMES_LENGTH", I64, (1,), "Valid frames of FRAMES."),
    TensorSpec("AUDIO", F32, (-1,), "The dub's speech for the same span, mono.", length_of="AUDIO_LENGTH"),
    TensorSpec("AUDIO_LENGTH", I64, (1,), "Valid samples of AUDIO."),
    TensorSpec("SAMPLE_RATE", I32, (1,), "Sample rate of AUDIO in Hz."),
    TensorSpec("FPS", F32, (1,), "Frame rate of FRAMES."),
)
AV_SYNC_OUTPUTS = (
    TensorSpec("MOUTH_SIGNAL", F32, (-1,), "Mouth darkness per frame in [0, 1] (NaN: no face in that frame).",
               length_of="MOUTH_SIGNAL_LENGTH"),
    TensorSpec("MOUTH_SIGNAL_LENGTH", I64, (1,), "Valid values of MOUTH_SIGNAL (one per frame)."),
    TensorSpec("AUDIO_LEVEL_DB", F32, (-1,), "RMS level of AUDIO over each frame's span, dBFS.",
               length_of="AUDIO_LEVEL_DB_LENGTH"),
    TensorSpec("AUDIO_LEVEL_DB_LENGTH", I64, (1,), "Valid values of AUDIO_LEVEL_DB (one per frame)."),
    TensorSpec("FACE_FRAMES", I64, (1,), "How many frames had a face."),
)

# QC's intelligibility check re-transcribes each segment of the dub through the served
# ``asr`` model (``serving/models/asr.py``: PocketSphinx, English shipped in its wheel; other
# languages from POLYDUB_QC_ASR_MODELS_DIR). Any model served as ``asr`` meets this contract:
# one segment's speech at any rate in, the words heard as plain UTF-8 text out (QC normalises
# case, punctuation and numbers on both sides), and a LANG it cannot recognise fails that item
# with a ValueError naming the language.
#: The language the served ``asr`` model recognises with the model its wheel ships.
ASR_SHIPPED_LANGUAGE = "en"

ASR_INPUTS = (
    TensorSpec("WAVEFORM", F32, (-1,), "Speech of one segment, mono.", length_of="WAVEFORM_LENGTH"),
    TensorSpec("WAVEFORM_LENGTH", I64, (1,), "Valid samples of WAVEFORM."),
    TensorSpec("SAMPLE_RATE", I32, (1,), "Sample rate of WAVEFORM in Hz."),
    TensorSpec("LANG", U8, (-1,), "Language spoken: ko, en, ja or zh (UTF-8 bytes).", length_of="LANG_LENGTH",
               utf8=True),
    TensorSpec("LANG_LENGTH", I64, (1,), "Bytes of LANG."),
)
ASR_OUTPUTS = (
    TensorSpec("TEXT", U8, (-1,), "The transcription, UTF-8 bytes.", length_of="TEXT_LENGTH", utf8=True),
    TensorSpec("TEXT_LENGTH", I64, (1,), "Bytes of TEXT."),
)


def asr_model_languages(models_dir: Path | None) -> dict[str, Path | None]:
    """Each language the ``asr`` model recognises -> its model folder (``None``: the wheel's English).

    One answer for the model (which decoder to build) and for QC (which jobs it can
    measure): English ships, and every subfolder of ``models_dir`` adds its language.
    """
    languages: dict[str, Path | None] = {ASR_SHIPPED_LANGUAGE: None}
    if models_dir is None:
        return languages
    if not Path(models_dir).is_dir():
        raise ValueError(f"asr parameter models_dir={models_dir} is not a folder; point "
                         "POLYDUB_QC_ASR_MODELS_DIR at a folder with one PocketSphinx model per language code")
    for folder in sorted(Path(models_dir).iterdir()):
        if folder.is_dir():
            languages[folder.name] = folder
    return languages


TTS = Interface("tts", TTS_INPUTS, TTS_OUTPUTS)
VC = Interface("vc", VC_INPUTS, VC_OUTPUTS)
LIPSYNC = Interface("lipsync", LIPSYNC_INPUTS, LIPSYNC_OUTPUTS)
FACE_LIPSYNC = Interface("face_lipsync", FACE_LIPSYNC_INPUTS, FACE_LIPSYNC_OUTPUTS)
FACE_TRACK = Interface("face_track", FACE_TRACK_INPUTS, FACE_TRACK_OUTPUTS)
SPEAKER = Interface("speaker", SPEAKER_INPUTS, SPEAKER_OUTPUTS)
AV_SYNC = Interface("av_sync", AV_SYNC_INPUTS, AV_SYNC_OUTPUTS)
ASR = Interface("asr", ASR_INPUTS, ASR_OUTPUTS)
