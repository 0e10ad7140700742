"""The "store is unreachable" errors of every store client, for one `except`."""

from __future__ import annotations

from flowforge_pipeline.stores.clickhouse import ClickHouseUnavailable
from flowforge_pipeline.stores.kafka import BrokerUnavailable
from flowforge_pipeline.stores.postgres import PostgresUnavailable
from flowforge_pipeline.stores.redis import RedisUnavailable

UNAVAILABLE: tuple[type[Exception], ...] = (
    BrokerUnavailable,
    ClickHouseUnavailable,
    PostgresUnavailable,
    RedisUnavailable,
)
