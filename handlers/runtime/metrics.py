"""Prometheus metrics of a worker, served with a health endpoint.

FastStream's middleware counts messages and handler latency per topic; these
add what an SRE asks next: failures by status code and work in flight.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)

STAGE_OUTCOMES = Counter(
    "polydub_stage_outcomes_total",
    "Events handled per stage by outcome (done, retry_scheduled, failed, dead_lettered).",
    ("stage", "outcome"),
    registry=REGISTRY,
)
FAILURES = Counter(
    "polydub_failures_total",
    "Stage failures by status code (including those that were retried).",
    ("stage", "code"),
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "polydub_in_flight",
    "Events being handled right now, per stage.",
    ("stage",),
    registry=REGISTRY,
)
