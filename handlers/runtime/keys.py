"""The deterministic object-store keys of one job.

Every stage writes its outputs under keys computed only from the job id, the
chunk index, the stage and a file name. A redelivered event therefore rewrites
the very same objects instead of leaving a second copy behind, which is what
makes at-least-once delivery safe (see DESIGN "Chunk state"). Keeping every
key in this one module is what keeps the layout consistent between the stage
that writes an object and the stage that reads it.

Layout::

    jobs/{job_id}/source/{name}                          inputs copied in by ingest
    jobs/{job_id}/manifest.json                          the job's plan (chunks, settings)
    jobs/{job_id}/state/chunk-{index:05d}.json           one chunk's stage, attempt, outputs
    jobs/{job_id}/chunks/{index:05d}/{stage}/{name}      one chunk's output of one stage
    jobs/{job_id}/chunks/{index:05d}/{stage}/_done       marker: the stage finished the chunk
    jobs/{job_id}/output/{name}                          deliverables (dubbed video, ...)
    jobs/{job_id}/output/qc.json                         the QC report

Chunk indexes are zero-padded so that a listing (sorted by key) is in
timeline order.
"""

from __future__ import annotations

import re

from schemas.errors import InputError

#: Job ids travel in keys, URIs, Kafka keys and log lines: letters, digits,
#: ``.``, ``_``, ``-``; starting with a letter or digit so ``.``/``..`` are impossible.
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: A file name is one key segment, same alphabet as job ids.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,254}")
#: Stage names are short lowercase identifiers (``synthesis``, ``lipsync``, ...).
_STAGE = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Five digits keep lexicographic order equal to numeric order.
MAX_CHUNKS = 100_000

#: Name of the marker object a stage writes after all of a chunk's outputs.
DONE_MARKER = "_done"


def validate_job_id(job_id: str) -> str:
    """Return ``job_id`` unchanged, or raise :class:`InputError` if it is unsafe in a key."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise InputError(
            f"job id {job_id!r} is not usable: it must be 1-128 characters of letters, "
            "digits, '.', '_' or '-', starting with a letter or digit",
            "use a uuid or a similar plain identifier as the job id",
        )
    return job_id


def _name(name: str, what: str = "file name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(
            f"{what} {name!r} is not usable in an object key: it must be one path segment "
            "of letters, digits, '.', '_' or '-'",
            f"pass a plain {what} such as 'audio.wav'",
        )
    return name


def _stage(stage: str) -> str:
    if not isinstance(stage, str) or not _STAGE.fullmatch(stage):
        raise InputError(
            f"stage {stage!r} is not usable in an object key",
            "pass a lowercase stage name such as 'synthesis'",
        )
    return stage


def _index(chunk_index: int) -> str:
    if isinstance(chunk_index, bool) or not isinstance(chunk_index, int):
        raise InputError(
            f"chunk index {chunk_index!r} is not an integer", "pass the chunk's 0-based index"
        )
    if not 0 <= chunk_index < MAX_CHUNKS:
        raise InputError(
            f"chunk index {chunk_index} is outside 0..{MAX_CHUNKS - 1}",
            "pass the chunk's 0-based index; a longer job needs longer chunks",
        )
    return f"{chunk_index:05d}"


def job_prefix(job_id: str) -> str:
    """``jobs/{job_id}/``: every object of the job lives under it (list or delete a job)."""
    return f"jobs/{validate_job_id(job_id)}/"


def source_key(job_id: str, name: str) -> str:
    """Where ingest copies one input file (``video.mp4``, ``subs.srt``) of the job."""
    return f"{job_prefix(job_id)}source/{_name(name)}"


def manifest_key(job_id: str) -> str:
    """The job's manifest: what was asked and how the timeline was cut into chunks."""
    return f"{job_prefix(job_id)}manifest.json"


def state_prefix(job_id: str) -> str:
    """Prefix of the job's chunk-state table; listing it yields every chunk's state."""
    return f"{job_prefix(job_id)}state/"


def chunk_state_key(job_id: str, chunk_index: int) -> str:
    """One chunk's row of the state table: its stage, attempt and outputs."""
    return f"{state_prefix(job_id)}chunk-{_index(chunk_index)}.json"


def chunk_prefix(job_id: str, chunk_index: int) -> str:
    """Prefix of every output of one chunk, across stages."""
    return f"{job_prefix(job_id)}chunks/{_index(chunk_index)}/"


def chunk_output_key(job_id: str, chunk_index: int, stage: str, name: str) -> str:
    """One output file of one stage for one chunk, e.g. the synthesized ``audio.wav``."""
    return f"{chunk_prefix(job_id, chunk_index)}{_stage(stage)}/{_name(name)}"


def chunk_done_key(job_id: str, chunk_index: int, stage: str) -> str:
    """The marker a stage writes after all of a chunk's outputs, so a redelivery can skip it."""
    return chunk_output_key(job_id, chunk_index, stage, DONE_MARKER)


def output_key(job_id: str, name: str) -> str:
    """One deliverable of the job (the dubbed video, the dub track, ...)."""
    return f"{job_prefix(job_id)}output/{_name(name)}"


def qc_key(job_id: str) -> str:
    """The QC report, delivered next to the dubbed video."""
    return output_key(job_id, "qc.json")
