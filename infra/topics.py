"""Topic definitions from ``infra/topics.yaml`` and their creation on a cluster."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from schemas.topics import ALL_TOPICS, topic_name

TOPICS_FILE = Path(__file__).with_name("topics.yaml")


@dataclass(frozen=True)
class TopicSpec:
    """One topic as it should exist on the cluster."""

    name: str
    partitions: int
    replication_factor: int
    retention_ms: int


def load_topic_specs(prefix: str = "", path: Path = TOPICS_FILE) -> list[TopicSpec]:
    """Every topic of the contract with its settings; fails if the file and contract differ."""
    doc = yaml.safe_load(path.read_text())
    defaults = doc["defaults"]
    declared = doc["topics"]
    missing = set(ALL_TOPICS) - set(declared)
    unknown = set(declared) - set(ALL_TOPICS)
    if missing or unknown:
        raise ValueError(
            f"{path} does not match schemas.topics: missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    specs = []
    for logical in ALL_TOPICS:
        merged = {**defaults, **(declared[logical] or {})}
        specs.append(
            TopicSpec(
                name=topic_name(logical, prefix),
                partitions=int(merged["partitions"]),
                replication_factor=int(merged["replication_factor"]),
                retention_ms=int(merged["retention_ms"]),
            )
        )
    return specs


async def ensure_topics(bootstrap_servers: str, prefix: str = "") -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    specs = load_topic_specs(prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [s for s in specs if s.name not in existing]
        if wanted:
            await admin.create_topics(
                [
                    NewTopic(
                        name=s.name,
                        num_partitions=s.partitions,
                        replication_factor=s.replication_factor,
                        topic_configs={"retention.ms": str(s.retention_ms)},
                    )
                    for s in wanted
                ]
            )
        return [s.name for s in wanted]
    finally:
        await admin.close()
