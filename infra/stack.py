"""The local stack: any subset of broker, SeaweedFS and Triton, started and stopped together.

Three real servers on loopback (the recipes :mod:`infra.broker`,
:mod:`infra.seaweed`, :mod:`infra.triton`), each from a wheel already in the
venv. In process: ``with Stack(run_dir, services) as stack: stack.env()``
(tests, benchmarks); detached, for ``polydub stack up``, through
:mod:`infra.stackstate`. Building one from polydub's settings is
``handlers.localstack.stack_from_settings`` (infra knows no settings).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Self

from infra.broker import MEMORY_STORAGE, BrokerServer
from infra.errors import StackError, StackInputError
from infra.process import Server
from infra.s3 import S3Access
from infra.seaweed import SeaweedServer
from infra.triton import (
    DEFAULT_TRITON_CONFIG_NAME,
    DEFAULT_TRITON_CPU_THREADS,
    TritonServer,
)

log = logging.getLogger(__name__)

#: Service names accepted by :class:`Stack`, in start order.
SERVICES: tuple[str, ...] = ("seaweed", "broker", "triton")
#: Bucket the broker keeps its log in when its storage is S3.
BROKER_BUCKET = "tansu"
#: Broker storage choices of a :class:`Stack`.
BROKER_STORAGES: tuple[str, ...] = ("memory", "s3")


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
        triton_model_configs: Mapping[str, str] | None = None,
    ) -> None:
        wanted = set(services)
        unknown = wanted - set(SERVICES)
        if unknown or not wanted:
            raise StackInputError(
                f"unknown stack services {sorted(unknown)}" if unknown else "no stack services",
                f"choose from {', '.join(SERVICES)}",
            )
        if broker_storage not in BROKER_STORAGES:
            raise StackInputError(
                f"broker storage {broker_storage!r} is unknown", f"use {' or '.join(BROKER_STORAGES)}"
            )
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
            storage = MEMORY_STORAGE if broker_storage == "memory" else f"s3://{BROKER_BUCKET}/"
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
                # polydub's configs are generated complete (serving.configs) and its
                # adapters define no auto_complete_config: asking only re-imports every
                # model.py in an extra stub, ~2 s a model at start.
                auto_complete_config=triton_auto_complete_config,
                cpu_threads=triton_cpu_threads,
                model_configs=triton_model_configs,
            )

    def start(self, *, detached: bool = False) -> Self:
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
