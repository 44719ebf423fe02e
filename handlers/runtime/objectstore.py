"""The object store: where media and chunk state live between stages.

Events carry only keys/URIs; the bytes live here. Two implementations behind
one interface, so a handler never knows which one it talks to:

- :class:`LocalObjectStore`, a folder: the embedded default (``polydub run``)
  and unit tests. Writes are atomic (temp file + ``os.replace``) so a reader
  never sees half an object and a crashed writer leaves no partial object.
- :class:`S3ObjectStore`, any S3 (SeaweedFS in the local stack, AWS, MinIO).

Both enforce the same key rules (``/``-separated, relative, no ``.``/``..``
or empty segments), so a key that works locally works on S3 and cannot
escape the local root. Keys come from :mod:`handlers.runtime.keys`.

The API is synchronous (boto3 is); async handlers call it through
``asyncio.to_thread``. Errors: a missing object raises
:class:`~schemas.errors.ObjectNotFound` naming the key; an
unreachable or failing store raises
:class:`~schemas.errors.StorageError` (retryable).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import urllib.parse
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from handlers.runtime.settings import Settings
from schemas.errors import InputError, ObjectNotFound, StorageError

log = logging.getLogger(__name__)

#: S3's own limit on key length, applied to both stores so they agree.
MAX_KEY_LENGTH = 1024
#: Reserved top-level folder of the local store holding in-flight temp files.
_LOCAL_TMP = ".polydub-tmp"


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise :class:`InputError`.

    Rejected: empty keys, absolute keys, ``.``/``..``/empty segments (they would
    escape or alias paths in the local store and confuse S3 consoles), a
    trailing ``/`` (that names a folder, not an object), backslashes and control
    characters (not portable), and the local store's reserved temp folder.
    """
    problem: str | None = None
    if not isinstance(key, str) or not key:
        problem = "is empty"
    elif len(key.encode()) > MAX_KEY_LENGTH:
        problem = f"is longer than {MAX_KEY_LENGTH} bytes"
    elif key.startswith("/"):
        problem = "is absolute"
    elif "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key):
        problem = "contains a backslash or a control character"
    else:
        segments = key.split("/")
        if any(s in ("", ".", "..") for s in segments):
            problem = "has an empty, '.' or '..' segment"
        elif segments[0] == _LOCAL_TMP:
            problem = f"starts with the reserved folder {_LOCAL_TMP!r}"
    if problem:
        raise InputError(
            f"object key {key!r} {problem}",
            "use a relative '/'-separated key such as 'jobs/<job>/source/video.mp4' "
            "(see handlers.runtime.keys)",
        )
    return key


class ObjectStore(ABC):
    """One interface over a folder and S3; every method takes a validated key."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` as the whole object ``key``, replacing any previous object."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The whole object ``key``; :class:`ObjectNotFound` if there is none."""

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Upload the local file ``path`` as object ``key`` (streamed, not read into memory)."""

    @abstractmethod
    def get_file(self, key: str, path: str | os.PathLike[str]) -> Path:
        """Download object ``key`` to ``path`` atomically (parents created); returns the path."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether object ``key`` exists (a mere key prefix is not an object)."""

    @abstractmethod
    def listing(self, prefix: str = "") -> dict[str, float]:
        """Every key starting with ``prefix`` (a plain string prefix), with when it was last
        written (seconds since the epoch): one listing answers both "what is there" and "how
        long ago did anything change", which is what a stalled job is noticed by."""

    def list(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix`` (a plain string prefix), sorted."""
        return sorted(self.listing(prefix))

    def last_written(self, prefix: str) -> float | None:
        """When anything under ``prefix`` was last written (epoch seconds); ``None`` if nothing is."""
        return max(self.listing(prefix).values(), default=None)

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove object ``key``; deleting a missing object is not an error (idempotent)."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """Where the object lives, as ``s3://bucket/key`` or ``file:///abs/path``."""

    @property
    @abstractmethod
    def root_uri(self) -> str:
        """The URI every key of this store is appended to (ends with ``/``)."""

    def key_of(self, uri: str) -> str | None:
        """The key behind a URI of this store, or ``None`` for a URI elsewhere."""
        root = self.root_uri
        if not uri.startswith(root):
            return None
        return validate_key(uri[len(root):])

    def mark(self, key: str) -> None:
        """Write an empty marker object: a cheap, idempotent "this step is done" flag."""
        self.put_bytes(key, b"")

    def is_marked(self, key: str) -> bool:
        """Whether :meth:`mark` was called for ``key`` (one HEAD, no body transfer)."""
        return self.exists(key)


def _umask() -> int:
    """The process umask (read by setting and restoring it; there is no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


def _mkstemp(folder: Path, prefix: str) -> tuple[int, Path]:
    """A temp file for an atomic write, with the mode a plain ``open`` would give.

    ``mkstemp`` creates files 0600; objects and downloaded outputs are meant to
    be as readable as any other file the user writes.
    """
    fd, name = tempfile.mkstemp(dir=folder, prefix=prefix)
    os.fchmod(fd, _FILE_MODE)
    return fd, Path(name)


def _missing(key: str, where: str) -> ObjectNotFound:
    return ObjectNotFound(
        f"object {key!r} does not exist in {where}",
        "check the job id and that the stage that writes this object has run",
    )


def _source_file(path: str | os.PathLike[str]) -> Path:
    src = Path(path)
    if not src.is_file():
        raise InputError(f"file {str(src)!r} does not exist", "pass the path of an existing file")
    return src


class LocalObjectStore(ObjectStore):
    """A folder as object store: key ``a/b/c`` is the file ``root/a/b/c``.

    Atomic writes go through a temp file in ``root/.polydub-tmp`` (same file
    system, so ``os.replace`` is atomic) and rename into place; empty folders
    are pruned on delete so that folders never shadow keys. Unlike S3, a key
    cannot be both an object and a prefix of another (``a`` and ``a/b``): that
    raises :class:`StorageError`; the layout in :mod:`handlers.runtime.keys`
    never does it.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._tmp = self.root / _LOCAL_TMP

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*validate_key(key).split("/"))
        # Belt and braces over validate_key: the path must stay inside the root.
        if os.path.commonpath([self.root, path]) != str(self.root):
            raise InputError(f"object key {key!r} escapes the store", "use a relative key")
        return path

    def _error(self, key: str, exc: OSError) -> StorageError:
        return StorageError(
            f"local object store at {self.root} failed on {key!r}: {exc}",
            "check that the folder is writable, not full, and that no key is also a "
            "folder of other keys",
        )

    def _tmp_file(self) -> tuple[int, Path]:
        self._tmp.mkdir(parents=True, exist_ok=True)
        return _mkstemp(self._tmp, "put-")

    def _commit(self, tmp: Path, path: Path) -> None:
        """Rename ``tmp`` onto ``path``; retried once if a concurrent delete pruned the folder."""
        for attempt in range(2):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, path)
                return
            except FileNotFoundError:
                if attempt:
                    raise

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            fd, tmp = self._tmp_file()
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                self._commit(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise self._error(key, exc) from exc

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise _missing(key, str(self.root)) from None
        except OSError as exc:
            raise self._error(key, exc) from exc

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        dest = self._path(key)
        src = _source_file(path)
        try:
            fd, tmp = self._tmp_file()
            os.close(fd)
            try:
                shutil.copyfile(src, tmp)
                self._commit(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise self._error(key, exc) from exc

    def get_file(self, key: str, path: str | os.PathLike[str]) -> Path:
        src = self._path(key)
        dest = Path(path)
        if not src.is_file():
            raise _missing(key, str(self.root))
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = _mkstemp(dest.parent, f".{dest.name}.")
            os.close(fd)
            try:
                shutil.copyfile(src, tmp)
                os.replace(tmp, dest)
            finally:
                Path(tmp).unlink(missing_ok=True)
        except FileNotFoundError:
            raise _missing(key, str(self.root)) from None
        except OSError as exc:
            raise self._error(key, exc) from exc
        return dest

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def listing(self, prefix: str = "") -> dict[str, float]:
        # Walk only the deepest folder the prefix names, then filter by the full prefix.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        if folder:
            self._path(folder)  # validates the folder part of the prefix
        if not start.is_dir():
            return {}
        found: dict[str, float] = {}
        for dirpath, dirnames, filenames in os.walk(start):
            if Path(dirpath) == self.root and _LOCAL_TMP in dirnames:
                dirnames.remove(_LOCAL_TMP)
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    try:
                        found[key] = os.stat(os.path.join(dirpath, name)).st_mtime
                    except FileNotFoundError:  # deleted since the walk saw it
                        continue
        return found

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except IsADirectoryError:
            return  # a folder is not an object: nothing to delete
        except OSError as exc:
            raise self._error(key, exc) from exc
        # Prune empty parents so folders never outlive their last object.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    @property
    def root_uri(self) -> str:
        return self.root.as_uri().rstrip("/") + "/"

    def key_of(self, uri: str) -> str | None:
        # file:// URIs percent-encode what a path may hold (spaces, non-ASCII).
        key = super().key_of(uri)
        return None if key is None else validate_key(urllib.parse.unquote(key))


_BOTO_LOCK = threading.Lock()
_BOTO_SESSION: Any = None


def _boto_session() -> Any:
    """One boto3 session per process: it caches the parsed API models, which makes a
    client cost milliseconds instead of the ~0.4 s a fresh session spends loading them.
    Credentials are passed per client, so stores with different keys can share it."""
    global _BOTO_SESSION
    if _BOTO_SESSION is None:
        import boto3

        _BOTO_SESSION = boto3.session.Session()
    return _BOTO_SESSION


_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_AUTH_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket"}
)


class S3ObjectStore(ObjectStore):
    """Any S3 endpoint through boto3 (path-style addressing, for SeaweedFS/MinIO on an IP).

    boto3's default request/response checksums (since 1.36) are switched to
    ``when_required``: SeaweedFS and other non-AWS gateways otherwise store or
    return corrupted bodies (see DESIGN "Dependencies").
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 3,
    ) -> None:
        from botocore.config import Config

        self.bucket = bucket
        self.endpoint_url = endpoint_url
        config = Config(
            region_name=region,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"max_attempts": max_attempts, "mode": "standard"},
        )
        with _BOTO_LOCK:  # botocore sessions are not thread-safe; clients are
            self.client: Any = _boto_session().client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                config=config,
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ObjectStore:
        """The store ``POLYDUB_S3_*`` describes."""
        return cls(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint,
            region=settings.s3_region,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
        )

    def _where(self) -> str:
        return f"s3://{self.bucket}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def _error(self, key: str, exc: Exception) -> StorageError:
        """Map a boto3 failure: missing key, a non-transient refusal, or a transient fault."""
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                return _missing(key, self._where())
            err = StorageError(
                f"{self._where()} refused {key!r}: {code or exc}",
                "check the bucket name and the POLYDUB_S3_* credentials",
            )
            if code in _AUTH_CODES:
                err.retryable = False  # retrying cannot fix a wrong bucket or key pair
            return err
        return StorageError(
            f"{self._where()} is unreachable or failed on {key!r}: {exc}",
            "check that the S3 endpoint is up (`polydub stack status`); the call is retried",
        )

    def _call(self, key: str, fn: Any, /, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(key, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        key = validate_key(key)
        self._call(key, self.client.put_object, Bucket=self.bucket, Key=key, Body=data)

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError

        key = validate_key(key)
        response = self._call(key, self.client.get_object, Bucket=self.bucket, Key=key)
        try:
            return bytes(response["Body"].read())
        except BotoCoreError as exc:  # the connection broke mid-body
            raise self._error(key, exc) from exc

    def put_file(self, key: str, path: str | os.PathLike[str]) -> None:
        src = _source_file(path)
        validate_key(key)
        self._transfer(key, self.client.upload_file, str(src), self.bucket, key)

    def get_file(self, key: str, path: str | os.PathLike[str]) -> Path:
        dest = Path(path)
        validate_key(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _mkstemp(dest.parent, f".{dest.name}.")
        os.close(fd)
        try:
            self._transfer(key, self.client.download_file, self.bucket, key, str(tmp))
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return dest

    def _transfer(self, key: str, fn: Any, /, *args: Any) -> None:
        """Run an s3transfer call; it wraps S3 errors in its own types, so unwrap them."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            fn(*args)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(key, exc) from exc
        except S3UploadFailedError as exc:
            cause = exc.__cause__ or exc.__context__
            raise self._error(key, cause if isinstance(cause, Exception) else exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self._call(key, self.client.head_object, Bucket=self.bucket, Key=validate_key(key))
        except ObjectNotFound:
            return False
        return True

    def listing(self, prefix: str = "") -> dict[str, float]:
        paginator = self.client.get_paginator("list_objects_v2")
        found: dict[str, float] = {}

        def collect() -> None:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                found.update((item["Key"], item["LastModified"].timestamp()) for item in page.get("Contents", []))

        self._call(prefix, collect)
        return found

    def delete(self, key: str) -> None:
        self._call(key, self.client.delete_object, Bucket=self.bucket, Key=validate_key(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{validate_key(key)}"

    @property
    def root_uri(self) -> str:
        return f"s3://{self.bucket}/"

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (the local stack and tests need this)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError:
            pass
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise self._error("", exc) from exc


def open_store(settings: Settings) -> ObjectStore:
    """The object store ``POLYDUB_OBJECT_STORE`` selects (``local`` or ``s3``)."""
    if settings.object_store == "s3":
        return S3ObjectStore.from_settings(settings)
    return LocalObjectStore(settings.local_store_dir)
