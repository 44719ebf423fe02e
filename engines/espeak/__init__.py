"""eSpeak NG text-to-speech through ctypes: the reference TTS engine that needs no weights.

Why eSpeak NG: it speaks all four polydub languages (ko, en, ja, zh as ``cmn``) from a
2 MB library with no model files, so the whole pipeline runs (and is tested) anywhere. The
``espeakng-loader`` wheel carries ``libespeak-ng.so`` 1.52 and its data.

Modules: :mod:`engines.espeak.library` (the ctypes binding: a private copy of the library
per process, a fresh image per synthesis for byte-identical output, the synth callback, the
leak fixes, raw synthesis under one process-wide lock, the voice variants) and
:mod:`engines.espeak.tts` (:class:`~engines.espeak.tts.EspeakTTS`: voices per language,
pitch in Hz, rate control to a target duration, trimming, the batch API). Import from
them; this package re-exports nothing.
"""
