"""Faults injected for real on loopback: a server of the stack stops mid-run and comes back (or not).

Each test runs every stage and the retry relay over the session's Tansu
broker (as ``tests/test_delivery.py`` does), takes one real server down while
jobs are in flight, and asserts each job's one outcome read from the topics:

* Triton (the model the jobs need, served by a real ``tritonserver``) stopped
  for a few seconds and started again: the inference client's circuit breaker
  holds the calls, the jobs complete, each exactly once; kept down past a short
  retry budget: each job fails once with ``INFERENCE_FAILED`` naming Triton.
* SeaweedFS (the jobs' object store) stopped for a few seconds mid-job and
  started again: stages back off on the storage errors within the retry
  budget, and each job has exactly one outcome, ``dub.completed``, with no
  ``dub.failed`` before or after it.

Outages last seconds, not minutes: the budgets and breaker timings are
settings, shrunk here to fit.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from handlers.app import ALL_STAGES, RETRY_RELAY
from handlers.runtime.inference import TritonInferenceClient, open_inference
from handlers.runtime.settings import Settings
from handlers.runtime.stagekit import FAILED
from handlers.sample import SampleFiles, make_sample
from infra.broker import BrokerServer
from infra.seaweed import SeaweedServer
from infra.topics import ensure_topics
from infra.triton import TritonServer
from schemas.events import DubCompleted, DubFailed, DubStatus, MediaSubmitted, RetryScheduled, SubtitlesRef
from schemas.status import StatusCode
from schemas.topics import DUB_COMPLETED, DUB_FAILED, DUB_STATUS, RETRY
from serving import MODEL_REPOSITORY
from tests.fixtures.faults import RoutedInference
from tests.fixtures.servers import TritonFactory, seaweed_store
from tests.test_delivery import TTS_ONLY, TopicReader, _settings, _submission, reading, running

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The model the jobs send to Triton (everything else runs in process).
TTS_MODEL = "tts_espeak"
N_JOBS = 2
#: How long Triton stays down once the jobs have hit the outage.
OUTAGE_S = 8.0
JOB_TIMEOUT_S = 120.0
#: Breaker timings for seconds-long outages (production waits minutes).
FAST_BREAKER: dict[str, Any] = {
    "retry_max_attempts": 0,
    "retry_backoff_s": 0.2,
    "retry_backoff_max_s": 1.0,
    "inference_breaker_failures": 2,
    "inference_breaker_probe_s": 0.5,
    "inference_breaker_wait_s": 5.0,
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return make_sample(tmp_path_factory.mktemp("sample") / "sample.mp4", target_lang="ko", seconds=6)


@pytest.fixture
def tts_triton(triton_server: TritonFactory) -> TritonServer:
    """A Triton serving only the TTS model the jobs need (it restarts in seconds)."""
    return triton_server(MODEL_REPOSITORY, model_control_mode="explicit", load_models=(TTS_MODEL,),
                         auto_complete_config=False)


def _outcomes(reader: TopicReader, jobs: list[MediaSubmitted]) -> dict[str, tuple[int, int]]:
    """Per job: (``dub.completed`` count, ``dub.failed`` count)."""
    return {j.job_id: (len(reader.of(DubCompleted, j.job_id)), len(reader.of(DubFailed, j.job_id))) for j in jobs}


def _all_ended(jobs: list[MediaSubmitted]) -> Any:
    ids = {j.job_id for j in jobs}
    return lambda events: ids <= {e.job_id for e in events if isinstance(e, DubCompleted | DubFailed)}


async def _jobs_through_an_outage(settings: Settings, triton: TritonServer, sample: SampleFiles,
                                  outage_s: float | None) -> tuple[TopicReader, list[MediaSubmitted], Any]:
    """Stop Triton, submit the jobs, wait until they hit it; restart after ``outage_s`` (``None``: never)."""
    await ensure_topics(settings.bootstrap_servers, settings.topic_prefix)
    remote = open_inference(settings)
    assert isinstance(remote, TritonInferenceClient)
    inference = RoutedInference({TTS_MODEL}, remote)
    jobs = [_submission(sample, TTS_ONLY) for _ in range(N_JOBS)]
    await asyncio.to_thread(triton.stop)
    async with reading(settings, [DUB_COMPLETED, DUB_FAILED, RETRY]) as reader, \
            running(settings, ALL_STAGES + (RETRY_RELAY,), inference) as deps:
        for job in jobs:
            await deps.publisher.publish(job)
        # In flight and failing on Triton: the synthesis of a job was retried.
        await reader.until(lambda events: any(isinstance(e, RetryScheduled) for e in events), timeout_s=60)
        if outage_s is not None:
            await asyncio.sleep(outage_s)
            await asyncio.to_thread(triton.start)
        await reader.until(_all_ended(jobs), timeout_s=JOB_TIMEOUT_S)
        await reader.settle()
    return reader, jobs, remote


async def test_triton_restart_mid_run_is_waited_out_and_every_job_completes_once(
    broker: BrokerServer, tts_triton: TritonServer, sample: SampleFiles, tmp_path: Path
) -> None:
    settings = _settings(broker, tmp_path, inference="triton", triton_url=tts_triton.grpc_url,
                         retry_budget_s=60.0, **FAST_BREAKER)
    started = time.monotonic()
    reader, jobs, remote = await _jobs_through_an_outage(settings, tts_triton, sample, OUTAGE_S)
    elapsed = time.monotonic() - started

    assert _outcomes(reader, jobs) == {j.job_id: (1, 0) for j in jobs}
    assert elapsed > OUTAGE_S  # the jobs did wait for Triton
    # The breaker held the calls: a few attempts per chunk, not one every backoff for the whole outage.
    retries = reader.of(RetryScheduled)
    assert all(r.attempt <= FAST_BREAKER["inference_breaker_failures"] + OUTAGE_S / 5 for r in retries), \
        [r.attempt for r in retries]
    assert remote.breaker.openings >= 1 and not remote.breaker.is_open


async def test_triton_down_past_the_budget_fails_each_job_once_naming_triton(
    broker: BrokerServer, tts_triton: TritonServer, sample: SampleFiles, tmp_path: Path
) -> None:
    budget_s = 4.0
    settings = _settings(broker, tmp_path, inference="triton", triton_url=tts_triton.grpc_url,
                         retry_budget_s=budget_s, **FAST_BREAKER)
    started = time.monotonic()
    reader, jobs, _ = await _jobs_through_an_outage(settings, tts_triton, sample, None)
    elapsed = time.monotonic() - started

    assert _outcomes(reader, jobs) == {j.job_id: (0, 1) for j in jobs}
    for failed in reader.of(DubFailed):
        assert failed.status is StatusCode.INFERENCE_FAILED, failed
        assert failed.stage == "synthesis"
        assert "Triton at" in failed.reason and TTS_MODEL in failed.reason, failed.reason
    assert elapsed < JOB_TIMEOUT_S / 2  # failed within the budget's reach, not hung


# --- the object store ---------------------------------------------------------------------------

#: Bucket of the test's own SeaweedFS (stopped mid-run, so not the session's shared one).
FAULT_BUCKET = "polydub-faults"


@pytest.fixture
def own_seaweed(tmp_path: Path) -> Any:
    server = SeaweedServer(tmp_path / "seaweed", buckets=(FAULT_BUCKET,))
    try:
        yield server.start()
    finally:
        server.stop()


async def test_object_store_outage_mid_job_ends_each_job_with_one_completion_and_no_failure(
    broker: BrokerServer, own_seaweed: SeaweedServer, sample: SampleFiles, tmp_path: Path
) -> None:
    weed = own_seaweed
    settings = _settings(broker, tmp_path, object_store="s3", s3_endpoint=weed.endpoint, s3_bucket=FAULT_BUCKET,
                         s3_region=weed.region, s3_access_key=weed.access_key, s3_secret_key=weed.secret_key,
                         retry_budget_s=60.0, **FAST_BREAKER)
    store = seaweed_store(weed)
    store.put_file("uploads/sample.mp4", sample.video)
    store.put_file("uploads/sample.srt", sample.subtitles)
    jobs = [_submission(sample, TTS_ONLY).model_copy(update={
        "source_uri": store.uri("uploads/sample.mp4"),
        "subtitles": SubtitlesRef(uri=store.uri("uploads/sample.srt"), format="srt")}) for _ in range(N_JOBS)]
    await ensure_topics(settings.bootstrap_servers, settings.topic_prefix)
    started = time.monotonic()
    async with reading(settings, [DUB_COMPLETED, DUB_FAILED, RETRY, DUB_STATUS]) as reader, \
            running(settings, ALL_STAGES + (RETRY_RELAY,)) as deps:
        for job in jobs:
            await deps.publisher.publish(job)
        # Mid-job: every job accepted (ingest wrote its media), then the store goes away.
        ids = {j.job_id for j in jobs}
        await reader.until(lambda events: ids <= {e.job_id for e in events if isinstance(e, DubStatus)},
                           timeout_s=60)
        await asyncio.to_thread(weed.stop)
        await asyncio.sleep(OUTAGE_S)
        await asyncio.to_thread(weed.start)
        await reader.until(_all_ended(jobs), timeout_s=JOB_TIMEOUT_S)
        await reader.settle()
    elapsed = time.monotonic() - started

    assert _outcomes(reader, jobs) == {j.job_id: (1, 0) for j in jobs}
    storage_retries = [r for r in reader.of(RetryScheduled) if "unreachable" in r.reason]
    assert storage_retries, "the outage was not felt: no storage retry"
    for job in jobs:
        assert not store.exists(f"jobs/{job.job_id}/state/{FAILED}")
    assert elapsed > OUTAGE_S
