"""The event contract: round trips, strict rejection, and schema drift."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import orjson
import pytest

from schemas import topics
from schemas.events import (
    EVENT_MODELS,
    ChunkConverted,
    ChunkPlanned,
    ChunkRendered,
    ChunkSynthesized,
    DeadLetter,
    DubCompleted,
    DubFailed,
    DubStatus,
    EngineChoice,
    JobAccepted,
    JobMerged,
    MediaSubmitted,
    QCSummary,
    RetryScheduled,
    SegmentFit,
    SubtitleSegment,
    SubtitlesRef,
    event_type_of,
)
from schemas.generate import EVENTS_DIR, render_schemas
from schemas.serialization import EventDecodeError, decode_event, encode_event
from schemas.status import StatusCode

JOB = "job-0001"
S3 = "s3://polydub/jobs/job-0001"


def _examples() -> list:
    """One populated instance of every event."""
    chunk = {"job_id": JOB, "chunk_index": 1, "n_chunks": 3}
    qc = QCSummary(passed=True, warnings=["sync offset 60 ms in chunk 2"], metrics={"lufs": -23.1},
                   report_uri=f"{S3}/qc.json")
    return [
        MediaSubmitted(
            job_id=JOB,
            source_uri="s3://in/video.mp4",
            target_lang="ko",
            subtitles=SubtitlesRef(
                segments=[SubtitleSegment(start_s=0.5, end_s=2.0, text="안녕하세요", speaker="A")]
            ),
            speaker_references={"A": "s3://in/a.wav"},
            engines=EngineChoice(tts="espeak", vc="none", lipsync="mouthwarp"),
        ),
        JobAccepted(job_id=JOB, manifest_uri=f"{S3}/manifest.json", source_uri=f"{S3}/source.mp4",
                    duration_s=12.0, n_segments=4, target_lang="ja", engines=EngineChoice()),
        ChunkPlanned(**chunk, manifest_uri=f"{S3}/manifest.json", start_s=9.0, end_s=20.0,
                     segment_indices=[3, 4]),
        ChunkSynthesized(**chunk, audio_uri=f"{S3}/c1.wav", engine="espeak",
                         segment_fits=[SegmentFit(segment_index=3, slot_start_s=9.5, slot_end_s=11.0,
                                                  speech_s=1.4, speedup=1.1)]),
        ChunkConverted(**chunk, audio_uri=f"{S3}/c1.vc.wav", engine="world"),
        ChunkRendered(**chunk, audio_uri=f"{S3}/c1.vc.wav", video_uri=f"{S3}/c1.mp4", engine="mouthwarp"),
        JobMerged(job_id=JOB, output_video_uri=f"{S3}/out.mp4", dub_audio_uri=f"{S3}/dub.wav",
                  unconverted_dub_uri=f"{S3}/dub.unconverted.wav", mix_uri=f"{S3}/mix.wav",
                  subtitles_uri=f"{S3}/out.srt", duration_s=12.0),
        DubCompleted(job_id=JOB, output_video_uri=f"{S3}/out.mp4", dub_audio_uri=f"{S3}/dub.wav",
                     subtitles_uri=f"{S3}/out.srt", qc=qc, stage_timings_s={"synthesis": 3.2},
                     engine_versions={"tts": "espeak-ng 1.52"}),
        DubFailed(job_id=JOB, status=StatusCode.QC_FAILED, stage="qc", reason="dub is clipped",
                  fix="lower the dub gain", failed_checks=["clipping"]),
        DubStatus(job_id=JOB, status=StatusCode.SYNTHESIZED, stage="synthesis", chunks_done=1,
                  chunks_total=3, progress=0.4),
        DubStatus(job_id=JOB, status=StatusCode.CONVERTED, stage="conversion", chunk_index=2,
                  chunks_total=3, progress=0.3),
        RetryScheduled(job_id=JOB, status=StatusCode.CHUNKED, target_topic=topics.CHUNK_PLANNED,
                       not_before=datetime(2026, 1, 1, tzinfo=UTC), attempt=1, reason="timeout",
                       event={"a": 1}),
        DeadLetter(source_topic=topics.CHUNK_PLANNED, partition=0, offset=7, error="bad json",
                   raw_payload="{nope"),
    ]


def test_every_event_has_an_example_and_a_topic() -> None:
    assert {type(e) for e in _examples()} == set(EVENT_MODELS)
    for model in EVENT_MODELS:
        if model not in (RetryScheduled, DeadLetter):
            assert event_type_of(model) in topics.ALL_TOPICS


@pytest.mark.parametrize("event", _examples(), ids=lambda e: e.event_type)
def test_round_trip_through_orjson(event) -> None:
    raw = encode_event(event)
    assert decode_event(raw, type(event)) == event
    assert decode_event(raw) == event  # discriminated by event_type


@pytest.mark.parametrize("event", _examples(), ids=lambda e: e.event_type)
def test_serialized_events_validate_against_checked_in_schema(event) -> None:
    schema = json.loads((EVENTS_DIR / f"{event.event_type}.json").read_text())
    jsonschema.validate(orjson.loads(encode_event(event)), schema)


def test_checked_in_schemas_match_the_models() -> None:
    rendered = render_schemas()
    on_disk = {p.name: p.read_text() for p in EVENTS_DIR.glob("*.json")}
    assert set(on_disk) == set(rendered), "run `make schemas`"
    for name, text in rendered.items():
        assert on_disk[name] == text, f"{name} drifted from the models; run `make schemas`"


def _payload(**changes) -> bytes:
    body = orjson.loads(encode_event(_examples()[0]))
    body.update(changes)
    return orjson.dumps(body)


def test_unknown_field_is_rejected_by_name() -> None:
    with pytest.raises(EventDecodeError, match=r"colour: Extra inputs are not permitted"):
        decode_event(_payload(colour="red"), MediaSubmitted)


def test_wrong_type_is_rejected_by_name() -> None:
    with pytest.raises(EventDecodeError, match=r"target_lang: .*'ko'.*(got 7)"):
        decode_event(_payload(target_lang=7), MediaSubmitted)


def test_strings_are_not_coerced_to_numbers() -> None:
    body = orjson.loads(encode_event(_examples()[2]))
    body["chunk_index"] = "1"
    with pytest.raises(EventDecodeError, match=r"chunk_index: Input should be a valid integer"):
        decode_event(orjson.dumps(body), ChunkPlanned)


def test_nested_field_path_is_named() -> None:
    body = orjson.loads(encode_event(_examples()[0]))
    body["subtitles"]["segments"][0]["end_s"] = 0.1
    with pytest.raises(EventDecodeError, match=r"subtitles\.segments\.0.*positive duration"):
        decode_event(orjson.dumps(body), MediaSubmitted)


def test_unsupported_language_is_rejected() -> None:
    with pytest.raises(EventDecodeError, match=r"target_lang"):
        decode_event(_payload(target_lang="fr"), MediaSubmitted)


def test_bad_job_id_is_rejected() -> None:
    with pytest.raises(EventDecodeError, match=r"job_id: String should match pattern"):
        decode_event(_payload(job_id="../etc"), MediaSubmitted)


def test_unknown_event_type_is_rejected() -> None:
    with pytest.raises(EventDecodeError, match=r"event_type|tag"):
        decode_event(_payload(event_type="media.deleted"))


def test_not_json_is_rejected() -> None:
    with pytest.raises(EventDecodeError, match=r"invalid event"):
        decode_event(b"\x00not json")


def test_subtitles_need_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one of `uri` or `segments`"):
        SubtitlesRef()


def test_dub_failed_requires_a_failure_code() -> None:
    with pytest.raises(ValueError, match="failure status code"):
        DubFailed(job_id=JOB, status=StatusCode.MERGED, stage="qc", reason="x")


def test_chunk_index_must_be_below_count() -> None:
    with pytest.raises(ValueError, match="not below n_chunks"):
        ChunkConverted(job_id=JOB, chunk_index=3, n_chunks=3, audio_uri=f"{S3}/a.wav", engine="none")


def test_status_codes_are_stable_and_documented() -> None:
    # Numbers are part of the public contract: changing one breaks consumers.
    assert {c.name: int(c) for c in StatusCode} == {
        "RECEIVED": 10, "INGESTED": 20, "CHUNKED": 30, "SYNTHESIZED": 40, "CONVERTED": 50,
        "LIP_SYNCED": 60, "MERGED": 70, "COMPLETED": 80, "INPUT_REJECTED": 100,
        "INFERENCE_FAILED": 110, "QC_FAILED": 120, "STORAGE_FAILED": 130, "TIMEOUT": 140,
        "INTERNAL_ERROR": 150,
    }
    assert all(code.meaning for code in StatusCode)
    assert [c.is_failure for c in StatusCode].count(True) == 6


def test_every_event_type_has_a_topic() -> None:
    for model in EVENT_MODELS:
        assert topics.TOPIC_OF_EVENT[event_type_of(model)] in topics.ALL_TOPICS


def test_topic_prefix() -> None:
    assert topics.topic_name(topics.DUB_STATUS, "prod.") == "prod.dub.status"
    with pytest.raises(ValueError, match="unknown topic"):
        topics.topic_name("dub.unknown")


def test_partition_keys_spread_chunks_and_keep_jobs_together() -> None:
    assert topics.partition_key("job-1") == "job-1"
    assert topics.partition_key("job-1", 0) == "job-1/0"
    assert topics.partition_key("job-1", 0) != topics.partition_key("job-1", 1)
    assert topics.partition_key(None) is None


def test_only_chunk_topics_are_keyed_per_chunk() -> None:
    """A chunk's status or failure stays on the job's partition, where followers of the job read."""
    assert topics.event_key(topics.CHUNK_PLANNED, "job-1", 3) == "job-1/3"
    for job_level in (topics.DUB_STATUS, topics.DUB_FAILED, topics.DUB_COMPLETED, topics.JOB_MERGED):
        assert topics.event_key(job_level, "job-1", 3) == "job-1"
