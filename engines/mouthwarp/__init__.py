"""Mouth-warp lip sync: the reference lip-sync engine that needs no weights.

Why it exists: Wav2Lip needs a checkpoint that cannot be downloaded everywhere, and a
dubbing pipeline still has to move the lips with the new speech. This engine makes the
mouth open and close with the loudness of the dubbed audio (and, when phoneme timings are
known, closes on bilabials and opens wider on vowels). It is a plausible effect, not a
generative model: the mouth region is stretched by a smooth geometric warp and the gap
between the lips is darkened.

Pipeline per clip:

1. :class:`~engines.mouthwarp.tracker.FaceTracker` finds the face with OpenCV's Haar
   frontal-face cascade on a downscaled grey frame every ``detect_every`` frames and follows
   it in between with normalised template matching (cheap: a real-time budget on CPU),
   smooths the box with an exponential moving average, holds it for a few frames when
   detection misses, and reports ``None`` when there is no face (or when the picture cuts
   away) so the frame passes through;
2. :func:`~engines.mouthwarp.openness.mouth_openness` turns the audio into one openness
   value in [0, 1] per video frame: RMS level in dBFS over exactly the frame's time span
   ``[i/fps, (i+1)/fps)``, mapped linearly between a silence floor and a speech level,
   attack/release smoothed, then shaped by phoneme classes when given;
3. :meth:`~engines.mouthwarp.warp.MouthWarp.warp_clip` opens the mouth: inside a region
   placed relative to the face box (two half-ellipses meeting at the lip line,
   :mod:`engines.mouthwarp.geometry`), the upper lip moves up and the lower lip and chin
   move down by a backward map for ``cv2.remap`` that is the identity on the region's
   border, the gap between the lips is filled with a dark inner-mouth colour, and the result
   is composited with a Gaussian-feathered mask. Pixels outside the feathered region are
   never written, so they stay bit-identical; frames whose openness is (near) zero are
   returned untouched.

:func:`~engines.mouthwarp.measure.measure_mouth_signal` goes the other way (video -> mouth
darkness per frame) for QC and benchmarks: correlate it with
:func:`~engines.mouthwarp.measure.frame_levels_db` of the audio, or search the AV offset
over the two signals (QC does, in ``handlers.quality.signals.av_offset``).

Modules: ``config`` (every knob), ``checks`` (input validation), ``tracker`` (face boxes),
``geometry`` (where the mouth is in a box), ``openness`` (audio -> openness), ``warp`` (the
warp and the engine), ``measure`` (mouth signal and frame levels). Import from them; this
package re-exports nothing.

Everything is deterministic (no randomness; detector candidates are sorted before choosing).
"""
