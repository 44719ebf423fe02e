"""The object-store recipe: SeaweedFS with its S3 gateway, started as a :class:`~infra.process.Server`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infra.binaries import weed_binary
from infra.errors import StackError
from infra.process import LOOPBACK, Server
from infra.s3 import S3Access, ensure_bucket, s3_client

log = logging.getLogger(__name__)

#: Timeouts of one health probe (master status, then ``ListBuckets``); one attempt, the
#: probe loop is the retry.
_PROBE_TIMEOUT_S = 1.0
_PROBE_READ_TIMEOUT_S = 2.0
#: Timeouts and attempts of creating the buckets once the server is healthy.
_BUCKET_CONNECT_TIMEOUT_S = 2.0
_BUCKET_READ_TIMEOUT_S = 10.0
_BUCKET_ATTEMPTS = 3
#: Bytes of randomness in the generated access key's suffix.
_ACCESS_KEY_TOKEN_BYTES = 6
#: Bytes of randomness in the generated secret key.
_SECRET_KEY_TOKEN_BYTES = 24


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
        self.access_key = access_key or f"polydub-{secrets.token_hex(_ACCESS_KEY_TOKEN_BYTES)}"
        self.secret_key = secret_key or secrets.token_urlsafe(_SECRET_KEY_TOKEN_BYTES)
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
        with urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT_S) as response:  # noqa: S310 - loopback
            topology = json.load(response).get("Topology", {})
        if not topology.get("DataCenters"):
            raise StackError("no volume server has registered with the master yet")
        client = s3_client(self.access, connect_timeout_s=_PROBE_TIMEOUT_S,
                           read_timeout_s=_PROBE_READ_TIMEOUT_S, max_attempts=1)
        client.list_buckets()

    def on_healthy(self) -> None:
        """Create the buckets the stack promises; a refusal stops the server (it is not usable)."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = s3_client(self.access, connect_timeout_s=_BUCKET_CONNECT_TIMEOUT_S,
                           read_timeout_s=_BUCKET_READ_TIMEOUT_S, max_attempts=_BUCKET_ATTEMPTS)
        for bucket in self.buckets:
            try:
                ensure_bucket(client, bucket)
            except (BotoCoreError, ClientError) as exc:
                self.stop()
                raise StackError(
                    f"seaweed could not create bucket {bucket!r} at {self.endpoint}: {exc}",
                    f"read {self.log_path}",
                ) from exc

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
