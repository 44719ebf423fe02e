"""``polydub trace JOB``: one job's spans as a tree, and where its time went.

Without an OTLP collector every polydub process appends its finished spans to
one JSON-lines file (``POLYDUB_TRACE_FILE``, see
:mod:`handlers.runtime.telemetry`). Spans of one job come from several
processes (``polydub submit``, a worker per stage, the retry relay) and are
tied together only by the W3C trace context that rode in the Kafka headers, so
this module rebuilds the tree from ``trace_id``/``parent_id`` alone.

Everything here is pure (records in, text out) except :func:`load_job_spans`,
which reads the file, so the tree logic is unit-tested on synthetic spans.

What an SRE asks first is "which stage took the time, and how long did events
wait in Kafka between stages". By default the view therefore folds the
messaging spans FastStream's telemetry middleware writes around every event
(``<topic> create``/``publish``/``process``): their children move up to the
nearest shown span, and the time between the producer handing an event over
and a consumer starting on it is shown as ``queued`` on the work it started.
``show_messaging=True`` (``polydub trace --all``) prints every span as written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas.topics import RETRY

#: Attribute of a FastStream messaging span; its value is the broker kind.
MESSAGING_SYSTEM_ATTR = "messaging.system"
#: Kafka message key on messaging spans: polydub keys every event by job id.
MESSAGE_KEY_ATTR = "messaging.kafka.message.key"
#: Suffixes FastStream gives its messaging spans (``job.accepted process``...).
MESSAGING_OPERATIONS = ("create", "publish", "process")
#: Prefix of the span every stage handler opens around its work (``stage.synthesis``).
STAGE_SPAN_PREFIX = "stage."
#: Characters of the timeline column (the whole trace maps onto it).
TIMELINE_WIDTH = 30
#: Spaces of indentation per tree level.
INDENT = 2
#: Attributes shown inline on a span's line, in this order, with their labels.
SHOWN_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("chunk_index", "chunk"),
    ("attempt", "attempt"),
    ("model", "model"),
    ("target_lang", "to"),
    ("status_code", "code"),
    ("error.reason", "reason"),
)
#: Longer attribute values (an error's reason) are cut; ``polydub status`` has them whole.
ATTRIBUTE_MAX_CHARS = 60
NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class SpanRecord:
    """One finished span as :func:`handlers.runtime.telemetry.span_record` wrote it."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status: str = "UNSET"
    attributes: dict[str, Any] = field(default_factory=dict)
    service: str | None = None

    @property
    def duration_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def is_messaging(self) -> bool:
        """A FastStream messaging span (create/publish/process), not a piece of work."""
        return MESSAGING_SYSTEM_ATTR in self.attributes and self.name.rsplit(" ", 1)[-1] in MESSAGING_OPERATIONS

    @property
    def operation(self) -> str | None:
        return self.name.rsplit(" ", 1)[-1] if self.is_messaging else None

    @property
    def stage(self) -> str | None:
        """The pipeline stage this span is the handler work of, if it is one."""
        if not self.name.startswith(STAGE_SPAN_PREFIX):
            return None
        return str(self.attributes.get("stage") or self.name[len(STAGE_SPAN_PREFIX):])

    @property
    def failed(self) -> bool:
        return self.status == "ERROR" or self.attributes.get("status") == "error"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SpanRecord:
        return cls(
            trace_id=str(data["trace_id"]),
            span_id=str(data["span_id"]),
            parent_id=data.get("parent_id") or None,
            name=str(data["name"]),
            start_ns=int(data["start_ns"]),
            end_ns=int(data["end_ns"]),
            status=str(data.get("status") or "UNSET"),
            attributes=dict(data.get("attributes") or {}),
            service=data.get("service"),
        )


def parse_span_lines(lines: Iterable[bytes | str]) -> tuple[list[SpanRecord], int]:
    """Records of the lines that parse, and how many did not.

    Several processes append to the file and one may die mid-line; a broken
    line costs that span, never the whole view.
    """
    spans: list[SpanRecord] = []
    bad = 0
    for line in lines:
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
            spans.append(SpanRecord.from_json(data))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            bad += 1
    return spans, bad


def belongs_to_job(span: SpanRecord, job_id: str) -> bool:
    """Whether a span names the job (our ``job_id`` attribute or the Kafka message key)."""
    return span.attributes.get("job_id") == job_id or span.attributes.get(MESSAGE_KEY_ATTR) == job_id


def select_job_spans(spans: Iterable[SpanRecord], job_id: str) -> list[SpanRecord]:
    """Every span of every trace in which some span names the job.

    Spans that carry no job id (a consumer's ``process`` span, inference
    calls) are found through their trace.
    """
    spans = list(spans)
    traces = {s.trace_id for s in spans if belongs_to_job(s, job_id)}
    return [s for s in spans if s.trace_id in traces]


def load_job_spans(path: Path, job_id: str) -> tuple[list[SpanRecord], int]:
    """The job's spans from a span file, and the number of unreadable lines among them.

    Two streaming passes with a substring pre-filter, so a span file grown
    over many jobs is never held in memory whole: the first finds the job's
    trace ids, the second collects those traces.
    """
    needle = job_id.encode()
    with path.open("rb") as fh:
        candidates, _ = parse_span_lines(line for line in fh if needle in line)
    traces = {s.trace_id for s in candidates if belongs_to_job(s, job_id)}
    if not traces:
        return [], 0
    needles = [t.encode() for t in traces]
    with path.open("rb") as fh:
        return parse_span_lines(line for line in fh if any(n in line for n in needles))


# --- the tree ----------------------------------------------------------------------


@dataclass
class SpanNode:
    """A shown span, its shown children, and what folding learned about it."""

    span: SpanRecord
    children: list[SpanNode] = field(default_factory=list)
    #: From the producer handing its triggering event over to this span's start (folded view).
    queued_ns: int | None = None
    #: The event came back through the retry topic (so ``queued_ns`` includes the backoff).
    retried: bool = False
    #: Its parent span is not in the file (a process died, or exported elsewhere).
    orphan: bool = False


def build_tree(spans: Sequence[SpanRecord], *, show_messaging: bool = False) -> list[SpanNode]:
    """Roots of the span forest, children sorted by start time.

    With ``show_messaging`` off, messaging spans are folded: a span's parent
    becomes its nearest non-messaging ancestor, and a span that an event
    started gets ``queued_ns``: from the end of the first ``create`` span
    under that ancestor (the producer handing the event over) to its own
    start. That is the time the work waited rather than ran: Kafka transit,
    the consumer's poll, and for a retried event the backoff in the retry
    relay (``retried``).
    """
    by_id = {s.span_id: s for s in spans}

    def visible(span: SpanRecord) -> bool:
        return show_messaging or not span.is_messaging

    nodes = {s.span_id: SpanNode(s) for s in spans if visible(s)}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent_id = node.span.parent_id
        seen: set[str] = set()
        handed_over: SpanRecord | None = None
        while parent_id is not None and parent_id in by_id and parent_id not in nodes:
            hidden = by_id[parent_id]
            if hidden.operation == "create":
                handed_over = hidden  # the last one met is the closest to the shown parent
            node.retried = node.retried or _topic_of(hidden).endswith(RETRY)
            seen.add(parent_id)
            parent_id = hidden.parent_id
            if parent_id in seen:  # a malformed file with a cycle
                parent_id = None
        if handed_over is not None:
            node.queued_ns = max(0, node.span.start_ns - handed_over.end_ns)
        if parent_id is not None and parent_id in nodes:
            nodes[parent_id].children.append(node)
        else:
            node.orphan = parent_id is not None
            roots.append(node)
    for node in nodes.values():
        node.children.sort(key=lambda n: (n.span.start_ns, n.span.name))
    roots.sort(key=lambda n: (n.span.start_ns, n.span.name))
    return roots


def _topic_of(span: SpanRecord) -> str:
    """The topic a messaging span is about (its name without the operation)."""
    return span.name.rsplit(" ", 1)[0] if span.is_messaging else ""


def walk(roots: Sequence[SpanNode], depth: int = 0) -> Iterator[tuple[int, SpanNode]]:
    """Depth-first, in start order: ``(depth, node)``."""
    for node in roots:
        yield depth, node
        yield from walk(node.children, depth + 1)


# --- where the time went -------------------------------------------------------------


@dataclass(frozen=True)
class StageTotal:
    """All handler spans of one stage in a job."""

    stage: str
    spans: int
    busy_ns: int
    longest_ns: int
    queued_ns: int
    failed: int


def stage_totals(roots: Sequence[SpanNode]) -> list[StageTotal]:
    """Per stage: handler spans, their summed and longest time, queue wait, failures.

    Sums run over chunks (and retries), so a stage's busy time can exceed the
    job's wall time when chunks ran in parallel on several workers.
    """
    acc: dict[str, list[int]] = {}
    first_start: dict[str, int] = {}
    for _, node in walk(roots):
        stage = node.span.stage
        if stage is None:
            continue
        row = acc.setdefault(stage, [0, 0, 0, 0, 0])
        first_start[stage] = min(first_start.get(stage, node.span.start_ns), node.span.start_ns)
        row[0] += 1
        row[1] += node.span.duration_ns
        row[2] = max(row[2], node.span.duration_ns)
        row[3] += node.queued_ns or 0
        row[4] += int(node.span.failed)
    ordered = sorted(acc, key=lambda s: (first_start[s], s))
    return [StageTotal(s, *acc[s]) for s in ordered]


# --- text -----------------------------------------------------------------------------


def format_duration(ns: int) -> str:
    """Short human durations: ``0.4ms``, ``62ms``, ``2.15s``, ``1m05s``."""
    seconds = ns / NS_PER_S
    if seconds < 0.01:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:02.0f}s"


def _timeline(start_ns: int, end_ns: int, origin_ns: int, total_ns: int, width: int = TIMELINE_WIDTH) -> str:
    """Where a span sits in the trace: ``|   ====      |``."""
    if total_ns <= 0:
        return "|" + "=" * width + "|"
    first = min(width - 1, int((start_ns - origin_ns) / total_ns * width))
    last = max(first + 1, min(width, round((end_ns - origin_ns) / total_ns * width)))
    return "|" + " " * first + "=" * (last - first) + " " * (width - last) + "|"


def _label(node: SpanNode, show_service: bool) -> str:
    span = node.span
    parts = [span.name]
    if span.failed:
        parts.append("ERROR")
    for key, label in SHOWN_ATTRIBUTES:
        value = span.attributes.get(key)
        if value is None or (key == "attempt" and value == 0):
            continue
        text = str(value)
        if len(text) > ATTRIBUTE_MAX_CHARS:
            text = text[: ATTRIBUTE_MAX_CHARS - 3] + "..."
        parts.append(f"{label}={text}")
    if node.queued_ns is not None:
        via = ", retry backoff included" if node.retried else ""
        parts.append(f"(queued {format_duration(node.queued_ns)}{via})")
    if show_service and span.service:
        parts.append(f"[{span.service}]")
    if node.orphan:
        parts.append("(parent span missing)")
    return " ".join(parts)


def render_trace(trace_id: str, spans: Sequence[SpanRecord], *, show_messaging: bool = False) -> list[str]:
    """One trace: a header, then a line per shown span, indented by parent."""
    roots = build_tree(spans, show_messaging=show_messaging)
    origin = min(s.start_ns for s in spans)
    end = max(s.end_ns for s in spans)
    total = end - origin
    services = sorted({s.service for s in spans if s.service})
    lines = [
        f"trace {trace_id}  {format_duration(total)} wall  {len(spans)} spans  "
        f"services: {', '.join(services) or '-'}",
        f"  {'start':>8} {'duration':>8}  {'timeline':<{TIMELINE_WIDTH + 2}}  span",
    ]
    for depth, node in walk(roots):
        span = node.span
        offset = format_duration(span.start_ns - origin)
        lines.append(
            f"  {'+' + offset:>8} {format_duration(span.duration_ns):>8}  "
            f"{_timeline(span.start_ns, span.end_ns, origin, total)}  "
            f"{' ' * (INDENT * depth)}{_label(node, len(services) > 1)}"
        )
    return lines


def render_totals(totals: Sequence[StageTotal], wall_ns: int) -> list[str]:
    """The "where the time went" table under the tree."""
    if not totals:
        return ["no stage spans: no handler has worked on this job yet (or its spans are elsewhere)"]
    busy_all = sum(t.busy_ns for t in totals) or 1
    lines = [
        "where the time went (handler spans, summed over chunks and attempts):",
        f"  {'stage':<12} {'spans':>5} {'busy':>9} {'share':>6} {'longest':>9} {'queued':>9} {'failed':>6}",
    ]
    for t in totals:
        lines.append(
            f"  {t.stage:<12} {t.spans:>5} {format_duration(t.busy_ns):>9} "
            f"{t.busy_ns / busy_all:>6.0%} {format_duration(t.longest_ns):>9} "
            f"{format_duration(t.queued_ns):>9} {t.failed:>6}"
        )
    busy = sum(t.busy_ns for t in totals)
    queued = sum(t.queued_ns for t in totals)
    lines.append(
        f"  {'total':<12} {sum(t.spans for t in totals):>5} {format_duration(busy):>9} "
        f"{'':>6} {'':>9} {format_duration(queued):>9} {sum(t.failed for t in totals):>6}"
    )
    lines.append(f"  wall time from the first span to the last: {format_duration(wall_ns)}")
    return lines


def render_job(job_id: str, spans: Sequence[SpanRecord], *, show_messaging: bool = False,
               unreadable: int = 0) -> str:
    """The whole ``polydub trace`` output for one job's spans (any number of traces)."""
    if not spans:
        return f"job {job_id}: no spans"
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    traces = sorted(by_trace.items(), key=lambda item: min(s.start_ns for s in item[1]))
    lines = [f"job {job_id}: {len(traces)} trace(s), {len(spans)} spans"]
    if len(traces) > 1:
        lines.append("  (more than one trace: the job was submitted again, or a producer lost the trace context)")
    for trace_id, trace_spans in traces:
        lines.append("")
        lines.extend(render_trace(trace_id, trace_spans, show_messaging=show_messaging))
    lines.append("")
    roots = [root for _, trace_spans in traces for root in build_tree(trace_spans)]
    wall = max(s.end_ns for s in spans) - min(s.start_ns for s in spans)
    lines.extend(render_totals(stage_totals(roots), wall))
    if unreadable:
        lines.append(f"  ({unreadable} unreadable line(s) of the span file skipped)")
    return "\n".join(lines)


__all__ = [
    "SpanNode",
    "SpanRecord",
    "StageTotal",
    "build_tree",
    "format_duration",
    "load_job_spans",
    "parse_span_lines",
    "render_job",
    "select_job_spans",
    "stage_totals",
]
