"""This project's VWAP flow for bench/peer_vwap.py: `python -m bytewax.run project_vwap:flow`.

The flow is `flowforge_pipeline.flows.vwap.build` as deployed (Kafka source, validation,
dead letters to the `dlq` topic, row batching), run with recovery as `up` runs it. Only its
outputs differ, so that the three contenders write the same thing: the `vwap_5min` rows go to
a JSON-lines file (PEER_VWAP_OUTPUT) instead of ClickHouse, and the `latest:vwap:*` values are
dropped instead of written to Redis.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from flowforge_pipeline.flows import vwap
from flowforge_pipeline.flows.common import kafka_source, reference_instruments
from flowforge_pipeline.settings import get_settings
from flowforge_pipeline.sinks.clickhouse import RowBatch
from flowforge_pipeline.sinks.kafka import DeadLetterSink


class _RowsPartition(StatelessSinkPartition[RowBatch]):
    def __init__(self, path: str) -> None:
        self._out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write_batch(self, items: list[RowBatch]) -> None:
        lines = []
        for batch in items:
            for symbol, start, _end, vwap_, volume, notional, count, _hi, _lo in batch.rows:
                lines.append(json.dumps({
                    "symbol": symbol,
                    "window_start": int(start.timestamp() * 1000),
                    "vwap": vwap_,
                    "volume": volume,
                    "notional": notional,
                    "trade_count": count,
                }) + "\n")
        if lines:
            self._out.write("".join(lines))
            self._out.flush()

    def close(self) -> None:
        self._out.close()


class RowsFile(DynamicSink[RowBatch]):
    """`vwap_5min` rows as JSON lines, the format of the other contenders."""

    def __init__(self, path: str) -> None:
        self.path = path

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RowsPartition:
        return _RowsPartition(self.path)


class _Discard(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass


class Discard(DynamicSink[Any]):
    """Drops what it is given (the Redis latest values)."""

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Discard:
        return _Discard()


def _flow() -> Dataflow:
    s = get_settings()
    return vwap.build(
        kafka_source(s, [os.environ.get("PEER_VWAP_TOPIC", "trades")]),
        RowsFile(os.environ["PEER_VWAP_OUTPUT"]),
        Discard(),
        DeadLetterSink(s),
        symbols=reference_instruments().symbols,
        lateness=timedelta(seconds=s.flow_allowed_lateness_seconds),
        flush_size=s.sink_flush_size,
        max_wait=timedelta(seconds=s.sink_flush_wait_seconds),
    )


flow = _flow()
