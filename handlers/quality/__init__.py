"""Quality control of a dub: measurements, thresholds, verdicts, text metrics, the report.

The ``qc`` stage (:mod:`handlers.qc`) runs these; ``polydub report`` re-renders
a job's page from its stored files (:mod:`handlers.quality.report`).
"""
