"""Latest-value Redis keys (`SET key json`), idempotent by nature.

Within one write only the newest value per key is sent: at high rates a symbol's position
changes many times per batch and only the last one is visible anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flowforge_pipeline.flows import metrics
from flowforge_pipeline.flows.common import to_json_bytes
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.sinks.clickhouse import with_retries
from flowforge_pipeline.stores import redis as redis_store


@dataclass(frozen=True)
class LatestValue:
    """The value a Redis key must hold (a JSON object with the contract's fields)."""

    key: str
    value: dict[str, Any]


def newest_per_key(items: list[LatestValue]) -> dict[str, bytes]:
    """The last value of each key in arrival order, encoded."""
    return {item.key: to_json_bytes(item.value) for item in items}


class _RedisPartition(StatelessSinkPartition[LatestValue]):
    def __init__(self, settings: Settings, flow: str) -> None:
        self._flow = flow
        self._redis = redis_store.client(settings)

    def write_batch(self, items: list[LatestValue]) -> None:
        values = newest_per_key(items)
        if not values:
            return

        def write() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for key, value in values.items():
                pipe.set(key, value)
            pipe.execute()

        with_retries(
            write,
            what=f"redis SET of {len(values)} keys",
            attempts=4,
            flow=self._flow,
            store="redis",
        )
        metrics.EVENTS_OUT.labels(self._flow, "redis").inc(len(values))

    def close(self) -> None:
        self._redis.close()


class RedisLatestSink(DynamicSink[LatestValue]):
    """Write `LatestValue`s with SET; pings at start so a wrong REDIS_URL fails at once."""

    def __init__(self, settings: Settings, flow: str) -> None:
        """Prepare the sink; nothing connects until Bytewax builds a partition."""
        self._settings = settings
        self._flow = flow

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RedisPartition:
        """Connect and ping."""
        return _RedisPartition(self._settings, self._flow)
