"""Security and size bounds of a submission: where a worker may read from, how big a job may be.

The unit tests pin the rules of :mod:`handlers.runtime.admission` on both stores. The
integration tests send the hostile ``media.submitted`` events of issue 13 to the real
ingest stage over the real SeaweedFS (the distributed mode): each is refused with
``dub.failed`` INPUT_REJECTED, a reason and a fix, and nothing of it reaches the store;
an allowed HTTP host is fetched, a redirect off it is not; an ``output_prefix`` inside the
bucket receives the deliverables.
"""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handlers.ingest import SUBMISSION_RECORD
from handlers.runtime import keys
from handlers.runtime.admission import (
    check_media_limits,
    check_segment_limits,
    check_source_uri,
    file_sources_allowed,
    output_prefix_key,
)
from handlers.runtime.bus import (
    DEAD_LETTER_KEEP_BYTES,
    KafkaPublisher,
    MemoryPublisher,
    Outcome,
    Source,
    process_event,
)
from handlers.runtime.inference import LocalInferenceClient
from handlers.runtime.jobstate import JobState
from handlers.runtime.media import probe
from handlers.runtime.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore
from handlers.runtime.settings import Settings
from handlers.runtime.subtitles import Segment
from handlers.sample import SampleFiles, make_sample
from infra.broker import BrokerServer
from infra.seaweed import SeaweedServer
from infra.topics import ensure_topics
from schemas.errors import InputError
from schemas.events import (
    ChunkPlanned,
    DeadLetter,
    DubCompleted,
    DubFailed,
    JobAccepted,
    MediaSubmitted,
    SubtitleSegment,
    SubtitlesRef,
)
from schemas.serialization import encode_event
from schemas.status import StatusCode
from schemas.topics import DEAD_LETTER, MEDIA_SUBMITTED, topic_name
from tests.fixtures.servers import TEST_BUCKET, seaweed_store
from tests.test_delivery import _settings as _delivery_settings
from tests.test_delivery import reading, running
from tests.test_stages import TTS_ONLY, Pipeline, _pipeline

BUCKET = "polydub"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _s3_store() -> S3ObjectStore:
    """An S3 store object: the rules need no server, only its root URI."""
    return S3ObjectStore(BUCKET, endpoint_url="http://127.0.0.1:1", access_key="k", secret_key="s")


def _refusal(uri: str, store: ObjectStore, settings: Settings) -> InputError:
    with pytest.raises(InputError) as caught:
        check_source_uri(uri, store, settings)
    assert caught.value.fix, caught.value
    return caught.value


# --- the rules ------------------------------------------------------------------------


def test_workers_on_s3_read_only_their_bucket() -> None:
    store, settings = _s3_store(), Settings(object_store="s3")
    check_source_uri(f"s3://{BUCKET}/uploads/job/video.mp4", store, settings)  # their own bucket: read
    assert "local file" in _refusal("file:///etc/shadow", store, settings).reason
    assert "local file" in _refusal("file:///tmp/../etc/passwd", store, settings).reason
    assert "outside" in _refusal("s3://other/video.mp4", store, settings).reason
    assert "'..'" in _refusal(f"s3://{BUCKET}/uploads/../jobs/x/manifest.json", store, settings).reason
    assert "does not fetch" in _refusal("http://127.0.0.1:8888/buckets/polydub/x.mp4", store, settings).reason
    assert "does not fetch" in _refusal("http://169.254.169.254/latest/meta-data/", store, settings).reason


def test_the_host_allow_list_names_hosts_or_host_and_port() -> None:
    store = _s3_store()
    settings = Settings(object_store="s3", source_hosts="media.example.com, cdn.example.com:8443")
    check_source_uri("https://media.example.com/a.mp4", store, settings)
    check_source_uri("https://cdn.example.com:8443/a.mp4", store, settings)
    _refusal("https://cdn.example.com/a.mp4", store, settings)  # port 443 is not the one named
    _refusal("https://media.example.com.evil.test/a.mp4", store, settings)
    reason = _refusal("https://user:hunter2@media.example.com/a.mp4", store, settings).reason
    assert "credentials" in reason and "hunter2" not in reason


def test_local_files_are_read_by_the_one_machine_store_unless_refused(tmp_path: Path) -> None:
    local = LocalObjectStore(tmp_path)
    assert file_sources_allowed(Settings(object_store="local"))
    assert not file_sources_allowed(Settings(object_store="s3"))
    assert not file_sources_allowed(Settings(object_store="local", allow_file_sources=False))
    check_source_uri((tmp_path.parent / "video.mp4").as_uri(), local, Settings(object_store="local"))
    _refusal("file:///etc/shadow", local, Settings(object_store="local", allow_file_sources=False))


def test_an_output_prefix_must_be_a_folder_of_the_bucket_outside_the_jobs() -> None:
    store = _s3_store()
    assert output_prefix_key(f"s3://{BUCKET}/deliveries/2024", store) == "deliveries/2024/"
    assert output_prefix_key(f"s3://{BUCKET}/deliveries/", store) == "deliveries/"
    for hostile in ("s3://other-bucket/out/", f"s3://{BUCKET}/jobs/victim/", f"s3://{BUCKET}/a/../jobs/",
                    "file:///tmp/out/", "https://example.com/out/", f"s3://{BUCKET}/"):
        with pytest.raises(InputError) as caught:
            output_prefix_key(hostile, store)
        assert caught.value.fix and "output_prefix" in caught.value.reason, hostile


# --- sizes ------------------------------------------------------------------------------


def _segments(n: int, text: str) -> list[Segment]:
    return [Segment(index=i + 1, start_s=float(i), end_s=i + 0.5, text=text, line=i + 1) for i in range(n)]


def test_segment_count_and_text_are_bounded_naming_the_setting() -> None:
    settings = Settings(max_segments=3, max_segment_chars=10, max_job_chars=25)
    check_segment_limits(_segments(3, "x" * 8), settings)
    cases = {
        "POLYDUB_MAX_SEGMENTS": _segments(4, "x"),
        "POLYDUB_MAX_SEGMENT_CHARS": _segments(1, "x" * 11),
        "POLYDUB_MAX_JOB_CHARS": _segments(3, "x" * 9),
    }
    for setting, segments in cases.items():
        with pytest.raises(InputError) as caught:
            check_segment_limits(segments, settings)
        assert setting in caught.value.reason and setting in (caught.value.fix or ""), caught.value


@pytest.mark.slow
def test_duration_and_resolution_are_bounded_naming_the_setting(tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "sample.mp4", target_lang="en", seconds=3)
    media = probe(sample.video)
    check_media_limits(media, Settings(), "s3://b/v.mp4")
    for setting, settings in (("POLYDUB_MAX_DURATION_S", Settings(max_duration_s=1.0)),
                              ("POLYDUB_MAX_VIDEO_SIDE", Settings(max_video_side=max(media.width or 0, media.height or 0) - 1))):
        with pytest.raises(InputError) as caught:
            check_media_limits(media, settings, "s3://b/v.mp4")
        assert setting in caught.value.reason and "s3://b/v.mp4" in caught.value.reason


# --- the hostile submissions, on the real SeaweedFS -------------------------------------


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return make_sample(tmp_path_factory.mktemp("admission") / "sample.mp4", target_lang="en", seconds=3)


def _s3_pipeline(seaweed: SeaweedServer, root: Path, **overrides: Any) -> Pipeline:
    values: dict[str, Any] = {
        "object_store": "s3", "s3_endpoint": seaweed.endpoint, "s3_bucket": TEST_BUCKET,
        "s3_access_key": seaweed.access_key, "s3_secret_key": seaweed.secret_key, "s3_region": seaweed.region,
        "trace_file": root / "traces.jsonl", "retry_max_attempts": 2, "retry_backoff_s": 0.0,
        "retry_backoff_max_s": 0.0, "chunk_seconds": 4.0,
    }
    values.update(overrides)
    return Pipeline(Settings(**values), seaweed_store(seaweed), LocalInferenceClient())  # type: ignore[arg-type]


def _upload(store: ObjectStore, sample: SampleFiles) -> tuple[str, str]:
    prefix = f"uploads/admission-{uuid.uuid4().hex[:8]}/"
    store.put_file(prefix + "video.mp4", sample.video)
    store.put_file(prefix + "subtitles.srt", sample.subtitles)
    return store.uri(prefix + "video.mp4"), store.uri(prefix + "subtitles.srt")


def _submitted(video: str, subtitles: str | SubtitlesRef, **fields: Any) -> MediaSubmitted:
    ref = subtitles if isinstance(subtitles, SubtitlesRef) else SubtitlesRef(uri=subtitles, format="srt")
    values: dict[str, Any] = {
        "job_id": f"admission-{uuid.uuid4().hex[:10]}", "source_uri": video, "target_lang": "en",
        "subtitles": ref, "engines": TTS_ONLY,
    }
    values.update(fields)
    return MediaSubmitted(**values)


@pytest.fixture
def redirector() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server whose every path redirects to the URL in its query; it logs each path."""
    seen: list[str] = []

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            seen.append(self.path)
            self.send_response(302)
            self.send_header("Location", self.path.split("?to=", 1)[-1])
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
@pytest.mark.slow
async def test_every_hostile_submission_is_rejected_with_a_reason_and_a_fix(
        seaweed: SeaweedServer, sample: SampleFiles, tmp_path: Path, redirector: tuple[str, list[str]]) -> None:
    redirect_host, seen = redirector
    pipeline = _s3_pipeline(seaweed, tmp_path, source_hosts=redirect_host)
    video, subtitles = _upload(pipeline.store, sample)
    filer = f"http://127.0.0.1:{seaweed.ports['filer']}"
    root = pipeline.store.root_uri
    hostile: dict[str, dict[str, Any]] = {
        "local secret": {"source_uri": "file:///etc/shadow"},
        "local traversal": {"source_uri": "file:///tmp/../etc/passwd"},
        "filer port (SSRF)": {"source_uri": f"{filer}/buckets/{TEST_BUCKET}/{video.removeprefix(root)}"},
        "metadata service": {"source_uri": "http://169.254.169.254/latest/meta-data/"},
        "redirect off the allowed host": {"source_uri": f"http://{redirect_host}/v.mp4?to={filer}/"},
        "credentials in the URI": {"source_uri": f"http://user:pw@{redirect_host}/v.mp4"},
        "another bucket": {"source_uri": "s3://another-bucket/video.mp4"},
        "key traversal": {"source_uri": f"{root}uploads/../jobs/victim/source/video"},
        "local subtitles": {"subtitles": SubtitlesRef(uri="file:///etc/passwd", format="srt")},
        "local speaker reference": {"speaker_references": {"default": "file:///etc/shadow"}},
        "output outside the bucket": {"output_prefix": "s3://another-bucket/out/"},
        "output into the jobs folder": {"output_prefix": f"{root}jobs/victim/output/"},
    }
    for name, fields in hostile.items():
        submitted = _submitted(video, fields.pop("subtitles", subtitles), **fields)
        outcomes = await pipeline.deliver(submitted)
        assert outcomes == [Outcome.FAILED], name
        failed = [e for e in pipeline.publisher.of_type(DubFailed) if e.job_id == submitted.job_id]
        assert len(failed) == 1, name
        assert failed[0].status is StatusCode.INPUT_REJECTED and failed[0].stage == "ingest", name
        assert failed[0].reason and failed[0].fix, name
        assert not any(e.job_id == submitted.job_id for e in pipeline.publisher.of_type(JobAccepted)), name
        # Nothing of the hostile job but its failure marker reached the store.
        left = pipeline.store.list(keys.job_prefix(submitted.job_id))
        assert all("/state/" in k or k.endswith(SUBMISSION_RECORD) for k in left), (name, left)
    assert seen == ["/v.mp4?to=" + filer + "/"]  # the allowed host was asked once; its redirect not followed


@pytest.mark.integration
@pytest.mark.slow
async def test_an_allowed_host_is_fetched_and_an_output_prefix_in_the_bucket_receives_the_dub(
        seaweed: SeaweedServer, sample: SampleFiles, tmp_path: Path) -> None:
    directory = tmp_path / "www"
    directory.mkdir()
    (directory / "video.mp4").write_bytes(sample.video.read_bytes())
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(directory), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        pipeline = _s3_pipeline(seaweed, tmp_path, source_hosts=host)
        _, subtitles = _upload(pipeline.store, sample)
        prefix = f"{pipeline.store.root_uri}deliveries/{uuid.uuid4().hex[:8]}/"
        submitted = _submitted(f"http://{host}/video.mp4", subtitles, output_prefix=prefix)
        await pipeline.deliver(submitted)
    finally:
        server.shutdown()
        server.server_close()
    (completed,) = pipeline.publisher.of_type(DubCompleted)
    for uri in (completed.output_video_uri, completed.dub_audio_uri, completed.subtitles_uri):
        assert uri.startswith(prefix), uri
        assert pipeline.store.exists(pipeline.store.key_of(uri) or ""), uri


@pytest.mark.integration
@pytest.mark.slow
async def test_oversized_inline_subtitles_are_refused_before_any_fetch(
        seaweed: SeaweedServer, tmp_path: Path) -> None:
    pipeline = _s3_pipeline(seaweed, tmp_path, max_job_chars=1000)
    # Schema-valid, and it names a video that does not exist: the size is refused first.
    segments = [SubtitleSegment(start_s=float(i), end_s=i + 0.9, text="x" * 400) for i in range(5)]
    submitted = _submitted(f"{pipeline.store.root_uri}uploads/none/video.mp4", SubtitlesRef(segments=segments))
    assert await pipeline.deliver(submitted) == [Outcome.FAILED]
    (failed,) = pipeline.publisher.of_type(DubFailed)
    assert failed.status is StatusCode.INPUT_REJECTED and "POLYDUB_MAX_JOB_CHARS" in failed.reason


# --- oversized events -------------------------------------------------------------------


class _Recorder:
    """A stage that only records what reaches it."""

    name = "ingest"
    consumes = MediaSubmitted

    def __init__(self) -> None:
        self.seen: list[MediaSubmitted] = []

    async def handle(self, event: MediaSubmitted, attempt: int) -> None:
        self.seen.append(event)


async def test_an_oversized_event_goes_to_the_dead_letters_unread_with_the_reason() -> None:
    settings = Settings(max_event_bytes=4096)
    # Schema-valid: 5 segments of text, the 5 MB submission of issue 13 in small.
    event = _submitted("s3://polydub/uploads/v.mp4", SubtitlesRef(segments=[
        SubtitleSegment(start_s=float(i), end_s=i + 0.9, text="x" * 1000) for i in range(5)]))
    raw = encode_event(event)
    assert len(raw) > settings.max_event_bytes
    stage, publisher = _Recorder(), MemoryPublisher()
    source = Source("media.submitted", 0, 7, key=event.job_id, headers={"traceparent": TRACEPARENT})
    outcome = await process_event(stage, raw, 0, source, publisher, settings)
    assert outcome is Outcome.DEAD_LETTERED and not stage.seen
    (letter,) = publisher.of_type(DeadLetter)
    assert "POLYDUB_MAX_EVENT_BYTES" in letter.error and str(len(raw)) in letter.error
    # Cut short it does not parse, but its original key and headers name the job and its trace.
    assert letter.offset == 7 and letter.original_key == event.job_id
    assert letter.original_headers == {"traceparent": TRACEPARENT}
    assert len(letter.raw_payload) <= DEAD_LETTER_KEEP_BYTES
    # At the bound it is read as usual.
    ok = await process_event(stage, raw, 0, Source("media.submitted"), MemoryPublisher(),
                             Settings(max_event_bytes=len(raw)))
    assert ok is Outcome.DONE and stage.seen == [event]


# --- the job id is the idempotency key ----------------------------------------------------


@pytest.mark.slow
async def test_one_body_per_job_id_and_one_job_per_body(sample: SampleFiles, tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path)
    ingest = pipeline.stages["media.submitted"]
    first = _submitted(sample.video.resolve().as_uri(), sample.subtitles.resolve().as_uri())
    await ingest.handle(first, 0)
    assert [e.event_type for e in pipeline.publisher.of_type(JobAccepted)] == ["job.accepted"]
    manifest = pipeline.store.get_bytes(keys.manifest_key(first.job_id))

    def published_after(n: int) -> list[Any]:
        return [event for _, event, _ in pipeline.publisher.events[n:]]

    # The same body sent again (a new event): one job, nothing redone or republished.
    n = len(pipeline.publisher.events)
    await ingest.handle(first.model_copy(update={"event_id": str(uuid.uuid4())}), 0)
    assert published_after(n) == []
    # A redelivery of the accepted event itself still republishes (at-least-once).
    await ingest.handle(first, 0)
    assert [e.event_type for e in published_after(n)] == ["job.accepted", "dub.status"]

    # A different body under the used id: refused with its own dub.failed, the job untouched.
    other = first.model_copy(update={"event_id": str(uuid.uuid4()), "target_lang": "ja"})
    for state in ("in flight", "completed"):
        if state == "completed":
            JobState(pipeline.store, first.job_id).mark("completed")
        n = len(pipeline.publisher.events)
        await ingest.handle(other, 0)
        await ingest.handle(other, 0)  # a redelivery of the refused event: the same refusal
        refusals = published_after(n)
        assert [type(e) for e in refusals] == [DubFailed, DubFailed], state
        assert refusals[0].event_id == refusals[1].event_id
        assert refusals[0].status is StatusCode.INPUT_REJECTED and refusals[0].stage == "ingest"
        assert "already used" in refusals[0].reason and "target_lang" in refusals[0].reason
        assert "new job id" in (refusals[0].fix or "")
        assert not JobState(pipeline.store, first.job_id).is_marked("failed")
        assert pipeline.store.get_bytes(keys.manifest_key(first.job_id)) == manifest


# --- the contract on the real broker -------------------------------------------------------


async def test_a_chunks_dub_failed_is_keyed_by_its_job() -> None:
    class Recording:
        sent: list[dict[str, Any]] = []

        async def publish(self, payload: bytes, topic: str, **kwargs: Any) -> None:
            self.sent.append({"topic": topic, **kwargs})

    publisher = KafkaPublisher(Recording(), Settings())
    failed = DubFailed(job_id="job-k", status=StatusCode.INFERENCE_FAILED, stage="synthesis", reason="x",
                       chunk_index=3)
    await publisher.publish(failed)
    await publisher.publish(ChunkPlanned(job_id="job-k", chunk_index=1, n_chunks=2, manifest_uri="s3://b/m.json",
                                         start_s=0.0, end_s=1.0, segment_indices=[0]))
    assert [s["key"] for s in Recording.sent] == [b"job-k", b"job-k/1"]


@pytest.mark.integration
@pytest.mark.slow
async def test_an_oversized_record_is_dead_lettered_with_its_key_and_headers(
        broker: BrokerServer, tmp_path: Path) -> None:
    from aiokafka import AIOKafkaProducer

    settings = _delivery_settings(broker, tmp_path, max_event_bytes=2048)
    await ensure_topics(settings.bootstrap_servers, settings.topic_prefix)
    raw = encode_event(_submitted("s3://polydub/uploads/v.mp4", SubtitlesRef(segments=[
        SubtitleSegment(start_s=float(i), end_s=i + 0.9, text="y" * 500) for i in range(8)])))
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    async with reading(settings, [DEAD_LETTER]) as reader, running(settings, ["ingest"]):
        try:
            await producer.send_and_wait(topic_name(MEDIA_SUBMITTED, settings.topic_prefix), raw,
                                         key=b"job-big", headers=[("traceparent", TRACEPARENT.encode())])
        finally:
            await producer.stop()
        await reader.until(lambda events: len(events) >= 1, timeout_s=30)
    (record,) = reader.records
    (letter,) = reader.of(DeadLetter)
    # The record keeps the key; its traceparent continues the original's trace (a span of the consumer),
    # and the payload keeps the original headers as they were.
    trace_id = TRACEPARENT.split("-")[1]
    assert record.key == b"job-big" and dict(record.headers)["traceparent"].decode().split("-")[1] == trace_id
    assert letter.original_key == "job-big" and letter.original_headers["traceparent"] == TRACEPARENT
    assert "POLYDUB_MAX_EVENT_BYTES" in letter.error
