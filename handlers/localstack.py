"""The one bridge from polydub's settings to the local stack launcher (``infra``).

``infra`` knows no ``Settings`` and imports nothing of ``handlers`` (DESIGN
"Layout"), so everything that turns ``POLYDUB_*`` settings into servers, or
servers back into settings, lives here, and this is the only module under
``handlers/`` that imports ``infra``:

- the stack ``POLYDUB_STACK_*`` describes (:func:`stack_from_settings`), with the
  models :func:`handlers.runtime.served.models_to_load` picks; models whose
  settings give parameters (weights) are loaded with a config override, since
  served models read no environment;
- ``polydub stack up/down/status`` (:func:`stack_up`, :func:`stack_down`,
  :func:`stack_status`) over :mod:`infra.stackstate`;
- settings pointed at running servers (:func:`settings_from_env`);
- the topics of ``infra/topics.yaml`` (:func:`ensure_topics`, :func:`topic_names`);
- the private broker of ``polydub run`` (:func:`start_embedded_broker`).

infra's errors are polydub's (``infra.errors``), so the CLI prints its usual
``polydub: error: <reason>`` and ``  fix: ...`` lines for them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

from handlers.runtime.served import model_parameters, models_to_load
from handlers.runtime.settings import Settings
from infra import stackstate
from infra import topics as infra_topics
from infra.broker import BrokerServer
from infra.s3 import S3Access
from infra.stack import SERVICES, Stack
from infra.stackstate import ServerStatus
from schemas.errors import InputError

log = logging.getLogger(__name__)

#: Prefix of the environment variables that configure polydub.
ENV_PREFIX = "POLYDUB_"


def settings_from_env(env: Mapping[str, str], base: Settings | None = None) -> Settings:
    """``base`` (or defaults) overridden by ``POLYDUB_*`` variables, e.g. a stack's ``env()``."""
    updates = {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX)
    }
    data = (base or Settings()).model_dump()
    return Settings.model_validate({**data, **updates})


def triton_models(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """What the stack's Triton loads: models by name, and models with a config override.

    A model whose settings give it parameters (checkpoint paths, random init) is
    loaded through Triton's model-control API with a complete JSON config
    carrying them; the rest load their checked-in config. The override renders
    the variant the stack runs: CPU unless ``triton_config_name`` is empty.
    """
    from serving.catalog import model_class
    from serving.configs import Variant, config_json

    parameters = model_parameters(settings)
    gpu = settings.triton_config_name == ""
    by_name: list[str] = []
    configs: dict[str, str] = {}
    for name in models_to_load(settings):
        params = parameters.get(name)
        if params:
            configs[name] = config_json(model_class(name), Variant(gpu=gpu, parameters=params))
        else:
            by_name.append(name)
    return by_name, configs


def stack_from_settings(settings: Settings, services: Iterable[str] = SERVICES) -> Stack:
    """The stack ``POLYDUB_STACK_*`` describes, in ``settings.stack_dir`` (not started)."""
    services = tuple(services)
    broker_s3 = None
    if settings.stack_broker_storage == "s3" and "seaweed" not in services:
        if not settings.s3_endpoint or not settings.s3_access_key or not settings.s3_secret_key:
            raise InputError(
                "a broker on S3 storage without the stack's SeaweedFS needs an S3 endpoint",
                "add seaweed to the services or set POLYDUB_S3_ENDPOINT and keys",
            )
        broker_s3 = S3Access(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_region,
        )
    load_models, model_configs = triton_models(settings) if "triton" in services else ([], {})
    return Stack(
        settings.stack_dir,
        services,
        broker_port=settings.stack_broker_port,
        broker_storage=settings.stack_broker_storage,
        broker_s3=broker_s3,
        s3_port=settings.stack_s3_port,
        s3_bucket=settings.s3_bucket,
        s3_access_key=settings.s3_access_key,
        s3_secret_key=settings.s3_secret_key,
        s3_region=settings.s3_region,
        model_repository=settings.triton_model_repository,
        model_control_mode="explicit",
        load_models=load_models,
        triton_grpc_port=settings.stack_triton_grpc_port,
        triton_http_port=settings.stack_triton_http_port,
        startup_timeout_s=settings.stack_startup_timeout_s,
        triton_config_name=settings.triton_config_name,
        triton_cpu_threads=settings.triton_cpu_threads,
        triton_model_configs=model_configs,
    )


def stack_up(
    settings: Settings, services: Iterable[str] = SERVICES, *, out: TextIO | None = None
) -> dict[str, str]:
    """Start the stack detached (it outlives this process), record it, print its exports.

    Refuses if a stack recorded in ``settings.stack_dir`` still runs. Returns the
    ``POLYDUB_*`` variables it printed.
    """
    stack_dir = settings.stack_dir.resolve()
    services = tuple(services)
    stack = stack_from_settings(settings.model_copy(update={"stack_dir": stack_dir}), services)
    exports = stackstate.start_detached(stack, topic_prefix=settings.topic_prefix, out=out)
    if "broker" in services and settings.stack_broker_storage == "memory":
        print(MEMORY_BROKER_WARNING, file=sys.stderr)
    return exports


#: What ``stack up`` says when its broker keeps the log in memory (stderr, so ``eval`` of the
#: exports is unaffected): a restart of that broker loses every accepted job.
MEMORY_BROKER_WARNING = (
    "warning: the stack's broker keeps its log in memory (POLYDUB_STACK_BROKER_STORAGE=memory): if the broker "
    "stops, every topic, offset and job still in flight is lost. For a stack that must survive a broker "
    "restart, set POLYDUB_STACK_BROKER_STORAGE=s3 (the log on the stack's SeaweedFS)."
)


def stack_down(settings: Settings, *, out: TextIO | None = None) -> list[str]:
    """Stop the servers recorded in ``settings.stack_dir`` and remove the record; returns their names."""
    return stackstate.stop_recorded(settings.stack_dir, out=out)


def stack_status(settings: Settings, *, out: TextIO | None = None) -> list[ServerStatus]:
    """Each recorded server's pid, whether it runs and whether it answers its health probe."""
    return stackstate.recorded_status(settings.stack_dir, out=out)


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the topics of ``infra/topics.yaml`` missing on the settings' broker; returns those created."""
    return await infra_topics.ensure_topics(settings.bootstrap_servers, settings.topic_prefix)


def topic_names(prefix: str) -> set[str]:
    """Every topic of the contract as named on the cluster under ``prefix``."""
    return {spec.name for spec in infra_topics.load_topic_specs(prefix)}


def start_embedded_broker(run_dir: Path) -> BrokerServer:
    """A private, in-memory broker in ``run_dir`` for ``polydub run``, healthy; the caller stops it."""
    return BrokerServer(run_dir).start()
