"""The detached stack (``polydub stack up/down/status``): its state file and lock.

:func:`start_detached` starts servers that outlive the command and records them
in ``<stack_dir>/stack.json`` (mode 0600: it holds the S3 secret); later
commands, in other processes, rebuild the server objects from that file
(:func:`server_from_state`) to probe or stop them. A lock file serializes
up/down/status on one stack dir. Which stack to start is the caller's choice
(``handlers.localstack`` builds it from polydub's settings).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shlex
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from infra.broker import BrokerServer
from infra.errors import StackError, StackInputError
from infra.process import Server, run_sync
from infra.seaweed import SeaweedServer
from infra.stack import Stack, stop_servers
from infra.topics import TOPICS_FILE, ensure_topics
from infra.triton import TritonServer

log = logging.getLogger(__name__)

#: Name of the state file :func:`start_detached` writes in the stack dir.
STATE_FILE = "stack.json"
#: Name of the lock file that serializes commands on one stack dir.
LOCK_FILE = ".lock"
#: Version of the state file's layout.
STATE_VERSION = 1
#: The state file holds the S3 secret: readable by its owner only.
_STATE_MODE = 0o600
#: Every server recipe, by the ``kind`` the state file records.
SERVER_KINDS: dict[str, type[Server]] = {
    cls.name: cls for cls in (BrokerServer, SeaweedServer, TritonServer)
}


@dataclasses.dataclass(frozen=True)
class ServerStatus:
    """One line of ``polydub stack status``."""

    name: str
    pid: int | None
    alive: bool
    healthy: bool
    ports: dict[str, int]
    log: str


def server_from_state(state: Mapping[str, Any]) -> Server:
    """The server object (not a process) one entry of the state file describes."""
    return SERVER_KINDS[state["kind"]].from_state(state)


@contextlib.contextmanager
def _locked(stack_dir: Path) -> Iterator[None]:
    """Serialize up/down/status on one stack dir (two `stack up` would both start servers)."""
    stack_dir.mkdir(parents=True, exist_ok=True)
    with open(stack_dir / LOCK_FILE, "w") as fh:
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
    return [server_from_state(s) for s in state.get("servers", {}).values()]


def _write_state(stack_dir: Path, stack: Stack) -> Path:
    path = stack_dir / STATE_FILE
    state = {
        "version": STATE_VERSION,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "servers": {name: server.state() for name, server in stack.servers.items()},
        "env": stack.env(),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _STATE_MODE)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2)
    os.replace(tmp, path)
    return path


def format_exports(env: Mapping[str, str]) -> str:
    """``export KEY=value`` lines a shell can ``eval``."""
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items()))


def start_detached(stack: Stack, *, topic_prefix: str = "", out: TextIO | None = None) -> dict[str, str]:
    """Start ``stack`` detached (it outlives this process), record it, print its exports.

    The stack's ``run_dir`` is the stack dir the state file goes to. Refuses if
    a stack recorded there still runs. With a broker, creates the topics of
    ``infra/topics.yaml`` (under ``topic_prefix``) first. Returns the
    ``POLYDUB_*`` variables it printed.
    """
    out = out or sys.stdout
    stack_dir = stack.run_dir
    with _locked(stack_dir):
        state = _read_state(stack_dir)
        if state:
            running = [s for s in _servers_from_state(state) if s.is_alive()]
            if running:
                pids = ", ".join(f"{s.name} pid {s.pid}" for s in running)
                raise StackInputError(
                    f"a stack is already running from {stack_dir} ({pids})",
                    "run `polydub stack down` first, or set POLYDUB_STACK_DIR to another folder",
                )
        stack.start(detached=True)
        try:
            _write_state(stack_dir, stack)
        except OSError:
            stack.stop()
            raise
    env = stack.env()
    if "POLYDUB_BOOTSTRAP_SERVERS" in env:
        created = run_sync(ensure_topics(env["POLYDUB_BOOTSTRAP_SERVERS"], topic_prefix))
        print(f"# created {len(created)} topic(s) from infra/{TOPICS_FILE.name}", file=out)
    print(format_exports(env), file=out)
    return env


def _recorded_servers(stack_dir: Path, out: TextIO) -> list[Server] | None:
    """The servers the state file records (read under the caller's lock), or ``None``, said on ``out``."""
    state = _read_state(stack_dir)
    if state is None:
        print(f"no stack recorded in {stack_dir}", file=out)
        return None
    return _servers_from_state(state)


def stop_recorded(stack_dir: Path, *, out: TextIO | None = None) -> list[str]:
    """Stop the servers recorded in ``stack_dir``'s state file and remove it; returns their names."""
    out = out or sys.stdout
    stack_dir = stack_dir.resolve()
    with _locked(stack_dir):
        servers = _recorded_servers(stack_dir, out)
        if servers is None:
            return []
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


def recorded_status(stack_dir: Path, *, out: TextIO | None = None) -> list[ServerStatus]:
    """Each recorded server's pid, whether it runs and whether it answers its health probe."""
    out = out or sys.stdout
    stack_dir = stack_dir.resolve()
    with _locked(stack_dir):
        servers = _recorded_servers(stack_dir, out)
    if servers is None:
        return []
    statuses = []
    for server in servers:
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
