"""The distributed path end to end: real broker, SeaweedFS and Triton from the stack.

Two worker processes each run every stage, so every stage has two consumers
in separate processes sharing its consumer group; several jobs are submitted
at once; each must complete with exactly one ``dub.completed``, and each job's
trace must hold a span of every stage (both workers append to one span file).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from handlers.localstack import stack_from_settings
from handlers.runtime.settings import Settings
from handlers.sample import make_sample
from infra.stack import Stack
from schemas.events import DubCompleted
from schemas.serialization import decode_event
from schemas.topics import DUB_COMPLETED, topic_name

REPO = Path(__file__).resolve().parents[1]
N_JOBS = 2
N_WORKERS = 2
JOB_TIMEOUT_S = 420
STAGE_SPANS = {f"stage.{s}" for s in ("ingest", "chunking", "synthesis", "conversion", "lipsync", "merging", "qc")}

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    run_dir = tmp_path_factory.mktemp("stack")
    started = stack_from_settings(Settings(stack_dir=run_dir)).start()
    try:
        yield started
    finally:
        started.stop()


def _polydub(env: dict[str, str], *args: str, timeout: float = JOB_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "handlers.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


async def _completions(bootstrap: str, prefix: str) -> list[DubCompleted]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic_name(DUB_COMPLETED, prefix), bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
        return [decode_event(r.value, DubCompleted) for records in batches.values() for r in records]
    finally:
        await consumer.stop()


def test_two_workers_per_stage_complete_several_jobs_with_one_trace_each(stack: Stack, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYDUB_")}
    env.update(stack.env())
    env.update(
        POLYDUB_TOPIC_PREFIX=f"e2e{tag}.",
        POLYDUB_CONSUMER_GROUP_PREFIX=f"e2e{tag}",
        POLYDUB_TRACE_FILE=str(tmp_path / "spans.jsonl"),
        POLYDUB_CONSUMER_SESSION_TIMEOUT_MS="3000",
        POLYDUB_CHUNK_SECONDS="4",
    )
    samples = [make_sample(tmp_path / f"clip{i}.mp4", target_lang=lang, seconds=6)
               for i, lang in zip(range(N_JOBS), ("ko", "zh"))]
    logs = [tmp_path / f"worker{i}.log" for i in range(N_WORKERS)]
    workers = [
        subprocess.Popen([sys.executable, "-m", "handlers.cli", "worker", "--stages", "all"], cwd=REPO,
                         env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        for log in logs
    ]
    try:
        jobs = []
        for i, sample in enumerate(samples):
            job_id = f"e2e-{tag}-{i}"
            lang = "ko" if i == 0 else "zh"
            done = _polydub(env, "submit", str(sample.video), "--subs", str(sample.subtitles), "--to", lang,
                            "--job-id", job_id, timeout=120)
            assert done.returncode == 0, done.stderr
            jobs.append(job_id)
        for job_id in jobs:
            watched = _polydub(env, "watch", job_id, "--timeout", str(JOB_TIMEOUT_S))
            tails = "\n".join(log.read_text()[-2000:] for log in logs)
            assert watched.returncode == 0, f"{watched.stdout}\n{watched.stderr}\n{tails}"

        completions = asyncio.run(_completions(env["POLYDUB_BOOTSTRAP_SERVERS"], env["POLYDUB_TOPIC_PREFIX"]))
        assert sorted(c.job_id for c in completions) == sorted(jobs), "exactly one dub.completed per job"
        assert all(c.output_video_uri.startswith("s3://") and c.qc.passed for c in completions)

        spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines() if line]
        for job_id in jobs:
            names = {s["name"] for s in spans if s["attributes"].get("job_id") == job_id}
            assert STAGE_SPANS <= names, f"{job_id} lacks spans {STAGE_SPANS - names}"
            traces = {s["trace_id"] for s in spans if s["attributes"].get("job_id") == job_id}
            assert len(traces) == 1, f"{job_id} spans {len(traces)} traces, not one"
        # Both workers took part: the load is shared through the consumer groups.
        busy = [log.read_text().count('"msg":"Processed"') for log in logs]
        assert all(n > 0 for n in busy), f"a worker handled nothing: {busy}"
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
