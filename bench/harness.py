"""The benchmark runner's plumbing: timing with repeats, one CSV per benchmark, shared resources.

Why one harness: every figure polydub quotes (README, issues, closing notes) comes from
``python -m bench``, measured the same way (a warm-up call, then ``repeats`` timed calls,
the median reported with the sample count) and written as rows of
``benchmark, case, metric, value, unit, n`` plus the machine it ran on, so results from
different machines and commits can be concatenated and compared.

A benchmark is a function ``(ctx: Context) -> list[Row]`` registered with
:func:`benchmark`. :class:`Context` owns what benchmarks share and is expensive to make:
the sample media, the in-process inference client, and Triton servers (the checked-in
repository as it is, and with the baseline configurations of :data:`TRITON_VARIANTS`),
started on first use and stopped at the end of the run.
"""

from __future__ import annotations

import csv
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

#: Timed calls per measurement after the warm-up (the median is reported).
DEFAULT_REPEATS = 3
#: Untimed calls before timing: first calls pay imports, allocator growth, torch kernel set-up.
WARMUP_CALLS = 1
#: CSV columns, in order: the measurement, then the machine (same value on every row).
COLUMNS = ("benchmark", "case", "metric", "value", "unit", "n",
           "cpu", "cores", "load_avg", "torch_threads", "python", "numpy", "torch", "platform", "commit", "run_at")
#: The reference engines: need no downloaded weights, so every machine can run them.
REFERENCE_MODELS = ("tts_espeak", "vc_world", "lipsync_mouthwarp", "speaker_encoder")
#: Triton call deadline in the benchmarks, in seconds (generous: 2 cores, 8 clients).
TRITON_TIMEOUT_S = 300.0

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    """One figure: ``value`` in ``unit`` for ``metric`` of ``case``; ``n`` samples behind it."""

    benchmark: str
    case: str
    metric: str
    value: float
    unit: str
    n: int = 1


# --- timing --------------------------------------------------------------------------------


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = WARMUP_CALLS) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


async def time_awaits(make: Callable[[], Awaitable[Any]], repeats: int, warmup: int = WARMUP_CALLS) -> list[float]:
    """:func:`time_calls` for coroutines, inside the caller's event loop (where its clients live)."""
    for _ in range(warmup):
        await make()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await make()
        times.append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# --- results ------------------------------------------------------------------------------------


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, str]:
    """What the figures depend on besides the code: CPU, cores and how busy they were when the
    run started (other processes skew timings), torch's intra-op threads in this process (the
    local client's; Triton stubs get ``POLYDUB_TRITON_CPU_THREADS``), versions, commit."""
    import torch

    return {
        "cpu": _cpu_name(),
        "cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "load_avg": f"{os.getloadavg()[0]:.2f}",
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(terse=True),
        "commit": _git_commit(),
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_csv(path: Path, rows: Sequence[Row], machine: dict[str, str]) -> Path:
    """One benchmark's rows with the machine columns; written whole, then renamed (no torn files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**machine, "benchmark": row.benchmark, "case": row.case, "metric": row.metric,
                             "value": f"{row.value:.6g}", "unit": row.unit, "n": row.n})
    os.replace(tmp, path)
    return path


# --- registry -------------------------------------------------------------------------------------

BenchmarkFn = Callable[["Context"], list[Row]]
BENCHMARKS: dict[str, BenchmarkFn] = {}


def benchmark(name: str) -> Callable[[BenchmarkFn], BenchmarkFn]:
    """Register ``fn`` as the benchmark ``name`` (its CSV is ``<out>/<name>.csv``)."""

    def register(fn: BenchmarkFn) -> BenchmarkFn:
        if name in BENCHMARKS:
            raise ValueError(f"benchmark {name!r} is registered twice")
        BENCHMARKS[name] = fn
        return fn

    return register


# --- shared resources ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleMedia:
    """The ``polydub sample`` media, in memory: what the engines are benchmarked on.

    ``speech`` is the original speaker's voice, one array per spoken phrase; ``dub_texts``
    and ``slots_s`` are the target-language subtitles and their slot lengths; ``frames``
    the video (a real face whose mouth moves with the original speech), ``still`` its
    picture with the mouth closed.
    """

    sample_rate: int
    fps: float
    speech: tuple[np.ndarray, ...]
    dub_lang: str
    dub_texts: tuple[str, ...]
    slots_s: tuple[float, ...]
    frames: np.ndarray
    still: np.ndarray


#: The sample the benchmarks use: Korean subtitles over English speech, 12 s, 256x256 at 25 fps.
SAMPLE_LANG = "ko"
SAMPLE_SECONDS = 12.0
SAMPLE_RATE = 22_050


def make_sample_media(lang: str = SAMPLE_LANG, seconds: float = SAMPLE_SECONDS,
                      sample_rate: int = SAMPLE_RATE) -> SampleMedia:
    """The sample's track and frames, built as ``polydub sample`` builds them (nothing encoded)."""
    from handlers.sample import DEFAULT_FPS, build_track, face_layout, mouth_openings, render_frames

    track = build_track(lang, seconds, sample_rate=sample_rate)
    layout = face_layout()
    n_frames = int(round(track.duration_s * DEFAULT_FPS))
    openings = mouth_openings(track.speech, sample_rate, DEFAULT_FPS, n_frames)
    frames = np.stack(list(render_frames(layout, openings)))
    speech = tuple(
        track.speech[int(round(s.start_s * sample_rate)): int(round(s.end_s * sample_rate))].copy()
        for s in track.segments
    )
    return SampleMedia(
        sample_rate=sample_rate, fps=DEFAULT_FPS, speech=speech, dub_lang=lang,
        dub_texts=tuple(s.text for s in track.segments), slots_s=tuple(s.end_s - s.start_s for s in track.segments),
        frames=frames, still=layout.image,
    )


#: The Triton configurations benchmarks compare, by label: the checked-in CPU configs, and
#: overrides loaded through the model-control API (no copy of the repository).
#: ``before``: one instance and a 5 ms batching wait for every model, the configs before
#: per-item engines scaled by instances; ``batching_off``: one instance, no dynamic batcher.
TRITON_VARIANTS: dict[str, dict[str, Any] | None] = {
    "checked_in": None,
    "before": {"instances": 1, "queue_delay_us": 5000},
    "batching_off": {"instances": 1, "dynamic_batching": False},
}


def variant_configs(models: Sequence[str], label: str, parameters: dict[str, dict[str, str]] | None = None,
                    ) -> dict[str, str]:
    """``{model: JSON config}`` of a :data:`TRITON_VARIANTS` entry (KIND_CPU), for ``model_configs``."""
    from serving.catalog import model_class
    from serving.configs import Variant, config_json

    overrides = TRITON_VARIANTS[label] or {}
    return {name: config_json(model_class(name), Variant(gpu=False, parameters=(parameters or {}).get(name),
                                                         **overrides))
            for name in models}


@dataclass
class Context:
    """What benchmarks share; expensive members are made on first use. Call :meth:`close`."""

    repeats: int = DEFAULT_REPEATS
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="polydub-bench-")))
    #: Run the long variants (e.g. every VC voice pair) instead of the quick subsets.
    full: bool = False
    _servers: dict[str, Any] = field(default_factory=dict)
    _memo: dict[str, Any] = field(default_factory=dict)

    def cached(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per run (derived inputs that several benchmarks use)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    @cached_property
    def sample(self) -> SampleMedia:
        return make_sample_media()

    @cached_property
    def local(self) -> Any:
        from handlers.runtime.inference import LocalInferenceClient

        return LocalInferenceClient()

    def infer_local(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.local.infer_sync(model, inputs)

    def triton(self, variant: str = "checked_in") -> Any:
        """A healthy Triton serving :data:`REFERENCE_MODELS` in a :data:`TRITON_VARIANTS` configuration."""
        if variant not in self._servers:
            self._servers[variant] = self.start_triton(REFERENCE_MODELS, variant)
        return self._servers[variant]

    def start_triton(self, models: Sequence[str], variant: str = "checked_in",
                     parameters: dict[str, dict[str, str]] | None = None) -> Any:
        """A new Triton over the checked-in repository loading ``models`` (the caller stops it)."""
        from infra.triton import TritonServer
        from serving import MODEL_REPOSITORY
        from serving.configs import CPU_CONFIG_NAME

        overridden = variant != "checked_in" or parameters
        configs = variant_configs(models, variant, parameters) if overridden else {}
        server = TritonServer(self.workdir / f"triton-{variant}-{'-'.join(models)}", MODEL_REPOSITORY,
                              model_control_mode="explicit", load_models=() if overridden else tuple(models),
                              model_configs=configs, auto_complete_config=False,
                              model_config_name=CPU_CONFIG_NAME, backend_dir=self.workdir / "triton-backends")
        server.start()
        return server

    def triton_client(self, variant: str = "checked_in") -> Any:
        """A new gRPC aio client for that server (create it inside the event loop that uses it)."""
        from handlers.runtime.inference import TritonInferenceClient

        return TritonInferenceClient(self.triton(variant).grpc_url, TRITON_TIMEOUT_S)

    def triton_statistics(self, model: str, variant: str = "checked_in") -> tuple[int, int]:
        """(inference_count, execution_count) of ``model``: items served and executions run."""
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.triton(variant).grpc_url)
        try:
            stats = client.get_inference_statistics(model_name=model, as_json=True)["model_stats"][0]
        finally:
            client.close()
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))

    def close(self) -> None:
        from infra.stack import stop_servers

        try:
            stop_servers(list(self._servers.values()))
        finally:
            self._servers.clear()
            shutil.rmtree(self.workdir, ignore_errors=True)


def run(names: Sequence[str], out_dir: Path, repeats: int = DEFAULT_REPEATS, full: bool = False,
        report: Callable[[str], None] = print) -> dict[str, list[Row]]:
    """Run the named benchmarks in order, writing ``<out_dir>/<name>.csv`` after each."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    machine = machine_info()
    ctx = Context(repeats=repeats, full=full)
    results: dict[str, list[Row]] = {}
    try:
        for name in names:
            start = time.perf_counter()
            report(f"== {name}")
            rows = BENCHMARKS[name](ctx)
            path = write_csv(out_dir / f"{name}.csv", rows, machine)
            results[name] = rows
            for row in rows:
                report(f"  {row.case:<42} {row.metric:<24} {row.value:>12.4g} {row.unit}")
            report(f"  -> {path} ({time.perf_counter() - start:.1f} s)")
    finally:
        ctx.close()
    return results

