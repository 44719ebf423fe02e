"""Speed of the reference engines: real-time factor and Triton throughput.

* ``rtf``: processing seconds per second of audio (or video) for each engine on the
  sample media, through the in-process client and through Triton (one request at a
  time, so the two differ only by the serving path: gRPC, the python stub, DLPack).
* ``throughput``: Triton requests per second at concurrency 1 and 8 in each
  configuration of :data:`bench.harness.TRITON_VARIANTS`: the checked-in configs
  (batch-first models wait 5 ms to fill a batch; per-item engines run two instances
  and never wait), ``before`` (one instance and a 5 ms wait for every model) and
  ``batching_off``; with a batcher, also the mean number of items per execution
  (Triton's statistics), which shows whether it grouped anything.

Workloads come from the sample media as the pipeline would send them: the dub's
subtitles to TTS, the TTS speech with the original speaker's cached statistics to VC,
the original phrases to the speaker encoder, sample video frames with dub audio to lip sync.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from bench.harness import (
    REFERENCE_MODELS,
    TRITON_VARIANTS,
    Context,
    Row,
    benchmark,
    median,
    time_awaits,
    time_calls,
)
from serving.batching import join_items
from serving.interfaces import LIPSYNC_INPUTS, SPEAKER_INPUTS, VC_INPUTS
from serving.specs import text_inputs

Arrays = dict[str, np.ndarray]

#: Seconds of dub speech in the VC real-time-factor workload (WORLD runs near real time).
VC_RTF_SECONDS = 3.0
#: Frames in the lip-sync real-time-factor workload: one handler call's worth (5 s at 25 fps).
LIPSYNC_RTF_FRAMES = 125
#: Throughput: the concurrencies compared, and requests per timed run at each (at least
#: this many, and two per client so every client sends more than once).
CONCURRENCIES = (1, 8)
MIN_REQUESTS_PER_RUN = 8
#: Throughput workloads are one short item per request (a chunk's segment, not a whole chunk).
VC_ITEM_SECONDS = 0.25
SPEAKER_ITEM_SECONDS = 1.5
LIPSYNC_ITEM_FRAMES = 10
#: Concurrent warm-up requests, so every instance of a model has served once before timing.
WARMUP_REQUESTS = 4


@dataclass(frozen=True)
class Workload:
    """One request to a model and how many seconds of media it covers."""

    model: str
    inputs: Arrays
    media_s: float


def dub_speech(ctx: Context) -> list[np.ndarray]:
    """The dub: the sample's target-language subtitles spoken by tts_espeak at natural pace."""
    return ctx.cached("dub_speech", lambda: _dub_speech(ctx))


def _dub_speech(ctx: Context) -> list[np.ndarray]:
    media = ctx.sample
    out = ctx.infer_local("tts_espeak", {**text_inputs("TEXT", list(media.dub_texts)),
                                         **text_inputs("LANG", [media.dub_lang] * len(media.dub_texts))})
    assert int(out["SAMPLE_RATE"][0, 0]) == media.sample_rate, "the sample and eSpeak rates differ"
    lengths = out["WAVEFORM_LENGTH"].reshape(-1)
    return [out["WAVEFORM"][i, : lengths[i]] for i in range(len(lengths))]


def speaker_stats(ctx: Context) -> np.ndarray:
    """The original speaker's WORLD statistics (what conversion caches per job and speaker)."""
    return ctx.cached("speaker_stats", lambda: _speaker_stats(ctx))


def _speaker_stats(ctx: Context) -> np.ndarray:
    media = ctx.sample
    reference = np.concatenate(media.speech)
    out = ctx.infer_local("vc_world", join_items(
        [{"WAVEFORM": media.speech[0], "SAMPLE_RATE": np.int32(media.sample_rate), "REFERENCE": reference}],
        VC_INPUTS))
    return out["TARGET_STATS"][0, : int(out["TARGET_STATS_LENGTH"][0, 0])]


def _vc_items(waves: list[np.ndarray], stats: np.ndarray, rate: int) -> Arrays:
    return join_items([{"WAVEFORM": w, "SAMPLE_RATE": np.int32(rate), "TARGET_STATS": stats} for w in waves],
                      VC_INPUTS)


def _lipsync_item(frames: np.ndarray, dub: np.ndarray, rate: int, fps: float) -> Arrays:
    audio = np.zeros(int(round(len(frames) / fps * rate)), dtype=np.float32)
    piece = dub[: audio.size]
    audio[: piece.size] = piece
    return join_items([{"FRAMES": frames, "AUDIO": audio, "SAMPLE_RATE": np.int32(rate), "FPS": np.float32(fps)}],
                      LIPSYNC_INPUTS)


def rtf_workloads(ctx: Context) -> list[Workload]:
    """One whole-chunk request per reference engine, from the sample media."""
    media = ctx.sample
    rate = media.sample_rate
    dub = dub_speech(ctx)
    tts = {**text_inputs("TEXT", list(media.dub_texts)), **text_inputs("LANG", [media.dub_lang] * len(dub)),
           "MAX_DURATION": np.array([[s] for s in media.slots_s], dtype=np.float32)}
    tts_out = ctx.infer_local("tts_espeak", tts)
    vc_waves, total = [], 0
    for wave in dub:
        if total >= VC_RTF_SECONDS * rate:
            break
        vc_waves.append(wave)
        total += wave.size
    frames = media.frames[:LIPSYNC_RTF_FRAMES]
    return [
        Workload("tts_espeak", tts, float(tts_out["WAVEFORM_LENGTH"].sum()) / rate),
        Workload("vc_world", _vc_items(vc_waves, speaker_stats(ctx), rate), total / rate),
        Workload("speaker_encoder", join_items([{"WAVEFORM": w, "SAMPLE_RATE": np.int32(rate)} for w in media.speech],
                                               SPEAKER_INPUTS), sum(w.size for w in media.speech) / rate),
        Workload("lipsync_mouthwarp", _lipsync_item(frames, np.concatenate(dub), rate, media.fps),
                 len(frames) / media.fps),
    ]


def item_workloads(ctx: Context) -> list[Workload]:
    """One short item per request, as many small concurrent clients would send."""
    media = ctx.sample
    rate = media.sample_rate
    dub = dub_speech(ctx)
    vc_wave = dub[0][: int(VC_ITEM_SECONDS * rate)]
    speech = max(media.speech, key=len)[: int(SPEAKER_ITEM_SECONDS * rate)]
    frames = media.frames[:LIPSYNC_ITEM_FRAMES]
    tts = {**text_inputs("TEXT", [media.dub_texts[0]]), **text_inputs("LANG", [media.dub_lang])}
    return [
        Workload("tts_espeak", tts, dub[0].size / rate),
        Workload("vc_world", _vc_items([vc_wave], speaker_stats(ctx), rate), vc_wave.size / rate),
        Workload("speaker_encoder", join_items([{"WAVEFORM": speech, "SAMPLE_RATE": np.int32(rate)}], SPEAKER_INPUTS),
                 speech.size / rate),
        Workload("lipsync_mouthwarp", _lipsync_item(frames, dub[0], rate, media.fps), len(frames) / media.fps),
    ]


@benchmark("rtf")
def real_time_factor(ctx: Context) -> list[Row]:
    """Processing seconds per second of media, local client vs Triton, per reference engine."""
    rows = []
    workloads = rtf_workloads(ctx)
    assert {w.model for w in workloads} == set(REFERENCE_MODELS)
    for work in workloads:
        local = time_calls(lambda: ctx.infer_local(work.model, work.inputs), ctx.repeats)
        remote = asyncio.run(_triton_times(ctx, work))
        for path, times in (("local", local), ("triton", remote)):
            case = f"{work.model}/{path}"
            rows.append(Row("rtf", case, "rtf", median(times) / work.media_s, "s/s", len(times)))
            rows.append(Row("rtf", case, "seconds", median(times), "s", len(times)))
        rows.append(Row("rtf", f"{work.model}/media", "media_seconds", work.media_s, "s"))
    return rows


async def _triton_times(ctx: Context, work: Workload) -> list[float]:
    """Seconds of one request at a time through one gRPC client (connection set up once)."""
    client = ctx.triton_client()
    try:
        return await time_awaits(lambda: client.infer(work.model, work.inputs), ctx.repeats)
    finally:
        await client.close()


def requests_per_run(concurrency: int) -> int:
    return max(MIN_REQUESTS_PER_RUN, 2 * concurrency)


async def _burst_times(ctx: Context, work: Workload, concurrency: int, variant: str) -> list[float]:
    """Seconds per run of :func:`requests_per_run` requests, at most ``concurrency`` in flight."""
    client = ctx.triton_client(variant)
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await client.infer(work.model, work.inputs)

    async def burst() -> None:
        await asyncio.gather(*(one() for _ in range(requests_per_run(concurrency))))

    try:
        return await time_awaits(burst, ctx.repeats, warmup=0)
    finally:
        await client.close()


async def _warm_up(ctx: Context, work: Workload, variant: str) -> None:
    """One request per instance: a model's first calls pay one-off costs (imports, torch kernels)."""
    client = ctx.triton_client(variant)
    try:
        await asyncio.gather(*(client.infer(work.model, work.inputs) for _ in range(WARMUP_REQUESTS)))
    finally:
        await client.close()


@benchmark("throughput")
def triton_throughput(ctx: Context) -> list[Row]:
    """Triton requests/s at concurrency 1 and 8 per configuration (checked-in, before, no batcher)."""
    rows = []
    for work in item_workloads(ctx):
        for variant in TRITON_VARIANTS:
            asyncio.run(_warm_up(ctx, work, variant))
            for concurrency in CONCURRENCIES:
                before = ctx.triton_statistics(work.model, variant)
                times = asyncio.run(_burst_times(ctx, work, concurrency, variant))
                after = ctx.triton_statistics(work.model, variant)
                case = f"{work.model}/{variant}/c{concurrency}"
                rows.append(Row("throughput", case, "requests_per_s", requests_per_run(concurrency) / median(times),
                                "1/s", len(times)))
                executions = after[1] - before[1]
                if executions:
                    rows.append(Row("throughput", case, "items_per_execution", (after[0] - before[0]) / executions,
                                    "items", executions))
    return rows
