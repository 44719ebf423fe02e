"""The inference-server recipe: ``tritonserver`` over a model repository, CPU only.

The server comes from the ``nvidia-pytriton`` wheel (:mod:`infra.binaries`),
with a polydub-owned backend directory. It selects each model's
``configs/cpu.pbtxt`` (``--model-config-name=cpu``, KIND_CPU instances) by
default, because the GPU ``config.pbtxt`` cannot load without a GPU.

The stub's embedded Python ignores ``PYTHON*`` variables; it finds the venv by
searching ``PATH`` for ``python3`` (and a ``pyvenv.cfg`` next to it), so Triton
runs with the venv's ``bin`` first on ``PATH`` and the venv's ``libpython``
first on ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import json
import logging
import os
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from infra.binaries import prepare_backend_dir, triton_dir
from infra.errors import StackError, StackInputError
from infra.process import LOOPBACK, Server

log = logging.getLogger(__name__)

#: Model config variant Triton loads unless told otherwise (``configs/<name>.pbtxt``). It
#: mirrors ``Settings.triton_config_name``'s default (a test keeps the two equal), so the
#: stack, tests and benchmarks select the same files.
DEFAULT_TRITON_CONFIG_NAME = "cpu"
#: Intra-op threads of each Triton model instance unless told otherwise; mirrors
#: ``Settings.triton_cpu_threads``'s default (a test keeps the two equal).
DEFAULT_TRITON_CPU_THREADS = 1
#: Timeout of one readiness probe.
_PROBE_TIMEOUT_S = 1.0
_HTTP_OK = 200


class TritonServer(Server):
    """Triton Inference Server 2.51 over a model repository, CPU only.

    ``model_control_mode="none"`` loads every model at start and is ready only
    when all loaded (strict readiness; a broken model makes it exit, and the
    error is in the log tail). ``"explicit"`` starts with ``load_models`` only
    (``"*"`` for all) and lets clients load more. An empty repository is fine.
    ``model_config_name`` picks ``<model>/configs/<name>.pbtxt`` where a model
    has one (Triton falls back to ``config.pbtxt``); empty means ``config.pbtxt``.

    ``cpu_threads`` is each python stub's ``OMP_NUM_THREADS`` (0: as in our own
    environment; unset there means every core). Why 1 by default: every model instance is its own
    process, and torch ops that each spread over all cores wait on each other's
    descheduled threads. On a 2-core host under load, the GE2E speaker encoder
    served 5 requests/s with torch's default and 93 with one thread per stub.
    """

    name = "triton"
    port_names = ("grpc", "http", "metrics")
    stop_grace_s = 15.0
    default_startup_timeout_s = 120.0

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        model_repository: str | os.PathLike[str],
        *,
        ports: Mapping[str, int] | None = None,
        model_control_mode: str = "none",
        load_models: Sequence[str] = (),
        backend_dir: str | os.PathLike[str] | None = None,
        auto_complete_config: bool = True,
        log_verbose: int = 0,
        startup_timeout_s: float | None = None,
        model_config_name: str = DEFAULT_TRITON_CONFIG_NAME,
        cpu_threads: int = DEFAULT_TRITON_CPU_THREADS,
        model_configs: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(run_dir, ports=ports, startup_timeout_s=startup_timeout_s)
        if model_control_mode not in ("none", "explicit"):
            raise StackInputError(
                f"Triton model control mode {model_control_mode!r} is not supported",
                "use 'none' or 'explicit'",
            )
        if (load_models or model_configs) and model_control_mode != "explicit":
            raise StackInputError("load_models and model_configs need model_control_mode='explicit'", "set both")
        self.model_repository = Path(model_repository).resolve()
        self.model_control_mode = model_control_mode
        self.load_models = tuple(m for m in load_models if m not in (model_configs or {}))
        #: Models loaded once the server is up, each with a complete JSON config that replaces
        #: its config file (Triton's model-control API): parameters or batching other than the
        #: repository's, with no second copy of the repository.
        self.model_configs = dict(model_configs or {})
        self.backend_dir = (
            Path(backend_dir).resolve() if backend_dir else self.run_dir / "triton" / "backends"
        )
        #: Triton asks each python model's ``auto_complete_config`` (one extra stub run,
        #: i.e. one more ``import torch``, per model) unless disabled; complete
        #: ``config.pbtxt`` files do not need it and load ~2 s faster.
        self.auto_complete_config = auto_complete_config
        self.log_verbose = log_verbose
        self.model_config_name = model_config_name
        self.cpu_threads = cpu_threads

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['http']}"

    def prepare(self) -> None:
        if not self.model_repository.is_dir():
            raise StackInputError(
                f"Triton model repository {self.model_repository} is not a folder",
                "set POLYDUB_TRITON_MODEL_REPOSITORY to the triton_models folder",
            )
        prepare_backend_dir(self.backend_dir)

    def command(self) -> list[str]:
        p = self.ports
        return [
            str(triton_dir() / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_dir}",
            f"--model-control-mode={self.model_control_mode}",
            *[f"--load-model={m}" for m in self.load_models],
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={p['grpc']}",
            f"--http-address={LOOPBACK}",
            f"--http-port={p['http']}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={p['metrics']}",
            "--allow-gpu-metrics=false",  # no GPU: skips the NVML/DCGM probe
            "--pinned-memory-pool-byte-size=0",  # no CUDA driver to pin with
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--exit-timeout-secs=10",
            f"--log-verbose={self.log_verbose}",
            *([] if self.auto_complete_config else ["--disable-auto-complete-config"]),
            *([f"--model-config-name={self.model_config_name}"] if self.model_config_name else []),
        ]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        # The python stub embeds Python in isolated mode: PYTHONPATH is ignored, and it
        # finds its prefix by looking up `python3` on PATH. The venv first on PATH makes
        # it adopt the venv's site-packages; the venv's own libpython first on
        # LD_LIBRARY_PATH makes it embed the same Python build (not the system's).
        scripts = sysconfig.get_path("scripts")
        env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
        libdir = sysconfig.get_config_var("LIBDIR")
        ldlibrary = sysconfig.get_config_var("INSTSONAME") or ""
        if libdir and ldlibrary and (Path(libdir) / ldlibrary).exists():
            env["LD_LIBRARY_PATH"] = os.pathsep.join(
                p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p
            )
        if self.cpu_threads > 0:
            env["OMP_NUM_THREADS"] = str(self.cpu_threads)
        return env

    def on_healthy(self) -> None:
        for name, config in self.model_configs.items():
            self._load_with_config(name, config)

    def _load_with_config(self, name: str, config: str) -> None:
        """``POST /v2/repository/models/<name>/load`` with a config override; blocks until loaded."""
        url = f"{self.http_url}/v2/repository/models/{name}/load"
        body = json.dumps({"parameters": {"config": config}}).encode()
        request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - loopback
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.startup_timeout_s):  # noqa: S310
                return
        except urllib.error.HTTPError as exc:
            reason = exc.read().decode(errors="replace")
        except OSError as exc:
            reason = str(exc)
        tail = self.log_tail()
        self.stop()
        raise StackError(
            f"triton could not load model {name}: {reason}; last lines of {self.log_path}:\n{tail}",
            f"read {self.log_path}",
        )

    def probe(self) -> None:
        url = f"{self.http_url}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT_S) as response:  # noqa: S310 - loopback
                if response.status != _HTTP_OK:
                    raise StackError(f"{url} answered {response.status}")
        except urllib.error.HTTPError as exc:
            raise StackError(f"{url} answered {exc.code}") from exc

    def settings_env(self) -> dict[str, str]:
        return {"POLYDUB_INFERENCE": "triton", "POLYDUB_TRITON_URL": self.grpc_url}

    def params(self) -> dict[str, Any]:
        return {
            "model_repository": str(self.model_repository),
            "model_control_mode": self.model_control_mode,
            "load_models": list(self.load_models),
            "backend_dir": str(self.backend_dir),
            "auto_complete_config": self.auto_complete_config,
            "log_verbose": self.log_verbose,
            "model_config_name": self.model_config_name,
            "cpu_threads": self.cpu_threads,
            "model_configs": self.model_configs,
        }
