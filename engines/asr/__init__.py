"""Speech recognition for QC: re-transcribe a dub to check that it can be understood.

:class:`PocketsphinxRecognizer` (English with the model inside the ``pocketsphinx``
wheel; other languages with a CMU Sphinx model folder). See :mod:`engines.asr.sphinx`.
"""

from engines.asr.sphinx import (
    ModelFiles,
    PocketsphinxRecognizer,
    RecognizerConfig,
    default_model_dir,
    find_model_files,
)

__all__ = ["ModelFiles", "PocketsphinxRecognizer", "RecognizerConfig", "default_model_dir", "find_model_files"]
