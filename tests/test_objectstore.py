"""The object store contract, run against a folder and against a real SeaweedFS S3.

One base class of cases (:class:`ObjectStoreContract`) with one subclass per
implementation, so both stores are held to exactly the same behaviour: a
handler must not be able to tell them apart. Plus the key layout of
``handlers.runtime.keys``.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import pytest

from handlers.localstack import settings_from_env
from handlers.runtime import keys
from handlers.runtime.objectstore import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    open_store,
    validate_key,
)
from handlers.runtime.settings import Settings
from infra.process import free_ports
from infra.seaweed import SeaweedServer
from schemas.errors import InputError, ObjectNotFound, StorageError
from tests.fixtures.servers import TEST_BUCKET, seaweed_store

#: SeaweedFS stamps objects with whole seconds, and its clock is this host's: one second either way.
CLOCK_SLACK_S = 1.0

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "a/../../outside",
    "a/..",
    "./a",
    "a/./b",
    "a//b",
    "a/",
    "a\\b",
    "a\nb",
    ".polydub-tmp/x",
    "k" * 1025,
]


class ObjectStoreContract:
    """Cases every :class:`ObjectStore` passes. Subclasses provide the ``store`` fixture.

    Keys go under a per-test prefix (``self.k``) so the S3 cases, which share
    one bucket for the session, cannot see each other's objects.
    """

    prefix: str

    @pytest.fixture(autouse=True)
    def _prefix(self) -> None:
        self.prefix = f"t-{uuid.uuid4().hex[:12]}/"

    def k(self, key: str) -> str:
        return self.prefix + key

    def test_put_get_bytes(self, store: ObjectStore) -> None:
        store.put_bytes(self.k("a/b.bin"), b"\x00hello\xff")
        assert store.get_bytes(self.k("a/b.bin")) == b"\x00hello\xff"

    def test_empty_object(self, store: ObjectStore) -> None:
        store.put_bytes(self.k("empty"), b"")
        assert store.get_bytes(self.k("empty")) == b""
        assert store.exists(self.k("empty"))

    def test_put_get_file(self, store: ObjectStore, tmp_path: Path) -> None:
        src = tmp_path / "in.wav"
        src.write_bytes(b"RIFF" + bytes(range(256)) * 4)
        store.put_file(self.k("media/in.wav"), src)
        dest = tmp_path / "deep" / "er" / "out.wav"  # parents do not exist yet
        returned = store.get_file(self.k("media/in.wav"), dest)
        assert returned == dest
        assert dest.read_bytes() == src.read_bytes()
        assert [p.name for p in dest.parent.iterdir()] == ["out.wav"]  # no temp left behind

    def test_get_file_replaces_existing_file(self, store: ObjectStore, tmp_path: Path) -> None:
        dest = tmp_path / "out.bin"
        dest.write_bytes(b"old content that is longer")
        store.put_bytes(self.k("x"), b"new")
        store.get_file(self.k("x"), dest)
        assert dest.read_bytes() == b"new"

    def test_put_file_missing_source_is_input_error(
        self, store: ObjectStore, tmp_path: Path
    ) -> None:
        with pytest.raises(InputError, match="does not exist"):
            store.put_file(self.k("x"), tmp_path / "nope.wav")
        assert not store.exists(self.k("x"))

    def test_exists(self, store: ObjectStore) -> None:
        assert not store.exists(self.k("dir/obj"))
        store.put_bytes(self.k("dir/obj"), b"1")
        assert store.exists(self.k("dir/obj"))
        assert not store.exists(self.k("dir"))  # a prefix is not an object
        assert not store.exists(self.k("dir/ob"))

    def test_list_prefix_sorted(self, store: ObjectStore) -> None:
        names = ["a/2", "a/10", "a/1", "a/sub/x", "ab", "b/1"]
        for name in names:
            store.put_bytes(self.k(name), name.encode())
        assert store.list(self.k("a/")) == [self.k(n) for n in ["a/1", "a/10", "a/2", "a/sub/x"]]
        # A plain string prefix, as on S3: "a" also matches "ab".
        assert store.list(self.k("a")) == [
            self.k(n) for n in ["a/1", "a/10", "a/2", "a/sub/x", "ab"]
        ]
        assert store.list(self.prefix) == sorted(self.k(n) for n in names)
        assert store.list(self.k("nothing/")) == []
        assert store.list(self.k("a/sub/")) == [self.k("a/sub/x")]

    def test_listing_says_when_each_key_was_last_written(self, store: ObjectStore) -> None:
        before = time.time() - CLOCK_SLACK_S
        store.put_bytes(self.k("when/first"), b"1")
        store.put_bytes(self.k("when/second"), b"2")
        listing = store.listing(self.k("when/"))
        assert sorted(listing) == [self.k("when/first"), self.k("when/second")]
        assert all(before <= t <= time.time() + CLOCK_SLACK_S for t in listing.values())
        assert store.last_written(self.k("when/")) == max(listing.values())
        assert store.last_written(self.k("never/")) is None

    def test_delete_is_idempotent(self, store: ObjectStore) -> None:
        store.put_bytes(self.k("gone/soon"), b"x")
        store.put_bytes(self.k("gone/stays"), b"y")
        store.delete(self.k("gone/soon"))
        assert not store.exists(self.k("gone/soon"))
        store.delete(self.k("gone/soon"))  # again: no error
        store.delete(self.k("never/existed"))
        assert store.list(self.prefix) == [self.k("gone/stays")]
        with pytest.raises(ObjectNotFound):
            store.get_bytes(self.k("gone/soon"))

    def test_marker(self, store: ObjectStore) -> None:
        key = self.k("chunks/00001/synthesis/_done")
        assert not store.is_marked(key)
        store.mark(key)
        assert store.is_marked(key)
        store.mark(key)  # idempotent
        assert store.get_bytes(key) == b""
        assert store.list(self.prefix) == [key]

    def test_missing_key_names_the_key(self, store: ObjectStore, tmp_path: Path) -> None:
        key = self.k("jobs/j1/manifest.json")
        with pytest.raises(ObjectNotFound, match="jobs/j1/manifest.json") as info:
            store.get_bytes(key)
        assert info.value.retryable is False
        assert isinstance(info.value, StorageError)
        dest = tmp_path / "manifest.json"
        with pytest.raises(ObjectNotFound, match="manifest.json"):
            store.get_file(key, dest)
        assert not dest.exists()
        assert list(tmp_path.iterdir()) == []  # no temp file left either

    @pytest.mark.parametrize("bad", BAD_KEYS)
    def test_unsafe_keys_are_rejected(self, store: ObjectStore, bad: str, tmp_path: Path) -> None:
        src = tmp_path / "f"
        src.write_bytes(b"x")
        for op in (
            lambda: store.put_bytes(bad, b"x"),
            lambda: store.get_bytes(bad),
            lambda: store.put_file(bad, src),
            lambda: store.get_file(bad, tmp_path / "out"),
            lambda: store.exists(bad),
            lambda: store.delete(bad),
            lambda: store.mark(bad),
            lambda: store.uri(bad),
        ):
            with pytest.raises(InputError, match="object key"):
                op()
        assert not (tmp_path / "out").exists()

    def test_overwrite_rewrites_in_place(self, store: ObjectStore) -> None:
        key = self.k("state/chunk-00000.json")
        store.put_bytes(key, b'{"stage": "synthesis", "attempt": 1, "padding": "xxxxxxxx"}')
        store.put_bytes(key, b'{"stage": "conversion"}')  # shorter: no stale tail
        store.put_bytes(key, b'{"stage": "conversion"}')  # a redelivery rewrites the same
        assert store.get_bytes(key) == b'{"stage": "conversion"}'
        assert store.list(self.prefix) == [key]

    def test_five_megabyte_round_trip(self, store: ObjectStore, tmp_path: Path) -> None:
        data = os.urandom(5 * 1024 * 1024)  # random: no compression can hide a truncation
        digest = hashlib.sha256(data).hexdigest()
        store.put_bytes(self.k("big/bytes.bin"), data)
        assert hashlib.sha256(store.get_bytes(self.k("big/bytes.bin"))).hexdigest() == digest
        src = tmp_path / "big.bin"
        src.write_bytes(data)
        store.put_file(self.k("big/file.bin"), src)
        out = store.get_file(self.k("big/file.bin"), tmp_path / "big.out")
        assert out.stat().st_size == len(data)
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digest

    def test_uri_names_the_object(self, store: ObjectStore) -> None:
        store.put_bytes(self.k("u/v.txt"), b"x")
        uri = store.uri(self.k("u/v.txt"))
        assert uri.endswith("/" + self.k("u/v.txt"))
        assert uri.startswith(("s3://", "file:///"))


    def test_key_of_inverts_uri(self, store: ObjectStore) -> None:
        key = "jobs/j1/output/dubbed video.mp4"
        assert store.key_of(store.uri(key)) == key
        assert store.uri(key).startswith(store.root_uri)
        assert store.key_of("s3://some-other-bucket/jobs/j1/x") is None
        assert store.key_of("file:///elsewhere/jobs/j1/x") is None


class TestLocalObjectStore(ObjectStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalObjectStore:
        return LocalObjectStore(tmp_path / "store")

    def test_nothing_escapes_the_root(self, store: LocalObjectStore, tmp_path: Path) -> None:
        for bad in BAD_KEYS:
            with pytest.raises(InputError):
                store.put_bytes(bad, b"x")
        assert not (tmp_path / "outside").exists()
        assert not (store.root.parent / "outside").exists()

    def test_uri_is_a_file_uri_of_the_object(self, store: LocalObjectStore) -> None:
        store.put_bytes(self.k("a/b"), b"content")
        uri = store.uri(self.k("a/b"))
        assert uri == (store.root / self.prefix / "a" / "b").as_uri()
        assert Path(uri.removeprefix("file://")).read_bytes() == b"content"

    def test_writes_leave_no_temp_files(self, store: LocalObjectStore, tmp_path: Path) -> None:
        store.put_bytes(self.k("a"), b"1")
        src = tmp_path / "src"
        src.write_bytes(b"2")
        store.put_file(self.k("b"), src)
        assert list((store.root / ".polydub-tmp").iterdir()) == []
        assert store.list() == [self.k("a"), self.k("b")]  # the temp folder is not listed

    def test_delete_prunes_empty_folders(self, store: LocalObjectStore) -> None:
        store.put_bytes(self.k("jobs/j/chunks/00000/synthesis/audio.wav"), b"x")
        store.delete(self.k("jobs/j/chunks/00000/synthesis/audio.wav"))
        assert not (store.root / self.prefix).exists()
        store.put_bytes(self.k("jobs"), b"a file where a folder was")  # no folder in the way
        assert store.get_bytes(self.k("jobs")) == b"a file where a folder was"

    def test_object_and_folder_conflict_is_storage_error(self, store: LocalObjectStore) -> None:
        store.put_bytes(self.k("a"), b"x")
        with pytest.raises(StorageError, match="failed"):
            store.put_bytes(self.k("a/b"), b"y")

    def test_open_store_local(self, tmp_path: Path) -> None:
        store = open_store(Settings(object_store="local", local_store_dir=tmp_path / "s"))
        assert isinstance(store, LocalObjectStore)
        assert store.root == (tmp_path / "s").resolve()


@pytest.mark.integration
class TestS3ObjectStore(ObjectStoreContract):
    @pytest.fixture
    def store(self, seaweed: SeaweedServer) -> S3ObjectStore:
        return seaweed_store(seaweed, TEST_BUCKET)

    def test_uri_is_s3(self, store: S3ObjectStore) -> None:
        assert store.uri(self.k("a/b")) == f"s3://{TEST_BUCKET}/{self.k('a/b')}"

    def test_open_store_s3_from_settings(self, seaweed: SeaweedServer) -> None:
        settings = settings_from_env(seaweed.settings_env())
        assert settings.s3_bucket == TEST_BUCKET
        store = open_store(settings)
        assert isinstance(store, S3ObjectStore)
        store.put_bytes(self.k("via-settings"), b"ok")
        assert seaweed_store(seaweed, TEST_BUCKET).get_bytes(self.k("via-settings")) == b"ok"

    def test_wrong_secret_is_refused_and_not_retryable(self, seaweed: SeaweedServer) -> None:
        bad = S3ObjectStore(
            TEST_BUCKET,
            endpoint_url=seaweed.endpoint,
            access_key=seaweed.access_key,
            secret_key="not-the-secret",
            max_attempts=1,
        )
        with pytest.raises(StorageError, match="SignatureDoesNotMatch") as info:
            bad.put_bytes(self.k("x"), b"x")
        assert not isinstance(info.value, ObjectNotFound)
        assert info.value.retryable is False

    def test_missing_bucket_is_storage_error(self, seaweed: SeaweedServer) -> None:
        store = seaweed_store(seaweed, "no-such-bucket-here")
        with pytest.raises(StorageError, match="NoSuchBucket"):
            store.get_bytes("x")


def test_unreachable_s3_is_retryable_storage_error() -> None:
    (port,) = free_ports(1)  # nothing listens there
    store = S3ObjectStore(
        "b", endpoint_url=f"http://127.0.0.1:{port}", access_key="a", secret_key="s",
        connect_timeout_s=0.5, max_attempts=1,
    )  # fmt: skip
    for op in (lambda: store.put_bytes("k", b"x"), lambda: store.get_bytes("k"), store.list):
        with pytest.raises(StorageError, match="unreachable") as info:
            op()
        assert info.value.retryable is True
        assert not isinstance(info.value, ObjectNotFound)


def test_validate_key_accepts_normal_keys() -> None:
    for key in ["a", "jobs/j-1/source/video.mp4", "a/b/c.d.e", "x y/z"]:
        assert validate_key(key) == key


# --- handlers.runtime.keys --------------------------------------------------------


def test_job_keys_layout() -> None:
    job = "3f2a-job_1.v2"
    assert keys.job_prefix(job) == "jobs/3f2a-job_1.v2/"
    assert keys.source_key(job, "video.mp4") == "jobs/3f2a-job_1.v2/source/video.mp4"
    assert keys.manifest_key(job) == "jobs/3f2a-job_1.v2/manifest.json"
    assert keys.chunk_state_key(job, 7) == "jobs/3f2a-job_1.v2/state/chunk-00007.json"
    assert keys.chunk_output_key(job, 12, "synthesis", "audio.wav") == (
        "jobs/3f2a-job_1.v2/chunks/00012/synthesis/audio.wav"
    )
    assert keys.chunk_done_key(job, 0, "lipsync") == "jobs/3f2a-job_1.v2/chunks/00000/lipsync/_done"
    assert keys.output_key(job, "dub.mp4") == "jobs/3f2a-job_1.v2/output/dub.mp4"
    assert keys.qc_key(job) == "jobs/3f2a-job_1.v2/output/qc.json"
    every = [
        keys.source_key(job, "s.srt"), keys.manifest_key(job), keys.chunk_state_key(job, 1),
        keys.chunk_output_key(job, 1, "qc", "x"), keys.output_key(job, "o"), keys.qc_key(job),
    ]  # fmt: skip
    for key in every:
        assert key.startswith(keys.job_prefix(job))
        assert validate_key(key) == key


def test_chunk_keys_sort_in_timeline_order() -> None:
    state = [keys.chunk_state_key("j", i) for i in (10, 2, 0, 99_999, 100)]
    assert sorted(state) == [keys.chunk_state_key("j", i) for i in (0, 2, 10, 100, 99_999)]


@pytest.mark.parametrize(
    "job_id", ["", "../x", "a/b", ".hidden", "-dash", "a b", "ü", "x" * 129, "a\n", None, 5]
)
def test_unsafe_job_ids_are_input_errors(job_id: object) -> None:
    with pytest.raises(InputError, match="job id"):
        keys.job_prefix(job_id)  # type: ignore[arg-type]
    with pytest.raises(InputError):
        keys.chunk_state_key(job_id, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        lambda: keys.chunk_state_key("j", -1),
        lambda: keys.chunk_state_key("j", keys.MAX_CHUNKS),
        lambda: keys.chunk_state_key("j", True),
        lambda: keys.chunk_state_key("j", 1.0),
        lambda: keys.chunk_output_key("j", 0, "Synthesis", "a.wav"),
        lambda: keys.chunk_output_key("j", 0, "syn/thesis", "a.wav"),
        lambda: keys.chunk_output_key("j", 0, "synthesis", "../a.wav"),
        lambda: keys.chunk_output_key("j", 0, "synthesis", "a/b.wav"),
        lambda: keys.output_key("j", ""),
        lambda: keys.source_key("j", ".."),
    ],
)
def test_unsafe_key_parts_are_input_errors(call: object) -> None:
    with pytest.raises(InputError):
        call()  # type: ignore[operator]
