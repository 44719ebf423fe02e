"""Wav2Lip at the published size, random weights: what re-drawing a face crop costs.

No checkpoint can be downloaded here, so these figures measure compute only
(the random generator draws noise): face crops per second (one per video
frame) in process, in requests of ``POLYDUB_LIPSYNC_CROPS_PER_REQUEST`` crops,
and through Triton at concurrency 1 and 8 (the checked-in CPU config: dynamic
batching towards 64 and 128). On a GPU host the same benchmark measures the
production config: ``python -m bench --only wav2lip`` there, with the CPU
variant swapped for ``config.pbtxt`` (``POLYDUB_TRITON_CONFIG_NAME=`` empty).
"""

from __future__ import annotations

import asyncio

import numpy as np

from bench.harness import Context, Row, benchmark, median, time_awaits, time_calls
from serving.batching import join_items, run_batch
from serving.interfaces import FACE_LIPSYNC_INPUTS

MODEL = "lipsync_wav2lip"
#: Crops per request, as the lipsync stage sends them by default.
CROPS_PER_REQUEST = 16
CONCURRENCIES = (1, 8)
#: Requests per timed run at each concurrency (every client sends at least twice).
REQUESTS_PER_RUN = 16
TIMEOUT_S = 600.0
RANDOM_INIT = {MODEL: {"random_init": "true"}}


def _request(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return join_items([{"FACES": rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8),
                        "MEL": rng.uniform(-4, 4, size=(80, 16)).astype(np.float32)}
                       for _ in range(CROPS_PER_REQUEST)], FACE_LIPSYNC_INPUTS)


@benchmark("wav2lip")
def wav2lip_cost(ctx: Context) -> list[Row]:
    """Wav2Lip (published size, random weights): crops/s in process and on Triton at c1 and c8."""
    from serving.catalog import build_model

    request = _request()
    served = build_model(MODEL, RANDOM_INIT[MODEL])
    times = time_calls(lambda: run_batch(served, request), ctx.repeats)
    rows = [Row("wav2lip", f"{MODEL}/local/b{CROPS_PER_REQUEST}", "crops_per_s",
                CROPS_PER_REQUEST / median(times), "1/s", len(times))]
    return rows + _throughput(ctx, request)


def _throughput(ctx: Context, request: dict[str, np.ndarray]) -> list[Row]:
    from infra.stack import stop_servers

    rows = []
    server = ctx.start_triton((MODEL,), "checked_in", RANDOM_INIT)
    try:
        for concurrency in CONCURRENCIES:
            seconds = asyncio.run(_burst(server.grpc_url, request, concurrency, ctx.repeats))
            rows.append(Row("wav2lip", f"{MODEL}/triton/c{concurrency}", "crops_per_s",
                            REQUESTS_PER_RUN * CROPS_PER_REQUEST / median(seconds), "1/s", len(seconds)))
    finally:
        stop_servers([server])
    return rows


async def _burst(url: str, request: dict[str, np.ndarray], concurrency: int, repeats: int) -> list[float]:
    from handlers.runtime.inference import TritonInferenceClient

    client = TritonInferenceClient(url, TIMEOUT_S)
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await client.infer(MODEL, request)

    async def run() -> None:
        await asyncio.gather(*(one() for _ in range(REQUESTS_PER_RUN)))

    try:
        await client.infer(MODEL, request)  # the first call pays the model's warm-up
        return await time_awaits(run, repeats, warmup=0)
    finally:
        await client.close()
