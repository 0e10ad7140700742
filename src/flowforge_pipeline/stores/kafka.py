"""Kafka protocol client settings and topic administration (confluent-kafka).

The same code talks to Redpanda in production and to the local tansu broker.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from flowforge_pipeline.contract.catalog import TOPICS, Topic
from flowforge_pipeline.settings import Settings


class BrokerUnavailable(RuntimeError):
    """The broker did not answer; the message names the bootstrap servers."""


def client_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Base librdkafka configuration for every client of the pipeline."""
    return {"bootstrap.servers": settings.kafka_servers, **extra}


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """Producer configuration: idempotent-safe batching, event time as record timestamp."""
    return client_config(
        settings,
        **{"linger.ms": 5, "compression.type": "lz4", "acks": "all", **extra},
    )


def admin(settings: Settings, *, timeout: float = 10.0, quiet: bool = False) -> AdminClient:
    """An admin client; fails with `BrokerUnavailable` if the broker does not answer in time.

    `quiet` silences librdkafka's own connection-refused log lines, for readiness polls
    that expect a few refusals while the broker starts.
    """
    client = AdminClient(client_config(settings, **({"log_level": 0} if quiet else {})))
    try:
        client.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"kafka broker at {settings.kafka_servers} unreachable: {exc.args[0].str()}"
        ) from None
    return client


def ensure_topics(
    settings: Settings, topics: tuple[Topic, ...] = TOPICS, partitions: int | None = None
) -> list[str]:
    """Create the contract's topics that do not exist yet; return the names created."""
    client = admin(settings)
    existing = set(client.list_topics(timeout=10).topics)
    wanted = [
        NewTopic(
            t.name,
            num_partitions=partitions or settings.kafka_topic_partitions,
            replication_factor=1,
            config={"retention.ms": str(t.retention_ms)},
        )
        for t in topics
        if t.name not in existing
    ]
    created: list[str] = []
    if not wanted:
        return created
    for name, fut in client.create_topics(wanted, request_timeout=15).items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Existing topics and their partition counts."""
    md = admin(settings).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items() if not name.startswith("__")}
