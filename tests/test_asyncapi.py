"""The checked-in AsyncAPI document is the one the worker app produces, and it is usable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from handlers.app import ALL_STAGES, RETRY_RELAY, STAGE_CLASSES
from handlers.asyncapi import ASYNCAPI_FILE
from schemas.events import DubStatus, MediaSubmitted, SubtitlesRef
from schemas.serialization import encode_event
from schemas.status import StatusCode
from schemas.topics import ALL_TOPICS, TOPIC_OF_EVENT

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rendered() -> str:
    """Rendered in a fresh interpreter: building the broker installs a process-wide tracer
    provider, which must not leak into other tests of this session."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from handlers.asyncapi import render_asyncapi; "
         "sys.stdout.write(render_asyncapi())"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("POLYDUB_")},
             "POLYDUB_TOPIC_PREFIX": "must-not-leak."},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def document(rendered: str) -> dict[str, Any]:
    return json.loads(rendered)


def test_checked_in_document_matches_the_app(rendered: str) -> None:
    assert ASYNCAPI_FILE.read_text() == rendered, "schemas/asyncapi.json is stale; run `make generate`"


def test_every_stage_receives_its_event_and_every_topic_is_documented(document: dict[str, Any]) -> None:
    assert "must-not-leak" not in json.dumps(document)
    channels = document["channels"]
    for stage in ALL_STAGES:
        model = STAGE_CLASSES[stage].consumes
        assert channels[stage]["address"] == TOPIC_OF_EVENT[model.model_fields["event_type"].default]
        message = document["components"]["messages"][f"{stage}:SubscribeMessage"]
        assert message["payload"] == {"$ref": f"#/components/schemas/{model.__name__}"}
        assert document["operations"][stage]["action"] == "receive"
    assert channels[RETRY_RELAY]["address"] == "dub.retry"
    addresses = {c["address"] for c in channels.values()}
    assert addresses == set(ALL_TOPICS)
    sends = {op for op, spec in document["operations"].items() if spec["action"] == "send"}
    assert "dub.completed:publish" in sends and "media.submitted:publish" not in sends


def _validator(document: dict[str, Any], model: str) -> jsonschema.Validator:
    """A validator for one payload schema, resolving refs inside the document."""
    schema = {"$ref": f"#/components/schemas/{model}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_payload_schemas_accept_real_events_and_reject_broken_ones(document: dict[str, Any]) -> None:
    submitted = MediaSubmitted(
        job_id="job-1", source_uri="s3://b/uploads/job-1/video.mp4", target_lang="ko",
        subtitles=SubtitlesRef(uri="s3://b/uploads/job-1/subtitles.srt", format="srt"),
    )
    event = orjson.loads(encode_event(submitted))
    _validator(document, "MediaSubmitted").validate(event)
    with pytest.raises(jsonschema.ValidationError):
        _validator(document, "MediaSubmitted").validate({**event, "target_lang": "fr"})

    status = orjson.loads(encode_event(DubStatus(job_id="job-1", status=StatusCode.INGESTED, stage="ingest", progress=0.04)))
    _validator(document, "DubStatus").validate(status)
    with pytest.raises(jsonschema.ValidationError):
        _validator(document, "DubStatus").validate({**status, "progress": 1.5})
