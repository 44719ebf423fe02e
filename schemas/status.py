"""Status codes: one small, stable vocabulary shared by every event and error.

The numbers are part of the public contract (dashboards and downstream apps
store them), so a code is never renumbered or reused; new codes take new
numbers. Codes below 100 describe progress, codes from 100 up describe why a
job failed.
"""

from __future__ import annotations

from enum import IntEnum


class StatusCode(IntEnum):
    """A job's or chunk's state, with a stable number and a one-line meaning."""

    RECEIVED = 10
    INGESTED = 20
    CHUNKED = 30
    SYNTHESIZED = 40
    CONVERTED = 50
    LIP_SYNCED = 60
    MERGED = 70
    COMPLETED = 80

    INPUT_REJECTED = 100
    INFERENCE_FAILED = 110
    QC_FAILED = 120
    STORAGE_FAILED = 130
    TIMEOUT = 140
    INTERNAL_ERROR = 150

    @property
    def meaning(self) -> str:
        """One line a person can read on a dashboard."""
        return _MEANINGS[self]

    @property
    def is_failure(self) -> bool:
        return self >= 100


_MEANINGS: dict[StatusCode, str] = {
    StatusCode.RECEIVED: "the job was received and is waiting for ingest",
    StatusCode.INGESTED: "inputs were validated and copied into the object store",
    StatusCode.CHUNKED: "the timeline was planned into chunks",
    StatusCode.SYNTHESIZED: "target-language speech was synthesized",
    StatusCode.CONVERTED: "speech was converted to the original speaker's voice",
    StatusCode.LIP_SYNCED: "the mouth was re-synced to the dubbed speech",
    StatusCode.MERGED: "chunks were joined and muxed into the output video",
    StatusCode.COMPLETED: "the dub passed QC and was delivered",
    StatusCode.INPUT_REJECTED: "the input is invalid; fix the input named in the reason and resubmit",
    StatusCode.INFERENCE_FAILED: "a model call kept failing after the bounded retries",
    StatusCode.QC_FAILED: "the dub was produced but failed a quality gate",
    StatusCode.STORAGE_FAILED: "the object store could not be read or written",
    StatusCode.TIMEOUT: "a stage did not finish within its deadline",
    StatusCode.INTERNAL_ERROR: "an unexpected error in polydub itself; report it with the job id",
}
