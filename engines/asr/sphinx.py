"""An offline speech recogniser on PocketSphinx, for QC's intelligibility check.

Why PocketSphinx: its wheel carries an en-US acoustic model, a language model and the
CMU pronouncing dictionary (BSD), so English dubs can be re-transcribed with nothing
downloaded and no GPU. Other languages take a model folder in the CMU Sphinx layout
(:func:`find_model_files`).

Why a noise floor: eSpeak and vocoded speech have exact digital silence between words
and empty spectral bands, which no recording the acoustic model learnt from had; the
log-spectral features of those frames sit far outside its training distribution and
the decoder loses words around them. Adding white noise at a fixed level under the
clip's own RMS (``noise_floor_db``), as every real microphone has, brought the word
error rate of nine clean eSpeak English sentences from 0.86 to 0.10-0.14 (time-reversed
speech stays above 1.0). The noise is seeded, so a clip always decodes the same way.

Decoding: one ``Decoder`` per recogniser, created once and reused; every utterance is
decoded whole (``full_utt``) after its feature front end is rebuilt (``reinit_feat``).
Without that rebuild the front end carries state from the previous utterance: a
clip's words depended on what the decoder had heard before (three of eight eSpeak
phrases changed with the order they were decoded in, and a served model's answer
changed with the requests its instance had served). The rebuild costs about 1 ms; a
new decoder would cost 250 ms. A lock serialises callers of one recogniser (the decoder is not
re-entrant); run several recognisers to decode in parallel.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pocketsphinx
from numpy.typing import NDArray

from engines.dsp import resample

#: Language-model file endings of the CMU Sphinx layout (binary, ARPA text, legacy DMP).
LANGUAGE_MODEL_SUFFIXES = (".lm.bin", ".lm", ".lm.dmp")
#: Dictionary file endings.
DICTIONARY_SUFFIXES = (".dict", ".dic")
#: A file every acoustic model folder holds (the model definition).
ACOUSTIC_MODEL_MARKER = "mdef"
#: Phonetic language models (for phone recognition) that share the folder; never the word LM.
PHONE_LM_MARK = "phone"
#: Largest int16 sample, the scale of the decoder's 16-bit input.
INT16_FULL_SCALE = 32767


@dataclass(frozen=True)
class ModelFiles:
    """The three parts of a PocketSphinx model."""

    acoustic_model: Path
    language_model: Path
    dictionary: Path


@dataclass(frozen=True)
class RecognizerConfig:
    """Every knob of :class:`PocketsphinxRecognizer`.

    Attributes:
        model_dir: Folder of a CMU Sphinx model: an acoustic-model subfolder (it holds
            ``mdef``), one word language model (``*.lm.bin``, ``*.lm`` or ``*.lm.dmp``) and
            one dictionary (``*.dict`` or ``*.dic``). ``None``: the en-US model inside the
            ``pocketsphinx`` wheel.
        sample_rate: Rate the acoustic model was trained at, in Hz; input is resampled to it.
            The shipped model and CMU's published ones are 16 kHz.
        noise_floor_db: Level of the white noise added under the clip, in dB relative to
            the clip's RMS (see the module doc); ``None`` adds none.
        noise_seed: Seed of that noise, so a clip always decodes the same way.
        pad_s: Silence (with the noise floor) added before and after the clip, in seconds:
            the decoder needs a few frames of background to start and end words cleanly.
        peak: Level the clip's peak is scaled to before the 16-bit conversion, as a share of
            full scale: loud float clips do not clip and quiet ones keep their resolution.
            The features are mean-normalised, so the absolute level does not matter.
        language_weight: Weight of the language model against the acoustic scores
            (PocketSphinx's ``lw``; its default is 6.5).
        word_insertion_penalty: Probability-like penalty per hypothesised word (``wip``; its
            default is 0.65). Both are lowered from PocketSphinx's defaults, which were tuned on
            natural read speech: on 32 eSpeak subtitle lines in two voices the WER fell from
            0.19/0.30 to 0.15/0.22, while time-reversed speech stayed above 1.1.
        log_level: PocketSphinx's own logging (``INFO``, ``WARN``, ``ERROR``, ``FATAL``).
    """

    model_dir: Path | None = None
    sample_rate: int = 16_000
    noise_floor_db: float | None = -30.0
    noise_seed: int = 0
    pad_s: float = 0.2
    peak: float = 0.5
    language_weight: float = 4.5
    word_insertion_penalty: float = 0.2
    log_level: str = "FATAL"

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.pad_s < 0:
            raise ValueError(f"pad_s must be >= 0, got {self.pad_s}")
        if not 0.0 < self.peak <= 1.0:
            raise ValueError(f"peak must be in (0, 1], got {self.peak}")
        if self.noise_floor_db is not None and not math.isfinite(self.noise_floor_db):
            raise ValueError(f"noise_floor_db must be finite or None, got {self.noise_floor_db}")
        if self.language_weight <= 0 or not 0.0 < self.word_insertion_penalty <= 1.0:
            raise ValueError(f"language_weight must be positive and word_insertion_penalty in (0, 1], got "
                             f"{self.language_weight} and {self.word_insertion_penalty}")


def default_model_dir() -> Path:
    """The en-US model folder inside the ``pocketsphinx`` wheel."""
    return Path(pocketsphinx.get_model_path()) / "en-us"


def _one(found: list[Path], what: str, folder: Path, pattern: str) -> Path:
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise ValueError(f"{folder} must hold exactly one {what} ({pattern}); found {listed}")
    return found[0]


def find_model_files(folder: Path) -> ModelFiles:
    """The acoustic model, language model and dictionary of a CMU Sphinx model folder.

    Raises ValueError naming the folder and what is missing or ambiguous.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"speech recogniser model folder {folder} does not exist or is not a folder")
    entries = sorted(folder.iterdir())
    if (folder / ACOUSTIC_MODEL_MARKER).is_file():
        acoustic = folder
    else:
        acoustic = _one([p for p in entries if p.is_dir() and (p / ACOUSTIC_MODEL_MARKER).is_file()],
                        "acoustic-model folder", folder, f"a subfolder with `{ACOUSTIC_MODEL_MARKER}`")
    files = [p for p in entries if p.is_file()]
    lm = _one([p for p in files if p.name.lower().endswith(LANGUAGE_MODEL_SUFFIXES)
               and PHONE_LM_MARK not in p.name.lower()],
              "word language model", folder, " or ".join(f"*{s}" for s in LANGUAGE_MODEL_SUFFIXES))
    dictionary = _one([p for p in files if p.name.lower().endswith(DICTIONARY_SUFFIXES)],
                      "pronunciation dictionary", folder, " or ".join(f"*{s}" for s in DICTIONARY_SUFFIXES))
    return ModelFiles(acoustic, lm, dictionary)


class PocketsphinxRecognizer:
    """Speech -> lower-case words, with one reusable PocketSphinx decoder.

    ``transcribe`` takes one mono float clip at any rate; ``transcribe_batch`` takes a
    padded batch with lengths (batch-first, as every engine). Deterministic: the same
    clip gives the same words whatever was decoded before.
    """

    def __init__(self, config: RecognizerConfig | None = None) -> None:
        self.config = config or RecognizerConfig()
        self.model_dir = Path(self.config.model_dir) if self.config.model_dir is not None else default_model_dir()
        self.files = find_model_files(self.model_dir)
        try:
            self._decoder = pocketsphinx.Decoder(
                hmm=str(self.files.acoustic_model), lm=str(self.files.language_model),
                dict=str(self.files.dictionary), samprate=self.config.sample_rate, lw=self.config.language_weight,
                wip=self.config.word_insertion_penalty, loglevel=self.config.log_level)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"PocketSphinx could not load the model in {self.model_dir}: {exc}") from exc
        self._lock = threading.Lock()

    def prepare(self, wave: NDArray[np.floating], sample_rate: int) -> NDArray[np.int16]:
        """The 16-bit samples the decoder hears: resampled, scaled, padded, over a noise floor.

        Returns an empty array for a clip without signal (nothing to hear).
        """
        x = np.asarray(wave)
        if x.ndim != 1:
            raise ValueError(f"the recogniser takes mono 1-D audio, got shape {x.shape}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if not np.all(np.isfinite(x)):
            raise ValueError("the audio to transcribe holds NaN or infinite samples")
        x = resample(x.astype(np.float64), int(sample_rate), self.config.sample_rate, dtype=np.float64)
        peak = float(np.abs(x).max()) if x.size else 0.0
        if peak == 0.0:
            return np.zeros(0, dtype=np.int16)
        x = x * (self.config.peak / peak)
        rms = float(np.sqrt(np.mean(x * x)))
        pad = np.zeros(int(round(self.config.pad_s * self.config.sample_rate)))
        x = np.concatenate([pad, x, pad])
        if self.config.noise_floor_db is not None:
            noise = np.random.default_rng(self.config.noise_seed).standard_normal(x.size)
            x = x + noise * rms * 10.0 ** (self.config.noise_floor_db / 20.0)
        return np.round(np.clip(x, -1.0, 1.0) * INT16_FULL_SCALE).astype(np.int16)

    def transcribe(self, wave: NDArray[np.floating], sample_rate: int) -> str:
        """The words heard in one mono clip, lower case, separated by single spaces ("" if none)."""
        pcm = self.prepare(wave, sample_rate)
        if pcm.size == 0:
            return ""
        with self._lock:
            self._decoder.reinit_feat()
            self._decoder.start_utt()
            self._decoder.process_raw(pcm.tobytes(), no_search=False, full_utt=True)
            self._decoder.end_utt()
            hypothesis = self._decoder.hyp()
        return " ".join(hypothesis.hypstr.split()) if hypothesis is not None else ""

    def transcribe_batch(self, waves: NDArray[np.floating], lengths: NDArray[np.integer],
                         sample_rate: int) -> list[str]:
        """:meth:`transcribe` of each row of a padded ``(batch, samples)`` array, valid up to ``lengths``."""
        batch = np.asarray(waves)
        sizes = np.asarray(lengths).reshape(-1)
        if batch.ndim != 2 or sizes.size != batch.shape[0]:
            raise ValueError(f"waves must be (batch, samples) with one length per row; got {batch.shape} "
                             f"and {sizes.size} lengths")
        if np.any(sizes < 0) or np.any(sizes > batch.shape[1]):
            raise ValueError(f"lengths must lie in [0, {batch.shape[1]}], got {sizes.tolist()}")
        return [self.transcribe(batch[i, : int(n)], sample_rate) for i, n in enumerate(sizes)]
