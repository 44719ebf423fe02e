"""A job's state in the object store; handlers keep none in memory between events.

* ``manifest.json`` (written once by ingest): the inputs as validated.
* ``plan.json`` (written once by chunking): the chunk plan.
* ``state/chunk-{i}.json``: one row per chunk: the last stage it finished,
  its outputs, per-stage timings. Only the handler of that chunk's current
  stage writes it, so rows of different chunks never race.
* ``chunks/{i}/{stage}/_done``: empty markers written after a stage's outputs.
  Stages never count them by listing (a listing per chunk event is quadratic
  in the chunks of a job): merging probes them (:meth:`JobState.all_done`),
  and only ``polydub status`` lists them, once per call.
* ``state/failed``, ``state/merged``, ``state/completed``: job-level markers
  that make the last stages idempotent under redelivery.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from handlers.runtime.keys import DONE_MARKER, chunk_done_key, chunk_state_key, job_prefix
from handlers.runtime.objectstore import ObjectStore
from schemas.errors import ObjectNotFound


@dataclass
class ChunkRow:
    """What is known of one chunk."""

    chunk_index: int
    stage: str = "planned"
    outputs: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class JobState:
    """Reads and writes one job's state objects."""

    def __init__(self, store: ObjectStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.prefix = job_prefix(job_id)

    # --- documents ---------------------------------------------------------------

    def key(self, relative: str) -> str:
        return f"{self.prefix}{relative}"

    def write_json(self, relative: str, document: Any) -> str:
        key = self.key(relative)
        self.store.put_bytes(key, orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        return key

    def read_json(self, relative: str) -> Any:
        return orjson.loads(self.store.get_bytes(self.key(relative)))

    # --- chunk rows ----------------------------------------------------------------

    def read_row(self, index: int) -> ChunkRow:
        try:
            return ChunkRow(**orjson.loads(self.store.get_bytes(chunk_state_key(self.job_id, index))))
        except ObjectNotFound:
            return ChunkRow(chunk_index=index)

    def write_row(self, row: ChunkRow) -> None:
        self.store.put_bytes(
            chunk_state_key(self.job_id, row.chunk_index), orjson.dumps(asdict(row), option=orjson.OPT_INDENT_2)
        )

    def rows(self, n_chunks: int) -> list[ChunkRow]:
        return [self.read_row(i) for i in range(n_chunks)]

    # --- markers -------------------------------------------------------------------

    def mark_done(self, stage: str, index: int) -> None:
        self.store.mark(chunk_done_key(self.job_id, index, stage))

    def is_done(self, stage: str, index: int) -> bool:
        return self.store.is_marked(chunk_done_key(self.job_id, index, stage))

    def count_done(self, stage: str) -> int:
        """Chunks that finished ``stage``: one listing of the job's chunk outputs (for ``polydub status``)."""
        suffix = f"/{stage}/{DONE_MARKER}"
        return sum(1 for key in self.store.list(self.key("chunks/")) if key.endswith(suffix))

    def all_done(self, stage: str, n_chunks: int, known_done: int) -> bool:
        """Whether every chunk finished ``stage``, probing markers from the one after ``known_done``.

        Why in that order: chunks finish roughly in order, so for every chunk but
        the last the next marker is usually missing and one probe answers; the
        last chunk's event probes them all once.
        """
        order = [(known_done + step) % n_chunks for step in range(1, n_chunks)]
        return all(self.is_done(stage, index) for index in order)

    def mark(self, name: str, document: Any | None = None) -> None:
        """A job-level marker, optionally with a small JSON body (e.g. the failure)."""
        if document is None:
            self.store.mark(self.key(f"state/{name}"))
        else:
            self.write_json(f"state/{name}", document)

    def is_marked(self, name: str) -> bool:
        return self.store.exists(self.key(f"state/{name}"))

    def any_marked(self, names: tuple[str, ...]) -> bool:
        return any(self.is_marked(name) for name in names)
