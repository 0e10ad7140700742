"""positions: net position per symbol (and per account) from trades → `latest:position:{symbol}`.

Run: `python -m bytewax.run flowforge_pipeline.flows.positions:flow`.

Average-cost method: buying into a long (or selling into a short) moves the average cost;
trading against the position realizes PnL on the closed quantity at the average cost; a
trade larger than the position flips it, and the remainder opens at the trade price. The
symbol's `avg_cost` is that of all accounts' trades pooled into one book, so it describes the
net open position; `realized_pnl` is the sum over accounts, as the contract defines.
State is per symbol and snapshotted by Bytewax recovery; a replay rewrites the same values.

The flow validates whole input batches and books each symbol's trades of a batch in one
step, emitting the symbol's value once per batch: Redis keeps only the newest value of a
key anyway, and building the value (all accounts) per trade was most of the flow's cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink

from flowforge_pipeline.contract.catalog import POSITION_KEY, TRADES_TOPIC
from flowforge_pipeline.flows import metrics
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
    by_symbol,
    is_dead_letter,
    parse_trade,
    parse_trades,
)
from flowforge_pipeline.settings import Settings, get_settings
from flowforge_pipeline.sinks.kafka import DeadLetterSink
from flowforge_pipeline.sinks.redis import LatestValue, RedisLatestSink

FLOW = "positions"
#: A net quantity this close to zero is flat (float sums of lot multiples leave dust).
FLAT = 1e-9


@dataclass
class Book:
    """One average-cost position."""

    net_quantity: float = 0.0
    avg_cost: float = 0.0
    realized_pnl: float = 0.0

    def apply(self, signed_quantity: float, price: float) -> None:
        """Book a trade of `signed_quantity` (+buy / -sell) at `price`."""
        net = self.net_quantity
        total = net + signed_quantity
        if abs(net) <= FLAT or (net > 0) == (signed_quantity > 0):
            self.avg_cost = (self.avg_cost * abs(net) + price * abs(signed_quantity)) / abs(total)
        else:
            closed = min(abs(signed_quantity), abs(net))
            direction = 1.0 if net > 0 else -1.0
            self.realized_pnl += closed * (price - self.avg_cost) * direction
            if abs(signed_quantity) > abs(net) + FLAT:
                self.avg_cost = price
        if abs(total) <= FLAT:
            total, self.avg_cost = 0.0, 0.0
        self.net_quantity = total

    def fields(self) -> dict[str, float]:
        """The per-account object of the contract's `accounts` field."""
        return {
            "net_quantity": self.net_quantity,
            "avg_cost": self.avg_cost,
            "realized_pnl": self.realized_pnl,
        }


@dataclass
class SymbolPositions:
    """All accounts' books of one symbol plus the pooled book."""

    accounts: dict[str, Book] = field(default_factory=dict)
    pooled: Book = field(default_factory=Book)
    net_quantity: float = 0.0
    last_trade_time: datetime | None = None

    def apply(self, trade: Trade) -> None:
        """Book one trade into its account and into the pooled book."""
        self.accounts.setdefault(trade.account, Book()).apply(trade.signed_quantity, trade.price)
        self.pooled.apply(trade.signed_quantity, trade.price)
        self.net_quantity += trade.signed_quantity
        if self.last_trade_time is None or trade.event_time > self.last_trade_time:
            self.last_trade_time = trade.event_time

    def value(self, symbol: str) -> dict[str, Any]:
        """The `latest:position:{symbol}` value."""
        assert self.last_trade_time is not None  # noqa: S101 - only called after a trade
        return {
            "symbol": symbol,
            "net_quantity": self.net_quantity,
            "avg_cost": self.pooled.avg_cost,
            "realized_pnl": sum(b.realized_pnl for b in self.accounts.values()),
            "last_trade_time": iso(self.last_trade_time),
            "accounts": {name: b.fields() for name, b in sorted(self.accounts.items())},
            "updated_at": iso(utc_now()),
        }


def book_trade(
    state: SymbolPositions | None, trade: Trade
) -> tuple[SymbolPositions, LatestValue]:
    """Stateful step: apply a trade, emit the symbol's new latest value."""
    positions = state or SymbolPositions()
    positions.apply(trade)
    return positions, LatestValue(
        POSITION_KEY.key(symbol=trade.symbol), positions.value(trade.symbol)
    )


def book_trades(
    state: SymbolPositions | None, records: list[Trade | Heartbeat]
) -> tuple[SymbolPositions | None, list[LatestValue]]:
    """Stateful step: apply a symbol's trades of one input batch, emit its newest value."""
    trades = [r for r in records if isinstance(r, Trade)]
    if not trades:
        return state, []  # heartbeats move no position
    positions = state or SymbolPositions()
    for trade in trades:
        positions.apply(trade)
    symbol = trades[0].symbol
    return positions, [LatestValue(POSITION_KEY.key(symbol=symbol), positions.value(symbol))]


def parse_batch(
    items: list[SourceItem], symbols: frozenset[str]
) -> list[DeadLetter | tuple[str, list[Trade | Heartbeat]]]:
    """Validate a whole input batch, counting it; dead letters, then records per symbol."""
    metrics.count_in_many(FLOW, TRADES_TOPIC.name, len(items))
    return by_symbol(parse_trades(items, flow=FLOW, symbols=symbols))


def parse(item: SourceItem, symbols: frozenset[str]) -> Trade | Heartbeat | DeadLetter:
    """Validate a trades-topic record, counting it."""
    metrics.count_in(FLOW, TRADES_TOPIC.name)
    return parse_trade(item, flow=FLOW, symbols=symbols)


def build(
    source: Source[SourceItem],
    latest_sink: Sink[LatestValue],
    dlq_sink: Sink[DeadLetter],
    *,
    symbols: frozenset[str],
) -> Dataflow:
    """Wire the positions flow between any source and sinks (tests pass in-memory ones)."""
    flow = Dataflow(FLOW)
    items = op.input("kafka_in", flow, source)
    parsed: Stream[Any] = op.flat_map_batch(
        "parse", items, lambda batch: parse_batch(batch, symbols)
    )
    # DeadLetter | (symbol, [Trade | Heartbeat, ...]) per input batch
    split = op.branch("split_dead_letters", parsed, is_dead_letter)
    op.output("dlq_out", split.trues, dlq_sink)
    keyed: KeyedStream[list[Trade | Heartbeat]] = split.falses
    values = op.stateful_map("book_trades", keyed, book_trades)
    # (symbol, [LatestValue] or [])
    op.output("redis_out", op.flat_map("value", values, lambda kv: kv[1]), latest_sink)
    return flow


def from_settings(
    settings: Settings, instruments: InstrumentsProvider = reference_instruments
) -> Dataflow:
    """The positions flow on the configured broker and Redis."""
    return build(
        kafka_source(settings, [TRADES_TOPIC.name]),
        RedisLatestSink(settings, FLOW),
        DeadLetterSink(settings),
        symbols=instruments().symbols,
    )


def __getattr__(name: str) -> Dataflow:
    # `flow` is built on first access so importing the module needs no settings or files.
    if name == "flow":
        return from_settings(get_settings())
    raise AttributeError(name)
