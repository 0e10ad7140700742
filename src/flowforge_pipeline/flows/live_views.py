"""live_views: trades + quotes → Postgres `live_quotes`, `live_positions`, `live_pnl`.

Run: `python -m bytewax.run flowforge_pipeline.flows.live_views:flow`.

The local stand-in for the Materialize views in `materialize/`: the same tables, the same
numbers. State per symbol is the newest quote (newest by event time, then quote id, so the
result does not depend on arrival order) and each account's average-cost book, the very
`Book` the positions flow uses, so Redis and Postgres never disagree on a position. A quote
re-marks every account holding the symbol; a trade re-books one account. PnL rows exist once
a symbol has both a position and a quote (the views join the same way); the row with symbol
'*' holds an account's totals over its symbols.

The flow works on whole input batches: one Python call validates a Kafka batch and groups
it by symbol; each symbol folds all its records of the batch into its state and emits each
row it changed once, with the values it has at the end of the batch (a quote superseded
within the batch is never written). The per-account totals step takes all of an account's
PnL rows of a batch at once. So the work per batch grows with the rows that changed, not
with the events read, and the sink upserts them in one transaction per Bytewax batch
(`sinks/postgres.py`). State and source offsets are snapshotted together by recovery, and
every row carries absolute values, so a replay after a crash rewrites the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink

from flowforge_pipeline.contract.catalog import (
    LIVE_PNL,
    LIVE_POSITIONS,
    LIVE_QUOTES,
    QUOTES_TOPIC,
    TRADES_TOPIC,
)
from flowforge_pipeline.flows import metrics
from flowforge_pipeline.flows.common import (
    InstrumentsProvider,
    SourceItem,
    kafka_source,
    reference_instruments,
    utc_now,
)
from flowforge_pipeline.flows.positions import Book
from flowforge_pipeline.flows.validation import (
    DeadLetter,
    Heartbeat,
    Quote,
    Trade,
    by_symbol,
    is_dead_letter,
    parse_quote,
    parse_trade,
)
from flowforge_pipeline.settings import Settings, get_settings
from flowforge_pipeline.sinks.kafka import DeadLetterSink
from flowforge_pipeline.sinks.postgres import PostgresUpsertSink, Upsert

FLOW = "live_views"
#: Longest time the broker may hold a fetch waiting for data (librdkafka's default is 500 ms).
#: The local broker often holds a fetch that long although data has arrived: one message
#: every 50 ms took p50 130 / p99 254 ms from produce to consume at 500 ms, 28 / 71 ms at
#: 100 ms. A live table is promised sub-second; 100 ms costs the broker about ten empty
#: fetches a second when idle and nothing when data is flowing.
FETCH_WAIT_MS = 100
#: The `symbol` of an account's total row in `live_pnl`.
TOTAL_SYMBOL = "*"

Record = Trade | Heartbeat | Quote


def quote_row(quote: Quote, now: datetime) -> Upsert:
    """The `live_quotes` row of a quote."""
    mid = (quote.bid + quote.ask) / 2.0
    spread = quote.ask - quote.bid
    return Upsert(
        LIVE_QUOTES.name,
        (
            quote.symbol, quote.bid, quote.ask, quote.bid_size, quote.ask_size, mid, spread,
            spread / mid * 10_000.0, quote.event_time, now,
        ),
    )


@dataclass
class AccountBook:
    """One account's average-cost book of one symbol and the time of its last trade."""

    book: Book = field(default_factory=Book)
    last_trade_time: datetime | None = None

    def cost_basis(self) -> float:
        """Signed cost of the open position (net quantity x average cost)."""
        return self.book.net_quantity * self.book.avg_cost


@dataclass
class SymbolLive:
    """Everything the live views know about one symbol."""

    quote: Quote | None = None
    accounts: dict[str, AccountBook] = field(default_factory=dict)

    def take_quote(self, quote: Quote) -> bool:
        """Keep a quote if it is the newest; True when it is."""
        current = self.quote
        if current is not None and (quote.event_time, quote.quote_id) <= (
            current.event_time,
            current.quote_id,
        ):
            return False
        self.quote = quote
        return True

    def book_trade(self, trade: Trade) -> None:
        """Book a trade into its account."""
        entry = self.accounts.get(trade.account)
        if entry is None:
            entry = self.accounts[trade.account] = AccountBook()
        entry.book.apply(trade.signed_quantity, trade.price)
        if entry.last_trade_time is None or trade.event_time > entry.last_trade_time:
            entry.last_trade_time = trade.event_time

    def position_row(self, account: str, symbol: str, now: datetime) -> Upsert:
        """The `live_positions` row of an account."""
        entry = self.accounts[account]
        b = entry.book
        return Upsert(
            LIVE_POSITIONS.name,
            (account, symbol, b.net_quantity, b.avg_cost, entry.cost_basis(),
             entry.last_trade_time, now),
        )

    def pnl_row(self, account: str, now: datetime) -> Upsert:
        """The `live_pnl` row of an account, marked to the newest quote's mid."""
        assert self.quote is not None  # noqa: S101 - only called once a quote exists
        b = self.accounts[account].book
        mark = (self.quote.bid + self.quote.ask) / 2.0
        unrealized = b.net_quantity * (mark - b.avg_cost)
        return Upsert(
            LIVE_PNL.name,
            (account, self.quote.symbol, b.net_quantity, b.avg_cost, mark, b.realized_pnl,
             unrealized, b.realized_pnl + unrealized, now),
        )


@dataclass(frozen=True)
class Changed:
    """What one symbol's records of one input batch changed: the rows to write.

    `rows` are `live_quotes` and `live_positions` rows, written as they are; `pnl` are the
    symbol's `live_pnl` rows, which go through the per-account totals step first.
    """

    rows: list[Upsert]
    pnl: list[Upsert]


def update_symbol_batch(
    state: SymbolLive | None, records: list[Record]
) -> tuple[SymbolLive | None, Changed | None]:
    """Stateful step per symbol: fold one input batch's records, emit each changed row once.

    The rows carry the values at the end of the batch: what a record-by-record fold would
    have written last for the same keys, without the rows it would have overwritten.
    """
    live = state
    quote_changed = False
    traded: dict[str, None] = {}  # accounts in first-trade order
    symbol = ""
    for record in records:
        if isinstance(record, Quote):
            if live is None:
                live = SymbolLive()
            quote_changed |= live.take_quote(record)
        elif isinstance(record, Trade):
            if live is None:
                live = SymbolLive()
            live.book_trade(record)
            traded[record.account] = None
            symbol = record.symbol
        # heartbeats change no live view
    if live is None or not (quote_changed or traded):
        return live, None
    now = utc_now()
    rows: list[Upsert] = []
    pnl: list[Upsert] = []
    if quote_changed:
        assert live.quote is not None  # noqa: S101 - a quote was just taken
        rows.append(quote_row(live.quote, now))
        symbol = live.quote.symbol
    rows.extend(live.position_row(account, symbol, now) for account in traded)
    if live.quote is not None:
        marked = sorted(live.accounts) if quote_changed else traded
        pnl.extend(live.pnl_row(account, now) for account in marked)
    return live, Changed(rows, pnl)


@dataclass
class AccountTotals:
    """Per symbol, an account's (realized, unrealized) PnL, summed into the '*' row."""

    by_symbol: dict[str, tuple[float, float]] = field(default_factory=dict)

    def update_many(self, rows: list[Upsert]) -> list[Upsert]:
        """Take some of the account's symbol PnL rows; emit them and one new total row."""
        for row in rows:
            values = row.values
            self.by_symbol[values[1]] = (values[5], values[6])
        realized = sum(r for r, _ in self.by_symbol.values())
        unrealized = sum(u for _, u in self.by_symbol.values())
        last = rows[-1].values
        total = Upsert(
            LIVE_PNL.name,
            (last[0], TOTAL_SYMBOL, 0.0, 0.0, 0.0, realized, unrealized,
             realized + unrealized, last[8]),
        )
        return [*rows, total]


def total_account(
    state: AccountTotals | None, rows: list[Upsert]
) -> tuple[AccountTotals, list[Upsert]]:
    """Stateful step per account: take its PnL rows of a batch, keep the '*' row current."""
    totals = state or AccountTotals()
    return totals, totals.update_many(rows)


def topic_of(item: SourceItem) -> str:
    """The topic a source item (message or read error) came from."""
    msg = item.msg if isinstance(item, KafkaError) else item
    return msg.topic or ""


def parse(
    item: SourceItem, symbols: frozenset[str], quotes_topic: str = QUOTES_TOPIC.name
) -> Record | DeadLetter:
    """Validate a record of either topic, by the topic it came from (crossed quotes are bad)."""
    if topic_of(item) == quotes_topic:
        return parse_quote(item, flow=FLOW, symbols=symbols)
    return parse_trade(item, flow=FLOW, symbols=symbols)


def parse_batch(
    items: list[SourceItem], symbols: frozenset[str], quotes_topic: str = QUOTES_TOPIC.name
) -> list[DeadLetter | tuple[str, list[Record]]]:
    """Validate a whole input batch, counting it; dead letters, then records per symbol."""
    records: list[Record | DeadLetter] = []
    quotes = 0
    for item in items:
        if topic_of(item) == quotes_topic:
            quotes += 1
            records.append(parse_quote(item, flow=FLOW, symbols=symbols))
        else:
            records.append(parse_trade(item, flow=FLOW, symbols=symbols))
    metrics.count_in_many(FLOW, quotes_topic, quotes)
    metrics.count_in_many(FLOW, TRADES_TOPIC.name, len(items) - quotes)
    return by_symbol(records)


def pnl_by_account(
    batch: list[tuple[str, Changed | None]],
) -> list[tuple[str, list[Upsert]]]:
    """All symbols' PnL rows of a Bytewax batch, one `(account, [row, ...])` per account."""
    groups: dict[str, list[Upsert]] = {}
    for _, changed in batch:
        if changed is None:
            continue
        for row in changed.pnl:
            account = row.values[0]
            group = groups.get(account)
            if group is None:
                groups[account] = [row]
            else:
                group.append(row)
    return list(groups.items())


def build(
    source: Source[SourceItem],
    rows_sink: Sink[Upsert],
    dlq_sink: Sink[DeadLetter],
    *,
    symbols: frozenset[str],
    quotes_topic: str = QUOTES_TOPIC.name,
) -> Dataflow:
    """Wire the live-views flow between any source and sinks (tests pass in-memory ones)."""
    flow = Dataflow(FLOW)
    items = op.input("kafka_in", flow, source)
    parsed: Stream[Any] = op.flat_map_batch(
        "parse", items, lambda batch: parse_batch(batch, symbols, quotes_topic)
    )
    # DeadLetter | (symbol, [Trade | Heartbeat | Quote, ...]) per input batch
    split = op.branch("split_dead_letters", parsed, is_dead_letter)
    op.output("dlq_out", split.trues, dlq_sink)
    keyed: KeyedStream[list[Record]] = split.falses
    changed = op.stateful_map("update_symbol", keyed, update_symbol_batch)
    # (symbol, Changed | None)
    rows = op.flat_map("rows", changed, lambda kv: kv[1].rows if kv[1] is not None else [])
    by_account: KeyedStream[list[Upsert]] = op.flat_map_batch(
        "pnl_by_account", changed, pnl_by_account
    )
    # (account, [live_pnl row, ...])
    totals = op.stateful_map("total_account", by_account, total_account)
    # (account, [symbol rows..., '*' row])
    pnl_rows = op.flat_map("pnl_rows", totals, lambda kv: kv[1])
    op.output("postgres_out", op.merge("all_rows", rows, pnl_rows), rows_sink)
    return flow


def from_settings(
    settings: Settings, instruments: InstrumentsProvider = reference_instruments
) -> Dataflow:
    """The live-views flow on the configured broker and Postgres."""
    return build(
        kafka_source(
            settings, [TRADES_TOPIC.name, QUOTES_TOPIC.name],
            {"fetch.wait.max.ms": str(FETCH_WAIT_MS)},
        ),
        PostgresUpsertSink(settings, FLOW),
        DeadLetterSink(settings),
        symbols=instruments().symbols,
    )


def __getattr__(name: str) -> Dataflow:
    # `flow` is built on first access so importing the module needs no settings or files.
    if name == "flow":
        return from_settings(get_settings())
    raise AttributeError(name)
