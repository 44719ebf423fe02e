"""The real stages, event by event, over a local store and in-process engines.

No broker: each published event is handed to the stage that consumes it,
either straight to ``handle`` (to redeliver exactly what we choose) or through
:func:`handlers.runtime.bus.process_event` and :func:`relay_retry` with a
:class:`MemoryPublisher`, as the Kafka subscribers do. What is shown:

* a 6 s sample in two chunks goes from ``media.submitted`` to one
  ``dub.completed``;
* redelivering any stage's event, plainly or after a crash between writing
  the outputs and writing the stage's marker, rewrites byte-identical objects
  and never yields a second ``dub.completed``;
* a chunk whose TTS call fails twice still completes through the retry
  path; one that always fails ends the job with ``INFERENCE_FAILED`` after the
  bounded attempts, and later events of the job are skipped;
* bad submissions fail at ingest with ``INPUT_REJECTED`` and a reason naming
  the problem.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handlers.app import STAGE_CLASSES
from handlers.runtime import keys
from handlers.runtime.bus import MemoryPublisher, Outcome, Source, process_event
from handlers.runtime.inference import Arrays, InferenceClient, ItemsClient, LocalInferenceClient
from handlers.runtime.jobstate import JobState
from handlers.runtime.objectstore import LocalObjectStore
from handlers.runtime.retries import relay_retry
from handlers.runtime.served import model_parameters
from handlers.runtime.settings import Settings
from handlers.runtime.stagekit import JobFailures, StageBase, StageDeps
from handlers.sample import SampleFiles, make_sample
from schemas.errors import PolydubError
from schemas.events import (
    ChunkConverted,
    ChunkPlanned,
    DubCompleted,
    DubFailed,
    EngineChoice,
    Envelope,
    JobAccepted,
    MediaSubmitted,
    RetryScheduled,
    SpeakerVoice,
    SubtitlesRef,
)
from schemas.registry import CHUNK_STAGES
from schemas.serialization import encode_event
from schemas.status import StatusCode
from schemas.topics import RETRY, TOPIC_OF_EVENT
from serving.specs import Interface, Item
from tests.fixtures.faults import FlakyInference
from tests.fixtures.rvc import write_content_encoder, write_voice

pytestmark = pytest.mark.slow

#: Chunk length that cuts the 6 s sample into two chunks (so merging waits for both).
CHUNK_SECONDS = 4.0
#: Every engine stage skipped but TTS: the fast configuration for failure paths.
TTS_ONLY = EngineChoice(tts="espeak", vc="none", lipsync="none")


# --- helpers ----------------------------------------------------------------------


@dataclass
class Pipeline:
    """Every stage over one store, with a publisher that records what they emit."""

    settings: Settings
    store: LocalObjectStore
    inference: InferenceClient
    publisher: MemoryPublisher = field(default_factory=MemoryPublisher)
    consumed: list[Envelope] = field(default_factory=list)

    def __post_init__(self) -> None:
        deps = StageDeps(self.settings, self.store, self.inference, self.publisher)
        self.stages: dict[str, StageBase] = {
            str(cls.consumes.model_fields["event_type"].default): cls(deps) for cls in STAGE_CLASSES.values()
        }
        self.by_topic = {TOPIC_OF_EVENT[event_type]: stage for event_type, stage in self.stages.items()}

    def fork(self) -> Pipeline:
        """Fresh stage instances (a new worker) and a new publisher, over the same store."""
        return Pipeline(self.settings, self.store, self.inference)

    def counts(self) -> Counter[str]:
        return Counter(event.event_type for _, event, _ in self.publisher.events)  # type: ignore[attr-defined]

    async def drive(self, events: Iterable[Envelope]) -> None:
        """Hand each event to its stage's ``handle``, then whatever that publishes, until quiet."""
        queue = deque(events)
        while queue:
            event = queue.popleft()
            stage = self.stages.get(event.event_type)
            if stage is None:  # dub.status, dub.completed, ...: nobody in the pipeline consumes them
                continue
            start = len(self.publisher.events)
            await stage.handle(event, 0)
            self.consumed.append(event)
            queue.extend(published for _, published, _ in self.publisher.events[start:])  # type: ignore[misc]

    async def deliver(self, first: Envelope) -> list[Outcome]:
        """Like the Kafka subscribers: ``process_event`` per delivery, retries through the relay."""
        outcomes: list[Outcome] = []
        queue: deque[tuple[str, bytes, int]] = deque([(TOPIC_OF_EVENT[first.event_type], encode_event(first), 0)])
        while queue:
            topic, raw, attempt = queue.popleft()
            n_events, n_raw = len(self.publisher.events), len(self.publisher.raw)
            if topic == RETRY:
                outcomes.append(await relay_retry(raw, self.publisher, Source(RETRY)))
            elif (stage := self.by_topic.get(topic)) is not None:
                outcomes.append(await process_event(stage, raw, attempt, Source(topic), self.publisher,
                                                    self.settings, self.mark_failed))
            else:
                continue
            queue.extend((t, encode_event(e), a) for t, e, a in self.publisher.events[n_events:])
            queue.extend((t, payload, a) for t, payload, _, a in self.publisher.raw[n_raw:])
        return outcomes

    async def mark_failed(self, event: Envelope, error: PolydubError, failed: DubFailed) -> None:
        """The ``on_failure`` hook the workers install (``handlers.app.build_broker``)."""
        await JobFailures(self.store, self.publisher)(event, error, failed)

    def snapshot(self, job_id: str, *, with_state: bool = True) -> dict[str, str]:
        """sha256 of every object of the job (optionally without the state rows and markers)."""
        prefix = keys.job_prefix(job_id)
        return {
            key: hashlib.sha256(self.store.get_bytes(key)).hexdigest()
            for key in self.store.list(prefix)
            if with_state or not key.startswith(f"{prefix}state/")
        }


def _settings(root: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "object_store": "local",
        "local_store_dir": root / "store",
        "chunk_seconds": CHUNK_SECONDS,
        "trace_file": root / "traces.jsonl",
        "retry_max_attempts": 3,
        "retry_backoff_s": 0.0,
        "retry_backoff_max_s": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


def _pipeline(root: Path, inference: InferenceClient | None = None, **overrides: Any) -> Pipeline:
    settings = _settings(root, **overrides)
    return Pipeline(settings, LocalObjectStore(settings.local_store_dir), inference or LocalInferenceClient())


def _submission(sample: SampleFiles, engines: EngineChoice | None = None, **fields: Any) -> MediaSubmitted:
    values: dict[str, Any] = {
        "job_id": f"stages-{uuid.uuid4().hex[:10]}",
        "source_uri": sample.video.resolve().as_uri(),
        "target_lang": "ko",
        "subtitles": SubtitlesRef(uri=sample.subtitles.resolve().as_uri(), format="srt"),
        "engines": engines or EngineChoice(),
    }
    values.update(fields)
    return MediaSubmitted(**values)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    """The 6 s Korean-subtitled sample video, made once for the module."""
    return make_sample(tmp_path_factory.mktemp("sample") / "sample.mp4", target_lang="ko", seconds=6)


@dataclass
class CompletedRun:
    pipeline: Pipeline
    submitted: MediaSubmitted
    snapshot: dict[str, str]


@pytest.fixture(scope="module")
def completed(sample: SampleFiles, tmp_path_factory: pytest.TempPathFactory) -> CompletedRun:
    """One job driven through every stage with every engine on; tests redeliver into it.

    Stages keep no loop-bound state, so the run's own event loop may end here.
    """
    pipeline = _pipeline(tmp_path_factory.mktemp("completed"))
    submitted = _submission(sample)
    asyncio.run(pipeline.drive([submitted]))
    return CompletedRun(pipeline, submitted, pipeline.snapshot(submitted.job_id))


# --- the happy path -----------------------------------------------------------------


async def test_sample_goes_from_submission_to_one_completion(completed: CompletedRun) -> None:
    pipeline, job_id = completed.pipeline, completed.submitted.job_id
    counts = pipeline.counts()
    n_chunks = len(JobState(pipeline.store, job_id).read_json("plan.json")["chunks"])

    assert n_chunks == 2
    assert counts["dub.completed"] == 1
    assert counts["dub.failed"] == 0
    assert counts["job.accepted"] == counts["job.merged"] == 1
    for event_type in ("chunk.planned", "chunk.synthesized", "chunk.converted", "chunk.rendered"):
        assert counts[event_type] == n_chunks, event_type
    done = pipeline.publisher.of_type(DubCompleted)[0]
    assert done.job_id == job_id and done.qc.passed, done.qc
    # The completion names what actually spoke (engine, release and voice), not just the choice.
    assert done.engine_versions["tts"].startswith("espeak-ng 1.52 voice ")
    assert pipeline.store.exists(keys.output_key(job_id, "dubbed.mp4"))
    assert JobState(pipeline.store, job_id).is_marked("completed")
    for index in range(n_chunks):
        for stage in CHUNK_STAGES:
            assert JobState(pipeline.store, job_id).is_done(stage, index), (stage, index)


# --- redelivery ---------------------------------------------------------------------


def _crash_before_marker(run: CompletedRun, stage: str, event: Envelope) -> None:
    """Undo what a crash right after the stage's outputs (before its marker) leaves undone."""
    state = JobState(run.pipeline.store, run.submitted.job_id)
    if stage in CHUNK_STAGES:
        run.pipeline.store.delete(keys.chunk_done_key(state.job_id, event.chunk_index, stage))  # type: ignore[attr-defined]
    elif stage == "merging":
        if state.is_marked("merged"):
            run.pipeline.store.delete(state.key("state/merged"))
    elif stage == "qc":
        run.pipeline.store.delete(state.key("state/completed"))


@pytest.mark.parametrize("stage", list(STAGE_CLASSES))
async def test_redelivered_event_rewrites_the_same_bytes_and_completes_nothing_twice(
    completed: CompletedRun, stage: str
) -> None:
    """Each of the stage's events handled again, by a new worker, with everything that follows."""
    events = [e for e in completed.pipeline.consumed if completed.pipeline.stages[e.event_type].name == stage]
    assert events
    worker = completed.pipeline.fork()

    await worker.drive(events)

    assert worker.snapshot(completed.submitted.job_id) == completed.snapshot
    assert worker.counts()["dub.completed"] == 0
    assert worker.counts()["dub.failed"] == 0


@pytest.mark.parametrize("stage", [*CHUNK_STAGES, "merging"])
async def test_redelivery_after_a_crash_before_the_marker_rewrites_the_same_bytes(
    completed: CompletedRun, stage: str
) -> None:
    """The stage does its work again (its marker is missing) and writes identical objects."""
    events = [e for e in completed.pipeline.consumed if completed.pipeline.stages[e.event_type].name == stage]
    worker = completed.pipeline.fork()
    for event in events:
        _crash_before_marker(completed, stage, event)
        await worker.drive([event])

    job_id = completed.submitted.job_id
    assert worker.snapshot(job_id, with_state=False) == {
        k: v for k, v in completed.snapshot.items() if not k.startswith(f"{keys.job_prefix(job_id)}state/")
    }
    assert set(worker.snapshot(job_id)) == set(completed.snapshot)  # every marker is back
    assert worker.counts()["dub.completed"] == 0
    if stage == "merging":  # it published job.merged again on each event, and QC saw the job was delivered
        assert worker.counts()["job.merged"] == len(events) == 2


async def test_a_completion_repeated_after_a_crash_is_recognisably_the_same(completed: CompletedRun) -> None:
    """QC published, then crashed before its marker: the duplicate carries the same event id."""
    merged = [e for e in completed.pipeline.consumed if e.event_type == "job.merged"]
    worker = completed.pipeline.fork()
    _crash_before_marker(completed, "qc", merged[0])

    await worker.drive(merged)

    (again,) = worker.publisher.of_type(DubCompleted)
    (first,) = completed.pipeline.publisher.of_type(DubCompleted)
    assert again.event_id == first.event_id
    assert JobState(worker.store, completed.submitted.job_id).is_marked("completed")


# --- transient and permanent inference failures ------------------------------------------


async def test_tts_failing_twice_then_succeeding_still_completes(sample: SampleFiles, tmp_path: Path) -> None:
    inference = FlakyInference("tts_espeak", fail_first=2)
    pipeline = _pipeline(tmp_path, inference, retry_max_attempts=3)

    outcomes = await pipeline.deliver(_submission(sample, TTS_ONLY))

    counts = pipeline.counts()
    assert counts["dub.completed"] == 1, pipeline.publisher.of_type(DubFailed)
    assert counts["dub.failed"] == 0
    retries = pipeline.publisher.of_type(RetryScheduled)
    assert len(retries) == 2
    assert all("injected failure" in r.reason and r.target_topic == "chunk.planned" for r in retries)
    assert outcomes.count(Outcome.RETRY_SCHEDULED) == 2
    assert inference.calls["tts_espeak"] == 2 + 2  # two chunks, each failed at most once more
    assert Outcome.DEAD_LETTERED not in outcomes


async def test_tts_always_failing_fails_the_job_once_after_the_bounded_attempts(
    sample: SampleFiles, tmp_path: Path
) -> None:
    inference = FlakyInference("tts_espeak", always=True)
    pipeline = _pipeline(tmp_path, inference, retry_max_attempts=3)
    submitted = _submission(sample, TTS_ONLY)

    await pipeline.deliver(submitted)

    (failed,) = pipeline.publisher.of_type(DubFailed)
    assert failed.status is StatusCode.INFERENCE_FAILED
    assert failed.stage == "synthesis"
    assert "(gave up after 3 attempts," in failed.reason
    assert "tts_espeak" in failed.reason
    assert pipeline.counts()["dub.completed"] == 0
    assert pipeline.counts()["chunk.synthesized"] == 0
    # The chunk that failed was tried exactly the bound; the other chunk stopped
    # as soon as the job was marked failed (at most the bound, too).
    failing = [r for r in pipeline.publisher.of_type(RetryScheduled) if r.event["chunk_index"] == failed.chunk_index]
    assert [r.attempt for r in failing] == [1, 2]
    assert 3 <= inference.calls["tts_espeak"] <= 2 * 3
    state = JobState(pipeline.store, submitted.job_id)
    assert state.read_json("state/failed")["code"] == int(StatusCode.INFERENCE_FAILED)

    # Later events of the failed job are skipped: nothing published, no model called.
    calls_before = sum(inference.calls.values())
    later = pipeline.fork()
    planned = ChunkPlanned(job_id=submitted.job_id, chunk_index=0, n_chunks=2,
                           manifest_uri=pipeline.store.uri(state.key("manifest.json")),
                           start_s=0.0, end_s=CHUNK_SECONDS, segment_indices=[0])
    accepted = next(e for e in pipeline.publisher.of_type(JobAccepted))
    await later.drive([submitted, accepted, planned])
    assert later.publisher.events == []
    assert sum(inference.calls.values()) == calls_before


# --- bad inputs ---------------------------------------------------------------------------


async def _ingest_failure(root: Path, submitted: MediaSubmitted, **settings: Any) -> tuple[Pipeline, DubFailed]:
    pipeline = _pipeline(root, **settings)
    outcomes = await pipeline.deliver(submitted)
    assert outcomes == [Outcome.FAILED]
    (failed,) = pipeline.publisher.of_type(DubFailed)
    assert failed.status is StatusCode.INPUT_REJECTED
    assert failed.stage == "ingest"
    assert failed.fix
    assert pipeline.counts()["job.accepted"] == 0
    assert JobState(pipeline.store, submitted.job_id).is_marked("failed")
    return pipeline, failed


async def test_missing_video_is_rejected_naming_it(sample: SampleFiles, tmp_path: Path) -> None:
    missing = (tmp_path / "nowhere" / "video.mp4").as_uri()

    _, failed = await _ingest_failure(tmp_path, _submission(sample, source_uri=missing))

    assert missing in failed.reason and "does not exist" in failed.reason


async def test_source_that_is_not_a_video_is_rejected_naming_its_uri(sample: SampleFiles, tmp_path: Path) -> None:
    """The reason names what was submitted, not the worker's temporary copy of it."""
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")

    _, failed = await _ingest_failure(tmp_path, _submission(sample, source_uri=text.as_uri()))

    assert text.as_uri() in failed.reason and "not a media file" in failed.reason, failed.reason
    assert "polydub-ingest-" not in failed.reason


async def test_untidy_subtitles_are_fixed_and_the_fixes_reach_the_qc_report(
    sample: SampleFiles, tmp_path: Path
) -> None:
    """One speaker's short overlap is trimmed, a cue past the end clipped, one after it dropped: the
    job completes, and the manifest, ``qc.json`` and the page each say what was changed."""
    from handlers.runtime.media import probe

    end = probe(sample.video).duration_s
    subs = tmp_path / "untidy.srt"
    subs.write_text("1\n00:00:00,500 --> 00:00:02,300\n여러분, 좋은 아침이에요.\n\n"
                    "2\n00:00:02,000 --> 00:00:03,700\n오늘 어떻게 지내세요?\n\n"
                    f"3\n00:00:03,800 --> {_srt(end + 0.8)}\n좋아요.\n\n"
                    f"4\n{_srt(end + 0.2)} --> {_srt(end + 1.0)}\n너무 늦었어요.\n", encoding="utf-8")
    pipeline = _pipeline(tmp_path)
    submitted = _submission(sample, TTS_ONLY, subtitles=SubtitlesRef(uri=subs.as_uri(), format="srt"))

    await pipeline.drive([submitted])

    assert pipeline.counts()["dub.completed"] == 1, pipeline.publisher.of_type(DubFailed)
    state = JobState(pipeline.store, submitted.job_id)
    manifest = state.read_json("manifest.json")
    assert [(s["start_s"], s["end_s"]) for s in manifest["segments"]] == [(0.5, 2.0), (2.0, 3.7), (3.8, end)]
    fixes = manifest["input_fixes"]
    assert len(fixes) == 3, fixes
    assert "line 2" in fixes[0] and "overlapped" in fixes[0]
    assert "line 10" in fixes[1] and "clipped" in fixes[1]
    assert "line 14" in fixes[2] and "dropped" in fixes[2]
    report = state.read_json("output/qc.json")
    assert report["input_fixes"] == fixes
    page = pipeline.store.get_bytes(keys.output_key(submitted.job_id, "qc.html")).decode()
    assert page.count("<b>input fixed</b>") == 3


def _srt(seconds: float) -> str:
    whole_ms = round(seconds * 1000)
    return f"00:00:{whole_ms // 1000:02d},{whole_ms % 1000:03d}"


async def test_reference_for_an_unknown_speaker_is_rejected(sample: SampleFiles, tmp_path: Path) -> None:
    reference = tmp_path / "narrator.wav"
    shutil.copyfile(sample.video, reference)

    _, failed = await _ingest_failure(
        tmp_path, _submission(sample, speaker_references={"narrator": reference.as_uri()})
    )

    assert "narrator" in failed.reason and "no subtitle segment uses" in failed.reason


async def test_reference_that_is_not_audio_is_rejected_naming_speaker_and_uri(
    sample: SampleFiles, tmp_path: Path
) -> None:
    reference = tmp_path / "voice.txt"
    reference.write_text("this is not audio")

    _, failed = await _ingest_failure(
        tmp_path, _submission(sample, speaker_references={"default": reference.as_uri()})
    )

    assert "'default'" in failed.reason and reference.as_uri() in failed.reason, failed.reason
    assert "not a media file" in failed.reason


async def test_a_rejected_job_is_not_retried_or_resurrected(sample: SampleFiles, tmp_path: Path) -> None:
    """Resubmitting the same job id after rejection publishes nothing new."""
    submitted = _submission(sample, source_uri=(tmp_path / "gone.mp4").as_uri())
    pipeline, _ = await _ingest_failure(tmp_path, submitted)
    again = pipeline.fork()

    await again.drive([submitted])

    assert again.publisher.events == []
    assert pipeline.publisher.of_type(RetryScheduled) == []


# --- caches that outlive an event -------------------------------------------------------


def test_local_copies_of_the_same_key_in_two_stores_are_kept_apart(tmp_path: Path) -> None:
    """Job ids are chosen by submitters: the same key in another store is another object."""
    key = keys.source_key("stages-same-job-id", "video")
    copies = []
    for name in ("a", "b"):
        store = LocalObjectStore(tmp_path / name)
        store.put_bytes(key, f"video of store {name}".encode())
        stage = StageBase(StageDeps(_settings(tmp_path / name), store, LocalInferenceClient(), MemoryPublisher()))
        copies.append(stage.local_copy(key))

    assert [c.read_bytes() for c in copies] == [b"video of store a", b"video of store b"]


# --- RVC voices -------------------------------------------------------------------------------


class RecordingInference(ItemsClient):
    """The real in-process client, keeping each call's model and items (what the stages asked for)."""

    def __init__(self, inner: InferenceClient) -> None:
        self.inner = inner
        self.calls: list[tuple[str, list[dict[str, Any]]]] = []

    async def infer(self, model: str, inputs: Arrays) -> Arrays:
        return await self.inner.infer(model, inputs)

    async def infer_items(self, model: str, interface: Interface, items: Sequence[Item]) -> list[Item]:
        self.calls.append((model, [dict(item) for item in items]))
        return await super().infer_items(model, interface, items)

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture(scope="module")
def rvc_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rvc")
    write_voice(root / "voices", "alice", seed=1)
    write_voice(root / "voices", "bob", seed=2)
    return {"rvc_voices_dir": root / "voices", "rvc_content_encoder": write_content_encoder(root / "hubert_base.pt")}


def _two_speakers(sample: SampleFiles, directory: Path) -> SubtitlesRef:
    """The sample's two cues, the first said by ALICE and the second by BOB."""
    text = sample.subtitles.read_text(encoding="utf-8")
    cues = text.strip().split("\n\n")
    labelled = []
    for cue, speaker in zip(cues, ("ALICE", "BOB")):
        number, timing, line = cue.split("\n", 2)
        labelled.append(f"{number}\n{timing}\n{speaker}: {line}")
    path = directory / "two-speakers.srt"
    path.write_text("\n\n".join(labelled) + "\n", encoding="utf-8")
    return SubtitlesRef(uri=path.as_uri(), format="srt")


async def test_each_speaker_is_converted_to_the_voice_the_submission_names(
        sample: SampleFiles, rvc_files: dict[str, Path], tmp_path: Path) -> None:
    """ALICE -> alice at her register, BOB -> bob shifted down 2 semitones; QC then holds the dub to
    the neural similarity target (random-weight voices do not reach it, so the job fails QC, by gate)."""
    settings = _settings(tmp_path, **rvc_files)
    inference = RecordingInference(LocalInferenceClient(model_parameters(settings), device="cpu"))
    pipeline = Pipeline(settings, LocalObjectStore(settings.local_store_dir), inference)
    voices = {"ALICE": SpeakerVoice(voice="alice"), "BOB": SpeakerVoice(voice="bob", pitch_shift=-2.0)}
    submitted = _submission(sample, EngineChoice(vc="rvc"), subtitles=_two_speakers(sample, tmp_path),
                            voices=voices)
    await pipeline.drive([submitted])

    manifest = JobState(pipeline.store, submitted.job_id).read_json("manifest.json")
    assert manifest["voices"] == {"ALICE": {"voice": "alice", "pitch_shift": None},
                                  "BOB": {"voice": "bob", "pitch_shift": -2.0}}
    sent = {(item["VOICE"], float(item["PITCH_SHIFT"]) if "PITCH_SHIFT" in item else None)
            for model, items in inference.calls if model == "vc_rvc" for item in items}
    assert sent == {("alice", None), ("bob", -2.0)}
    assert {e.engine for e in pipeline.publisher.of_type(ChunkConverted)} == {"rvc"}
    assert pipeline.counts()["job.merged"] == 1
    (failed,) = pipeline.publisher.of_type(DubFailed)
    assert failed.status is StatusCode.QC_FAILED and failed.stage == "qc"
    # The video QC judged stays in the store for a person to look at, named in the event.
    assert failed.candidate_video_uri is not None
    assert pipeline.store.exists(pipeline.store.key_of(failed.candidate_video_uri))
    assert f"neural engines need at least {settings.qc_similarity_min_neural:.2f}" in failed.reason, failed.reason


@pytest.mark.parametrize("voices, engines, expected", [
    ({"ALICE": SpeakerVoice(voice="carol")}, EngineChoice(vc="rvc"), "unknown RVC voice(s) ['carol']"),
    ({"ALICE": SpeakerVoice(voice="alice")}, EngineChoice(), "its vc engine is 'world', which has no named voices"),
    ({"CAROL": SpeakerVoice(voice="alice"), "*": SpeakerVoice(voice="bob")}, EngineChoice(vc="rvc"),
     "voices name speakers ['CAROL'] that no subtitle segment uses"),
    ({"ALICE": SpeakerVoice(voice="alice")}, EngineChoice(vc="rvc"), "speakers ['BOB'] have no RVC voice"),
    ({}, EngineChoice(vc="rvc"), "converts to a named voice, and none is given"),
])
async def test_a_voice_map_that_cannot_be_served_is_rejected_at_ingest(
        sample: SampleFiles, rvc_files: dict[str, Path], tmp_path: Path, voices: dict[str, SpeakerVoice],
        engines: EngineChoice, expected: str) -> None:
    submitted = _submission(sample, engines, subtitles=_two_speakers(sample, tmp_path), voices=voices)
    _, failed = await _ingest_failure(tmp_path, submitted, **rvc_files)
    assert expected in failed.reason, failed.reason
    if "unknown RVC voice" in expected:
        assert "voices available: alice, bob" in (failed.fix or "")


# --- a speaker whose reference cannot be used ------------------------------------------


async def test_a_speaker_with_an_unusable_reference_falls_back_and_the_job_is_not_retried(
        sample: SampleFiles, tmp_path: Path) -> None:
    """BOB's given reference is half a second of silence (WORLD cannot estimate a voice from it):
    BOB is converted toward the whole soundtrack's speech, the report says so, nothing is retried."""
    from handlers.runtime.wav import encode_wav

    silence = tmp_path / "bob.wav"
    silence.write_bytes(encode_wav(np.zeros(11025, dtype=np.float32), 22050))
    pipeline = _pipeline(tmp_path)
    submitted = _submission(sample, EngineChoice(vc="world", lipsync="none"),
                            subtitles=_two_speakers(sample, tmp_path), speaker_references={"BOB": silence.as_uri()})

    outcomes = await pipeline.deliver(submitted)

    assert Outcome.RETRY_SCHEDULED not in outcomes and pipeline.publisher.of_type(RetryScheduled) == []
    assert pipeline.counts()["job.merged"] == 1
    assert all(f.stage == "qc" for f in pipeline.publisher.of_type(DubFailed))  # QC's verdict, if any
    report = JobState(pipeline.store, submitted.job_id).read_json("output/qc.json")
    (fix,) = report["input_fixes"]
    assert fix.startswith("speaker 'BOB': ") and "whole soundtrack's speech" in fix, fix
    assert "ALICE" not in fix


async def test_an_unusable_input_fails_fast_as_input_rejected(tmp_path: Path) -> None:
    """A model's refusal of the input itself is INPUT_REJECTED and not retryable, in process and over Triton."""
    from handlers.runtime.inference import model_refusal
    from schemas.errors import UnusableInputError
    from serving.specs import UnusableInput

    client = LocalInferenceClient()
    silent = {"WAVEFORM": np.zeros(22050, dtype=np.float32), "SAMPLE_RATE": np.int32(22050),
              "REFERENCE": np.zeros(11025, dtype=np.float32)}
    from serving.interfaces import VC

    with pytest.raises(UnusableInputError) as err:
        await client.infer_items("vc_world", VC, [silent])
    assert err.value.code is StatusCode.INPUT_REJECTED and not err.value.retryable
    assert "vc_world" in err.value.reason and "unusable input" not in err.value.reason
    over_triton = model_refusal("vc_world", f"Failed to process the request(s): {UnusableInput('too short')}")
    assert isinstance(over_triton, UnusableInputError) and over_triton.reason.endswith("too short")
    assert model_refusal("vc_world", "CUDA out of memory").retryable


async def test_a_clip_too_short_to_dub_is_rejected_at_ingest_once(sample: SampleFiles, tmp_path: Path) -> None:
    """dub.failed INPUT_REJECTED naming the submitted URI, no retry."""
    from tests.test_media import make_video

    video = make_video(tmp_path / "short.mp4", duration_s=0.5)
    subs = tmp_path / "s.srt"
    subs.write_text("1\n00:00:00,100 --> 00:00:00,400\nhello\n")
    submitted = _submission(sample, source_uri=video.as_uri(),
                            subtitles=SubtitlesRef(uri=subs.as_uri(), format="srt"))

    pipeline, failed = await _ingest_failure(tmp_path, submitted)

    assert video.as_uri() in failed.reason and "shorter than" in failed.reason, failed.reason
    assert pipeline.publisher.of_type(RetryScheduled) == []
