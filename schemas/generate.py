"""Generate ``schemas/events/*.json`` from the pydantic models.

Run ``python -m schemas.generate`` (``make schemas``) after changing an event;
``tests/test_schemas.py`` fails when the checked-in files drift from the models.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from schemas.events import EVENT_MODELS, event_type_of
from schemas.status import StatusCode

EVENTS_DIR = Path(__file__).parent / "events"
#: The JSON Schema dialect pydantic writes, declared so validators need not guess it.
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def render_schemas() -> dict[str, str]:
    """File name -> JSON text of every schema the contract publishes."""
    files: dict[str, str] = {}
    for model in EVENT_MODELS:
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = JSON_SCHEMA_DIALECT
        schema["$id"] = f"https://polydub.dev/schemas/events/{event_type_of(model)}.json"
        files[f"{event_type_of(model)}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    codes = {
        code.name.lower(): {"code": int(code), "meaning": code.meaning, "failure": code.is_failure}
        for code in StatusCode
    }
    files["status-codes.json"] = json.dumps(codes, indent=2) + "\n"
    return files


def write_schemas(directory: Path = EVENTS_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_schemas():
        sys.stdout.write(f"wrote {path}\n")
