"""Assemble stages into a FastStream Kafka application.

``polydub worker --stages ...`` and ``polydub run`` both build their broker
here, so the embedded default runs exactly the subscribers production runs.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Sequence
from typing import Any

from handlers.runtime.bus import KafkaPublisher, register_stage
from handlers.runtime.inference import InferenceClient, open_inference
from handlers.runtime.objectstore import open_store
from handlers.runtime.retries import register_retry_relay
from handlers.runtime.settings import Settings
from handlers.runtime.stagekit import JobFailures, StageBase, StageDeps
from schemas.errors import InputError
from schemas.registry import STAGE_NAMES, STAGES


def _stage_class(name: str) -> type[StageBase]:
    """The stage class of the registry's stage ``name``: module ``handlers.<name>`` defines it."""
    module = importlib.import_module(f"handlers.{name}")
    classes = [obj for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, StageBase) and getattr(obj, "name", "") == name]
    if len(classes) != 1:
        raise RuntimeError(f"handlers/{name}.py must define exactly one stage named {name!r}, found {len(classes)}")
    stage = classes[0]
    consumed = str(stage.consumes.model_fields["event_type"].default)
    expected = next(s.consumes for s in STAGES if s.name == name)
    if consumed != expected:
        raise RuntimeError(f"stage {name} consumes {consumed}, the registry says {expected}")
    return stage


#: Every stage's class, in pipeline order (``schemas.registry.STAGES``).
STAGE_CLASSES: dict[str, type[StageBase]] = {name: _stage_class(name) for name in STAGE_NAMES}
ALL_STAGES: tuple[str, ...] = STAGE_NAMES
RETRY_RELAY = "retry"

log = logging.getLogger(__name__)


def parse_stages(value: str) -> tuple[str, ...]:
    """``ingest,chunking`` or ``all`` -> stage names (``retry`` is the retry relay)."""
    names = ALL_STAGES + (RETRY_RELAY,) if value.strip() == "all" else tuple(
        n.strip() for n in value.split(",") if n.strip()
    )
    unknown = [n for n in names if n not in STAGE_CLASSES and n != RETRY_RELAY]
    if unknown or not names:
        raise InputError(
            f"unknown stage(s) {unknown or value!r}",
            f"choose from {', '.join(ALL_STAGES + (RETRY_RELAY,))} or 'all'",
        )
    return names


def build_broker(settings: Settings, stages: Sequence[str], *, service_name: str = "polydub",
                 inference: InferenceClient | None = None) -> tuple[Any, StageDeps]:
    """A KafkaBroker with one subscriber per stage, telemetry and metrics middlewares.

    ``inference`` replaces the client the settings name (tests inject faults through it).
    """
    from faststream.kafka import KafkaBroker
    from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
    from faststream.kafka.prometheus import KafkaPrometheusMiddleware
    from opentelemetry import trace

    from handlers.runtime.metrics import REGISTRY
    from handlers.runtime.telemetry import configure_tracing

    configure_tracing(settings, service_name)
    broker = KafkaBroker(
        settings.bootstrap_servers,
        middlewares=(
            KafkaTelemetryMiddleware(tracer_provider=trace.get_tracer_provider()),
            KafkaPrometheusMiddleware(registry=REGISTRY, app_name=service_name),
        ),
        logger=logging.getLogger("polydub.bus"),
        client_id=service_name,
        graceful_timeout=settings.shutdown_grace_s,
    )
    publisher = KafkaPublisher(broker, settings)
    store = open_store(settings)
    deps = StageDeps(settings, store, inference if inference is not None else open_inference(settings), publisher)

    failures = JobFailures(store, publisher)

    for name in stages:
        if name == RETRY_RELAY:
            register_retry_relay(broker, settings, publisher)
        else:
            register_stage(broker, STAGE_CLASSES[name](deps), settings, publisher, on_failure=failures)
    return broker, deps


async def start_broker(broker: Any) -> None:
    """``broker.start()``, but every subscriber joins its group at the same time.

    Each consumer group join waits out the broker's rebalance window (about
    half the session timeout on Tansu), and FastStream starts subscribers one
    after another: eight stages would take most of a minute to come up.
    """
    await broker.connect()
    await asyncio.gather(*(subscriber.start() for subscriber in broker.subscribers))
    for publisher in broker.publishers:
        await publisher.start()
    broker.running = True
