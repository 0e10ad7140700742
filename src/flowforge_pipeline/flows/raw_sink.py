"""raw_sink: trades and quotes → ClickHouse `raw_trades` / `raw_quotes`, then a broadcast.

Run: `python -m bytewax.run flowforge_pipeline.flows.raw_sink:flow`.

Rows are batched per table inside the dataflow (50 rows or 1 s, growing at high rates; see
`flows.batching`), inserted once per batch, and each successful insert is announced on the
`table_update` channel. Rows carry their Kafka partition and offset, so after a restart the
sink skips what the table already holds: plain `count()` stays exact without `FINAL`.

Nothing here is keyed by record, so the flow works on whole input batches: one Python call
validates a batch and turns it into at most one list of rows per table, and the batching
step takes those lists. Per-record Bytewax steps cost more than the work done on a record.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink

from flowforge_pipeline.contract.catalog import QUOTES_TOPIC, RAW_QUOTES, RAW_TRADES, TRADES_TOPIC
from flowforge_pipeline.flows import metrics
from flowforge_pipeline.flows.batching import batch_row_lists
from flowforge_pipeline.flows.common import (
    InstrumentsProvider,
    SourceItem,
    kafka_source,
    reference_instruments,
)
from flowforge_pipeline.flows.validation import (
    DeadLetter,
    Heartbeat,
    Quote,
    Trade,
    is_dead_letter,
    parse_quote,
    parse_trade,
)
from flowforge_pipeline.settings import Settings, get_settings
from flowforge_pipeline.sinks.clickhouse import ClickHouseSink, Row, RowBatch, TableSpec
from flowforge_pipeline.sinks.kafka import DeadLetterSink

FLOW = "raw_sink"

TRADES_SPEC = TableSpec(
    table=RAW_TRADES.name,
    columns=(
        "trade_id", "symbol", "price", "quantity", "side", "account", "venue", "event_time",
        "kafka_partition", "kafka_offset",
    ),
    resume_key=("kafka_partition",),
    resume_position="kafka_offset",
    first_time="event_time",
    last_time="event_time",
)
QUOTES_SPEC = TableSpec(
    table=RAW_QUOTES.name,
    columns=(
        "quote_id", "symbol", "bid", "ask", "bid_size", "ask_size", "event_time",
        "kafka_partition", "kafka_offset",
    ),
    resume_key=("kafka_partition",),
    resume_position="kafka_offset",
    first_time="event_time",
    last_time="event_time",
)


def parse_record(
    item: SourceItem, symbols: frozenset[str], quotes_topic: str = QUOTES_TOPIC.name
) -> Trade | Heartbeat | Quote | DeadLetter:
    """Validate a record of either topic, by the topic it came from."""
    topic = item.msg.topic if isinstance(item, KafkaError) else item.topic
    metrics.count_in(FLOW, topic or "")
    if topic == quotes_topic:
        return parse_quote(item, flow=FLOW, symbols=symbols)
    return parse_trade(item, flow=FLOW, symbols=symbols)


def parse_batch(
    items: list[SourceItem], symbols: frozenset[str], quotes_topic: str = QUOTES_TOPIC.name
) -> list[DeadLetter | tuple[str, list[Row]]]:
    """A whole input batch as its dead letters and one `(table, rows)` per table, in order."""
    trades: list[Row] = []
    quotes: list[Row] = []
    out: list[DeadLetter | tuple[str, list[Row]]] = []
    read: dict[str, int] = {}
    for item in items:
        topic = (item.msg.topic if isinstance(item, KafkaError) else item.topic) or ""
        read[topic] = read.get(topic, 0) + 1
        if topic == quotes_topic:
            record: Trade | Heartbeat | Quote | DeadLetter = parse_quote(
                item, flow=FLOW, symbols=symbols
            )
        else:
            record = parse_trade(item, flow=FLOW, symbols=symbols)
        if isinstance(record, Trade):
            trades.append(raw_row_of_trade(record))
        elif isinstance(record, Quote):
            quotes.append(raw_row_of_quote(record))
        elif isinstance(record, DeadLetter):
            out.append(record)
    for topic, n in read.items():
        metrics.count_in_many(FLOW, topic, n)
    if trades:
        out.append((RAW_TRADES.name, trades))
    if quotes:
        out.append((RAW_QUOTES.name, quotes))
    return out


def raw_row_of_trade(record: Trade) -> Row:
    """The `raw_trades` row of a trade (columns of `TRADES_SPEC`)."""
    return (
        record.trade_id, record.symbol, record.price, record.quantity, record.side,
        record.account, record.venue, record.event_time,
        record.origin.partition, record.origin.offset,
    )


def raw_row_of_quote(record: Quote) -> Row:
    """The `raw_quotes` row of a quote (columns of `QUOTES_SPEC`)."""
    return (
        record.quote_id, record.symbol, record.bid, record.ask, record.bid_size,
        record.ask_size, record.event_time, record.origin.partition, record.origin.offset,
    )


def raw_row(record: Trade | Heartbeat | Quote) -> tuple[str, Row] | None:
    """`(table, row)` for a trade or quote; None for a heartbeat (never stored)."""
    if isinstance(record, Trade):
        return RAW_TRADES.name, raw_row_of_trade(record)
    if isinstance(record, Quote):
        return RAW_QUOTES.name, raw_row_of_quote(record)
    return None


def to_batch(keyed: tuple[str, list[Row]]) -> RowBatch:
    """A keyed list of rows as one insert."""
    return RowBatch(table=keyed[0], rows=keyed[1])


def build(
    source: Source[SourceItem],
    rows_sink: Sink[RowBatch],
    dlq_sink: Sink[DeadLetter],
    *,
    symbols: frozenset[str],
    flush_size: int,
    max_wait: timedelta,
    quotes_topic: str = QUOTES_TOPIC.name,
) -> Dataflow:
    """Wire the raw sink between any source and sinks (tests pass in-memory ones)."""
    flow = Dataflow(FLOW)
    items = op.input("kafka_in", flow, source)
    parsed: Stream[Any] = op.flat_map_batch(
        "parse", items, lambda batch: parse_batch(batch, symbols, quotes_topic)
    )
    # DeadLetter | (table, [row, ...]) — one row list per table per input batch
    split = op.branch("split_dead_letters", parsed, is_dead_letter)
    op.output("dlq_out", split.trues, dlq_sink)
    table_rows: KeyedStream[list[Row]] = split.falses
    batches = batch_row_lists("batch", table_rows, flush_size=flush_size, max_wait=max_wait)
    # (table, [row, ...])
    op.output("clickhouse_out", op.map("to_batch", batches, to_batch), rows_sink)
    return flow


def from_settings(
    settings: Settings, instruments: InstrumentsProvider = reference_instruments
) -> Dataflow:
    """The raw sink on the configured broker and stores."""
    return build(
        kafka_source(settings, [TRADES_TOPIC.name, QUOTES_TOPIC.name]),
        ClickHouseSink(settings, FLOW, (TRADES_SPEC, QUOTES_SPEC)),
        DeadLetterSink(settings),
        symbols=instruments().symbols,
        flush_size=settings.sink_flush_size,
        max_wait=timedelta(seconds=settings.sink_flush_wait_seconds),
    )


def __getattr__(name: str) -> Dataflow:
    # `flow` is built on first access so importing the module needs no settings or files.
    if name == "flow":
        return from_settings(get_settings())
    raise AttributeError(name)
