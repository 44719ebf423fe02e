"""The inference client's circuit breaker on a fake clock and probe (no server needed)."""

from __future__ import annotations

import asyncio

import pytest

from handlers.runtime.inference import BreakerPolicy, CircuitBreaker
from schemas.errors import InferenceError

POLICY = BreakerPolicy(failures=2, probe_s=0.01, wait_s=0.2, budget_s=0.5)


class Probe:
    """A readiness probe that answers ``ready`` and counts its calls."""

    def __init__(self) -> None:
        self.ready = False
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.ready


async def test_opens_after_consecutive_failures_and_closes_on_a_good_probe() -> None:
    probe = Probe()
    breaker = CircuitBreaker(POLICY, probe, "Triton at x")
    breaker.record_unavailable("down")
    assert not breaker.is_open
    breaker.record_unavailable("down")
    assert breaker.is_open
    waiter = asyncio.create_task(breaker.admit("tts_espeak"))
    await asyncio.sleep(0.05)
    assert not waiter.done() and probe.calls >= 1  # waits, probing, instead of failing
    probe.ready = True
    await asyncio.wait_for(waiter, 1.0)
    assert not breaker.is_open and breaker.openings == 1


async def test_a_long_wait_is_one_retryable_attempt_and_past_the_budget_the_call_fails_for_good() -> None:
    breaker = CircuitBreaker(POLICY, Probe(), "Triton at x")
    for _ in range(POLICY.failures):
        breaker.record_unavailable("connection refused")
    with pytest.raises(InferenceError) as waited:
        await breaker.admit("tts_espeak")
    assert waited.value.retryable and "waited" in waited.value.reason
    await asyncio.sleep(POLICY.budget_s)
    with pytest.raises(InferenceError) as gave_up:
        await breaker.admit("tts_espeak")
    assert not gave_up.value.retryable
    assert "Triton at x" in gave_up.value.reason and "connection refused" in gave_up.value.reason


def test_a_success_resets_the_count() -> None:
    breaker = CircuitBreaker(POLICY, Probe(), "Triton at x")
    breaker.record_unavailable("down")
    breaker.record_success()
    breaker.record_unavailable("down")
    assert not breaker.is_open
