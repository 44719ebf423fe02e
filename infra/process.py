"""Supervising one server process: ports, start, health, stop; the base of every recipe.

Every server binds 127.0.0.1 only, on free ports unless told otherwise, runs
in its own process group (so a stop also reaches Triton's python stubs) with
stdout/stderr in ``<run_dir>/logs/<name>.log``, and is *healthy* only when a
real protocol request succeeds and the listening socket belongs to our process
(not to whoever else grabbed a port we were given). A failed start raises
:class:`~infra.errors.StackError` carrying the tail of the server's log,
because that is where the reason is.

Servers started in process are tied to it (``PR_SET_PDEATHSIG``), so a crashed
test run does not leak them; detached ones (``polydub stack up``) outlive it.
The recipes (:mod:`infra.broker`, :mod:`infra.seaweed`, :mod:`infra.triton`)
say only what differs: ports, command line, probe, exported settings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import logging
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

from infra.errors import StackError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"

_LOG_TAIL_LINES = 40
_LOG_TAIL_CHARS = 6000
_PORT_CLASH = re.compile(r"address already in use|addrinuse|address in use", re.IGNORECASE)
_PORT_ATTEMPTS = 3
_TABLE_BORDER = re.compile(r"\+[-+]*\+")
#: ``prctl`` option: the signal a child gets when the thread that spawned it dies.
_PR_SET_PDEATHSIG = 1
#: How long a SIGKILLed process group may take to disappear.
_KILL_REAP_S = 5.0
#: Pause between checks whether a stopping process is gone.
_REAP_POLL_S = 0.02


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
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


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


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion from sync code, even if this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


#: Detached servers' ``Popen`` objects: kept referenced so none is garbage-collected
#: (and its warning about a still-running child printed) while the server runs.
_DETACHED: list[subprocess.Popen[bytes]] = []


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

    def start(self, *, detached: bool = False) -> Self:
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
            self._reap(_KILL_REAP_S)

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
            time.sleep(_REAP_POLL_S)
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
        """What ``stack status``/``stack down`` need to find this process again (:mod:`infra.stackstate`)."""
        return {
            "kind": self.name,
            "pid": self.pid,
            "argv0": self._argv0,
            "ports": self.ports,
            "log": str(self.log_path),
            "run_dir": str(self.run_dir),
            "params": self.params(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild a server object (not a process) of this class from :meth:`state`.

        Called on the recipe the state names (``infra.stackstate.server_from_state``
        picks it), so this base needs no list of its subclasses.
        """
        if state["kind"] != cls.name:
            raise ValueError(f"state of a {state['kind']} server cannot rebuild a {cls.name} server")
        server = cls(state["run_dir"], ports=state["ports"], **state.get("params", {}))
        server.pid = state["pid"]
        server._argv0 = state.get("argv0")
        return server

    def __enter__(self) -> Self:
        return self if self.pid is not None and self.is_alive() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

