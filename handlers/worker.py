"""``polydub worker --stages ...``: long-running stage handlers against the configured cluster.

A worker is the production shape of the pipeline: the same subscribers
``polydub run`` starts (:func:`handlers.app.build_broker`), but against the
Kafka, object store and inference backend the ``POLYDUB_*`` settings name, for
as long as it is left running. Several workers of one stage share its topic's
partitions through the stage's consumer group (``<prefix>.<stage>``), so
scaling a stage is starting more workers of it.

Lifecycle:

1. Create the topics of ``infra/topics.yaml`` that do not exist yet (every
   worker does it, so the first one up prepares an empty cluster; a topic
   another worker created a moment earlier is fine) and check they all exist:
   a subscriber on a missing topic would wait forever without a word.
2. Start every subscriber at once (:func:`handlers.app.start_broker`).
3. Serve ``/metrics`` and ``/healthz`` on ``POLYDUB_METRICS_PORT`` (0 = off)
   from the moment the process starts, so an orchestrator sees "starting"
   (503) rather than a refused connection while groups are joined.
4. On SIGTERM or SIGINT stop the subscribers. FastStream lets a handler that
   is running finish for up to its graceful timeout, then cancels it; a
   cancelled handler never reaches its ``ack``, so its offset is not
   committed and the event is redelivered to another worker (at-least-once;
   every stage is idempotent). A second signal exits at once.
5. Media and model work runs in threads (``run_blocking``/``to_thread``); a
   thread cannot be cancelled, and Python would wait for it at exit. The
   worker owns that thread pool and, once the subscribers are stopped, waits
   :data:`BLOCKING_CALLS_GRACE_S` for it, then exits anyway: whatever those
   threads were doing belongs to an event that was not committed and writes
   only deterministic keys, so the redelivery redoes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.asgi.types import Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from handlers.runtime.settings import Settings
from schemas.errors import InputError, PolydubError

log = logging.getLogger(__name__)

SERVICE_NAME = "polydub-worker"
SHUTDOWN_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
#: Exit code when a second signal forces the exit during shutdown (128 + SIGINT).
EXIT_FORCED = 130
#: Longest a health check waits for the broker to answer a metadata request.
HEALTH_PING_TIMEOUT_S = 2.0
#: On close, how long the ops server lets requests in flight finish (longer than a health ping).
OPS_SHUTDOWN_GRACE_S = 3.0
#: After the subscribers stop: how long blocking calls of cancelled handlers may still run.
BLOCKING_CALLS_GRACE_S = 2.0
#: How often shutdown checks whether those threads are gone.
THREAD_POLL_S = 0.05
#: Name prefix of the worker's thread pool (asyncio's default executor in a worker).
IO_THREAD_PREFIX = "polydub-io"
#: How long topics just created may take to show in the cluster's metadata.
TOPICS_VISIBLE_TIMEOUT_S = 10.0
TOPICS_POLL_S = 0.2
METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"


@dataclass(frozen=True)
class Health:
    """A health check's verdict and what it looked at (the ``/healthz`` body)."""

    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


class Worker:
    """The chosen stages' subscribers on one broker connection, with their health."""

    def __init__(self, settings: Settings, stages: Sequence[str]) -> None:
        from handlers.app import build_broker

        self.settings = settings
        self.stages = tuple(stages)
        self.broker, self.deps = build_broker(settings, self.stages, service_name=SERVICE_NAME)
        self.started = False
        self.stopping = False

    async def start(self) -> None:
        """Topics first, then every subscriber joins its group (concurrently)."""
        from aiokafka.errors import KafkaError

        from handlers.app import start_broker
        from handlers.client import kafka_unreachable
        from handlers.localstack import ensure_topics

        bootstrap = self.settings.bootstrap_servers
        try:
            created = await ensure_topics(self.settings)
            await _wait_for_topics(bootstrap, self.settings.topic_prefix)
        except (KafkaError, OSError) as exc:
            raise kafka_unreachable(bootstrap, exc) from exc
        if created:
            log.info("created topics", extra={"topics": created})
        await start_broker(self.broker)
        self.started = True

    async def stop(self) -> None:
        """Stop consuming; unfinished handlers are cancelled before their ack (not committed)."""
        self.stopping = True
        try:
            await self.broker.stop()
        finally:
            await self.deps.inference.close()

    async def health(self) -> Health:
        """Healthy when started, not stopping, every subscriber consuming, the broker answering."""
        subscribers = {
            ",".join(getattr(sub, "topic_names", None) or ("?",)): _subscriber_state(sub)
            for sub in self.broker.subscribers
        }
        detail: dict[str, Any] = {
            "stages": list(self.stages),
            "subscribers": subscribers,
        }
        if self.stopping:
            return Health(False, {**detail, "status": "stopping"})
        if not self.started:
            return Health(False, {**detail, "status": "starting"})
        if any(state != "running" for state in subscribers.values()):
            return Health(False, {**detail, "status": "subscriber down"})
        connected = await self.broker.ping(HEALTH_PING_TIMEOUT_S)
        detail["broker"] = "connected" if connected else "unreachable"
        return Health(connected, {**detail, "status": "ok" if connected else "broker unreachable"})


def _subscriber_state(subscriber: Any) -> str:
    """``running`` while FastStream's consume loop is alive; a crashed loop shows here."""
    if not getattr(subscriber, "running", False):
        return "stopped"
    tasks = getattr(subscriber, "tasks", [])
    if tasks and all(task.done() for task in tasks):
        return "consume loop ended"
    return "running"


async def _wait_for_topics(bootstrap: str, prefix: str) -> None:
    """Every topic of the contract must exist before subscribing (see the module doc)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from handlers.localstack import topic_names

    wanted = topic_names(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + TOPICS_VISIBLE_TIMEOUT_S
        while True:
            missing = wanted - set(await admin.list_topics())
            if not missing:
                return
            if time.monotonic() > deadline:
                raise PolydubError(
                    f"topics {sorted(missing)} do not exist on {bootstrap} and could not be created",
                    "create them (see infra/topics.yaml) or allow this client to create topics",
                )
            await asyncio.sleep(TOPICS_POLL_S)
    finally:
        await admin.close()


# --- /metrics and /healthz -------------------------------------------------------------


class _OpsApp(AsgiFastStream):
    """FastStream's ASGI router, with a 404 that names the endpoints there are."""

    async def not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().not_found(scope, receive, send)
            return
        body = f"try {METRICS_PATH} or {HEALTH_PATH}\n".encode()
        await AsgiResponse(body, 404, {"Content-Type": "text/plain; charset=utf-8"})(scope, receive, send)


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn as a task on the worker's loop: it says when it listens, and leaves signals alone.

    :func:`serve` owns SIGTERM/SIGINT (graceful stop of the subscribers, then
    the second signal exits); uvicorn's own handlers would replace those and
    re-raise the signal after its shutdown.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


def build_ops_app(health: Callable[[], Awaitable[Health]]) -> AsgiFastStream:
    """The ops endpoints as an ASGI app without a broker: the worker starts and stops its broker."""
    from handlers.runtime.metrics import REGISTRY

    @get(description="Prometheus exposition of polydub's registry (stage outcomes, FastStream).")
    async def metrics(scope: Scope) -> AsgiResponse:
        return AsgiResponse(generate_latest(REGISTRY), 200, {"Content-Type": CONTENT_TYPE_LATEST})

    @get(description="The worker's health verdict: 200 when it consumes, 503 while starting or stopping.")
    async def healthz(scope: Scope) -> AsgiResponse:
        verdict = await health()
        body = orjson.dumps({"ok": verdict.ok, **verdict.detail}) + b"\n"
        return AsgiResponse(body, 200 if verdict.ok else 503, {"Content-Type": "application/json"})

    # The handlers log their exceptions (answered 500) through this module's logger.
    return _OpsApp(asgi_routes=[(METRICS_PATH, metrics), (HEALTH_PATH, healthz)], logger=log)


class OpsServer:
    """``GET /metrics`` and ``GET /healthz`` over HTTP, on the worker's event loop.

    FastStream's ASGI app routes, uvicorn serves it as a task on the loop the
    subscribers run on, so a health check sees exactly what the consumers see.
    The ASGI lifespan is off: the app holds no broker, the worker starts and
    stops its own. The socket is bound here rather than by uvicorn, which
    would log and ``sys.exit`` on a taken port instead of letting the worker
    tell the user which setting to change.
    """

    def __init__(self, health: Callable[[], Awaitable[Health]], host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._app = build_ops_app(health)
        self._socket: socket.socket | None = None
        self._server: _EmbeddedUvicorn | None = None
        self._serving: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one; useful when a test asked for 0)."""
        assert self._socket is not None
        return int(self._socket.getsockname()[1])

    async def start(self) -> OpsServer:
        """Bind, then return once uvicorn accepts connections."""
        self._socket = _listen(self._host, self._port)
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,  # keep the worker's structured logging as it is
            log_level=logging.WARNING,  # uvicorn's lifecycle chatter stays out of the worker log
            access_log=False,  # one line per scrape or probe would flood it
            server_header=False,
            timeout_graceful_shutdown=OPS_SHUTDOWN_GRACE_S,
        )
        self._server = _EmbeddedUvicorn(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="polydub-ops")
        listening = asyncio.create_task(self._server.listening.wait())
        try:
            await asyncio.wait({self._serving, listening}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            listening.cancel()
        if self._serving.done():
            self._serving.result()  # raises what uvicorn raised
            raise PolydubError(f"the metrics server on {self._host}:{self.port} stopped while starting")
        return self

    async def close(self) -> None:
        """Stop accepting, let running requests finish (bounded), close the socket."""
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving
        elif self._socket is not None:
            self._socket.close()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (IPv4 or IPv6), or an :class:`InputError` naming the setting."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        return socket.create_server(address, family=family)
    except OSError as exc:
        raise InputError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
            "pick a free POLYDUB_METRICS_PORT (or --metrics-port), or 0 to turn the endpoints off",
        ) from exc


# --- running ---------------------------------------------------------------------------


async def serve(settings: Settings, stages: Sequence[str], stop: asyncio.Event | None = None) -> None:
    """Run the stages until ``stop`` is set.

    Without ``stop`` the worker owns the process (the CLI): SIGTERM/SIGINT set
    it, and threads of cancelled handlers are abandoned at exit (module doc,
    5). A caller that passes its own event owns shutdown and process alike.
    """
    loop = asyncio.get_running_loop()
    executor: ThreadPoolExecutor | None = None
    installed: list[signal.Signals] = []
    if stop is None:
        executor = ThreadPoolExecutor(thread_name_prefix=IO_THREAD_PREFIX)
        loop.set_default_executor(executor)
        stop = asyncio.Event()
        installed = _install_signal_handlers(loop, stop)
    worker = Worker(settings, stages)
    ops = None
    try:
        if settings.metrics_port:
            ops = await OpsServer(worker.health, settings.metrics_host, settings.metrics_port).start()
        await _start_unless_stopped(worker, stop)
        if not stop.is_set():
            log.info(
                "worker started",
                extra={
                    "stages": list(worker.stages),
                    "groups": [f"{settings.consumer_group_prefix}.{s}" for s in worker.stages],
                    "bootstrap_servers": settings.bootstrap_servers,
                    "metrics": f"{settings.metrics_host}:{ops.port}" if ops else "off",
                },
            )
            await stop.wait()
        log.info("worker stopping: consumers leave their groups, unfinished events stay uncommitted")
    finally:
        worker.stopping = True
        try:
            await worker.stop()
        finally:
            if ops is not None:
                await ops.close()
            for sig in installed:
                loop.remove_signal_handler(sig)
            _flush_telemetry()
    log.info("worker stopped")
    if executor is not None:
        _release_blocking_threads(executor)


async def _start_unless_stopped(worker: Worker, stop: asyncio.Event) -> None:
    """Start, but give up at once if a signal arrives while groups are still being joined."""
    starting = asyncio.ensure_future(worker.start())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if starting.done():
        starting.result()  # raises what start raised
    else:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting


def _install_signal_handlers(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> list[signal.Signals]:
    """First SIGTERM/SIGINT: graceful stop. Second: exit now (a stuck shutdown is worse)."""

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second signal: exiting without waiting", extra={"signal": sig.name})
            _flush_telemetry()
            os._exit(EXIT_FORCED)
        log.info("shutdown requested", extra={"signal": sig.name})
        stop.set()

    installed = []
    for sig in SHUTDOWN_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    return installed


def _flush_telemetry() -> None:
    """Spans still buffered (OTLP batches) go out before the process ends."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if force_flush is not None:
        with contextlib.suppress(Exception):
            force_flush()


def _release_blocking_threads(executor: ThreadPoolExecutor) -> None:
    """Wait briefly for threads of cancelled handlers, then exit without them (module doc, 5)."""
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + BLOCKING_CALLS_GRACE_S
    while True:
        busy = [t for t in threading.enumerate() if t.name.startswith(IO_THREAD_PREFIX) and t.is_alive()]
        if not busy or time.monotonic() > deadline:
            break
        time.sleep(THREAD_POLL_S)
    if busy:
        log.warning(
            "abandoning blocking calls of cancelled handlers; their events were not committed "
            "and will be redelivered",
            extra={"threads": len(busy)},
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def run_worker(settings: Settings, stages: Sequence[str]) -> int:
    """``polydub worker``: serve until a signal, exit 0 after a clean shutdown."""
    asyncio.run(serve(settings, stages))
    return 0


__all__ = ["Health", "OpsServer", "Worker", "run_worker", "serve"]
