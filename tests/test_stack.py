"""The local stack launcher against the real binaries: Tansu, SeaweedFS, tritonserver.

Each server is started, proven healthy by a real protocol round trip, stopped,
and its pid checked gone; the detached CLI path (``stack_up`` in a process
that exits, ``stack_status``/``stack_down`` from another) is exercised as a
user would run it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from handlers.localstack import MEMORY_BROKER_WARNING, settings_from_env, stack_down, stack_status, stack_up
from handlers.runtime.objectstore import open_store
from handlers.runtime.served import models_to_load
from handlers.runtime.settings import Settings
from infra import process as process_module
from infra.binaries import prepare_backend_dir
from infra.broker import BrokerServer
from infra.errors import StackError
from infra.s3 import S3Access
from infra.seaweed import SeaweedServer
from infra.stack import Stack
from infra.stackstate import server_from_state
from infra.triton import TritonServer
from schemas.errors import InputError
from schemas.topics import ALL_TOPICS
from tests.fixtures.servers import TEST_BUCKET, TritonFactory, seaweed_store

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[1]

# The python backend's numpy bridge (``as_numpy``, ``pb_utils.Tensor(name, ndarray)``)
# is compiled against numpy 1.x and silently corrupts tensors under numpy 2 (inputs
# read wrong, outputs come back empty). DLPack with torch is exact, so models use it.
DOUBLE_MODEL_PY = '''
import torch
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = torch.from_dlpack(pb_utils.get_input_tensor_by_name(request, "INPUT0"))
            y = (x * 2).contiguous()
            out = pb_utils.Tensor.from_dlpack("OUTPUT0", y)
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
'''

DOUBLE_CONFIG = """
name: "double"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
dynamic_batching { }
"""


def write_model(repo: Path, name: str, config: str, model_py: str) -> Path:
    """A Triton model folder: ``config.pbtxt`` and ``1/model.py``."""
    folder = repo / name
    (folder / "1").mkdir(parents=True)
    (folder / "config.pbtxt").write_text(config.replace('name: "double"', f'name: "{name}"'))
    (folder / "1" / "model.py").write_text(model_py)
    return folder


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


# --- broker ---------------------------------------------------------------------


async def _round_trip(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(topic, f"event-{i}".encode(), key=b"job-1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        # Tansu holds a first JoinGroup for half the session timeout (5 s at the default).
        session_timeout_ms=2000,
        heartbeat_interval_ms=300,
    )
    await consumer.start()
    try:
        got = []
        partitions = set()
        while len(got) < count:
            msg = await asyncio.wait_for(consumer.getone(), 15)
            got.append((msg.key, msg.value))
            partitions.add(TopicPartition(msg.topic, msg.partition))
        assert len(partitions) == 1  # one key, one partition: a job's events stay in order
        await consumer.commit()
        assert await consumer.committed(partitions.pop()) == count
    finally:
        await consumer.stop()
    return got


async def test_broker_produce_consume_commit(broker: BrokerServer) -> None:
    assert broker.is_healthy()
    got = await _round_trip(broker.bootstrap_servers, "stack.test.round-trip", 5)
    assert got == [(b"job-1", f"event-{i}".encode()) for i in range(5)]
    assert broker.settings_env() == {"POLYDUB_BOOTSTRAP_SERVERS": broker.bootstrap_servers}


def test_broker_start_stop_pid_gone(tmp_path: Path) -> None:
    server = BrokerServer(tmp_path).start()
    pid = server.pid
    assert pid is not None and server.is_alive() and server.is_healthy()
    assert "ready in" in server.log_path.read_text()  # its output goes to the run dir log
    server.stop()
    assert pid_gone(pid)
    assert not server.is_alive() and not server.is_healthy()
    server.stop()  # idempotent


def test_port_taken_by_another_process_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A port grabbed between our pick and the bind must not pass as healthy."""
    squatter = socket.create_server(("127.0.0.1", 0))
    taken = squatter.getsockname()[1]
    stop = threading.Event()

    def accept_and_close() -> None:  # answers TCP, never Kafka
        squatter.settimeout(0.1)
        while not stop.is_set():
            try:
                squatter.accept()[0].close()
            except OSError:
                pass

    threading.Thread(target=accept_and_close, daemon=True).start()
    real = process_module.free_ports
    picks = iter([[taken]])
    monkeypatch.setattr(process_module, "free_ports", lambda n: next(picks, None) or real(n))
    try:
        server = BrokerServer(tmp_path).start()
        try:
            assert server.ports["kafka"] != taken
            assert server.is_healthy()
        finally:
            server.stop()
    finally:
        stop.set()
        squatter.close()


def test_stack_broker_on_s3_storage_survives_restart(tmp_path: Path) -> None:
    """The durable option: the stack's broker keeps its log in SeaweedFS, so a restarted
    broker serves the records acknowledged before the stop."""
    with Stack(tmp_path, ["seaweed", "broker"], broker_storage="s3") as stack:
        broker = stack.servers["broker"]
        seaweed = stack.servers["seaweed"]
        assert isinstance(broker, BrokerServer) and isinstance(seaweed, SeaweedServer)
        assert broker.storage == "s3://tansu/"
        assert broker.s3 == seaweed.access
        bootstrap = broker.bootstrap_servers

        async def produce() -> int:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
            await producer.start()
            try:
                sent = [
                    await producer.send_and_wait("durable", f"r{i}".encode(), key=b"j")
                    for i in range(3)
                ]
            finally:
                await producer.stop()
            assert len({md.partition for md in sent}) == 1
            return sent[0].partition

        async def consume(partition: int) -> list[bytes]:
            from aiokafka import AIOKafkaConsumer, TopicPartition

            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
            await consumer.start()
            try:
                tp = TopicPartition("durable", partition)
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                return [(await asyncio.wait_for(consumer.getone(), 15)).value for _ in range(3)]
            finally:
                await consumer.stop()

        partition = asyncio.run(produce())
        first_pid = broker.pid
        broker.stop()
        broker.start()  # same ports, same bucket
        assert broker.pid != first_pid
        assert asyncio.run(consume(partition)) == [b"r0", b"r1", b"r2"]
        assert seaweed_store(seaweed, "tansu").list() != []  # the log really lives in the bucket


def test_broker_on_s3_without_access_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="S3"):
        BrokerServer(tmp_path, storage="s3://tansu/").start()


# --- SeaweedFS -----------------------------------------------------------------


def test_seaweed_s3_round_trip_with_real_credentials(seaweed: SeaweedServer) -> None:
    assert seaweed.is_healthy()
    client = seaweed_store(seaweed).client
    assert TEST_BUCKET in {b["Name"] for b in client.list_buckets()["Buckets"]}
    body = os.urandom(100_000)
    client.put_object(Bucket=TEST_BUCKET, Key="stack-test/obj", Body=body)
    assert client.get_object(Bucket=TEST_BUCKET, Key="stack-test/obj")["Body"].read() == body
    env = seaweed.settings_env()
    assert env["POLYDUB_S3_ENDPOINT"] == seaweed.endpoint
    assert env["POLYDUB_S3_ACCESS_KEY"] == seaweed.access_key
    config = json.loads(seaweed.config_path.read_text())
    assert config["identities"][0]["credentials"][0]["secretKey"] == seaweed.secret_key
    assert stat.S_IMODE(seaweed.config_path.stat().st_mode) == 0o600


def test_seaweed_binds_loopback_only(seaweed: SeaweedServer) -> None:
    ports = set(seaweed.ports.values())
    assert len(ports) == 8  # master, volume, filer, S3: HTTP and gRPC each, all chosen by us
    listening = [
        line.split()[1]  # local address, hex "IP:PORT"
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[3] == "0A"
    ]
    ours = [addr for addr in listening if int(addr.rsplit(":", 1)[1], 16) in ports]
    assert len(ours) == len(ports)
    assert all(addr.startswith("0100007F:") for addr in ours)  # 127.0.0.1 only


# --- Triton --------------------------------------------------------------------


def test_triton_serves_python_model(triton_server: TritonFactory, tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient

    repo = tmp_path / "models"
    write_model(repo, "double", DOUBLE_CONFIG, DOUBLE_MODEL_PY)
    server = triton_server(repo, auto_complete_config=False)  # the config is complete
    assert server.is_healthy()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_ready() and client.is_model_ready("double")
    for shape in [(1, 3), (4, 7)]:
        x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
        inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer("double", [inp]).as_numpy("OUTPUT0")
        np.testing.assert_array_equal(out, 2 * x)
    client.close()
    assert server.settings_env() == {
        "POLYDUB_INFERENCE": "triton",
        "POLYDUB_TRITON_URL": server.grpc_url,
    }
    pid = server.pid
    assert pid is not None
    stubs = subprocess.run(
        ["pgrep", "-g", str(pid), "-f", "triton_python_backend_stub"],
        capture_output=True, text=True, check=False,
    ).stdout.split()  # fmt: skip
    assert stubs, "the python backend runs the model in a stub process"
    server.stop()
    assert pid_gone(pid)
    assert all(pid_gone(int(s)) for s in stubs)  # the process-group stop reached the stub


def test_triton_broken_model_fails_fast_with_log_tail(
    triton_server: TritonFactory, tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    write_model(repo, "broken", DOUBLE_CONFIG, "raise RuntimeError('model cannot load: boom')\n")
    started = time.monotonic()
    with pytest.raises(StackError, match="boom") as info:
        triton_server(repo)
    assert time.monotonic() - started < 30  # exit noticed, not the deadline waited out
    assert "exited with code" in info.value.reason
    assert "triton.log" in info.value.reason


def test_triton_explicit_mode_starts_with_nothing_loaded(
    triton_server: TritonFactory, tmp_path: Path
) -> None:
    import tritonclient.grpc as grpcclient

    repo = tmp_path / "models"
    write_model(repo, "double", DOUBLE_CONFIG, DOUBLE_MODEL_PY)
    server = triton_server(repo, model_control_mode="explicit")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_ready()
    assert not client.is_model_ready("double")
    names = {m.name for m in client.get_model_repository_index().models}
    assert names == {"double"}
    client.close()


def test_triton_rejects_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a folder"):
        TritonServer(tmp_path, tmp_path / "nope").start()


def test_backend_dir_is_symlinks_and_idempotent(tmp_path: Path) -> None:
    dest = prepare_backend_dir(tmp_path / "backends")
    prepare_backend_dir(dest)  # again: no error, same links
    python = dest / "python"
    names = sorted(p.name for p in python.iterdir())
    assert names == [
        "libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py",
    ]  # fmt: skip
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = python / "triton_python_backend_stub"
    assert stub.is_symlink() and Path(os.readlink(stub)).parent.name == version


def test_triton_models_folder_holds_only_models() -> None:
    """DESIGN: a non-model folder in triton_models/ stops tritonserver from starting."""
    repo = REPO_ROOT / "triton_models"
    for child in repo.iterdir() if repo.is_dir() else []:
        if child.is_dir() and not child.name.startswith((".", "__")):
            assert (child / "config.pbtxt").is_file(), f"{child} is not a Triton model"


# --- the detached CLI path ------------------------------------------------------


@pytest.fixture
def stack_settings(tmp_path: Path) -> Iterator[Settings]:
    models = tmp_path / "models"
    models.mkdir()
    settings = Settings(stack_dir=tmp_path / "stack", triton_model_repository=models)
    yield settings
    stack_down(settings, out=io.StringIO())  # whatever the test did, nothing outlives it


async def _list_topics(bootstrap: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def test_stack_up_status_down_detached(stack_settings: Settings) -> None:
    # stack_up in a separate process that exits: the servers must outlive it.
    env = {
        **os.environ,
        "POLYDUB_STACK_DIR": str(stack_settings.stack_dir),
        "POLYDUB_TRITON_MODEL_REPOSITORY": str(stack_settings.triton_model_repository),
    }
    script = textwrap.dedent(
        """
        from handlers.localstack import stack_up
        from handlers.runtime.settings import Settings
        stack_up(Settings())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in done.stdout.splitlines()
        if line.startswith("export ")
    )
    assert set(exports) == {
        "POLYDUB_BOOTSTRAP_SERVERS", "POLYDUB_OBJECT_STORE", "POLYDUB_S3_ENDPOINT",
        "POLYDUB_S3_BUCKET", "POLYDUB_S3_REGION", "POLYDUB_S3_ACCESS_KEY",
        "POLYDUB_S3_SECRET_KEY", "POLYDUB_INFERENCE", "POLYDUB_TRITON_URL",
    }  # fmt: skip
    assert exports["POLYDUB_OBJECT_STORE"] == "s3" and exports["POLYDUB_INFERENCE"] == "triton"
    assert f"# created {len(ALL_TOPICS)} topic(s)" in done.stdout
    # The default broker loses its log on a restart, and says so where a person reads it.
    assert MEMORY_BROKER_WARNING in done.stderr and "POLYDUB_STACK_BROKER_STORAGE=s3" in done.stderr
    assert set(ALL_TOPICS) <= set(asyncio.run(_list_topics(exports["POLYDUB_BOOTSTRAP_SERVERS"])))

    state_path = stack_settings.stack_dir / "stack.json"
    state = json.loads(state_path.read_text())
    assert stat.S_IMODE(state_path.stat().st_mode) == 0o600  # it holds the S3 secret
    pids = {name: s["pid"] for name, s in state["servers"].items()}
    assert set(pids) == {"seaweed", "broker", "triton"}
    for server in state["servers"].values():
        assert Path(server["log"]).is_file()

    statuses = stack_status(stack_settings, out=io.StringIO())
    assert {(s.name, s.alive, s.healthy) for s in statuses} == {
        ("seaweed", True, True), ("broker", True, True), ("triton", True, True),
    }  # fmt: skip

    # The printed endpoints work, with the printed credentials.
    store = open_store(settings_from_env(exports))
    store.put_bytes("jobs/j/source/x.bin", b"payload")
    assert store.get_bytes("jobs/j/source/x.bin") == b"payload"

    with pytest.raises(InputError, match="already running"):
        stack_up(stack_settings, out=io.StringIO())

    out = io.StringIO()
    stopped = stack_down(stack_settings, out=out)
    assert sorted(stopped) == ["broker", "seaweed", "triton"]
    assert "triton: stopped" in out.getvalue()
    deadline = time.monotonic() + 10
    while not all(pid_gone(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)  # not our children: init reaps them
    assert all(pid_gone(p) for p in pids.values())
    weed_ports = {str(p) for p in state["servers"]["seaweed"]["ports"].values()}
    leftovers = Path("/tmp").glob("seaweedfs-*.sock")  # weed leaves these when killed
    assert not [s for s in leftovers if s.stem.rsplit("-", 1)[1] in weed_ports]
    assert not state_path.exists()
    assert stack_status(stack_settings, out=io.StringIO()) == []
    assert stack_down(stack_settings, out=io.StringIO()) == []


def test_stack_in_process_subset_and_settings(tmp_path: Path) -> None:
    with Stack(tmp_path, ["broker"]) as stack:
        env = stack.env()
        assert set(env) == {"POLYDUB_BOOTSTRAP_SERVERS"}
        assert settings_from_env(stack.env()).bootstrap_servers == env["POLYDUB_BOOTSTRAP_SERVERS"]
        pid = stack.servers["broker"].pid
    assert pid is not None and pid_gone(pid)


def test_stack_rejects_unknown_service(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="kafka"):
        Stack(tmp_path, ["kafka"])


def test_s3_access_round_trips_through_state(tmp_path: Path) -> None:
    """stack_down/status rebuild servers from the state file: same ports, params, pid."""
    access = S3Access("http://127.0.0.1:1", "ak", "sk")
    original = BrokerServer(tmp_path, ports={"kafka": 12345}, storage="s3://b/", s3=access)
    original.pid = 424242
    rebuilt = server_from_state(json.loads(json.dumps(original.state())))
    assert isinstance(rebuilt, BrokerServer)
    assert (rebuilt.ports, rebuilt.storage, rebuilt.s3, rebuilt.pid) == (
        {"kafka": 12345}, "s3://b/", access, 424242,
    )  # fmt: skip
    seaweed = SeaweedServer(tmp_path, buckets=("x", "y"))
    again = server_from_state(json.loads(json.dumps(seaweed.state())))
    assert isinstance(again, SeaweedServer)
    assert (again.buckets, again.secret_key) == (("x", "y"), seaweed.secret_key)


def test_models_to_load_skips_models_without_weights(tmp_path: Path) -> None:
    base = Settings(triton_model_repository=REPO_ROOT / "triton_models")
    auto = models_to_load(base)
    assert "tts_espeak" in auto and "tts_fastpitch" not in auto
    assert {"asr", "speaker_encoder", "av_sync"} <= set(auto), "QC's weight-free models load by default"
    assert "tts_fastpitch" in models_to_load(base.model_copy(update={"fastpitch_random_init": True}))
    assert "tts_fastpitch" in models_to_load(base.model_copy(update={"triton_models": "all"}))
    assert models_to_load(base.model_copy(update={"triton_models": "vc_world, tts_espeak"})) == ["vc_world", "tts_espeak"]
    with pytest.raises(InputError, match="unknown model"):
        models_to_load(base.model_copy(update={"triton_models": "wav2lip"}))
