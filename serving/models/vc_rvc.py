"""vc_rvc: RVC retrieval-based voice conversion behind the common VC interface.

Each request names its voice (``VOICE``): a ``.pth`` of the voices directory
(parameter ``voices_dir``; :mod:`serving.voices` says how names map to files),
with its ``.index`` when there is one. Voices load on first use, stay in a
cache of ``cached_voices`` (least recently used out), and reload when their
file changes on disk, so an operator can drop in or retrain a voice without a
restart. One content encoder (``content_encoder``: RVC's ``hubert_base.pt``,
the fairseq layout) serves every voice.

Pitch: ``PITCH_SHIFT`` semitones when the request gives it; otherwise the
shift that moves the input's median F0 onto the target speaker's, clipped to
``max_auto_shift``: the speaker's register comes from ``REFERENCE`` (a clip of
the original speaker) and is returned as ``TARGET_STATS`` to send instead next
time; with neither the pitch stays as it is.

A batch-first model: all items of a batch (any voices) run through the content
encoder together, then through each voice's synthesizer together
(:class:`engines.rvc.pipeline.RvcPipeline`); fp16 on a GPU. Without
``content_encoder`` it refuses to load, naming it; ``random_init: "true"``
builds the published size with random weights instead, for compute-cost
benchmarks only (voices are always files: benchmarks write random ones).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.dsp import fit_length, resample
from engines.rvc.hubert import load_hubert, random_hubert
from engines.rvc.pipeline import (
    SEGMENTATION_FP16,
    SEGMENTATION_FP32,
    ConversionOptions,
    Request,
    RvcPipeline,
    register_hz,
)
from engines.rvc.pitch import ANALYSIS_RATE, register_shift, voiced_median_hz
from engines.rvc.retrieval import FeatureIndex
from engines.rvc.voice import LoadedVoice, load_rvc_voice
from serving.interfaces import VC
from serving.model import ServedModel, param
from serving.placement import Placement
from serving.specs import Item, scalar
from serving.voices import VoiceDirectory, VoiceFiles

log = logging.getLogger(__name__)

#: First value of TARGET_STATS: the layout (then the speaker's median F0 in Hz, 0 if unknown).
STATS_LAYOUT = 1.0


@dataclass(frozen=True)
class RvcParameters:
    voices_dir: Path | None = param(None, "Directory of RVC voices: <name>.pth (official layout) and optional "
                                          "<name>.index (faiss, from its training).")
    content_encoder: Path | None = param(None, "RVC's hubert_base.pt (ContentVec, fairseq layout) on this host.")
    random_init: bool = param(False, "Random content encoder at the published size: compute benchmarks only.")
    f0_method: str = param("dio", "Pitch tracker: dio (WORLD DIO + StoneMask), harvest or pm (Praat).")
    index_rate: float = param(0.75, "Share of retrieved features when the voice has an index (0: none).")
    protect: float = param(0.33, "Share of converted features kept on unvoiced frames (>= 0.5: off).")
    rms_mix_rate: float = param(0.25, "1: the converted loudness; 0: the input's loudness contour.")
    filter_radius: int = param(3, "Harvest's 3-tap median filter is applied when this is above 2.")
    max_auto_shift: float = param(12.0, "Largest automatic pitch shift toward the speaker's register, semitones.")
    cached_voices: int = param(4, "Voices kept loaded (least recently used out).")
    fp16: bool = param(True, "Half precision on GPU instances (ignored on the CPU).")
    seed: int = param(0, "Seed of the synthesizer's noise: a retried request converts identically.")


@dataclass
class _CachedVoice:
    signature: tuple[Any, ...]
    voice: LoadedVoice
    index: FeatureIndex | None


class VoiceCache:
    """Voices by name, loaded lazily, at most ``size`` at once, reloaded when their files change."""

    def __init__(self, directory: VoiceDirectory, size: int, device: Any, dtype: torch.dtype) -> None:
        if size < 1:
            raise ValueError(f"cached_voices must be at least 1, got {size}")
        self.directory = directory
        self.size = size
        self.device = device
        self.dtype = dtype
        self._voices: OrderedDict[str, _CachedVoice] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _signature(files: VoiceFiles) -> tuple[Any, ...]:
        def stamp(path: Path | None) -> tuple[int, int] | None:
            if path is None:
                return None
            stat = path.stat()
            return stat.st_mtime_ns, stat.st_size
        return stamp(files.voice), files.index, stamp(files.index)

    def get(self, name: str) -> tuple[LoadedVoice, FeatureIndex | None]:
        """The voice ``name`` and its index; a ValueError names the voices there are."""
        try:
            files = self.directory.files(name)
        except LookupError as exc:
            raise ValueError(f"vc_rvc: {exc}") from None
        signature = self._signature(files)
        with self._lock:
            cached = self._voices.get(name)
            if cached is not None and cached.signature == signature:
                self._voices.move_to_end(name)
                return cached.voice, cached.index
            if cached is not None:
                log.info("RVC voice %s changed on disk: reloading", name)
            voice = load_rvc_voice(files.voice, self.device, self.dtype)
            index = FeatureIndex.read(files.index) if files.index is not None else None
            if index is not None and index.dim != voice.config.content_dim:
                raise ValueError(f"vc_rvc: {files.index.name} holds {index.dim}-d features but voice {name!r} is "
                                 f"RVC {voice.version} ({voice.config.content_dim}-d): replace it with the voice's "
                                 "own index or delete it")
            self._voices[name] = _CachedVoice(signature, voice, index)
            self._voices.move_to_end(name)
            while len(self._voices) > self.size:
                evicted, _ = self._voices.popitem(last=False)
                log.info("RVC voice cache full (%d): unloading %s", self.size, evicted)
            return voice, index

    def loaded(self) -> list[str]:
        """Names of the voices in memory, least recently used first."""
        with self._lock:
            return list(self._voices)


def pack_stats(median_hz: float | None) -> np.ndarray:
    return np.array([STATS_LAYOUT, median_hz or 0.0], dtype=np.float32)


def unpack_stats(vector: np.ndarray) -> float | None:
    values = np.asarray(vector, dtype=np.float64).reshape(-1)
    if values.size != 2 or values[0] != STATS_LAYOUT:
        raise ValueError(f"TARGET_STATS of {values.size} values is not vc_rvc's: send REFERENCE instead, or the "
                         "TARGET_STATS this model returned")
    return float(values[1]) if values[1] > 0 else None


class RvcServed(ServedModel):
    name = "vc_rvc"
    interface = VC
    max_batch_size = 16
    Config = RvcParameters

    def __init__(self, config: RvcParameters, placement: Placement) -> None:
        super().__init__(config, placement)
        device = self.torch_device()
        half = placement.is_gpu and config.fp16
        dtype = torch.float16 if half else torch.float32
        if config.voices_dir is None:
            raise ValueError("vc_rvc needs the parameter voices_dir: a directory of RVC .pth voices on this host "
                             "(polydub sets it from POLYDUB_RVC_VOICES_DIR)")
        if config.random_init:
            content = random_hubert(device=device)
        elif config.content_encoder is None:
            raise ValueError("vc_rvc needs the parameter content_encoder: RVC's hubert_base.pt on this host "
                             "(nothing is downloaded; polydub sets it from POLYDUB_RVC_CONTENT_ENCODER), or "
                             "random_init=true for a compute-cost benchmark")
        else:
            content, _ = load_hubert(config.content_encoder, device)
        self.options = ConversionOptions(f0_method=config.f0_method, filter_radius=config.filter_radius,  # type: ignore[arg-type]
                                         index_rate=config.index_rate, protect=config.protect,
                                         rms_mix_rate=config.rms_mix_rate, seed=config.seed)
        self.pipeline = RvcPipeline(content.to(dtype), self.options, SEGMENTATION_FP16 if half else SEGMENTATION_FP32)
        self.voices = VoiceCache(VoiceDirectory(config.voices_dir), config.cached_voices, device, dtype)

    def infer_items(self, items: list[Item]) -> list[Item]:
        requests, registers = [], []
        for item in items:
            name = scalar(item, "VOICE", "") or ""
            if not name:
                raise ValueError(f"vc_rvc needs VOICE, the name of a voice: {self.voices.directory.available()}")
            voice, index = self.voices.get(name)
            rate = int(scalar(item, "SAMPLE_RATE"))
            wave = resample(np.asarray(item["WAVEFORM"], dtype=np.float32), rate, ANALYSIS_RATE)
            utterance = self.pipeline.analyse(wave, voice)
            register = self._target_register(item, rate)
            shift = scalar(item, "PITCH_SHIFT")
            if shift is None:
                shift = register_shift(voiced_median_hz(utterance.own_f0_hz), register, self.config.max_auto_shift)
            requests.append(Request(utterance, voice, float(shift), index))
            registers.append(register)
        converted = self.pipeline.convert(requests)
        out = []
        for item, request, audio, register in zip(items, requests, converted, registers):
            rate = int(scalar(item, "SAMPLE_RATE"))
            wave = fit_length(resample(audio, request.voice.sample_rate, rate), np.asarray(item["WAVEFORM"]).size)
            out.append({"WAVEFORM": wave.astype(np.float32), "TARGET_STATS": pack_stats(register)})
        return out

    def _target_register(self, item: Item, rate: int) -> float | None:
        """The target speaker's median F0: from TARGET_STATS, else measured on REFERENCE, else unknown."""
        if "TARGET_STATS" in item:
            return unpack_stats(item["TARGET_STATS"])
        if "REFERENCE" in item:
            reference = resample(np.asarray(item["REFERENCE"], dtype=np.float32), rate, ANALYSIS_RATE)
            # Through the float32 wire format, as a cached TARGET_STATS would come back.
            return unpack_stats(pack_stats(register_hz(reference, self.options)))
        return None


SERVED = RvcServed
