"""``polydub worker`` and the commands around it: submit, watch, status, trace.

* The ops endpoints on their own (no broker): ``/healthz`` follows the health
  verdict, ``/metrics`` is the Prometheus exposition of polydub's registry.
* A user's session over the real Tansu broker: ``polydub worker --stages all``
  as a subprocess, ``polydub submit`` a short sample, ``polydub watch`` it to
  completion, ``status`` and ``trace`` it, read ``/healthz`` and ``/metrics``,
  then SIGTERM the worker and expect a prompt exit 0.
* Shutdown with a handler in flight: the event is not committed, and the next
  worker of the group gets it again.

Each test isolates itself by topic and consumer-group prefix on the session's
broker, and keeps its object store and span file in ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, ClassVar

import pytest

from handlers.runtime.metrics import STAGE_OUTCOMES
from handlers.runtime.settings import Settings
from handlers.worker import Health, OpsServer, serve
from infra.broker import BrokerServer
from infra.process import free_ports
from schemas.errors import InputError
from schemas.events import JobMerged
from schemas.serialization import encode_event
from schemas.topics import JOB_MERGED, topic_name

REPO = Path(__file__).resolve().parents[1]
#: Tansu holds a group's first join for half the session timeout: keep it short.
SESSION_TIMEOUT_MS = 3000
WORKER_READY_TIMEOUT_S = 90.0
JOB_TIMEOUT_S = 120.0
#: A worker with nothing in flight must be gone this soon after SIGTERM.
PROMPT_EXIT_S = 10.0
#: Nothing listens here: commands that must not need Kafka are run against it.
UNREACHABLE_KAFKA = "127.0.0.1:1"
STAGES = ("ingest", "chunking", "synthesis", "conversion", "lipsync", "merging", "qc")


# --- the ops endpoints alone -------------------------------------------------------------


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    """One request on a fresh connection; ``Connection: close`` so the server ends it (no keep-alive)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    return int(response.split(" ", 2)[1]), response.split("\r\n\r\n", 1)[1]


async def test_ops_endpoints_follow_health_and_serve_the_registry() -> None:
    verdict = Health(False, {"status": "starting"})

    async def health() -> Health:
        return verdict

    ops = await OpsServer(health, "127.0.0.1", 0).start()
    try:
        code, body = await _get(ops.port, "/healthz")
        assert (code, json.loads(body)) == (503, {"ok": False, "status": "starting"})
        verdict = Health(True, {"status": "ok"})
        code, body = await _get(ops.port, "/healthz?verbose=1")
        assert (code, json.loads(body)["ok"]) == (200, True)

        STAGE_OUTCOMES.labels("ops-test", "done").inc()
        code, body = await _get(ops.port, "/metrics")
        assert code == 200
        assert 'polydub_stage_outcomes_total{outcome="done",stage="ops-test"} 1.0' in body
        assert (await _get(ops.port, "/nope"))[0] == 404
        assert (await _get(ops.port, "/metrics", method="POST"))[0] == 405
    finally:
        await ops.close()


async def test_ops_endpoints_answer_head_report_a_failing_check_and_name_a_taken_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> Health:
        raise RuntimeError("health check exploded")

    ops = await OpsServer(broken, "127.0.0.1", 0).start()
    port = ops.port
    try:
        code, body = await _get(port, "/metrics", method="HEAD")
        assert (code, body) == (200, "")
        with caplog.at_level("ERROR", logger="handlers.worker"):
            assert (await _get(port, "/healthz"))[0] == 500
        assert any(r.exc_info and "health check exploded" in str(r.exc_info[1]) for r in caplog.records)

        with pytest.raises(InputError) as taken:
            await OpsServer(broken, "127.0.0.1", port).start()
        assert "POLYDUB_METRICS_PORT" in (taken.value.fix or "") and "--metrics-port" in (taken.value.fix or "")
    finally:
        await ops.close()
    with pytest.raises(ConnectionRefusedError):  # closed: nothing listens there any more
        await asyncio.open_connection("127.0.0.1", port)


# --- a user's session against a worker process ------------------------------------------


def _env(bootstrap_servers: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without its POLYDUB_* settings, pointed at this test's world."""
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYDUB_")}
    env.update(
        POLYDUB_BOOTSTRAP_SERVERS=bootstrap_servers,
        POLYDUB_TOPIC_PREFIX=f"t{tag}.",
        POLYDUB_CONSUMER_GROUP_PREFIX=f"g{tag}",
        POLYDUB_OBJECT_STORE="local",
        POLYDUB_LOCAL_STORE_DIR=str(tmp_path / "store"),
        POLYDUB_INFERENCE="local",
        POLYDUB_TRACE_FILE=str(tmp_path / "spans.jsonl"),
        POLYDUB_CONSUMER_SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_MS),
        POLYDUB_LOG_FORMAT="json",
        **extra,
    )
    return env


def _polydub(env: dict[str, str], *args: str, timeout: float = JOB_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "handlers.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_healthy(worker: subprocess.Popen[bytes], port: int, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert worker.poll() is None, f"worker exited {worker.returncode}:\n{log.read_text()[-3000:]}"
        try:
            code, body = _http(port, "/healthz")
        except OSError:
            code, body = 0, ""
        if code == 200:
            return dict(json.loads(body))
        time.sleep(0.2)
    raise AssertionError(f"worker never became healthy:\n{log.read_text()[-3000:]}")


@pytest.mark.integration
@pytest.mark.slow
def test_worker_runs_a_submitted_job_and_stops_promptly_on_sigterm(broker: BrokerServer, tmp_path: Path) -> None:
    from handlers.sample import make_sample

    sample = make_sample(tmp_path / "sample.mp4", target_lang="ko", seconds=6)
    (port,) = free_ports(1)
    env = _env(broker.bootstrap_servers, tmp_path, POLYDUB_METRICS_PORT=str(port), POLYDUB_METRICS_HOST="127.0.0.1")
    log = tmp_path / "worker.log"
    with log.open("wb") as log_fh:
        worker = subprocess.Popen([sys.executable, "-m", "handlers.cli", "worker", "--stages", "all"],
                                  cwd=REPO, env=env, stdout=log_fh, stderr=subprocess.STDOUT)
    try:
        health = _wait_healthy(worker, port, log)
        assert health["broker"] == "connected" and len(health["subscribers"]) == len(STAGES) + 1
        assert set(health["subscribers"].values()) == {"running"}

        submitted = _polydub(env, "submit", str(sample.video), "--subs", str(sample.subtitles), "--to", "ko")
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.strip()
        assert re.fullmatch(r"job-[0-9a-f]{12}", job_id)
        assert (tmp_path / "store" / "uploads" / job_id / "video.mp4").is_file()

        watched = _polydub(env, "watch", job_id, "--timeout", str(JOB_TIMEOUT_S))
        assert watched.returncode == 0, watched.stderr + (log.read_text()[-3000:])
        lines = watched.stdout.splitlines()
        assert all(job_id in line for line in lines)
        assert "completed" in lines[-1] and "QC passed" in lines[-1]
        assert {line.split()[2] for line in lines[:-1]} >= {"ingest", "chunking", "synthesis", "qc"}

        status = _polydub(env, "status", job_id)
        assert status.returncode == 0, status.stderr
        assert "state     completed" in status.stdout
        assert re.search(r"output\s+dubbed\.mp4\s+file://", status.stdout)
        as_json = json.loads(_polydub(env, "status", job_id, "--json").stdout)
        assert as_json["state"] == "completed" and as_json["chunks_done"]["lipsync"] == as_json["chunks_total"]

        traced = _polydub(env, "trace", job_id)
        assert traced.returncode == 0, traced.stderr
        tree = traced.stdout.split("where the time went", 1)[0]
        assert "job to=ko [polydub-submit]" in tree
        totals = traced.stdout.split("where the time went", 1)[1]
        assert [line.split()[0] for line in totals.splitlines()[2:2 + len(STAGES)]] == list(STAGES)

        code, metrics = _http(port, "/metrics")
        assert code == 200
        for stage in STAGES:
            assert f'polydub_stage_outcomes_total{{outcome="done",stage="{stage}"}} 1.0' in metrics
        assert re.search(r'faststream_received_messages_total\{[^}]*handler="[^"]*media\.submitted"\} 1\.0', metrics)

        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=PROMPT_EXIT_S + 5) == 0, log.read_text()[-3000:]
        assert time.monotonic() - started < PROMPT_EXIT_S
        assert '"msg":"worker stopped"' in log.read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_submit_rejects_bad_input_before_touching_store_or_broker(tmp_path: Path) -> None:
    env = _env(UNREACHABLE_KAFKA, tmp_path)
    missing = _polydub(env, "submit", str(tmp_path / "nope.mp4"), "--subs", str(tmp_path / "nope.srt"),
                       "--to", "ko")
    assert missing.returncode == 2
    assert "nope.mp4" in missing.stderr and "fix:" in missing.stderr
    assert not (tmp_path / "store" / "uploads").exists()
    unknown = _polydub(env, "status", "job-never-submitted")
    assert unknown.returncode == 2 and "no job job-never-submitted" in unknown.stderr


# --- shutdown with a handler in flight ----------------------------------------------------


class _StuckQC:
    """A qc stage that never finishes: it is in flight when the worker is told to stop."""

    name = "qc"
    consumes = JobMerged
    entered: ClassVar[asyncio.Event]

    def __init__(self, deps: Any) -> None:
        pass

    async def handle(self, event: JobMerged, attempt: int) -> None:
        type(self).entered.set()
        await asyncio.Event().wait()


class _RecordingQC:
    """A qc stage that finishes at once and remembers what it was given."""

    name = "qc"
    consumes = JobMerged
    seen: ClassVar[list[str]]
    arrived: ClassVar[asyncio.Event]

    def __init__(self, deps: Any) -> None:
        pass

    async def handle(self, event: JobMerged, attempt: int) -> None:
        type(self).seen.append(event.event_id)
        type(self).arrived.set()


@pytest.mark.integration
@pytest.mark.slow
async def test_stopping_with_a_handler_in_flight_leaves_its_event_uncommitted(
    broker: BrokerServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    from handlers import app
    from infra.topics import ensure_topics

    env = _env(broker.bootstrap_servers, tmp_path)
    settings = Settings.model_validate({k.removeprefix("POLYDUB_").lower(): v
                                        for k, v in env.items() if k.startswith("POLYDUB_")})
    topic = topic_name(JOB_MERGED, settings.topic_prefix)
    await ensure_topics(settings.bootstrap_servers, settings.topic_prefix)
    event = JobMerged(job_id="job-inflight", output_video_uri="file:///x/dubbed.mp4",
                      dub_audio_uri="file:///x/dub.wav", mix_uri="file:///x/mix.wav",
                      subtitles_uri="file:///x/s.srt", duration_s=6.0)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        record = await producer.send_and_wait(topic, encode_event(event), key=event.job_id.encode())
    finally:
        await producer.stop()

    _StuckQC.entered = asyncio.Event()
    monkeypatch.setitem(app.STAGE_CLASSES, "qc", _StuckQC)
    stop = asyncio.Event()
    running = asyncio.create_task(serve(settings, ["qc"], stop))
    await asyncio.wait_for(_StuckQC.entered.wait(), WORKER_READY_TIMEOUT_S)
    stop.set()
    await asyncio.wait_for(running, 60)  # FastStream's graceful wait, then the handler is cancelled

    # The group's committed offset, read without joining the group (no partitions taken).
    probe = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                             group_id=f"{settings.consumer_group_prefix}.qc", enable_auto_commit=False)
    await probe.start()
    try:
        committed = await probe.committed(TopicPartition(topic, record.partition))
    finally:
        await probe.stop()
    assert committed is None or committed <= record.offset, "an unfinished event was committed"

    _RecordingQC.seen, _RecordingQC.arrived = [], asyncio.Event()
    monkeypatch.setitem(app.STAGE_CLASSES, "qc", _RecordingQC)
    stop = asyncio.Event()
    running = asyncio.create_task(serve(settings, ["qc"], stop))
    try:
        await asyncio.wait_for(_RecordingQC.arrived.wait(), WORKER_READY_TIMEOUT_S)
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
    assert _RecordingQC.seen == [event.event_id]


# --- status from the store alone ----------------------------------------------------------


def _store_with_job(tmp_path: Path, job_id: str, *, chunks: int, done: dict[str, int]) -> Any:
    """A local store holding what ingest, chunking and the chunk stages would have written."""
    from handlers.runtime.jobstate import ChunkRow, JobState
    from handlers.runtime.objectstore import LocalObjectStore

    store = LocalObjectStore(tmp_path / "store")
    state = JobState(store, job_id)
    state.write_json("manifest.json", {
        "job_id": job_id, "source_key": f"jobs/{job_id}/source/video", "target_lang": "ja",
        "media": {"duration_s": 24.0, "fps": 25.0, "width": 256, "height": 256},
        "segments": [{"index": i} for i in range(5)],
        "engines": {"tts": "espeak", "vc": "world", "lipsync": "mouthwarp"},
    })
    state.write_json("plan.json", {"chunks": [{"index": i} for i in range(chunks)]})
    for i in range(chunks):
        state.write_row(ChunkRow(chunk_index=i, stage="synthesis", timings_s={"synthesis": 0.5}))
    for stage, n in done.items():
        for i in range(n):
            state.mark_done(stage, i)
    return store


def test_status_of_a_running_job_names_its_stage_and_chunk_progress(tmp_path: Path) -> None:
    from handlers.client import read_status, render_status

    store = _store_with_job(tmp_path, "job-run", chunks=3, done={"synthesis": 3, "conversion": 1})
    status = read_status(store, "job-run")
    assert (status.state, status.stage, status.chunks_total) == ("running", "conversion", 3)
    assert status.chunks_done == {"synthesis": 3, "conversion": 1, "lipsync": 0}
    assert 0.36 < status.progress < 0.56  # synthesis done, a third of conversion
    text = render_status(status, stalled_after_s=300.0)
    assert "state     running: conversion (1/3 chunks)" in text
    assert "24.0 s  256x256 @ 25 fps  5 segment(s) -> ja" in text
    assert "waiting   for conversion since " in text and "STALLED" not in text


def test_status_says_since_when_a_job_waits_and_calls_it_stalled_past_the_bound(tmp_path: Path) -> None:
    from handlers.client import read_status, render_status

    store = _store_with_job(tmp_path, "job-stuck", chunks=2, done={"synthesis": 2})
    status = read_status(store, "job-stuck")
    newest = max(store.listing("jobs/job-stuck/").values())
    assert status.updated_at == newest
    fresh = render_status(status, stalled_after_s=300.0, now=newest + 42)
    assert "waiting   for conversion since " in fresh and "(42.00s ago)" in fresh and "STALLED" not in fresh
    stalled = render_status(status, stalled_after_s=300.0, now=newest + 425)
    assert "(7m05s ago)" in stalled
    assert "STALLED   nothing of this job changed for 7m05s" in stalled
    assert "is a worker consuming conversion?" in stalled
    # A finished job waits for nothing, however old.
    from handlers.runtime.jobstate import JobState

    JobState(store, "job-stuck").mark("completed")
    done = render_status(read_status(store, "job-stuck"), stalled_after_s=300.0, now=newest + 10_000)
    assert "waiting" not in done and "STALLED" not in done


def test_status_of_a_failed_job_shows_code_reason_and_fix(tmp_path: Path) -> None:
    from handlers.client import read_status, render_status
    from handlers.runtime.jobstate import JobState
    from schemas.errors import InferenceError

    store = _store_with_job(tmp_path, "job-bad", chunks=2, done={"synthesis": 1})
    error = InferenceError("model 'vc_rvc' kept failing", "check the Triton log")
    JobState(store, "job-bad").mark("failed", error.as_dict())  # what the bus writes
    status = read_status(store, "job-bad")
    assert status.state == "failed"
    text = render_status(status, stalled_after_s=300.0)
    assert "state     FAILED in synthesis" in text
    assert "failure   [110 inference_failed] model 'vc_rvc' kept failing" in text
    assert "fix       check the Triton log" in text


def test_status_of_a_job_waiting_for_ingest_and_of_an_unknown_job(tmp_path: Path) -> None:
    from handlers.client import read_status
    from handlers.runtime.objectstore import LocalObjectStore
    from schemas.errors import InputError

    store = LocalObjectStore(tmp_path / "store")
    store.put_bytes("uploads/job-new/video.mp4", b"...")
    assert read_status(store, "job-new").state == "submitted"
    with pytest.raises(InputError, match="no job job-gone"):
        read_status(store, "job-gone")
