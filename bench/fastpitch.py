"""FastPitch + HiFi-GAN at the published size, random weights: what the compute costs.

No checkpoint can be downloaded here, so these figures measure compute only
(the output is noise with speech-like timing, and says nothing of quality):
the real-time factor for about 5, 10 and 30 s of speech in process, and
Triton throughput at concurrency 1 and 8 with dynamic batching on and off.
"""

from __future__ import annotations

import asyncio

import numpy as np

from bench.harness import Context, Row, benchmark, median, time_awaits, time_calls
from serving.batching import run_batch
from serving.specs import encode_texts

MODEL = "tts_fastpitch"
#: Seconds of speech asked for; the text length is sized from the untrained model's timing.
TARGET_SECONDS = (5.0, 10.0, 30.0)
THROUGHPUT_TEXT = "The quick brown fox jumps over the lazy dog."
CONCURRENCIES = (1, 8)
REQUESTS_PER_RUN = 8
#: The served model's parameters: the published size with random weights (compute cost only).
RANDOM_INIT = {MODEL: {"random_init": "true"}}
TIMEOUT_S = 600.0
WORDS = "the quick brown fox jumps over the lazy dog while children watch from a window".split()


def _inputs(texts: list[str]) -> dict[str, np.ndarray]:
    text, text_len = encode_texts(texts)
    lang, lang_len = encode_texts(["en"] * len(texts))
    return {"TEXT": text, "TEXT_LENGTH": text_len, "LANG": lang, "LANG_LENGTH": lang_len}


def _served(ctx: Context):  # type: ignore[no-untyped-def]
    from serving.catalog import build_model

    return ctx.cached("fastpitch", lambda: build_model(MODEL, RANDOM_INIT[MODEL]))


def _text_for(ctx: Context, seconds: float) -> str:
    """A text that the untrained model speaks for about ``seconds``."""
    served = _served(ctx)
    probe = " ".join(WORDS)
    out = run_batch(served, _inputs([probe]))
    per_char = out["WAVEFORM_LENGTH"][0, 0] / served.tts.sample_rate / len(probe)
    n_chars = int(seconds / per_char)
    return " ".join(WORDS * (n_chars // len(probe) + 1))[:n_chars].rsplit(" ", 1)[0] + "."


@benchmark("fastpitch")
def fastpitch_cost(ctx: Context) -> list[Row]:
    """FastPitch + HiFi-GAN (published size, random weights): RTF at 5/10/30 s, Triton throughput."""
    rows = []
    served = _served(ctx)
    for seconds in TARGET_SECONDS:
        inputs = _inputs([_text_for(ctx, seconds)])
        holder: dict[str, float] = {}

        def call() -> None:
            out = run_batch(served, inputs)
            holder["audio_s"] = out["WAVEFORM_LENGTH"][0, 0] / served.tts.sample_rate

        times = time_calls(call, ctx.repeats)
        case = f"{MODEL}/local/{seconds:.0f}s"
        rows.append(Row("fastpitch", case, "rtf", median(times) / holder["audio_s"], "s/s", len(times)))
        rows.append(Row("fastpitch", case, "speech_seconds", holder["audio_s"], "s"))
    rows.extend(_throughput(ctx))
    return rows


def _throughput(ctx: Context) -> list[Row]:
    from infra.stack import stop_servers

    rows = []
    inputs = _inputs([THROUGHPUT_TEXT])
    for label in ("checked_in", "batching_off"):
        server = ctx.start_triton((MODEL,), label, RANDOM_INIT)
        try:
            for concurrency in CONCURRENCIES:
                seconds = asyncio.run(_burst(server.grpc_url, inputs, concurrency, ctx.repeats))
                rows.append(Row("fastpitch", f"{MODEL}/{label}/c{concurrency}", "requests_per_s",
                                REQUESTS_PER_RUN / median(seconds), "1/s", len(seconds)))
        finally:
            stop_servers([server])
    return rows


async def _burst(url: str, inputs: dict[str, np.ndarray], concurrency: int, repeats: int) -> list[float]:
    from handlers.runtime.inference import TritonInferenceClient

    client = TritonInferenceClient(url, TIMEOUT_S)
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await client.infer(MODEL, inputs)

    async def run() -> None:
        await asyncio.gather(*(one() for _ in range(REQUESTS_PER_RUN)))

    try:
        await client.infer(MODEL, inputs)  # first call pays the model's warm-up
        return await time_awaits(run, repeats, warmup=0)
    finally:
        await client.close()
