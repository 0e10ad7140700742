"""live_views: trades + quotes → Postgres `live_quotes`, `live_positions`, `live_pnl`.

Run: `python -m bytewax.run flowforge_pipeline.flows.live_views:flow`.

The local stand-in for the Materialize views in `materialize/`: the same tables, the same
numbers. State per symbol is the newest quote (newest by event time, then quote id, so the
result does not depend on arrival order) and each account's average-cost book, the very
`Book` the positions flow uses, so Redis and Postgres never disagree on a position. A quote
re-marks every account holding the symbol; a trade re-books one account. PnL rows exist once
a symbol has both a position and a quote (the views join the same way); the row with symbol
'*' holds an account's totals over its symbols. Rows are upserted in one small transaction
per Bytewax batch; state and offsets are snapshotted by recovery, so a replay rewrites the
same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
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
    is_dead_letter,
    origin_of,
    parse_quote,
    parse_trade,
)
from flowforge_pipeline.settings import Settings, get_settings
from flowforge_pipeline.sinks.kafka import DeadLetterSink
from flowforge_pipeline.sinks.postgres import PostgresUpsertSink, Upsert

FLOW = "live_views"
#: The `symbol` of an account's total row in `live_pnl`.
TOTAL_SYMBOL = "*"


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

    def on_quote(self, quote: Quote, now: datetime) -> list[Upsert]:
        """Take a quote if it is the newest; re-mark every account holding the symbol."""
        current = self.quote
        if current is not None and (quote.event_time, quote.quote_id) <= (
            current.event_time,
            current.quote_id,
        ):
            return []
        self.quote = quote
        rows = [quote_row(quote, now)]
        rows.extend(self.pnl_row(account, now) for account in sorted(self.accounts))
        return rows

    def on_trade(self, trade: Trade, now: datetime) -> list[Upsert]:
        """Book a trade into its account; new position row and, once marked, PnL row."""
        entry = self.accounts.setdefault(trade.account, AccountBook())
        entry.book.apply(trade.signed_quantity, trade.price)
        if entry.last_trade_time is None or trade.event_time > entry.last_trade_time:
            entry.last_trade_time = trade.event_time
        rows = [self.position_row(trade.account, trade.symbol, now)]
        if self.quote is not None:
            rows.append(self.pnl_row(trade.account, now))
        return rows

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


def update_symbol(
    state: SymbolLive | None, record: Trade | Quote
) -> tuple[SymbolLive, list[Upsert]]:
    """Stateful step per symbol: apply a trade or quote, emit the rows it changed."""
    live = state or SymbolLive()
    now = utc_now()
    if isinstance(record, Quote):
        return live, live.on_quote(record, now)
    return live, live.on_trade(record, now)


@dataclass
class AccountTotals:
    """Per symbol, an account's (realized, unrealized) PnL, summed into the '*' row."""

    by_symbol: dict[str, tuple[float, float]] = field(default_factory=dict)

    def update(self, row: Upsert) -> list[Upsert]:
        """Take a symbol's PnL row; emit it and the account's new total row."""
        values = row.values
        self.by_symbol[values[1]] = (values[5], values[6])
        realized = sum(r for r, _ in self.by_symbol.values())
        unrealized = sum(u for _, u in self.by_symbol.values())
        total = Upsert(
            LIVE_PNL.name,
            (values[0], TOTAL_SYMBOL, 0.0, 0.0, 0.0, realized, unrealized,
             realized + unrealized, values[8]),
        )
        return [row, total]


def total_account(
    state: AccountTotals | None, row: Upsert
) -> tuple[AccountTotals, list[Upsert]]:
    """Stateful step per account: keep the '*' row current."""
    totals = state or AccountTotals()
    return totals, totals.update(row)


def is_pnl(row: Upsert) -> bool:
    """Branch predicate: rows of `live_pnl` need the per-account total step."""
    return row.table == LIVE_PNL.name


def is_trade_or_quote(item: object) -> TypeGuard[Trade | Quote]:
    """Filter predicate: heartbeats change no live view."""
    return isinstance(item, Trade | Quote)


def parse(
    item: SourceItem, symbols: frozenset[str], quotes_topic: str = QUOTES_TOPIC.name
) -> Trade | Heartbeat | Quote | DeadLetter:
    """Validate a record of either topic, by the topic it came from (crossed quotes are bad)."""
    topic = origin_of(item).topic
    metrics.EVENTS_IN.labels(FLOW, topic).inc()
    if topic == quotes_topic:
        return parse_quote(item, flow=FLOW, symbols=symbols)
    return parse_trade(item, flow=FLOW, symbols=symbols)


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
    parsed: Stream[Any] = op.map("parse", items, lambda item: parse(item, symbols, quotes_topic))
    # Trade | Heartbeat | Quote | DeadLetter
    split = op.branch("split_dead_letters", parsed, is_dead_letter)
    op.output("dlq_out", split.trues, dlq_sink)
    records = op.filter("trades_and_quotes", split.falses, is_trade_or_quote)
    keyed = op.key_on("key_symbol", records, lambda r: r.symbol)
    # (symbol, Trade | Quote)
    changed = op.stateful_map("update_symbol", keyed, update_symbol)
    # (symbol, [Upsert, ...])
    rows = op.flat_map("rows", changed, lambda kv: kv[1])
    pnl = op.branch("split_pnl", rows, is_pnl)
    by_account = op.key_on("key_account", pnl.trues, lambda r: r.values[0])
    # (account, Upsert of live_pnl)
    totals = op.stateful_map("total_account", by_account, total_account)
    # (account, [symbol row, '*' row])
    pnl_rows = op.flat_map("pnl_rows", totals, lambda kv: kv[1])
    op.output("postgres_out", op.merge("all_rows", pnl.falses, pnl_rows), rows_sink)
    return flow


def from_settings(
    settings: Settings, instruments: InstrumentsProvider = reference_instruments
) -> Dataflow:
    """The live-views flow on the configured broker and Postgres."""
    return build(
        kafka_source(settings, [TRADES_TOPIC.name, QUOTES_TOPIC.name]),
        PostgresUpsertSink(settings, FLOW),
        DeadLetterSink(settings),
        symbols=instruments().symbols,
    )


def __getattr__(name: str) -> Dataflow:
    # `flow` is built on first access so importing the module needs no settings or files.
    if name == "flow":
        return from_settings(get_settings())
    raise AttributeError(name)
