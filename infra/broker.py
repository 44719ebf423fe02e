"""The broker recipe: Tansu, a Kafka-compatible broker, started as a :class:`~infra.process.Server`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from infra.binaries import tansu_binary
from infra.errors import StackError, StackInputError
from infra.process import LOOPBACK, Server, run_sync
from infra.s3 import S3Access

log = logging.getLogger(__name__)

#: Storage of a broker that keeps its log in memory (lost on stop).
MEMORY_STORAGE = "memory://tansu/"
#: Timeouts of the health probe: the TCP connect, then the Kafka metadata round trip.
_CONNECT_TIMEOUT_S = 1.0
_METADATA_TIMEOUT_S = 2.0


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
        storage: str = MEMORY_STORAGE,
        s3: S3Access | Mapping[str, str] | None = None,
        cluster_id: str = "polydub",
        startup_timeout_s: float | None = None,
    ) -> None:
        super().__init__(run_dir, ports=ports, startup_timeout_s=startup_timeout_s)
        if not storage.startswith(("memory://", "s3://")):
            raise StackInputError(
                f"broker storage {storage!r} is not supported by this Tansu build",
                "use memory://tansu/ or s3://BUCKET/",
            )
        self.storage = storage
        #: Required for ``s3://`` storage by the time the broker starts (a :class:`~infra.stack.Stack`
        #: fills it in from its SeaweedFS once that is healthy).
        self.s3 = S3Access(**s3) if isinstance(s3, Mapping) else s3
        self.cluster_id = cluster_id

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self.ports['kafka']}"

    def command(self) -> list[str]:
        if self.storage.startswith("s3://") and self.s3 is None:
            raise StackInputError(
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
        with socket.create_connection((LOOPBACK, self.ports["kafka"]), timeout=_CONNECT_TIMEOUT_S):
            pass
        run_sync(_kafka_metadata(self.bootstrap_servers, timeout_s=_METADATA_TIMEOUT_S))

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
