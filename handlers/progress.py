"""A job's progress as a follower of its ``dub.status`` events sees it.

Per-chunk stages report one chunk each (``chunk_index``) and never count the
others; a job's statuses share one partition (keyed by job), so a follower
that reads them all counts the chunks itself. ``polydub run``'s progress bar
and ``polydub watch`` both follow jobs through :class:`JobProgress`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.events import DubStatus
from schemas.registry import STAGE_BY_NAME, STAGE_NAMES, job_progress


@dataclass
class JobProgress:
    """What the statuses of one job seen so far prove."""

    chunks_total: int = 0
    #: Chunk indices reported through each per-chunk stage.
    chunks: dict[str, set[int]] = field(default_factory=dict)
    #: Each job-level stage's done fraction.
    stages: dict[str, float] = field(default_factory=dict)
    #: Highest progress any event claimed (a lower bound each).
    claimed: float = 0.0

    def update(self, status: DubStatus) -> None:
        self.chunks_total = max(self.chunks_total, status.chunks_total)
        self.claimed = max(self.claimed, status.progress)
        if status.chunk_index is not None:
            self.chunks.setdefault(status.stage, set()).add(status.chunk_index)
        elif status.status == STAGE_BY_NAME[status.stage].done:
            self.stages[status.stage] = 1.0
            # A stage is done only once every stage before it is: they are too.
            for name in STAGE_NAMES[: STAGE_NAMES.index(status.stage)]:
                self.stages[name] = 1.0

    def chunks_done(self, stage: str) -> int:
        """Chunks known to be through ``stage``."""
        if self.stages.get(stage, 0.0) >= 1.0:
            return self.chunks_total
        return len(self.chunks.get(stage, ()))

    @property
    def fraction(self) -> float:
        """Whole-job progress, 0 to 1."""
        done = dict(self.stages)
        for stage in self.chunks:
            if self.chunks_total and done.get(stage, 0.0) < 1.0:
                done[stage] = self.chunks_done(stage) / self.chunks_total
        return max(self.claimed, job_progress(done))

    def describe(self, status: DubStatus) -> str:
        """``stage`` and, for chunk work, ``done/total`` chunks of that stage."""
        if status.chunks_total and (status.chunk_index is not None or status.chunks_done is not None):
            done = self.chunks_done(status.stage) if status.chunk_index is not None else status.chunks_done
            return f"{status.stage} {done}/{status.chunks_total}"
        return status.stage
