"""RVC at the published size, random weights: what converting a voice costs.

No checkpoint can be downloaded here, so these figures measure compute only:
the content encoder is HuBERT-Base at its published size with random weights
(``random_init``) and the voice is a random RVC v2 40 kHz synthesizer written
as a ``.pth`` into a temporary voices directory, so the output is noise and
says nothing of quality. The input is a synthetic voiced signal (a gliding
pitch, syllable-like loudness) at the pipeline's 22 050 Hz, converted with
``PITCH_SHIFT`` 0 (no reference), as the conversion stage sends it.

Rows (``rtf`` is compute seconds per second of input audio, ``seconds`` the
wall-clock seconds of one call; medians, ``n`` the timed calls):

* ``vc_rvc/local/<d>s``: one request of ``d`` seconds through the served model
  in process (``run_batch``, torch's intra-op threads of this process: the
  CSV's ``torch_threads``);
* ``vc_rvc/triton/<d>s``: the same request through one ``tritonserver`` on
  loopback with the checked-in CPU config (one instance; each Triton stub runs
  one intra-op thread, so on a multi-core host this differs from ``local`` by
  the thread count as much as by gRPC and the stub);
* ``vc_rvc/content_encoder/10s`` and ``vc_rvc/synthesizer/10s``: the two
  networks alone on 10 s, no context (HuBERT on 16 kHz audio; the synthesizer on those
  features at 100 frames/s with the input's pitch), in process: where the
  time goes.

Durations 5, 10 and 30 s by default; ``--full`` adds 90 s, which RVC's float32
segmentation cuts into pieces of about 38 s (so it also measures the cutting).
Every input is rendered with 1 s of reflected context on both sides (RVC's
``x_pad``), which is why the RTF falls with length. Each path warms up once on
the shortest input; after that the timed calls per duration are ``--repeats``
but at most :data:`TIMED_AUDIO_S` seconds of audio (``n`` is 3 at 5 s, 2 at
10 s, 1 at 30 and 90 s with the default 3 repeats): on 2 cores RVC converts
at about half of real time in process and a third through Triton, and the
default run then takes about seven minutes (``--full``: about seven more).

On a GPU host, ``POLYDUB_DEVICE=cuda python -m bench --only rvc --full`` runs
the in-process rows on the GPU (fp16 and RVC's fp16 segmentation, as the
served model does there; cases ``local_gpu``); the Triton rows still load the
CPU variant of the config (the harness builds KIND_CPU configs).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.harness import Context, Row, benchmark, median, time_awaits, time_calls
from serving.batching import join_items, run_batch
from serving.interfaces import VC_INPUTS

MODEL = "vc_rvc"
#: The voice written for the benchmark: RVC v2 at 40 kHz, the most common published preset.
PRESET = "v2-40k"
VOICE = f"bench-{PRESET}"
#: The pipeline's sample rate (what the conversion stage sends).
SAMPLE_RATE = 22_050
#: Input lengths in seconds; :data:`LONG_SECONDS` only with ``--full``.
SECONDS = (5.0, 10.0, 30.0)
LONG_SECONDS = (90.0,)
#: At most this much audio is timed per duration and path (at least one call).
TIMED_AUDIO_S = 20.0
#: Input length of the per-network rows.
SPLIT_SECONDS = 10.0
#: Deadline of one Triton call: 90 s at one thread takes minutes on a small CPU.
TIMEOUT_S = 1800.0


def speechlike(seconds: float, rate: int = SAMPLE_RATE, seed: int = 0) -> NDArray[np.float32]:
    """A voiced signal: pitch gliding over 95-165 Hz, loudness pulsing like syllables, a noise floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    f0 = 130 + 35 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    envelope = (0.5 + 0.5 * np.sin(2 * np.pi * 1.7 * t)) ** 2
    wave = 0.3 * envelope * (np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase))
    return (wave + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def _request(seconds: float) -> dict[str, np.ndarray]:
    return join_items([{"WAVEFORM": speechlike(seconds), "SAMPLE_RATE": np.int32(SAMPLE_RATE), "VOICE": VOICE,
                        "PITCH_SHIFT": np.float32(0.0)}], VC_INPUTS)


def _timed(ctx: Context, seconds: float) -> int:
    """Timed calls for an input of ``seconds``: ``ctx.repeats``, capped by :data:`TIMED_AUDIO_S`."""
    return max(1, min(ctx.repeats, int(TIMED_AUDIO_S // seconds)))


def _voices_dir(ctx: Context) -> Path:
    """A voices directory holding one random published-size voice (written once per run)."""

    def write() -> Path:
        from engines.rvc.voice import random_voice, save_rvc_voice

        directory = Path(tempfile.mkdtemp(prefix="rvc-voices-", dir=ctx.workdir))
        save_rvc_voice(random_voice(PRESET, seed=0).model, directory / f"{VOICE}.pth", info="random weights (bench)")
        return directory

    directory: Path = ctx.cached("rvc_voices_dir", write)
    return directory


def _parameters(ctx: Context) -> dict[str, str]:
    return {"voices_dir": str(_voices_dir(ctx)), "random_init": "true"}


@benchmark("rvc")
def rvc_cost(ctx: Context) -> list[Row]:
    """RVC v2 40k (published size, random weights): RTF at 5/10/30 (--full: 90) s, local and Triton."""
    durations = SECONDS + (LONG_SECONDS if ctx.full else ())
    requests = {seconds: _request(seconds) for seconds in durations}
    return _local(ctx, durations, requests) + _triton(ctx, durations, requests)


def _local(ctx: Context, durations: tuple[float, ...], requests: dict[float, dict[str, np.ndarray]]) -> list[Row]:
    """In process (the served model's weights are freed on return, before Triton loads its own)."""
    from serving.catalog import build_model
    from serving.placement import Placement

    placement = Placement.parse(os.environ.get("POLYDUB_DEVICE", "cpu"))
    path = "local_gpu" if placement.is_gpu else "local"
    served = build_model(MODEL, _parameters(ctx), placement)
    run_batch(served, requests[durations[0]])  # warm-up: one-off costs (voice load, torch kernels)
    rows: list[Row] = []
    for seconds in durations:
        request = requests[seconds]
        times = time_calls(lambda: run_batch(served, request), _timed(ctx, seconds), warmup=0)
        rows.extend(_rows(f"{MODEL}/{path}/{seconds:.0f}s", times, seconds))
    return rows + _split(ctx, served, SPLIT_SECONDS)


def _rows(case: str, times: list[float], seconds: float) -> list[Row]:
    return [Row("rvc", case, "rtf", median(times) / seconds, "s/s", len(times)),
            Row("rvc", case, "seconds", median(times), "s", len(times))]


def _split(ctx: Context, served: Any, seconds: float) -> list[Row]:
    """The content encoder alone and the synthesizer alone on ``seconds`` of the input."""
    import torch

    from engines.dsp import resample
    from engines.rvc.hubert import rvc_feature_spec, upsample_frames
    from engines.rvc.pitch import ANALYSIS_RATE, coarse_pitch, track_f0

    voice, _ = served.voices.get(VOICE)
    content = served.pipeline.content
    param = next(content.parameters())
    wave = resample(speechlike(seconds), SAMPLE_RATE, ANALYSIS_RATE).astype(np.float32)
    waves = torch.from_numpy(wave)[None].to(param.device, param.dtype)
    layer, project = rvc_feature_spec(voice.version)

    def encode() -> tuple[torch.Tensor, torch.Tensor]:
        feats, lengths = content.extract(waves, output_layer=layer, project=project)
        return feats.float().cpu(), lengths.cpu()

    feats, lengths = encode()
    phone, frames = upsample_frames(feats, lengths)
    n = int(frames[0])
    f0 = track_f0(wave, n)
    pitch = torch.from_numpy(coarse_pitch(f0))[None]
    nsff0 = torch.from_numpy(f0.astype(np.float32))[None]
    sid = torch.zeros(1, dtype=torch.long)

    def synthesize() -> None:
        audio, _ = voice.model.infer(phone[:, :n], frames, pitch, nsff0, sid,
                                     generator=torch.Generator().manual_seed(0))
        audio.float().cpu()

    repeats = _timed(ctx, seconds)
    label = f"{seconds:.0f}s"
    return (_rows(f"{MODEL}/content_encoder/{label}", time_calls(encode, repeats, warmup=0), seconds)
            + _rows(f"{MODEL}/synthesizer/{label}", time_calls(synthesize, repeats, warmup=0), seconds))


def _triton(ctx: Context, durations: tuple[float, ...], requests: dict[float, dict[str, np.ndarray]]) -> list[Row]:
    from infra.stack import stop_servers

    server = ctx.start_triton((MODEL,), "checked_in", {MODEL: _parameters(ctx)})
    try:
        return asyncio.run(_triton_rows(ctx, server.grpc_url, durations, requests))
    finally:
        stop_servers([server])


async def _triton_rows(ctx: Context, url: str, durations: tuple[float, ...],
                       requests: dict[float, dict[str, np.ndarray]]) -> list[Row]:
    from handlers.runtime.inference import TritonInferenceClient

    client = TritonInferenceClient(url, TIMEOUT_S)
    rows: list[Row] = []
    try:
        await client.infer(MODEL, requests[durations[0]])  # the first call pays the model's warm-up
        for seconds in durations:
            request = requests[seconds]
            times = await time_awaits(lambda: client.infer(MODEL, request), _timed(ctx, seconds), warmup=0)
            rows.extend(_rows(f"{MODEL}/triton/{seconds:.0f}s", times, seconds))
    finally:
        await client.close()
    return rows
