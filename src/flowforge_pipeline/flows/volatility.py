"""volatility: rolling 1h and 24h realized volatility per symbol → ClickHouse + Redis.

Run: `python -m bytewax.run flowforge_pipeline.flows.volatility:flow`.

Definition (the contract's `rolling_volatility` description, made exact here):

* **sampling**: the price of a minute is the last trade price (by event time) within that
  UTC minute; minutes without a trade have no sample.
* **returns**: the log return of each sampled minute against the previous sample,
  `ln(p_m / p_prev)`, stamped `as_of` = the end of minute m. A gap (a session break) gives
  one return across it.
* **window**: the returns with `as_of` in `(T - 1h, T]` (or 24h) at each `T` = end of a
  sampled minute.
* **figure**: sample standard deviation (n-1) of those returns × sqrt(trading minutes per
  year of the instrument); null while the window holds fewer than `MIN_OBS` returns.

A minute closes once event time has passed its end by the allowed lateness (a trade or a
heartbeat of the symbol), so replays give identical figures; a trade for a closed minute is
dead-lettered as "late".

The flow validates whole input batches and steps each symbol once per batch with that
symbol's records in order, which gives the same figures as one step per record.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink

from flowforge_pipeline.contract.catalog import ROLLING_VOLATILITY, TRADES_TOPIC, VOLATILITY_KEY
from flowforge_pipeline.flows import metrics
from flowforge_pipeline.flows.batching import batch_rows
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
    late,
    parse_trade,
    parse_trades,
)
from flowforge_pipeline.settings import Settings, get_settings
from flowforge_pipeline.sinks.clickhouse import ClickHouseSink, Row, RowBatch, TableSpec
from flowforge_pipeline.sinks.kafka import DeadLetterSink
from flowforge_pipeline.sinks.redis import LatestValue, RedisLatestSink

FLOW = "volatility"
MINUTE = timedelta(minutes=1)
WINDOWS: dict[str, timedelta] = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
#: Fewest returns a window needs before its figure is published (null before).
MIN_OBS: dict[str, int] = {"1h": 30, "24h": 240}

VOLATILITY_SPEC = TableSpec(
    table=ROLLING_VOLATILITY.name,
    columns=("symbol", "window", "as_of", "volatility", "n_obs"),
    resume_key=("symbol", "window"),
    resume_position="as_of",
    first_time="as_of",
    last_time="as_of",
)


@dataclass(frozen=True)
class VolatilityFigure:
    """Both windows' figures of a symbol at the end of one sampled minute."""

    symbol: str
    as_of: datetime
    volatility: dict[str, float | None]
    n_obs: dict[str, int]

    def rows(self) -> list[Row]:
        """The `rolling_volatility` rows (one per window)."""
        return [(self.symbol, w, self.as_of, self.volatility[w], self.n_obs[w]) for w in WINDOWS]

    def latest(self) -> LatestValue:
        """The `latest:volatility:{symbol}` value."""
        return LatestValue(
            VOLATILITY_KEY.key(symbol=self.symbol),
            {
                "symbol": self.symbol,
                "as_of": iso(self.as_of),
                "vol_1h": self.volatility["1h"],
                "vol_24h": self.volatility["24h"],
                "n_obs_1h": self.n_obs["1h"],
                "n_obs_24h": self.n_obs["24h"],
                "updated_at": iso(utc_now()),
            },
        )


def minute_of(ts: datetime) -> datetime:
    """Start of the UTC minute holding `ts`."""
    return ts.replace(second=0, microsecond=0)


def realized_volatility(returns: list[float], minutes_per_year: int) -> float:
    """Sample standard deviation of 1-minute returns, annualized."""
    n = len(returns)
    mean = sum(returns) / n
    variance = sum((r - mean) ** 2 for r in returns) / (n - 1)
    return math.sqrt(variance * minutes_per_year)


@dataclass
class VolatilityState:
    """One symbol's open minutes, last closed sample and the last 24h of returns."""

    minutes_per_year: int
    lateness: timedelta
    open_minutes: dict[datetime, tuple[datetime, float]] = field(default_factory=dict)
    closed_until: datetime | None = None
    last_price: float | None = None
    returns: deque[tuple[datetime, float]] = field(default_factory=deque)

    def observe(self, event: Trade | Heartbeat) -> list[VolatilityFigure | DeadLetter]:
        """Take a record in; return figures of minutes it closed, or a 'late' dead letter."""
        if self.closed_until is not None and event.event_time < self.closed_until:
            metrics.LATE_EVENTS.labels(FLOW).inc()
            return [late(FLOW, event)]
        if isinstance(event, Trade):
            minute = minute_of(event.event_time)
            seen = self.open_minutes.get(minute)
            if seen is None or event.event_time >= seen[0]:
                self.open_minutes[minute] = (event.event_time, event.price)
        return self._close(event.event_time - self.lateness, event.symbol)

    def _close(self, watermark: datetime, symbol: str) -> list[VolatilityFigure | DeadLetter]:
        out: list[VolatilityFigure | DeadLetter] = []
        for minute in sorted(m for m in self.open_minutes if m + MINUTE <= watermark):
            _, price = self.open_minutes.pop(minute)
            as_of = minute + MINUTE
            self.closed_until = as_of
            if self.last_price is not None:
                self.returns.append((as_of, math.log(price / self.last_price)))
                out.append(self._figure(symbol, as_of))
            self.last_price = price
        if self.closed_until is None or minute_of(watermark) > self.closed_until:
            self.closed_until = minute_of(watermark)
        return out

    def _figure(self, symbol: str, as_of: datetime) -> VolatilityFigure:
        longest = max(WINDOWS.values())
        while self.returns and self.returns[0][0] <= as_of - longest:
            self.returns.popleft()
        vols: dict[str, float | None] = {}
        counts: dict[str, int] = {}
        for name, length in WINDOWS.items():
            window = [r for t, r in self.returns if t > as_of - length]
            counts[name] = len(window)
            enough = len(window) >= max(MIN_OBS[name], 2)
            vols[name] = realized_volatility(window, self.minutes_per_year) if enough else None
        return VolatilityFigure(symbol, as_of, vols, counts)


def volatility_step(
    minutes_per_year: dict[str, int], lateness: timedelta
) -> Callable[
    [VolatilityState | None, Trade | Heartbeat],
    tuple[VolatilityState, list[VolatilityFigure | DeadLetter]],
]:
    """The stateful mapper, closed over the instruments' annualization factors."""

    def step(
        state: VolatilityState | None, event: Trade | Heartbeat
    ) -> tuple[VolatilityState, list[VolatilityFigure | DeadLetter]]:
        state = state or VolatilityState(minutes_per_year[event.symbol], lateness)
        return state, state.observe(event)

    return step


def volatility_batch_step(
    minutes_per_year: dict[str, int], lateness: timedelta
) -> Callable[
    [VolatilityState | None, list[Trade | Heartbeat]],
    tuple[VolatilityState, list[VolatilityFigure | DeadLetter]],
]:
    """`volatility_step` over a symbol's records of one input batch, in order."""

    def step(
        state: VolatilityState | None, events: list[Trade | Heartbeat]
    ) -> tuple[VolatilityState, list[VolatilityFigure | DeadLetter]]:
        state = state or VolatilityState(minutes_per_year[events[0].symbol], lateness)
        out: list[VolatilityFigure | DeadLetter] = []
        for event in events:
            out.extend(state.observe(event))
        return state, out

    return step


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


def to_batch(keyed: tuple[str, list[Row]]) -> RowBatch:
    """A keyed list of rows as one insert."""
    return RowBatch(keyed[0], keyed[1])


def build(
    source: Source[SourceItem],
    rows_sink: Sink[RowBatch],
    latest_sink: Sink[LatestValue],
    dlq_sink: Sink[DeadLetter],
    *,
    minutes_per_year: dict[str, int],
    lateness: timedelta,
    flush_size: int,
    max_wait: timedelta,
) -> Dataflow:
    """Wire the volatility flow between any source and sinks (tests pass in-memory ones)."""
    symbols = frozenset(minutes_per_year)
    flow = Dataflow(FLOW)
    items = op.input("kafka_in", flow, source)
    parsed: Stream[Any] = op.flat_map_batch(
        "parse", items, lambda batch: parse_batch(batch, symbols)
    )
    # DeadLetter | (symbol, [Trade | Heartbeat, ...]) per input batch
    split = op.branch("split_dead_letters", parsed, is_dead_letter)
    keyed: KeyedStream[list[Trade | Heartbeat]] = split.falses
    results = op.stateful_map(
        "rolling_returns", keyed, volatility_batch_step(minutes_per_year, lateness)
    )
    # (symbol, [VolatilityFigure | DeadLetter, ...])
    outcomes: Stream[Any] = op.flat_map("unpack", results, lambda kv: kv[1])
    late_split = op.branch("split_late", outcomes, is_dead_letter)
    op.output("dlq_out", op.merge("dead_letters", split.trues, late_split.trues), dlq_sink)
    figures: Stream[VolatilityFigure] = late_split.falses
    op.output("redis_out", op.map("latest", figures, VolatilityFigure.latest), latest_sink)
    rows = op.flat_map("rows", figures, VolatilityFigure.rows)
    keyed_rows = op.key_on("key_table", rows, lambda _: ROLLING_VOLATILITY.name)
    batches = batch_rows("batch", keyed_rows, flush_size=flush_size, max_wait=max_wait)
    # (table, [row, ...])
    op.output("clickhouse_out", op.map("to_batch", batches, to_batch), rows_sink)
    return flow


def from_settings(
    settings: Settings, instruments: InstrumentsProvider = reference_instruments
) -> Dataflow:
    """The volatility flow on the configured broker and stores."""
    return build(
        kafka_source(settings, [TRADES_TOPIC.name]),
        ClickHouseSink(settings, FLOW, (VOLATILITY_SPEC,)),
        RedisLatestSink(settings, FLOW),
        DeadLetterSink(settings),
        minutes_per_year=instruments().minutes_per_year,
        lateness=timedelta(seconds=settings.flow_allowed_lateness_seconds),
        flush_size=settings.sink_flush_size,
        max_wait=timedelta(seconds=settings.sink_flush_wait_seconds),
    )


def __getattr__(name: str) -> Dataflow:
    # `flow` is built on first access so importing the module needs no settings or files.
    if name == "flow":
        return from_settings(get_settings())
    raise AttributeError(name)
