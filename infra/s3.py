"""S3 as the stack sees it: where and as whom to reach it, and a client to probe it.

The launcher needs S3 for two things only: proving SeaweedFS serves (a real
``ListBuckets``) and creating the buckets the stack promises. Both are done
here with boto3 directly, because ``infra`` imports nothing of ``handlers``
(whose ``S3ObjectStore`` is polydub's real S3 client, and configures boto3 the
same way: path-style addressing, checksums only when required, since SeaweedFS
and other non-AWS gateways mishandle boto3's default ones).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

#: Error codes that mean the bucket exists already and is ours.
_BUCKET_EXISTS_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})

_SESSION_LOCK = threading.Lock()
_SESSION: Any = None


@dataclasses.dataclass(frozen=True)
class S3Access:
    """Where and as whom to reach S3 (the broker's storage needs it as ``AWS_*`` variables)."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


def _session() -> Any:
    """One boto3 session per process: a fresh one spends ~0.4 s parsing API models, and
    the health probe makes a client every few hundred milliseconds."""
    global _SESSION
    if _SESSION is None:
        import boto3

        _SESSION = boto3.session.Session()
    return _SESSION


def s3_client(
    access: S3Access, *, connect_timeout_s: float, read_timeout_s: float, max_attempts: int
) -> Any:
    """A boto3 S3 client for ``access`` with the given timeouts and retry bound."""
    from botocore.config import Config

    config = Config(
        region_name=access.region,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"max_attempts": max_attempts, "mode": "standard"},
    )
    with _SESSION_LOCK:  # botocore sessions are not thread-safe; clients are
        return _session().client(
            "s3",
            endpoint_url=access.endpoint,
            region_name=access.region,
            aws_access_key_id=access.access_key,
            aws_secret_access_key=access.secret_key,
            config=config,
        )


def ensure_bucket(client: Any, bucket: str) -> None:
    """Create ``bucket`` unless it exists; other refusals propagate (botocore's ``ClientError``)."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError:
        pass
    try:
        client.create_bucket(Bucket=bucket)
        log.info("created bucket %s", bucket)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) not in _BUCKET_EXISTS_CODES:
            raise
