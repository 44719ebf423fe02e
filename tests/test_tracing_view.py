"""``polydub trace``'s tree and totals, on a synthetic span file written as the exporter writes it.

The file mimics what several processes append for one job: ``polydub submit``
opens the root ``job`` span, FastStream's middleware wraps every event in
``create``/``publish``/``process`` spans, each stage handler opens
``stage.<name>``; a second job shares the file, one line is torn, one span
lost its parent.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest

from handlers.tracing_view import (
    SpanRecord,
    build_tree,
    format_duration,
    load_job_spans,
    parse_span_lines,
    render_job,
    select_job_spans,
    stage_totals,
    walk,
)

JOB = "job-abc"
OTHER = "job-other"
MS = 1_000_000
T0 = 1_700_000_000_000_000_000
_ids = itertools.count(1)


class Trace:
    """Builds the span records of one trace the way FastStream and polydub name them."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.trace_id = f"{next(_ids):032x}"
        self.records: list[dict[str, Any]] = []

    def span(self, name: str, parent: str | None, start_ms: float, dur_ms: float, *,
             service: str = "polydub-worker", otel_status: str = "UNSET", **attributes: Any) -> str:
        span_id = f"{next(_ids):016x}"
        self.records.append({
            "trace_id": self.trace_id, "span_id": span_id, "parent_id": parent, "name": name,
            "start_ns": T0 + int(start_ms * MS), "end_ns": T0 + int((start_ms + dur_ms) * MS),
            "status": otel_status, "attributes": attributes, "service": service,
        })
        return span_id

    def send(self, topic: str, parent: str, at_ms: float, *, service: str = "polydub-worker") -> str:
        """A producer's ``create`` (and its ``publish`` child); returns the ``create`` span."""
        msg = {"messaging.system": "kafka", "messaging.destination.name": topic,
               "messaging.kafka.message.key": self.job_id}
        create = self.span(f"{topic} create", parent, at_ms, 0.05, service=service, **msg)
        self.span(f"{topic} publish", create, at_ms + 0.1, 2, service=service,
                  **msg, **{"messaging.operation": "publish"})
        return create

    def work(self, topic: str, create: str, at_ms: float, stage: str, dur_ms: float, *,
             chunk: int | None = None, attempt: int = 0, failed: bool = False) -> str:
        """A consumer's ``process`` span around the stage span; returns the stage span."""
        process = self.span(f"{topic} process", create, at_ms, dur_ms + 2,
                            **{"messaging.system": "kafka", "messaging.operation": "process"})
        attrs: dict[str, Any] = {"job_id": self.job_id, "stage": stage, "attempt": attempt,
                                 "status": "error" if failed else "done"}
        if chunk is not None:
            attrs["chunk_index"] = chunk
        return self.span(f"stage.{stage}", process, at_ms + 1, dur_ms, **attrs)


def _job_trace() -> Trace:
    """submit -> ingest -> chunking -> 2 chunks (chunk 1's synthesis fails once) -> merging -> qc."""
    t = Trace(JOB)
    root = t.span("job", None, 0, 5, service="polydub-submit", job_id=JOB, target_lang="ko")
    c = t.send("media.submitted", root, 1, service="polydub-submit")
    ingest = t.work("media.submitted", c, 20, "ingest", 100)          # queued 20 - 1.05
    c = t.send("job.accepted", ingest, 110)
    chunking = t.work("job.accepted", c, 130, "chunking", 400)
    for chunk in (0, 1):
        c = t.send("chunk.planned", chunking, 520 + chunk)
        if chunk == 1:
            failed = t.work("chunk.planned", c, 600, "synthesis", 50, chunk=1, failed=True)
            retry = t.send("dub.retry", failed, 652)
            relay = t.span("dub.retry process", retry, 660, 1000,  # sleeps out the backoff
                           **{"messaging.system": "kafka", "messaging.operation": "process"})
            c = t.send("chunk.planned", relay, 1650)  # the relay republishes when due
            synth = t.work("chunk.planned", c, 1750, "synthesis", 300, chunk=1, attempt=1)
        else:
            synth = t.work("chunk.planned", c, 540, "synthesis", 300, chunk=0)
        c = t.send("chunk.synthesized", synth, 2100)
        conv = t.work("chunk.synthesized", c, 2120, "conversion", 1000, chunk=chunk)
        c = t.send("chunk.converted", conv, 3200)
        lip = t.work("chunk.converted", c, 3220, "lipsync", 2000, chunk=chunk)
        c = t.send("chunk.rendered", lip, 5300 + chunk * 10)
        merge = t.work("chunk.rendered", c, 5400 + chunk * 100, "merging", 10 if chunk == 0 else 800, chunk=chunk)
    c = t.send("job.merged", merge, 6400)
    t.work("job.merged", c, 6450, "qc", 40)
    t.span("stage.lipsync", "deadbeefdeadbeef", 3300, 5, chunk_index=9, job_id=JOB, stage="lipsync")
    return t


@pytest.fixture
def span_file(tmp_path: Path) -> Path:
    job = _job_trace()
    other = Trace(OTHER)
    root = other.span("job", None, 0, 5, job_id=OTHER)
    other.work("media.submitted", other.send("media.submitted", root, 1), 10, "ingest", 99_000)
    lines = [orjson.dumps(r) for r in job.records[:10] + other.records + job.records[10:]]
    torn = orjson.dumps(job.records[3])[:-30]  # a process died mid-write
    path = tmp_path / "traces.jsonl"
    path.write_bytes(b"\n".join(lines[:5] + [torn] + lines[5:]) + b"\n\n")
    return path


def test_loads_only_the_jobs_trace_and_counts_torn_lines(span_file: Path) -> None:
    spans, unreadable = load_job_spans(span_file, JOB)
    assert spans and {s.trace_id for s in spans} == {_job_trace_id(span_file)}
    assert all(s.attributes.get("job_id") != OTHER for s in spans)
    assert unreadable == 1
    all_spans, bad = parse_span_lines(span_file.read_bytes().splitlines())
    assert bad == 1
    assert select_job_spans(all_spans, JOB) == spans


def _job_trace_id(path: Path) -> str:
    for line in path.read_bytes().splitlines():
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if record["attributes"].get("job_id") == JOB:
            return str(record["trace_id"])
    raise AssertionError("no span of the job")


def test_folded_tree_nests_stages_by_causality_and_measures_queue_time(span_file: Path) -> None:
    spans, _ = load_job_spans(span_file, JOB)
    roots = build_tree(spans)
    assert [r.span.name for r in roots] == ["job", "stage.lipsync"]
    job, orphan = roots
    assert orphan.orphan and not job.orphan
    assert not any(node.span.is_messaging for _, node in walk(roots))
    (ingest,) = job.children
    assert ingest.span.name == "stage.ingest"
    # The event waited from the end of the producer's create span to the handler's start.
    assert ingest.queued_ns == pytest.approx((21 - 1.05) * MS, abs=1)
    assert not ingest.retried
    (chunking,) = ingest.children
    names = [(n.span.name, n.span.attributes.get("chunk_index")) for n in chunking.children]
    assert names == [("stage.synthesis", 0), ("stage.synthesis", 1)]
    # The retry hangs under the attempt that failed; its wait includes the relay's backoff.
    (retried,) = chunking.children[1].children
    assert retried.span.attributes["attempt"] == 1 and retried.retried
    assert retried.queued_ns == pytest.approx((1751 - 652.05) * MS, abs=1)
    depth = {(n.span.name, n.span.attributes.get("chunk_index"), n.span.attributes.get("attempt")): d
             for d, n in walk(roots)}
    # job > ingest > chunking > synth > conv > lipsync > merging; chunk 1 runs one deeper (its
    # retry), and qc follows chunk 1's merge, the last one.
    assert depth[("stage.merging", 0, 0)] == 6
    assert depth[("stage.conversion", 1, 0)] == depth[("stage.conversion", 0, 0)] + 1
    assert depth[("stage.qc", None, 0)] == depth[("stage.merging", 1, 0)] + 1 == 8


def test_messaging_spans_are_kept_when_asked(span_file: Path) -> None:
    spans, _ = load_job_spans(span_file, JOB)
    shown = [node.span for _, node in walk(build_tree(spans, show_messaging=True))]
    assert len(shown) == len(spans)
    (ingest,) = [s for s in shown if s.name == "stage.ingest"]
    parent = next(s for s in shown if s.span_id == ingest.parent_id)
    assert parent.name == "media.submitted process"


def test_stage_totals_sum_chunks_and_attempts_in_pipeline_order(span_file: Path) -> None:
    spans, _ = load_job_spans(span_file, JOB)
    totals = {t.stage: t for t in stage_totals(build_tree(spans))}
    assert list(totals) == ["ingest", "chunking", "synthesis", "conversion", "lipsync", "merging", "qc"]
    synthesis = totals["synthesis"]
    assert (synthesis.spans, synthesis.failed) == (3, 1)
    assert synthesis.busy_ns == (300 + 50 + 300) * MS
    assert synthesis.longest_ns == 300 * MS
    assert totals["lipsync"].spans == 3  # two chunks and the orphan
    assert totals["merging"].longest_ns == 800 * MS


def test_rendered_view_indents_by_parent_and_ends_with_totals(span_file: Path) -> None:
    spans, unreadable = load_job_spans(span_file, JOB)
    text = render_job(JOB, spans, unreadable=unreadable)
    lines = text.splitlines()
    assert lines[0] == f"job {JOB}: 1 trace(s), {len(spans)} spans"

    def indent_of(name: str) -> int:
        line = next(line for line in lines if line.rstrip().endswith(name) or f" {name} " in line)
        return len(line.split("|")[-1]) - len(line.split("|")[-1].lstrip())

    assert indent_of("stage.ingest") < indent_of("stage.chunking") < indent_of("stage.qc")
    assert "ERROR" in next(line for line in lines if "stage.synthesis" in line and "chunk=1" in line
                           and "attempt" not in line)
    assert "retry backoff included" in next(line for line in lines if "attempt=1" in line)
    assert "[polydub-submit]" in text and "(parent span missing)" in text
    assert "create" not in text and "(queued " in text
    table = text.split("where the time went", 1)[1]
    assert [line.split()[0] for line in table.splitlines()[2:9]] == [
        "ingest", "chunking", "synthesis", "conversion", "lipsync", "merging", "qc"]
    assert "wall time from the first span to the last: 6.49s" in table
    assert "1 unreadable line(s)" in text


def test_a_parent_cycle_does_not_hang() -> None:
    a = SpanRecord("t", "a", "b", "x process", 0, 1, attributes={"messaging.system": "kafka"})
    b = SpanRecord("t", "b", "a", "x create", 0, 1, attributes={"messaging.system": "kafka"})
    c = SpanRecord("t", "c", "a", "stage.qc", 0, 1, attributes={"stage": "qc"})
    roots = build_tree([a, b, c])
    assert [r.span.span_id for r in roots] == ["c"]


@pytest.mark.parametrize(("ns", "text"), [
    (400_000, "0.4ms"), (62 * MS, "62ms"), (2_150 * MS, "2.15s"), (65 * 1000 * MS, "1m05s"),
])
def test_durations_read_at_a_glance(ns: int, text: str) -> None:
    assert format_duration(ns) == text
