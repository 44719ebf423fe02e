"""asr: speech recognition behind the ASR interface, for QC's intelligibility check.

PocketSphinx (:mod:`engines.asr`): English with the en-US model inside the
``pocketsphinx`` wheel, so it needs no weights and is served wherever the other
weight-free models are; other languages (and a replacement English model) from
``models_dir``, one CMU Sphinx model folder per language code. Each language's
decoder is built once, on its first request (English when the model loads).

A per-item engine: the decoder runs one utterance at a time and is not re-entrant,
so throughput scales with the instance count; the dynamic batcher only hands an idle
instance what is already queued.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.asr import PocketsphinxRecognizer, RecognizerConfig
from serving.interfaces import ASR, ASR_SHIPPED_LANGUAGE, asr_model_languages
from serving.model import PerItemModel, param
from serving.placement import Placement
from serving.specs import Item, scalar


@dataclass(frozen=True)
class AsrParameters:
    models_dir: Path | None = param(None, "Folder of more PocketSphinx models, one subfolder per language code "
                                    "(ko/, ja/, zh/; en/ replaces the shipped English), each with its acoustic-model "
                                    "folder, a word language model (*.lm.bin, *.lm) and a dictionary (*.dict, *.dic); "
                                    "empty: English only (POLYDUB_QC_ASR_MODELS_DIR).")


class AsrServed(PerItemModel):
    name = "asr"
    interface = ASR
    max_batch_size = 8
    instances = 2
    Config = AsrParameters

    def __init__(self, config: AsrParameters, placement: Placement) -> None:
        super().__init__(config, placement)
        self.languages = asr_model_languages(config.models_dir)
        self._recognizers: dict[str, PocketsphinxRecognizer] = {}
        self._building = threading.Lock()
        self.recognizer(ASR_SHIPPED_LANGUAGE)

    def recognizer(self, lang: str) -> PocketsphinxRecognizer:
        """The language's recogniser, built on first use."""
        with self._building:
            if lang not in self._recognizers:
                if lang not in self.languages:
                    raise ValueError(
                        f"asr has no speech recogniser for language {lang!r} (it has: "
                        f"{', '.join(sorted(self.languages))}); only English ships: put a PocketSphinx model "
                        f"in {lang}/ of the folder POLYDUB_QC_ASR_MODELS_DIR names")
                self._recognizers[lang] = PocketsphinxRecognizer(RecognizerConfig(model_dir=self.languages[lang]))
            return self._recognizers[lang]

    def infer_item(self, item: Item) -> Item:
        lang = scalar(item, "LANG")
        rate = int(scalar(item, "SAMPLE_RATE"))
        wave = np.asarray(item["WAVEFORM"], dtype=np.float32)
        return {"TEXT": self.recognizer(lang).transcribe(wave, rate)}


SERVED = AsrServed
