"""vwap: per-symbol 5-minute tumbling event-time VWAP → ClickHouse `vwap_5min` + Redis.

Run: `python -m bytewax.run flowforge_pipeline.flows.vwap:flow`.

Windows are aligned to the UTC clock (…:00, :05, …) and closed by `ReplayableEventClock`, so
a backfill gives the same windows on every run and a live stream closes each window
`FLOW_ALLOWED_LATENESS_SECONDS` after its end. Trades arriving after their window closed are
counted and dead-lettered with reason "late". Each closed window with at least one trade
becomes a `vwap_5min` row (batched, broadcast after insert) and the new value of
`latest:vwap:{symbol}`.

Records are validated a whole input batch per call and leave that step already keyed by
symbol; Bytewax's window operator then works per key on batches itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
import bytewax.operators.windowing as win
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink

from flowforge_pipeline.contract.catalog import TRADES_TOPIC, VWAP_5MIN, VWAP_KEY
from flowforge_pipeline.flows import metrics
from flowforge_pipeline.flows.batching import batch_rows
from flowforge_pipeline.flows.clock import ReplayableEventClock
from flowforge_pipeline.flows.common import (
    InstrumentsProvider,
    SourceItem,
    iso,
    kafka_source,
    reference_instruments,
    utc_now,
)
from flowforge_pipeline.flows.validation import (
    DeadLetter,
    Heartbeat,
    Trade,
    is_dead_letter,
    late,
    parse_trade,
    parse_trades,
)
from flowforge_pipeline.settings import Settings, get_settings
from flowforge_pipeline.sinks.clickhouse import ClickHouseSink, Row, RowBatch, TableSpec
from flowforge_pipeline.sinks.kafka import DeadLetterSink
from flowforge_pipeline.sinks.redis import LatestValue, RedisLatestSink

FLOW = "vwap"
WINDOW = timedelta(minutes=5)
#: A fixed UTC midnight: windows start on multiples of 5 minutes of the clock.
ALIGN_TO = datetime(2024, 1, 1, tzinfo=UTC)

VWAP_SPEC = TableSpec(
    table=VWAP_5MIN.name,
    columns=(
        "symbol", "window_start", "window_end", "vwap", "volume", "notional", "trade_count",
        "high", "low",
    ),
    resume_key=("symbol",),
    resume_position="window_start",
    first_time="window_start",
    last_time="window_end",
)


@dataclass
class VwapAcc:
    """Running sums of one window: VWAP is Σp·q / Σq, never averaged averages."""

    notional: float = 0.0
    volume: float = 0.0
    trade_count: int = 0
    high: float = -math.inf
    low: float = math.inf

    def add(self, event: Trade | Heartbeat) -> VwapAcc:
        """Fold one record in; heartbeats only move the clock, they add nothing."""
        if isinstance(event, Trade):
            self.notional += event.price * event.quantity
            self.volume += event.quantity
            self.trade_count += 1
            self.high = max(self.high, event.price)
            self.low = min(self.low, event.price)
        return self

    def merge(self, other: VwapAcc) -> VwapAcc:
        """Combine two partial windows (tumbling windows never merge; required by the API)."""
        self.notional += other.notional
        self.volume += other.volume
        self.trade_count += other.trade_count
        self.high = max(self.high, other.high)
        self.low = min(self.low, other.low)
        return self

    @property
    def vwap(self) -> float | None:
        """Volume-weighted average price; None when the window holds no volume."""
        return self.notional / self.volume if self.volume > 0 else None


def event_time(event: Trade | Heartbeat) -> datetime:
    """Timestamp the clock windows by."""
    return event.event_time


def window_bounds(window_id: int) -> tuple[datetime, datetime]:
    """Start (inclusive) and end (exclusive) of a tumbling window id."""
    start = ALIGN_TO + WINDOW * window_id
    return start, start + WINDOW


def vwap_row(closed: tuple[str, tuple[int, VwapAcc]]) -> Row | None:
    """The `vwap_5min` row of a closed window; None for a window with heartbeats only."""
    symbol, (window_id, acc) = closed
    vwap = acc.vwap
    if vwap is None:
        return None
    start, end = window_bounds(window_id)
    return (symbol, start, end, vwap, acc.volume, acc.notional, acc.trade_count, acc.high, acc.low)


def latest_vwap(row: Row) -> LatestValue:
    """The `latest:vwap:{symbol}` value for a closed window's row."""
    value: dict[str, Any] = dict(zip(VWAP_SPEC.columns, row, strict=True))
    value["window_start"] = iso(value["window_start"])
    value["window_end"] = iso(value["window_end"])
    value["updated_at"] = iso(utc_now())
    return LatestValue(VWAP_KEY.key(symbol=value["symbol"]), value)


def late_letter(item: tuple[str, tuple[int, Trade | Heartbeat]]) -> DeadLetter:
    """Dead letter (reason "late") for a record whose window had closed; counted."""
    metrics.LATE_EVENTS.labels(FLOW).inc()
    return late(FLOW, item[1][1])


def parse(item: SourceItem, symbols: frozenset[str]) -> Trade | Heartbeat | DeadLetter:
    """Validate a trades-topic record, counting it."""
    metrics.count_in(FLOW, TRADES_TOPIC.name)
    return parse_trade(item, flow=FLOW, symbols=symbols)


def parse_batch(
    items: list[SourceItem], symbols: frozenset[str]
) -> list[DeadLetter | tuple[str, Trade | Heartbeat]]:
    """Validate a whole input batch, counting it; `(symbol, record)` for the usable ones."""
    metrics.count_in_many(FLOW, TRADES_TOPIC.name, len(items))
    return [
        r if isinstance(r, DeadLetter) else (r.symbol, r)
        for r in parse_trades(items, flow=FLOW, symbols=symbols)
    ]


def to_batch(keyed: tuple[str, list[Row]]) -> RowBatch:
    """A keyed list of rows as one insert."""
    return RowBatch(keyed[0], keyed[1])


def build(
    source: Source[SourceItem],
    rows_sink: Sink[RowBatch],
    latest_sink: Sink[LatestValue],
    dlq_sink: Sink[DeadLetter],
    *,
    symbols: frozenset[str],
    lateness: timedelta,
    flush_size: int,
    max_wait: timedelta,
) -> Dataflow:
    """Wire the VWAP flow between any source and sinks (tests pass in-memory ones)."""
    flow = Dataflow(FLOW)
    items = op.input("kafka_in", flow, source)
    parsed: Stream[Any] = op.flat_map_batch(
        "parse", items, lambda batch: parse_batch(batch, symbols)
    )
    # DeadLetter | (symbol, Trade | Heartbeat)
    split = op.branch("split_dead_letters", parsed, is_dead_letter)
    keyed: KeyedStream[Trade | Heartbeat] = split.falses
    windows = win.fold_window(
        "vwap_window",
        keyed,
        ReplayableEventClock(event_time, lateness),
        win.TumblingWindower(length=WINDOW, align_to=ALIGN_TO),
        VwapAcc,
        VwapAcc.add,
        VwapAcc.merge,
    )
    # (symbol, (window_id, VwapAcc))
    late_letters = op.map("late_letter", windows.late, late_letter)
    op.output("dlq_out", op.merge("dead_letters", split.trues, late_letters), dlq_sink)
    rows = op.filter_map("vwap_row", windows.down, vwap_row)
    # (symbol, window_start, window_end, vwap, volume, notional, trade_count, high, low)
    op.output("redis_out", op.map("latest_vwap", rows, latest_vwap), latest_sink)
    keyed_rows = op.key_on("key_table", rows, lambda _: VWAP_5MIN.name)
    batches = batch_rows("batch", keyed_rows, flush_size=flush_size, max_wait=max_wait)
    # (table, [row, ...])
    op.output("clickhouse_out", op.map("to_batch", batches, to_batch), rows_sink)
    return flow


def from_settings(
    settings: Settings, instruments: InstrumentsProvider = reference_instruments
) -> Dataflow:
    """The VWAP flow on the configured broker and stores."""
    return build(
        kafka_source(settings, [TRADES_TOPIC.name]),
        ClickHouseSink(settings, FLOW, (VWAP_SPEC,)),
        RedisLatestSink(settings, FLOW),
        DeadLetterSink(settings),
        symbols=instruments().symbols,
        lateness=timedelta(seconds=settings.flow_allowed_lateness_seconds),
        flush_size=settings.sink_flush_size,
        max_wait=timedelta(seconds=settings.sink_flush_wait_seconds),
    )


def __getattr__(name: str) -> Dataflow:
    # `flow` is built on first access so importing the module needs no settings or files.
    if name == "flow":
        return from_settings(get_settings())
    raise AttributeError(name)
