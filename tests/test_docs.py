"""Docs that users read must match the code."""

from __future__ import annotations

from pathlib import Path

from handlers.docs import render_readme
from handlers.runtime.settings import settings_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    assert [line for line in script if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]


def test_readme_settings_table_matches_the_settings() -> None:
    text = (ROOT / "README.md").read_text()
    assert render_readme(text) == text, "README configuration table is stale; run `make generate`"
    assert settings_markdown() in text


def test_the_readme_s_example_event_is_valid_for_its_schema_and_the_workers() -> None:
    """What an integrator copies from the README must be accepted by the schema and the code."""
    import json

    import jsonschema

    from schemas.events import MediaSubmitted
    from schemas.serialization import decode_event

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Submitting from other systems"):]
    block = section[section.index("```json") + len("```json"): section.index("```", section.index("```json") + 7)]
    event = json.loads(block)
    schema = json.loads((ROOT / "schemas" / "events" / "media.submitted.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator(schema).validate(event)
    decoded = decode_event(json.dumps(event), MediaSubmitted)
    assert decoded.job_id == event["job_id"] and decoded.subtitles.uri == event["subtitles"]["uri"]
