"""RVC conversion of whole utterances: the steps around the two networks, batched.

For each utterance (16 kHz, mono), as RVC's inference pipeline does:

1. peak-limit the input to 0.95 and high-pass it (5th-order Butterworth at
   48 Hz, zero phase);
2. long audio (over ``Segmentation.max_s``) is cut every ``center_s`` seconds
   at the quietest 10 ms within ``query_s`` of the mark, so the networks never
   see more than about ``center_s + 2 query_s`` seconds at once;
3. the audio is reflect-padded by ``pad_s`` at both ends, and F0 is tracked
   once over all of it (:mod:`engines.rvc.pitch`), shifted by the request's
   semitones, and mapped to coarse bins;
4. each piece, with ``pad_s`` of context on both sides, goes through the
   content encoder (HuBERT layer 9 projected for v1, layer 12 for v2),
   optional retrieval (:class:`~engines.rvc.retrieval.FeatureIndex`, at
   ``index_rate``), x2 frame repetition to 100 frames/s, and ``protect``
   (unvoiced frames keep ``1 - protect`` of the un-retrieved features: the
   consonants stay intelligible), then through the synthesizer;
5. the context is trimmed off each piece and the pieces are joined; the
   loudness contour is moved ``1 - rms_mix_rate`` of the way back to the
   input's (half-second RMS, RVC's ``change_rms``), and the peak is limited to 0.99.

Output is at the voice's rate; the caller resamples. Deliberate departures
from RVC's code, all about joining pieces (none changes an utterance short
enough to convert whole, but the unvoiced frames):

* each piece takes two more frames of audio than it renders and is cut to
  exactly its span, so the joined output is frame-exact (RVC's loses up to
  10 ms per cut, which would drift the dub against the picture);
* cuts fall on the content encoder's 20 ms grid, so a piece's features are the
  ones the whole utterance would have there (RVC's 10 ms cuts shift half of
  them by half a frame);
* each piece starts its sine source at the phase the whole utterance has
  there (RVC restarts it at 0), so the voice does not jump at a cut;
* unvoiced frames stay 0 Hz (see :mod:`~engines.rvc.pitch`).

Batching: every piece of every utterance goes through the content encoder in
padded batches (bounded by ``batch_seconds`` of audio), and through each
voice's synthesizer likewise. Each piece draws its noise from its own
generator (seeded by ``seed`` and the piece's place in its utterance), so an
utterance converts identically alone, in any batch, and on a retry.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.signal import butter, filtfilt

from engines.dsp.envelope import rms_envelope
from engines.dsp.length import fit_length
from engines.rvc.hubert import HubertModel, rvc_feature_spec, upsample_frames
from engines.rvc.pitch import ANALYSIS_RATE, FRAME, F0Method, coarse_pitch, shift_pitch, track_f0, voiced_median_hz
from engines.rvc.randomness import item_generators
from engines.rvc.retrieval import FeatureIndex
from engines.rvc.synthesizer import PUBLISHED_NOISE_SCALE
from engines.rvc.voice import LoadedVoice

#: The input is scaled down to this peak first (RVC's ``vc_single``).
INPUT_PEAK = 0.95
#: The output is scaled down to this peak last (RVC writes int16 at 0.99 of full scale).
OUTPUT_PEAK = 0.99
#: The high-pass that removes rumble before analysis: order, corner in Hz.
HIGHPASS_ORDER, HIGHPASS_HZ = 5, 48.0
#: RMS frames of the loudness mix: half a second, hopped by half that.
RMS_FRAME_S = 1.0
#: Loudness floor of the converted audio in the mix (avoids dividing by silence).
RMS_FLOOR = 1e-6
#: Below this ``protect`` is active (RVC: 0.5 switches it off).
PROTECT_OFF = 0.5
#: Extra frames of audio each piece takes beyond what it renders (HuBERT needs them).
CONTENT_SLACK_FRAMES = 2
#: Samples per content-encoder frame (HuBERT's hop at 16 kHz): cuts fall on this grid.
CONTENT_HOP = 2 * FRAME

_HIGHPASS = butter(HIGHPASS_ORDER, HIGHPASS_HZ, btype="high", fs=ANALYSIS_RATE)


@dataclass(frozen=True)
class Segmentation:
    """How long audio is cut and padded, in seconds (RVC's ``x_pad``, ``x_query``, ``x_center``, ``x_max``)."""

    pad_s: float
    """Context added before and after every piece (and trimmed off its output)."""
    query_s: float
    """How far from each mark the quietest cut point is searched."""
    center_s: float
    """Marks every this many seconds."""
    max_s: float
    """Audio up to this long is converted whole."""

    def __post_init__(self) -> None:
        if min(self.pad_s, self.query_s) < 0 or self.center_s <= 2 * self.query_s or self.max_s <= 0:
            raise ValueError(f"bad segmentation {self}: need pad_s, query_s >= 0, center_s > 2 query_s, max_s > 0")
        if self.pad_frames * FRAME != round(self.pad_s * ANALYSIS_RATE) or self.pad_frames * FRAME % CONTENT_HOP:
            raise ValueError(f"pad_s={self.pad_s} must be a whole number of content frames (20 ms)")

    @property
    def pad_frames(self) -> int:
        return int(round(self.pad_s * ANALYSIS_RATE / FRAME))


#: RVC's presets: float32 (what a CPU runs; RVC's "5 GB" setting) and float16 on a GPU ("6 GB").
SEGMENTATION_FP32 = Segmentation(pad_s=1.0, query_s=6.0, center_s=38.0, max_s=41.0)
SEGMENTATION_FP16 = Segmentation(pad_s=3.0, query_s=10.0, center_s=60.0, max_s=65.0)


@dataclass(frozen=True)
class ConversionOptions:
    """The knobs of RVC's inference, with its defaults."""

    f0_method: F0Method = "dio"
    """Pitch tracker (:mod:`engines.rvc.pitch`)."""
    filter_radius: int = 3
    """Harvest's median filter is applied when this is above 2."""
    index_rate: float = 0.75
    """Share of retrieved features when the voice has an index (0: none)."""
    protect: float = 0.33
    """Share of retrieved/converted features kept on unvoiced frames (0.5 or more: off)."""
    rms_mix_rate: float = 0.25
    """1: the converted loudness as is; 0: the input's loudness contour."""
    noise_scale: float = PUBLISHED_NOISE_SCALE
    """Latent noise of the synthesizer."""
    seed: int = 0
    """First seed of each utterance's noise (piece k draws from ``seed + k``)."""
    batch_seconds: float = 120.0
    """Audio per network batch (padded), bounding activation memory."""

    def __post_init__(self) -> None:
        if not 0 <= self.index_rate <= 1 or not 0 <= self.rms_mix_rate <= 1 or self.protect < 0:
            raise ValueError(f"bad RVC options {self}: index_rate and rms_mix_rate lie in [0, 1], protect >= 0")
        if self.batch_seconds <= 0:
            raise ValueError("batch_seconds must be positive")


def highpass(audio: NDArray[np.floating]) -> NDArray[np.float64]:
    """RVC's zero-phase 48 Hz high-pass of 16 kHz audio (too short to filter: returned as is)."""
    x = np.asarray(audio, dtype=np.float64)
    b, a = _HIGHPASS
    if x.size <= 3 * max(len(a), len(b)):
        return x.copy()
    return filtfilt(b, a, x)


def quiet_cuts(audio: NDArray[np.floating], segmentation: Segmentation) -> list[int]:
    """Frames (10 ms) at which to cut ``audio`` (16 kHz), in order; none when it is short enough.

    A mark every ``center_s``; each cut is the start of the quietest 10 ms
    (smallest sum of ``|x|`` over a centred 160-sample window) within
    ``query_s`` of its mark, rounded down to a content frame (20 ms).
    """
    x = np.abs(np.asarray(audio, dtype=np.float64))
    n = x.size
    if n + FRAME <= segmentation.max_s * ANALYSIS_RATE:
        return []
    cum = np.concatenate([[0.0], np.cumsum(np.pad(x, FRAME // 2, mode="reflect"))])
    window_sum = cum[FRAME: FRAME + n] - cum[:n]
    step = int(segmentation.center_s * ANALYSIS_RATE)
    query = int(segmentation.query_s * ANALYSIS_RATE)
    total_frames = math.ceil(n / FRAME)
    cuts: list[int] = []
    for mark in range(step, n, step):
        low = max(0, mark - query)
        region = window_sum[low: mark + query]
        # Down to a whole content frame (20 ms, two pitch frames): the piece's content
        # features then fall on the same grid as the whole utterance's.
        frame = (low + int(np.argmin(region))) // CONTENT_HOP * CONTENT_HOP // FRAME
        if (not cuts or frame > cuts[-1]) and 0 < frame < total_frames:
            cuts.append(frame)
    return cuts


@dataclass
class Utterance:
    """One utterance analysed for conversion: filtered, padded, cut, and its F0 tracked."""

    samples: int
    """Length of the input at 16 kHz."""
    filtered: NDArray[np.float64]
    """The peak-limited, high-passed input (the loudness mix's reference)."""
    padded: NDArray[np.float32]
    """``filtered`` with ``pad_frames`` of reflected context before and enough after."""
    pieces: list[tuple[int, int]]
    """Frame spans ``[start, stop)`` of the input that are rendered separately."""
    f0_hz: NDArray[np.float64]
    """F0 per frame of ``padded`` (frame j at padded sample 160 j), before any shift."""
    pad_frames: int

    @property
    def frames(self) -> int:
        """10 ms frames that cover the input."""
        return math.ceil(self.samples / FRAME)

    @property
    def own_f0_hz(self) -> NDArray[np.float64]:
        """F0 of the input's own frames (the padding's reflections left out)."""
        return self.f0_hz[self.pad_frames: self.pad_frames + self.frames]


def analyse(audio: NDArray[np.floating], options: ConversionOptions, segmentation: Segmentation,
            track_pitch: bool = True) -> Utterance:
    """Steps 1-3 for one 16 kHz utterance (``track_pitch=False`` for voices without F0)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size < 2:
        raise ValueError(f"an RVC input needs at least 2 samples, got {x.size}")
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > INPUT_PEAK:
        x = x * (INPUT_PEAK / peak)
    filtered = highpass(x)
    cuts = quiet_cuts(filtered, segmentation)
    frames = math.ceil(x.size / FRAME)
    bounds = [0, *cuts, frames]
    pieces = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    pad = segmentation.pad_frames
    padded_frames = frames + 2 * pad + CONTENT_SLACK_FRAMES
    after = padded_frames * FRAME - x.size - pad * FRAME
    padded = np.pad(filtered, (pad * FRAME, after), mode="reflect").astype(np.float32)
    if track_pitch:
        f0 = track_f0(padded, padded_frames, options.f0_method, options.filter_radius)
    else:
        f0 = np.zeros(padded_frames)
    return Utterance(x.size, filtered, padded, pieces, f0, pad)


def register_hz(audio: NDArray[np.floating], options: ConversionOptions) -> float | None:
    """Median F0 of a 16 kHz clip (a speaker's register), tracked as conversion tracks it; None if unvoiced."""
    filtered = highpass(np.asarray(audio, dtype=np.float64).reshape(-1))
    return voiced_median_hz(track_f0(filtered, filtered.size // FRAME + 1, options.f0_method, options.filter_radius))


@dataclass
class Request:
    """One utterance to convert with one voice."""

    utterance: Utterance
    voice: LoadedVoice
    semitones: float = 0.0
    index: FeatureIndex | None = None
    speaker_id: int = 0


@dataclass
class _Piece:
    request: int
    ordinal: int
    start: int  # input frame where the rendered span starts
    frames: int  # frames rendered, context included
    audio: NDArray[np.float32]
    features: torch.Tensor | None = field(default=None, repr=False)


class RvcPipeline:
    """Converts batches of utterances with one content encoder and any number of voices."""

    def __init__(self, content: HubertModel, options: ConversionOptions | None = None,
                 segmentation: Segmentation = SEGMENTATION_FP32) -> None:
        self.content = content
        self.options = options or ConversionOptions()
        self.segmentation = segmentation

    def analyse(self, audio: NDArray[np.floating], voice: LoadedVoice | None = None) -> Utterance:
        """:func:`analyse` with this pipeline's options (pitch tracked unless the voice has no F0)."""
        return analyse(audio, self.options, self.segmentation, track_pitch=voice is None or voice.f0)

    def convert(self, requests: Sequence[Request]) -> list[NDArray[np.float32]]:
        """Each request's utterance in its voice, at the voice's rate, frame-exact in length."""
        pieces = [piece for r, request in enumerate(requests) for piece in self._pieces(r, request)]
        self._content_features(requests, pieces)
        rendered = self._synthesize(requests, pieces)
        outputs = []
        for r, request in enumerate(requests):
            own = [rendered[i] for i, piece in enumerate(pieces) if piece.request == r]
            outputs.append(self._finish(request, np.concatenate(own) if own else np.zeros(0, np.float32)))
        return outputs

    # ------------------------------------------------------------------ steps

    def _pieces(self, r: int, request: Request) -> Iterator[_Piece]:
        u = request.utterance
        for ordinal, (start, stop) in enumerate(u.pieces):
            frames = stop - start + 2 * u.pad_frames
            audio = u.padded[start * FRAME: (start + frames + CONTENT_SLACK_FRAMES) * FRAME]
            yield _Piece(r, ordinal, start, frames, audio)

    def _batches(self, pieces: Sequence[_Piece]) -> Iterator[list[_Piece]]:
        """Pieces longest first, in batches of at most ``batch_seconds`` of padded audio."""
        budget = self.options.batch_seconds * ANALYSIS_RATE
        batch: list[_Piece] = []
        for piece in sorted(pieces, key=lambda p: -p.audio.size):
            if batch and (len(batch) + 1) * batch[0].audio.size > budget:
                yield batch
                batch = []
            batch.append(piece)
        if batch:
            yield batch

    def _content_features(self, requests: Sequence[Request], pieces: Sequence[_Piece]) -> None:
        """HuBERT features per piece (50 Hz), retrieval, x2, protect: ``piece.features`` (frames, D)."""
        by_version: dict[str, list[_Piece]] = {}
        for piece in pieces:
            by_version.setdefault(requests[piece.request].voice.version, []).append(piece)
        param = next(self.content.parameters())
        for version, group in by_version.items():
            layer, project = rvc_feature_spec(version)
            for batch in self._batches(group):
                waves = torch.zeros(len(batch), batch[0].audio.size)
                for row, piece in enumerate(batch):
                    waves[row, : piece.audio.size] = torch.from_numpy(piece.audio)
                lengths = torch.tensor([p.audio.size for p in batch])
                feats, frame_lengths = self.content.extract(waves.to(param.device, param.dtype), lengths,
                                                            output_layer=layer, project=project)
                for row, piece in enumerate(batch):
                    own = feats[row, : int(frame_lengths[row])].float().cpu()
                    piece.features = self._shape_features(requests[piece.request], piece, own)

    def _shape_features(self, request: Request, piece: _Piece, feats: torch.Tensor) -> torch.Tensor:
        options = self.options
        original = feats
        if request.index is not None and options.index_rate > 0:
            feats = torch.from_numpy(request.index.blend(feats.numpy(), options.index_rate))
        feats, _ = upsample_frames(feats[None], torch.tensor([feats.size(0)]))
        feats = feats[0, : piece.frames]
        if feats.size(0) < piece.frames:
            raise AssertionError(f"content features cover {feats.size(0)} of {piece.frames} frames")
        if request.voice.f0 and options.protect < PROTECT_OFF:
            kept, _ = upsample_frames(original[None], torch.tensor([original.size(0)]))
            f0 = self._f0(request, piece)
            weight = torch.from_numpy(np.where(f0 < 1.0, options.protect, 1.0).astype(np.float32))[:, None]
            feats = feats * weight + kept[0, : piece.frames] * (1 - weight)
        return feats

    @staticmethod
    def _f0(request: Request, piece: _Piece) -> NDArray[np.float64]:
        """The shifted F0 of a piece's frames (context included)."""
        f0 = request.utterance.f0_hz[piece.start: piece.start + piece.frames]
        return shift_pitch(f0, request.semitones)

    def _synthesize(self, requests: Sequence[Request], pieces: Sequence[_Piece]) -> list[NDArray[np.float32]]:
        """Each piece rendered by its voice, its context trimmed: audio at the voice's rate."""
        out: list[NDArray[np.float32] | None] = [None] * len(pieces)
        index_of = {id(p): i for i, p in enumerate(pieces)}
        by_voice: dict[int, list[_Piece]] = {}
        for piece in pieces:
            by_voice.setdefault(id(requests[piece.request].voice), []).append(piece)
        for group in by_voice.values():
            voice = requests[group[0].request].voice
            hop = voice.config.hop_length
            for batch in self._batches(group):
                rendered = self._render(requests, voice, batch)
                for piece, audio in zip(batch, rendered):
                    pad = requests[piece.request].utterance.pad_frames
                    out[index_of[id(piece)]] = audio[pad * hop: (piece.frames - pad) * hop]
        return [a if a is not None else np.zeros(0, np.float32) for a in out]

    def _render(self, requests: Sequence[Request], voice: LoadedVoice, batch: list[_Piece]) -> list[NDArray[np.float32]]:
        param = next(voice.model.parameters())
        longest = max(p.frames for p in batch)
        dim = voice.config.content_dim
        phone = torch.zeros(len(batch), longest, dim)
        pitch = torch.ones(len(batch), longest, dtype=torch.long)
        nsff0 = torch.zeros(len(batch), longest)
        for row, piece in enumerate(batch):
            assert piece.features is not None
            phone[row, : piece.frames] = piece.features
            if voice.f0:
                f0 = self._f0(requests[piece.request], piece)
                pitch[row, : piece.frames] = torch.from_numpy(coarse_pitch(f0))
                nsff0[row, : piece.frames] = torch.from_numpy(f0.astype(np.float32))
        lengths = torch.tensor([p.frames for p in batch])
        sid = torch.tensor([requests[p.request].speaker_id for p in batch])
        seeds = [self.options.seed + p.ordinal for p in batch]
        phase = torch.tensor([self._source_phase(requests[p.request], p, voice) for p in batch], dtype=torch.float64)
        audio, audio_lengths = voice.model.infer(
            phone.to(param.device, param.dtype), lengths, pitch if voice.f0 else None,
            nsff0 if voice.f0 else None, sid, noise_scale=self.options.noise_scale,
            generator=item_generators(seeds), source_phase=phase if voice.f0 else None)
        audio = audio.float().cpu().numpy()
        return [audio[row, : int(audio_lengths[row])] for row in range(len(batch))]

    @staticmethod
    def _source_phase(request: Request, piece: _Piece, voice: LoadedVoice) -> float:
        """The sine source's phase where the piece starts, had the utterance been rendered whole."""
        f0 = shift_pitch(request.utterance.f0_hz[: piece.start], request.semitones)
        return sine_phase(f0, voice.sample_rate, voice.config.hop_length)

    def _finish(self, request: Request, joined: NDArray[np.float32]) -> NDArray[np.float32]:
        """Exact length at the voice's rate, the loudness mix, the peak limit."""
        rate = request.voice.sample_rate
        out = fit_length(joined.astype(np.float64), int(round(request.utterance.samples * rate / ANALYSIS_RATE)))
        if self.options.rms_mix_rate < 1:
            out = mix_loudness(request.utterance.filtered, out, rate, self.options.rms_mix_rate)
        peak = float(np.max(np.abs(out))) if out.size else 0.0
        if peak > OUTPUT_PEAK:
            out = out * (OUTPUT_PEAK / peak)
        return out.astype(np.float32)


def sine_phase(f0_hz: NDArray[np.floating], rate: int, hop: int) -> float:
    """Phase (cycles, in [0, 1)) of the NSF sine after the frames ``f0_hz``, from phase 0.

    The source holds each frame's F0 for ``hop`` output samples, so the phase
    after them is the sum of ``hop * (f0 / rate mod 1)``.
    """
    cycles = (np.asarray(f0_hz, dtype=np.float64) / rate) % 1.0 * hop
    return float(np.sum(cycles) % 1.0)


def _half_second_rms(audio: NDArray[np.floating], rate: int, size: int) -> NDArray[np.float64]:
    """RMS over 1 s frames every 0.5 s (centred), linearly stretched onto ``size`` samples."""
    # One trailing zero (silence adds nothing to a frame's RMS) makes the frame count
    # 1 + len // hop, librosa's centred framing, which RVC's change_rms uses.
    padded = np.append(np.asarray(audio, dtype=np.float64), 0.0)
    rms = rms_envelope(padded, rate, hop_s=RMS_FRAME_S / 2, window_s=RMS_FRAME_S).astype(np.float64)
    # Linear interpolation with half-sample-centred positions, clamped at the ends
    # (torch's F.interpolate(mode="linear"), which RVC uses).
    positions = (np.arange(size) + 0.5) * rms.size / size - 0.5
    return np.interp(positions, np.arange(rms.size), rms)


def mix_loudness(source: NDArray[np.floating], converted: NDArray[np.floating], rate: int,
                 mix_rate: float) -> NDArray[np.float64]:
    """``converted`` (at ``rate``) with its loudness contour ``1 - mix_rate`` of the way to ``source``'s (16 kHz).

    Gain per sample ``rms_source^(1 - mix) * rms_converted^(mix - 1)``, both
    half-second RMS contours stretched onto the converted samples.
    """
    out = np.asarray(converted, dtype=np.float64)
    if not out.size or not np.asarray(source).size:
        return out.copy()
    rms_source = _half_second_rms(source, ANALYSIS_RATE, out.size)
    rms_out = np.maximum(_half_second_rms(out, rate, out.size), RMS_FLOOR)
    return out * rms_source ** (1.0 - mix_rate) * rms_out ** (mix_rate - 1.0)


__all__ = ["ConversionOptions", "Request", "RvcPipeline", "SEGMENTATION_FP16", "SEGMENTATION_FP32",
           "Segmentation", "Utterance", "analyse", "highpass", "mix_loudness", "quiet_cuts", "register_hz",
           "sine_phase"]
