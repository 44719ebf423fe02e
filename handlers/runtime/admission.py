"""What a submission may point at and how big it may be: checked at ingest, before any work.

A ``media.submitted`` event comes from outside the deployment, so everything in
it is untrusted. Two kinds of rule live here, once, so every stage and every
mode applies the same ones:

* **Where from.** A worker reads only its own object store (``s3://`` of its
  bucket, or the local store's folder), plus ``file://`` where the deployment
  allows local files (``POLYDUB_ALLOW_FILE_SOURCES``; by default only the
  one-machine ``local`` store, i.e. ``polydub run``) and ``http(s)://`` from the
  hosts ``POLYDUB_SOURCE_HOSTS`` names, redirects included (a redirect is how
  an allowed URL would reach the metadata service or the filer port).
  ``output_prefix`` must lie inside the store, outside its reserved job folder.
  URIs never carry credentials: the store's keys come from the environment.
* **How big.** Every size a job can grow with (segments, characters, duration,
  resolution, bytes of each file) is bounded by a setting, so one event cannot
  make a worker (or a model behind it) run out of memory.

Every refusal is an :class:`~schemas.errors.InputError` naming the limit and
the setting that sets it, which ingest turns into ``dub.failed`` (input rejected).
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from handlers.runtime import keys
from handlers.runtime.media import MediaInfo
from handlers.runtime.objectstore import ObjectStore, validate_key
from handlers.runtime.settings import Settings
from handlers.runtime.subtitles import Segment
from schemas.errors import InputError

#: Read and written in pieces of this size, so a download is checked against its bound as it goes.
COPY_BLOCK_BYTES = 1024 * 1024
#: Deadline of one HTTP fetch's connect and of each read, in seconds.
HTTP_TIMEOUT_S = 60.0
#: The store's top folder that holds every job's state: no output prefix may write into it.
RESERVED_PREFIX = keys.job_prefix("x").split("/", 1)[0] + "/"
_HTTP_SCHEMES = ("http", "https")


def file_sources_allowed(settings: Settings) -> bool:
    """Whether ``file://`` sources are read: as set, else only with the one-machine local store."""
    if settings.allow_file_sources is not None:
        return settings.allow_file_sources
    return settings.object_store == "local"


def allowed_hosts(settings: Settings) -> frozenset[str]:
    """``POLYDUB_SOURCE_HOSTS`` as a set of lowercase ``host`` and ``host:port`` entries."""
    return frozenset(h.strip().lower() for h in settings.source_hosts.split(",") if h.strip())


def _host_allowed(url: str, hosts: frozenset[str]) -> bool:
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host or parts.scheme not in _HTTP_SCHEMES:
        return False
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return host in hosts or f"{host}:{port}" in hosts


def _refuse_host(uri: str, what: str) -> InputError:
    host = urllib.parse.urlsplit(uri).netloc.rsplit("@", 1)[-1] or "?"
    return InputError(
        f"{what} {uri} is on host {host}, which this deployment does not fetch from",
        "upload the file into the deployment's object store (polydub submit does this), or have the "
        "operator add the host to POLYDUB_SOURCE_HOSTS",
    )


def check_source_uri(uri: str, store: ObjectStore, settings: Settings, what: str = "source") -> None:
    """Refuse a submitted URI this worker may not read (see the module docstring for the rules)."""
    if uri.startswith(store.root_uri):
        store.key_of(uri)  # refuses '..', empty and reserved segments
        return
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme == "file":
        if not file_sources_allowed(settings):
            raise InputError(
                f"{what} {uri} is a local file of the worker, which workers do not read",
                f"upload it under {store.root_uri} and submit that URI (polydub submit does this)",
            )
        return
    if scheme in _HTTP_SCHEMES:
        parts = urllib.parse.urlsplit(uri)
        if parts.username is not None or parts.password is not None:
            raise InputError(
                f"{what} URI carries credentials (user:password@); events must never hold secrets",
                "give a URI without credentials; workers take theirs from their environment",
            )
        if not _host_allowed(uri, allowed_hosts(settings)):
            raise _refuse_host(uri, what)
        return
    raise InputError(
        f"{what} {uri} is outside this deployment's object store ({store.root_uri})",
        f"upload it under {store.root_uri} and submit that URI",
    )


class _AllowListRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an allowed host: otherwise an allowed URL could point anywhere."""

    def __init__(self, hosts: frozenset[str], what: str) -> None:
        self._hosts = hosts
        self._what = what

    def redirect_request(self, req: Any, fp: IO[bytes], code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        if not _host_allowed(newurl, self._hosts):
            raise _refuse_host(newurl, f"{self._what} (redirected to)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _too_big(what: str, uri: str, limit: int, setting: str) -> InputError:
    return InputError(
        f"{what} {uri} is larger than {limit} bytes, the limit {setting} sets",
        f"give a smaller file, or have the operator raise {setting}",
    )


def copy_bounded(src: IO[bytes], dest: Path, limit: int, what: str, uri: str, setting: str) -> None:
    """Copy ``src`` to ``dest``, refusing (and stopping) once it passes ``limit`` bytes."""
    written = 0
    with dest.open("wb") as out:
        while block := src.read(COPY_BLOCK_BYTES):
            written += len(block)
            if written > limit:
                raise _too_big(what, uri, limit, setting)
            out.write(block)


def fetch_http(uri: str, dest: Path, settings: Settings, limit: int, setting: str, what: str) -> Path:
    """Download an allowed ``http(s)://`` URI to ``dest``, redirects checked, size bounded."""
    hosts = allowed_hosts(settings)
    opener = urllib.request.build_opener(_AllowListRedirects(hosts, what))
    with opener.open(uri, timeout=HTTP_TIMEOUT_S) as response:
        copy_bounded(response, dest, limit, what, uri, setting)
    return dest


def check_file_size(path: Path, limit: int, setting: str, what: str, uri: str) -> None:
    """Refuse a local copy (or a local source, before it is copied) larger than ``limit`` bytes."""
    if path.stat().st_size > limit:
        raise _too_big(what, uri, limit, setting)


def output_prefix_key(prefix: str, store: ObjectStore) -> str:
    """The store key prefix an ``output_prefix`` names (ending in ``/``), or :class:`InputError`."""
    fix = (f"give a prefix under {store.root_uri} outside its {RESERVED_PREFIX} folder, "
           f"e.g. {store.root_uri}deliveries/, or leave output_prefix unset")
    if not prefix.startswith(store.root_uri):
        raise InputError(f"output_prefix {prefix} is outside this deployment's object store "
                         f"({store.root_uri})", fix)
    try:
        key = validate_key(prefix[len(store.root_uri):].rstrip("/"))
        key = store.key_of(store.root_uri + key) or key  # the local store's percent-decoding
    except InputError as exc:
        raise InputError(f"output_prefix {prefix} is not a usable folder: {exc.reason}", fix) from exc
    folder = key.rstrip("/") + "/"
    if folder.startswith(RESERVED_PREFIX):
        raise InputError(f"output_prefix {prefix} is inside the store's reserved {RESERVED_PREFIX} folder, "
                         "where jobs keep their state", fix)
    return folder


# --- sizes -------------------------------------------------------------------------


def _limit_error(what: str, value: float | int, limit: float | int, setting: str, fix: str) -> InputError:
    return InputError(f"{what} is {value}, above the limit of {limit} ({setting})",
                      f"{fix}, or have the operator raise {setting}")


def check_segment_limits(segments: Iterable[Segment], settings: Settings) -> None:
    """Bound the segment count and the text per segment and per job (TTS cost grows with them)."""
    count = 0
    total = 0
    for segment in segments:
        count += 1
        if count > settings.max_segments:
            raise _limit_error("the number of subtitle segments", f"more than {settings.max_segments}",
                               settings.max_segments, "POLYDUB_MAX_SEGMENTS", "split the video into several jobs")
        chars = len(segment.text)
        if chars > settings.max_segment_chars:
            raise _limit_error(f"the text of subtitle segment {segment.index} (line {segment.line})",
                               f"{chars} characters", settings.max_segment_chars,
                               "POLYDUB_MAX_SEGMENT_CHARS", "split the cue into shorter ones")
        total += chars
        if total > settings.max_job_chars:
            raise _limit_error("the job's subtitle text", f"more than {settings.max_job_chars} characters",
                               settings.max_job_chars, "POLYDUB_MAX_JOB_CHARS", "split the video into several jobs")


def check_media_limits(media: MediaInfo, settings: Settings, uri: str) -> None:
    """Bound the source's duration and resolution (every later stage's memory and time scale with them)."""
    if media.duration_s > settings.max_duration_s:
        raise _limit_error(f"the duration of {uri}", f"{media.duration_s:.1f} s", f"{settings.max_duration_s:g} s",
                           "POLYDUB_MAX_DURATION_S", "cut the video into shorter parts")
    side = max(media.width or 0, media.height or 0)
    if side > settings.max_video_side:
        raise _limit_error(f"the resolution of {uri}", f"{media.width}x{media.height}",
                           f"{settings.max_video_side} px on the longer side", "POLYDUB_MAX_VIDEO_SIDE",
                           "scale the video down")

