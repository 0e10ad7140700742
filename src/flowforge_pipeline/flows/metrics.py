"""Prometheus metrics of the flows, served by Bytewax's own HTTP server.

A flow process started with `BYTEWAX_DATAFLOW_API_ENABLED=1` and `BYTEWAX_DATAFLOW_API_PORT`
answers `GET /metrics` with Bytewax's step metrics (including Kafka consumer lag per
partition, `bytewax_kafka_consumer_lag`) and everything registered here, so there is one
port per flow and nothing extra to run.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram

from flowforge_pipeline.flows.common import utc_now

EVENTS_IN = Counter(
    "flowforge_flow_events_in", "Records read from a topic.", ["flow", "topic"]
)
EVENTS_OUT = Counter(
    "flowforge_flow_events_out", "Rows or values written to a store.", ["flow", "target"]
)
DEAD_LETTERS = Counter(
    "flowforge_flow_dead_letters", "Records sent to the dead-letter topic.", ["flow", "reason"]
)
LATE_EVENTS = Counter(
    "flowforge_flow_late_events", "Records whose window had already closed.", ["flow"]
)
SKIPPED_ON_RESUME = Counter(
    "flowforge_sink_skipped_already_stored",
    "Rows replayed after a restart that the table already held (not inserted twice).",
    ["flow", "table"],
)
BATCH_ROWS = Histogram(
    "flowforge_sink_batch_rows",
    "Rows per ClickHouse insert.",
    ["flow", "table"],
    buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000, 50000, 100000),
)
INSERT_SECONDS = Histogram(
    "flowforge_sink_insert_seconds",
    "Duration of one ClickHouse insert, retries included.",
    ["flow", "table"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BROADCASTS = Counter(
    "flowforge_sink_broadcasts", "table_update messages published.", ["flow", "table"]
)
EVENT_TIME_LAG = Gauge(
    "flowforge_flow_event_time_lag_seconds",
    "Wall clock minus the newest event time written (large during a backfill).",
    ["flow"],
)

STORE_DOWN_SINCE = Gauge(
    "flowforge_sink_store_down_since_seconds",
    "Unix time since which a store has been unreachable for this flow's writes (0: reachable).",
    ["flow", "store"],
)


def store_down(flow: str, store: str, since: float) -> None:
    """Record that `store` is unreachable since `since` (Unix time), or reachable again (0)."""
    STORE_DOWN_SINCE.labels(flow or "-", store).set(since)


def observe_event_time(flow: str, newest: datetime) -> None:
    """Record how far behind the wall clock the newest written event is."""
    EVENT_TIME_LAG.labels(flow).set((utc_now() - newest).total_seconds())


@lru_cache(maxsize=1024)
def _events_in(flow: str, topic: str) -> Counter:
    return EVENTS_IN.labels(flow, topic)


def count_in(flow: str, topic: str) -> None:
    """Count one record read; the labelled child is cached (this runs once per record)."""
    _events_in(flow, topic).inc()


def count_in_many(flow: str, topic: str, n: int) -> None:
    """Count `n` records read at once (flows that work on whole input batches)."""
    if n:
        _events_in(flow, topic).inc(n)
