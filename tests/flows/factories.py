"""Dataflow factories for integration tests: the real flows on per-test topics.

Run as `python -m bytewax.run "factories:vwap()"` with this directory on PYTHONPATH; the
topic names and symbols come from FF_TEST_* variables, everything else from the settings.
"""

from __future__ import annotations

import os
from datetime import timedelta

from bytewax.dataflow import Dataflow

from flowforge_pipeline.flows import positions as positions_flow
from flowforge_pipeline.flows import raw_sink as raw_sink_flow
from flowforge_pipeline.flows import volatility as volatility_flow
from flowforge_pipeline.flows import vwap as vwap_flow
from flowforge_pipeline.flows.common import kafka_source
from flowforge_pipeline.settings import get_settings
from flowforge_pipeline.sinks.clickhouse import ClickHouseSink
from flowforge_pipeline.sinks.kafka import DeadLetterSink
from flowforge_pipeline.sinks.redis import RedisLatestSink

TRADES = os.environ.get("FF_TEST_TRADES", "trades")
QUOTES = os.environ.get("FF_TEST_QUOTES", "quotes")
DLQ = os.environ.get("FF_TEST_DLQ", "dlq")
SYMBOLS = frozenset(os.environ.get("FF_TEST_SYMBOLS", "AAA").split(","))


def raw_sink() -> Dataflow:
    s = get_settings()
    return raw_sink_flow.build(
        kafka_source(s, [TRADES, QUOTES]),
        ClickHouseSink(s, "raw_sink", (raw_sink_flow.TRADES_SPEC, raw_sink_flow.QUOTES_SPEC)),
        DeadLetterSink(s, DLQ),
        symbols=SYMBOLS,
        flush_size=s.sink_flush_size,
        max_wait=timedelta(seconds=s.sink_flush_wait_seconds),
        quotes_topic=QUOTES,
    )


def vwap() -> Dataflow:
    s = get_settings()
    return vwap_flow.build(
        kafka_source(s, [TRADES]),
        ClickHouseSink(s, "vwap", (vwap_flow.VWAP_SPEC,)),
        RedisLatestSink(s, "vwap"),
        DeadLetterSink(s, DLQ),
        symbols=SYMBOLS,
        lateness=timedelta(seconds=s.flow_allowed_lateness_seconds),
        flush_size=s.sink_flush_size,
        max_wait=timedelta(seconds=s.sink_flush_wait_seconds),
    )


def volatility() -> Dataflow:
    s = get_settings()
    return volatility_flow.build(
        kafka_source(s, [TRADES]),
        ClickHouseSink(s, "volatility", (volatility_flow.VOLATILITY_SPEC,)),
        RedisLatestSink(s, "volatility"),
        DeadLetterSink(s, DLQ),
        minutes_per_year=dict.fromkeys(SYMBOLS, 365 * 1440),
        lateness=timedelta(seconds=s.flow_allowed_lateness_seconds),
        flush_size=s.sink_flush_size,
        max_wait=timedelta(seconds=s.sink_flush_wait_seconds),
    )


def positions() -> Dataflow:
    s = get_settings()
    return positions_flow.build(
        kafka_source(s, [TRADES]),
        RedisLatestSink(s, "positions"),
        DeadLetterSink(s, DLQ),
        symbols=SYMBOLS,
    )
