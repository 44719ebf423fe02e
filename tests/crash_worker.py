"""A worker process for ``tests/test_delivery.py``'s crash test (not a test module).

Runs every stage and the retry relay, exactly as :func:`handlers.app.build_broker`
builds them, against the broker, topic prefix and local store the ``POLYDUB_*``
environment names, until it is killed. The one test hook lives here (and in
``tests/fixtures/faults.py``), not in polydub: with ``POLYDUB_TEST_SLOW_MODEL`` set, every call to that model first
writes ``POLYDUB_TEST_SLOW_MARKER`` (so the test knows a chunk is inside the
slow stage) and then sleeps ``POLYDUB_TEST_SLOW_SECONDS``. Once every
subscriber has joined its group the script writes ``POLYDUB_TEST_READY_FILE``.

Usage: ``python -m tests.crash_worker`` with the environment above.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from handlers.app import ALL_STAGES, RETRY_RELAY, build_broker, start_broker
from handlers.runtime.settings import Settings
from infra.topics import ensure_topics
from tests.fixtures.faults import SlowInference


def _optional_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


async def main() -> None:
    """Serve every stage until killed."""
    settings = Settings()
    inference = SlowInference(
        os.environ.get("POLYDUB_TEST_SLOW_MODEL") or None,
        float(os.environ.get("POLYDUB_TEST_SLOW_SECONDS", "0")),
        _optional_path("POLYDUB_TEST_SLOW_MARKER"),
    )
    await ensure_topics(settings.bootstrap_servers, settings.topic_prefix)
    broker, _ = build_broker(settings, ALL_STAGES + (RETRY_RELAY,), service_name="crash-worker",
                             inference=inference)
    async with broker:
        await start_broker(broker)
        if (ready := _optional_path("POLYDUB_TEST_READY_FILE")) is not None:
            ready.write_text(f"{os.getpid()}\n")
        await asyncio.Event().wait()  # until SIGKILL (or SIGTERM from the test's cleanup)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    asyncio.run(main())
