"""GE2E speaker encoder (Resemblyzer's pretrained weights), without librosa or webrtcvad.

Why our own module: the ``resemblyzer`` package imports librosa and webrtcvad at import time
(a heavy, fragile chain: numba, llvmlite, pkg_resources). All we need from it is the file
``resemblyzer/pretrained.pt``; the network is a 3-layer LSTM and a linear layer, and the
preprocessing is a power mel spectrogram, so both are reimplemented here in torch/numpy/scipy.
The module's ``state_dict`` keys are exactly those of the checkpoint's ``model_state``, so
the weights load with ``strict=True`` (a renamed or reshaped tensor fails loudly).

Pipeline (per item, mirroring ``resemblyzer.preprocess_wav`` + ``VoiceEncoder.embed_utterance``):

1. resample to 16 kHz (:func:`engines.dsp.resample`, polyphase);
2. raise the level to -30 dBFS when quieter (increase only, as Resemblyzer does: loud input
   is left alone);
3. trim long silences. Resemblyzer uses webrtcvad on 30 ms windows; we use an *energy* mask on
   the same 30 ms windows (a window is speech when its level is within ``vad_dynamic_range_db``
   of the loudest window and above ``vad_floor_dbfs``), then the same moving-average smoothing
   and dilation as Resemblyzer. On clean speech this keeps the same regions (measured on eSpeak
   speech with pauses and a -66 dBFS noise floor: 98.4% of samples get the same keep/cut
   decision as Resemblyzer's webrtcvad mode 3); on noisy input it keeps more than webrtcvad
   would, which dilutes the embedding a little rather than failing;
4. 40-band power mel spectrogram, 25 ms Hann window, 10 ms hop, centred frames (librosa's
   defaults at the time the encoder was trained: reflect padding, Slaney mel scale with
   Slaney area normalisation, fmin 0, fmax 8 kHz; checked once against librosa 0.10 with
   ``pad_mode="reflect"``: filterbank within 1e-9, spectrogram within 2e-7 relative);
5. partial utterances of 160 frames (1.6 s) every ``16000 / 1.3`` samples (50% overlap at
   rate 1.3/s); a last partial covering less than 75% is dropped unless it is the only one;
6. each partial through the LSTM, last hidden state of the top layer -> Linear -> ReLU ->
   L2 normalise; the utterance embedding is the L2-normalised mean of its partials.

All partials of a whole batch share one LSTM call (they all have 160 frames: no padding),
so a batch gives the same embeddings as one item at a time.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from scipy.ndimage import binary_dilation
from torch import nn

from engines.dsp import resample
from engines.dsp.mel import slaney_mel_filterbank, stft_magnitude

__all__ = [
    "EMBEDDING_SIZE",
    "SAMPLE_RATE",
    "SpeakerEncoder",
    "SpeakerEncoderConfig",
    "default_weights_path",
    "mel_spectrogram",
    "similarity",
]

#: Sample rate the encoder was trained at (Resemblyzer ``hparams.sampling_rate``).
#: How the error for a clip with too little speech to embed begins (servers tell it from other errors).
TOO_LITTLE_SPEECH = "too little speech to embed a voice"
SAMPLE_RATE = 16_000
#: Mel bands of the encoder input (``hparams.mel_n_channels``).
N_MELS = 40
#: STFT window: 25 ms at 16 kHz (``hparams.mel_window_length``); also the FFT size.
N_FFT = 400
#: STFT hop: 10 ms at 16 kHz (``hparams.mel_window_step``).
HOP_LENGTH = 160
#: Frames per partial utterance: 1.6 s (``hparams.partials_n_frames``).
PARTIAL_FRAMES = 160
#: LSTM width and depth, embedding size (``hparams.model_*``).
HIDDEN_SIZE = 256
NUM_LAYERS = 3
EMBEDDING_SIZE = 256
#: Full scale of 16-bit PCM, the reference of Resemblyzer's dBFS arithmetic.
INT16_MAX = 2**15 - 1

#: The package and file that carry the pretrained GE2E weights.
WEIGHTS_PACKAGE = "resemblyzer"
WEIGHTS_FILE = "pretrained.pt"
#: How to get them, quoted in the error when they are missing.
WEIGHTS_INSTALL_HINT = (
    "install the Resemblyzer wheel without its dependencies "
    "(`pip install --no-deps Resemblyzer==0.1.4`, as `make venv` does), "
    "or pass the path of a copy of its pretrained.pt"
)


@dataclass(frozen=True)
class SpeakerEncoderConfig:
    """Preprocessing and partial-utterance knobs; the defaults are Resemblyzer's.

    Only the VAD fields are ours (they replace webrtcvad); changing anything else moves the
    input away from what the network was trained on.
    """

    #: Target level in dBFS for the volume normalisation (``audio_norm_target_dBFS``).
    target_dbfs: float = -30.0
    #: Only raise quiet input to ``target_dbfs``, never lower loud input (Resemblyzer's choice:
    #: it avoids shrinking a clip whose level is set by a few loud peaks).
    increase_only: bool = True
    #: Whether to cut long silences before embedding. Off only for diagnostics.
    trim_silence: bool = True
    #: VAD window in ms (Resemblyzer: 30; webrtcvad accepts 10/20/30).
    vad_window_ms: int = 30
    #: A window is speech when its RMS is within this many dB of the loudest window. 40 dB
    #: keeps soft consonants of clean speech and drops room tone and digital silence.
    vad_dynamic_range_db: float = 40.0
    #: ... and above this absolute level (dBFS): an all-quiet clip is not "speech" just
    #: because one window is the loudest of it.
    vad_floor_dbfs: float = -60.0
    #: Moving-average width in windows for smoothing the speech flags (``vad_moving_average_width``).
    vad_moving_average_width: int = 8
    #: Longest silence in windows that survives between speech (``vad_max_silence_length``).
    vad_max_silence_windows: int = 6
    #: Speech needed for an embedding, in seconds. Below ~0.5 s the partial is mostly zero
    #: padding and the embedding says more about the padding than about the voice.
    min_speech_s: float = 0.5
    #: Partial utterances per second (``embed_utterance(rate=1.3)``); 1.3/s gives 50% overlap.
    partials_per_second: float = 1.3
    #: Keep the last partial only when the audio covers at least this share of it.
    min_coverage: float = 0.75


def default_weights_path() -> Path:
    """Where the Resemblyzer wheel keeps ``pretrained.pt``, found without importing it.

    ``importlib.util.find_spec`` on a top-level package reads its location without running
    its ``__init__`` (which would import librosa and webrtcvad, not installed here).
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return Path(f"<package {WEIGHTS_PACKAGE} is not installed>") / WEIGHTS_FILE
    return Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_FILE


# --------------------------------------------------------------------------- preprocessing


#: The encoder's filterbank, rounded to float32 as it was when the encoder was trained and checked.
_MEL_BASIS = slaney_mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS).astype(np.float32)


def mel_spectrogram(wav: NDArray[np.floating]) -> NDArray[np.float32]:
    """Power (not log) mel spectrogram of 16 kHz audio, ``(frames, 40)``: the encoder input.

    Frames are centred (the signal is reflect-padded by ``n_fft // 2`` on both sides), so a
    signal of ``n`` samples gives ``1 + n // 160`` frames, as librosa's ``melspectrogram``.
    """
    power = stft_magnitude(wav, N_FFT, HOP_LENGTH) ** 2
    return (power @ _MEL_BASIS.T.astype(np.float64)).astype(np.float32)


def _normalize_volume(wav: NDArray[np.float64], target_dbfs: float, increase_only: bool) -> NDArray[np.float64]:
    """Scale to ``target_dbfs`` RMS (Resemblyzer's ``normalize_volume``); silence stays silence."""
    rms = float(np.sqrt(np.mean((wav * INT16_MAX) ** 2))) if len(wav) else 0.0
    if rms <= 0.0:
        return wav
    change_db = target_dbfs - 20.0 * math.log10(rms / INT16_MAX)
    if change_db < 0 and increase_only:
        return wav
    return wav * 10.0 ** (change_db / 20.0)


def _moving_average(flags: NDArray[np.float64], width: int) -> NDArray[np.float64]:
    """Centred moving average with zero padding, as Resemblyzer's ``trim_long_silences``."""
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    csum = np.cumsum(padded, dtype=np.float64)
    csum[width:] = csum[width:] - csum[:-width]
    return csum[width - 1:] / width


def _speech_mask(wav: NDArray[np.float64], config: SpeakerEncoderConfig) -> tuple[NDArray[np.bool_], int]:
    """Per-sample keep mask from the energy VAD, and the number of speech windows before dilation.

    Mirrors Resemblyzer's ``trim_long_silences`` with webrtcvad replaced by an energy test:
    the tail that does not fill a whole window is cut, flags are smoothed by a moving average
    and rounded, then dilated so pauses up to ``vad_max_silence_windows`` survive.
    """
    win = config.vad_window_ms * SAMPLE_RATE // 1000
    n_windows = len(wav) // win
    if n_windows == 0:
        return np.zeros(len(wav), dtype=bool), 0
    frames = wav[: n_windows * win].reshape(n_windows, win)
    level_db = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-20)
    flags = (level_db >= level_db.max() - config.vad_dynamic_range_db) & (level_db >= config.vad_floor_dbfs)
    smoothed = np.round(_moving_average(flags.astype(np.float64), config.vad_moving_average_width)).astype(bool)
    n_speech = int(smoothed.sum())
    dilated = binary_dilation(smoothed, np.ones(config.vad_max_silence_windows + 1, dtype=bool))
    mask = np.zeros(len(wav), dtype=bool)
    mask[: n_windows * win] = np.repeat(dilated, win)
    return mask, n_speech


def _partial_slices(n_samples: int, rate: float, min_coverage: float) -> list[slice]:
    """Mel-frame slices of the partial utterances (Resemblyzer's ``compute_partial_slices``)."""
    if not 0.0 < min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage}")
    n_frames = int(math.ceil((n_samples + 1) / HOP_LENGTH))
    frame_step = int(round((SAMPLE_RATE / rate) / HOP_LENGTH))
    if not 0 < frame_step <= PARTIAL_FRAMES:
        min_rate = SAMPLE_RATE / (HOP_LENGTH * PARTIAL_FRAMES)
        raise ValueError(f"partials_per_second={rate} is out of range: it must be at least {min_rate:.3f} "
                         "(partials must cover the utterance) and below one partial per mel frame")
    steps = max(1, n_frames - PARTIAL_FRAMES + frame_step + 1)
    slices = [slice(i, i + PARTIAL_FRAMES) for i in range(0, steps, frame_step)]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP_LENGTH) / (PARTIAL_FRAMES * HOP_LENGTH)
    if coverage < min_coverage and len(slices) > 1:
        slices = slices[:-1]
    return slices


# --------------------------------------------------------------------------- model


class SpeakerEncoder(nn.Module):
    """GE2E speaker encoder: 40 mel -> LSTM 3x256 -> Linear 256 -> ReLU -> L2 norm.

    ``similarity_weight`` and ``similarity_bias`` are the GE2E loss's learned scale and offset
    (cosine -> logit). Inference does not use them; they are parameters so the checkpoint's
    ``model_state`` loads with ``strict=True``.
    """

    def __init__(self, config: SpeakerEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or SpeakerEncoderConfig()
        self.lstm = nn.LSTM(N_MELS, HIDDEN_SIZE, NUM_LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN_SIZE, EMBEDDING_SIZE)
        self.relu = nn.ReLU()
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    @classmethod
    def load(cls, path: str | Path | None = None, config: SpeakerEncoderConfig | None = None,
             device: str | torch.device = "cpu") -> SpeakerEncoder:
        """Build the encoder and load the GE2E checkpoint (``{"model_state": ...}``) strictly.

        ``path`` defaults to the Resemblyzer wheel's ``pretrained.pt``. A missing file raises
        ``FileNotFoundError`` naming the path and how to get the weights.
        """
        weights = Path(path) if path is not None else default_weights_path()
        if not weights.is_file():
            raise FileNotFoundError(
                f"GE2E speaker-encoder weights not found at {weights}: {WEIGHTS_INSTALL_HINT}.")
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
        state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict):
            raise ValueError(f"{weights} is not a GE2E checkpoint: expected a dict with 'model_state', "
                             f"got {type(checkpoint).__name__}; {WEIGHTS_INSTALL_HINT}.")
        model = cls(config)
        model.load_state_dict(state, strict=True)
        return model.to(device).eval()

    @property
    def device(self) -> torch.device:
        return self.linear.weight.device

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """Embeddings of partial utterances: ``(N, frames, 40)`` power mels -> ``(N, 256)`` unit vectors."""
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))
        return raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp_min(1e-12)

    def preprocess(self, wav: ArrayLike, sample_rate: int) -> NDArray[np.float64]:
        """One waveform -> 16 kHz, level-normalised, long silences cut (Resemblyzer's ``preprocess_wav``).

        Raises ``ValueError`` when less than ``min_speech_s`` of speech is left.
        """
        cfg = self.config
        raw = np.asarray(wav, dtype=np.float64).reshape(-1)
        audio = resample(raw, sample_rate, SAMPLE_RATE, dtype=np.float64)
        audio = _normalize_volume(audio, cfg.target_dbfs, cfg.increase_only)
        if cfg.trim_silence:
            mask, n_speech = _speech_mask(audio, cfg)
            speech_s = n_speech * cfg.vad_window_ms / 1000.0
            audio = audio[mask]
        else:
            speech_s = len(audio) / SAMPLE_RATE
        if speech_s < cfg.min_speech_s:
            raise ValueError(
                f"{TOO_LITTLE_SPEECH}: {speech_s:.2f} s of speech found in "
                f"{len(raw) / sample_rate:.2f} s of audio, at least {cfg.min_speech_s:.2f} s is needed; "
                "give a longer or louder reference clip")
        return audio

    def partial_mels(self, wav16k: NDArray[np.floating]) -> NDArray[np.float32]:
        """``(n_partials, 160, 40)`` mel windows of one preprocessed 16 kHz waveform."""
        cfg = self.config
        slices = _partial_slices(len(wav16k), cfg.partials_per_second, cfg.min_coverage)
        need = slices[-1].stop * HOP_LENGTH
        wav = np.pad(wav16k, (0, max(0, need - len(wav16k))))
        mel = mel_spectrogram(wav)
        return np.stack([mel[s] for s in slices])

    @torch.inference_mode()
    def embed(self, waveforms: ArrayLike, lengths: ArrayLike | None, sample_rate: int) -> NDArray[np.float32]:
        """Speaker embeddings of a padded batch: ``(B, T)`` float audio + ``(B,)`` lengths -> ``(B, 256)``.

        Each row is unit length. ``lengths=None`` means every row is full length. A 1-D
        waveform is taken as a batch of one.
        """
        waves = np.asarray(waveforms, dtype=np.float32)
        if waves.ndim == 1:
            waves = waves[None]
        if waves.ndim != 2:
            raise ValueError(f"waveforms must be (B, T), got shape {waves.shape}")
        lens = (np.full(len(waves), waves.shape[1]) if lengths is None
                else np.asarray(lengths, dtype=np.int64).reshape(-1))
        if len(lens) != len(waves) or (lens < 0).any() or (lens > waves.shape[1]).any():
            raise ValueError(f"lengths {lens.tolist()} do not fit waveforms of shape {waves.shape}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        partials = [self.partial_mels(self.preprocess(w[:n], sample_rate)) for w, n in zip(waves, lens)]
        counts = [len(p) for p in partials]
        mels = torch.from_numpy(np.concatenate(partials)).to(self.device)
        partial_embeds = self(mels).cpu().numpy().astype(np.float64)
        out = np.empty((len(waves), EMBEDDING_SIZE), dtype=np.float32)
        start = 0
        for i, count in enumerate(counts):
            mean = partial_embeds[start:start + count].mean(axis=0)
            out[i] = mean / max(np.linalg.norm(mean), 1e-12)
            start += count
        return out

    def embed_one(self, waveform: ArrayLike, sample_rate: int) -> NDArray[np.float32]:
        """Embedding ``(256,)`` of one unpadded waveform."""
        return self.embed(np.asarray(waveform, dtype=np.float32)[None], None, sample_rate)[0]

    @staticmethod
    def similarity(a: ArrayLike, b: ArrayLike) -> NDArray[np.float32] | float:
        """Cosine similarity; see :func:`similarity`."""
        return similarity(a, b)


def similarity(a: ArrayLike, b: ArrayLike) -> NDArray[np.float32] | float:
    """Cosine similarity of embeddings along the last axis, broadcasting the rest.

    Two ``(256,)`` vectors give a float; ``(B, 256)`` with ``(B, 256)`` or ``(256,)`` gives
    ``(B,)``. Embeddings are already unit length, but they are normalised again here so
    averaged or hand-made vectors compare correctly too.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    y = y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-12)
    cos = np.sum(x * y, axis=-1)
    return float(cos) if cos.ndim == 0 else cos.astype(np.float32)
