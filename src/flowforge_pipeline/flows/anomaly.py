"""anomaly: per-symbol spread, volume and price anomalies → `alerts`, `anomaly_alerts`, broadcast.

Run: `python -m bytewax.run flowforge_pipeline.flows.anomaly:flow`.

Every detector compares an observation with a baseline of the same symbol that it learns
from the stream itself, and stays silent until that baseline is trustworthy (warm-up). An
observation that raised an alert never feeds its baseline, so a long episode cannot teach
the detector that it is normal. Alert types and what they watch:

* `spread_blowout`: quoted spread / slow moving average of spreads >= `spread_factor`.
* `crossed_book`: a quote with bid >= ask (validation rejects it for every other flow;
  here it is the signal itself).
* `stale_quote`: evidence that the newest quote is frozen, counted in usual quote gaps,
  reaches `stale_factor` on a trade: the quote's age / the usual gap between quotes, plus
  what each trade since that quote said. A live book prints at its own bid or ask and now
  and then inside; a frozen one keeps trading at a hidden touch that moves away, so its
  prints land outside the quote (worth `stale_factor - stale_outside_gaps`: conclusive once
  the quote is `stale_outside_gaps` gaps old) or inside it more often than usual
  (`stale_inside_weight` each), while a print at the touch counts against
  (`stale_touch_weight`). On a quiet symbol the prints decide long before the age alone.
* `volume_burst`: a CUSUM of the symbol's trade arrivals, the log-likelihood ratio of a
  rate `volume_factor` x baseline against the baseline, alerts at `volume_cusum` +
  ln(baseline trades per second) (so a busy and a quiet symbol have alike false-alert
  rates per day), after at least `volume_min_trades` trades in the run. The baseline is the
  larger of the per-minute average and the last `volume_quote_seconds` of quotes times the
  usual trades per quote, which follows a step in activity at once (a burst adds trades,
  not quotes). (Injected bursts raise the trade rate; sizes keep their usual heavy-tailed
  draw, so traded quantity adds noise rather than signal.)
* `price_jump`: one mid-to-mid log return >= `price_sigmas` x the 1-minute volatility
  (moving average of per-minute realized variance of mid returns).
* `fat_finger`: a trade printed outside the prevailing quote by >= `outside_fraction` of mid.

Alerts of one symbol and type closer than `merge_seconds` to the previous one belong to the
same episode and are merged (only the first is emitted). Severity grades the observed value
against its threshold: < 2x low, < 4x medium, else high. Alert ids are deterministic
(symbol, type, event time), so a replay writes the same rows.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeGuard

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSink, KafkaSinkMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import Source
from bytewax.operators import KeyedStream
from bytewax.outputs import Sink

from flowforge_pipeline.contract.catalog import (
    ALERTS_TOPIC,
    ANOMALY_ALERTS,
    QUOTES_TOPIC,
    TRADES_TOPIC,
)
from flowforge_pipeline.flows import metrics
from flowforge_pipeline.flows.batching import batch_rows
from flowforge_pipeline.flows.common import (
    InstrumentsProvider,
    SourceItem,
    iso,
    kafka_source,
    parse_event_time,
    reference_instruments,
    to_json_bytes,
)
from flowforge_pipeline.flows.validation import (
    DeadLetter,
    Heartbeat,
    Quote,
    Trade,
    by_symbol,
    is_dead_letter,
    origin_of,
    parse_quote,
    parse_trade,
)
from flowforge_pipeline.settings import Settings, get_settings
from flowforge_pipeline.sinks.clickhouse import ClickHouseSink, Row, RowBatch, TableSpec
from flowforge_pipeline.sinks.kafka import DeadLetterSink

FLOW = "anomaly"
ALERT_TYPES: tuple[str, ...] = (
    "spread_blowout",
    "crossed_book",
    "stale_quote",
    "volume_burst",
    "price_jump",
    "fat_finger",
)

ALERTS_SPEC = TableSpec(
    table=ANOMALY_ALERTS.name,
    columns=(
        "alert_id", "symbol", "alert_type", "severity", "observed", "baseline", "threshold",
        "event_time",
    ),
    resume_key=("symbol",),
    resume_position="event_time",
    first_time="event_time",
    last_time="event_time",
)


@dataclass(frozen=True)
class Thresholds:
    """Detector settings (defaults tuned on a clean run; see docs/anomaly.md)."""

    spread_factor: float = 3.0
    stale_factor: float = 12.0
    stale_outside_gaps: float = 2.0
    stale_inside_weight: float = 2.3
    stale_touch_weight: float = -1.0
    volume_factor: float = 5.0
    volume_min_trades: int = 4
    volume_cusum: float = 12.75
    volume_quote_seconds: float = 20.0
    price_sigmas: float = 12.0
    outside_fraction: float = 0.01
    warmup_quotes: int = 50
    warmup_minutes: int = 5
    merge_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        """The thresholds configured in the environment."""
        return cls(
            spread_factor=settings.anomaly_spread_factor,
            stale_factor=settings.anomaly_stale_factor,
            volume_factor=settings.anomaly_volume_factor,
            price_sigmas=settings.anomaly_price_sigmas,
            outside_fraction=settings.anomaly_outside_fraction,
            warmup_quotes=settings.anomaly_warmup_quotes,
            merge_seconds=settings.anomaly_merge_seconds,
        )


@dataclass(frozen=True)
class CrossedQuote:
    """A quote with bid >= ask: bad input for the other flows, a signal here."""

    symbol: str
    bid: float
    ask: float
    event_time: datetime


@dataclass(frozen=True)
class Alert:
    """One alert episode, as the contract's `alerts` message and `anomaly_alerts` row."""

    symbol: str
    alert_type: str
    severity: str
    observed: float
    baseline: float
    threshold: float
    event_time: datetime

    @property
    def alert_id(self) -> str:
        """Deterministic: the same input gives the same id on every replay."""
        stamp = self.event_time.strftime("%Y%m%dT%H%M%S.%f")
        return f"{self.symbol}-{self.alert_type}-{stamp}"

    def message(self) -> dict[str, Any]:
        """The contract's `alerts` JSON object."""
        return {
            "alert_id": self.alert_id,
            "symbol": self.symbol,
            "alert_type": self.alert_type,
            "severity": self.severity,
            "observed": self.observed,
            "baseline": self.baseline,
            "threshold": self.threshold,
            "event_time": iso(self.event_time),
        }

    def row(self) -> Row:
        """The `anomaly_alerts` row, in `ALERTS_SPEC` column order."""
        return (
            self.alert_id, self.symbol, self.alert_type, self.severity, self.observed,
            self.baseline, self.threshold, self.event_time,
        )


def severity(observed: float, threshold: float) -> str:
    """Grade how far past its threshold an observation is."""
    ratio = abs(observed) / threshold if threshold > 0 else math.inf
    if ratio < 2.0:
        return "low"
    return "medium" if ratio < 4.0 else "high"


@dataclass
class Ewma:
    """Exponentially weighted mean with a count of observations (for warm-up)."""

    alpha: float
    mean: float = 0.0
    n: int = 0

    def add(self, x: float) -> None:
        """Fold in one observation.

        A plain mean until 1/n < alpha, so one odd first value cannot dominate for long.
        """
        self.n += 1
        self.mean += max(self.alpha, 1.0 / self.n) * (x - self.mean)


@dataclass
class SymbolDetector:
    """All baselines and open episodes of one symbol."""

    limits: Thresholds
    spread: Ewma = field(default_factory=lambda: Ewma(0.01))
    quote_gap: Ewma = field(default_factory=lambda: Ewma(0.02))
    minute_trades: Ewma = field(default_factory=lambda: Ewma(0.1))
    trades_per_quote: Ewma = field(default_factory=lambda: Ewma(0.1))
    minute_var: Ewma = field(default_factory=lambda: Ewma(0.1))
    last_quote: Quote | None = None
    last_mid: float | None = None
    minute: int | None = None
    minute_count: int = 0
    minute_quotes: int = 0
    minute_sq: float = 0.0
    minute_alerted: bool = False
    stale_evidence: float = 0.0
    recent_quotes: deque[datetime] = field(default_factory=deque)
    cusum: float = 0.0
    cusum_at: datetime | None = None
    run_start: datetime | None = None
    run_trades: int = 0
    last_alert: dict[str, datetime] = field(default_factory=dict)

    # ---------------------------------------------------------------- episodes
    def _emit(
        self, kind: str, observed: float, baseline: float, threshold: float, at: datetime,
        symbol: str,
    ) -> list[Alert]:
        previous = self.last_alert.get(kind)
        self.last_alert[kind] = at
        if previous is not None and at - previous <= timedelta(seconds=self.limits.merge_seconds):
            return []  # same episode: merged
        return [Alert(symbol, kind, severity(observed, threshold), observed, baseline,
                      threshold, at)]

    def _roll_minute(self, at: datetime) -> None:
        """Close the per-minute accumulators when event time enters a new minute."""
        minute = int(at.timestamp() // 60)
        if self.minute is None:
            self.minute = minute
            return
        if minute == self.minute:
            return
        if not self.minute_alerted:
            self.minute_trades.add(float(self.minute_count))
            if self.minute_quotes:
                self.trades_per_quote.add(self.minute_count / self.minute_quotes)
            if self.minute_sq > 0:
                self.minute_var.add(self.minute_sq)
        for _ in range(min(minute - self.minute - 1, 5)):  # quiet minutes count as empty
            self.minute_trades.add(0.0)
        self.minute, self.minute_count, self.minute_quotes, self.minute_sq = minute, 0, 0, 0.0
        self.minute_alerted = False

    # ---------------------------------------------------------------- inputs
    def on_quote(self, quote: Quote) -> list[Alert]:
        """Spread and price checks on a valid quote."""
        self._roll_minute(quote.event_time)
        out: list[Alert] = []
        lim = self.limits
        spread = quote.ask - quote.bid
        if self.spread.n >= lim.warmup_quotes and self.spread.mean > 0:
            limit = lim.spread_factor * self.spread.mean
            if spread >= limit:
                out += self._emit("spread_blowout", spread, self.spread.mean, limit,
                                  quote.event_time, quote.symbol)
            else:
                self.spread.add(spread)
        else:
            self.spread.add(spread)
        if self.last_quote is not None:
            gap = (quote.event_time - self.last_quote.event_time).total_seconds()
            if self.quote_gap.n < lim.warmup_quotes or gap < self._stale_limit():
                self.quote_gap.add(gap)
        mid = (quote.bid + quote.ask) / 2.0
        if self.last_mid is not None:
            ret = math.log(mid / self.last_mid)
            sigma = math.sqrt(self.minute_var.mean) if self.minute_var.n else 0.0
            limit = lim.price_sigmas * sigma
            if self.minute_var.n >= lim.warmup_minutes and sigma > 0 and abs(ret) >= limit:
                out += self._emit("price_jump", ret, sigma, limit, quote.event_time,
                                  quote.symbol)
                self.minute_alerted = True
            else:
                self.minute_sq += ret * ret
        self.last_quote, self.last_mid = quote, mid
        self.stale_evidence = 0.0
        self.minute_quotes += 1
        self.recent_quotes.append(quote.event_time)
        return out

    def on_crossed(self, crossed: CrossedQuote) -> list[Alert]:
        """A crossed or locked book is an alert at once, no baseline needed."""
        return self._emit("crossed_book", crossed.bid - crossed.ask, 0.0, 0.0,
                          crossed.event_time, crossed.symbol)

    def _stale_limit(self) -> float:
        """A quote gap this long is kept out of the usual-gap baseline."""
        return max(3.0, 15.0 * self.quote_gap.mean)

    def _stale_evidence(self, outside: float, price: float, quote: Quote) -> float:
        """What one trade says about the newest quote being frozen (in usual quote gaps).

        A live book prints at its own bid or ask and now and then inside; a frozen one shows
        prints at a hidden touch that has moved: outside the quote (nearly conclusive),
        inside it more often than usual. A print at the touch speaks for a live quote.
        """
        lim = self.limits
        if outside > 0.0:
            return lim.stale_factor - lim.stale_outside_gaps
        if quote.bid < price < quote.ask:
            return lim.stale_inside_weight
        return lim.stale_touch_weight

    def on_trade(self, trade: Trade) -> list[Alert]:
        """Stale-quote, fat-finger and volume checks on a trade."""
        self._roll_minute(trade.event_time)
        out: list[Alert] = []
        lim = self.limits
        quote = self.last_quote
        if quote is not None:
            age = (trade.event_time - quote.event_time).total_seconds()
            mid = (quote.bid + quote.ask) / 2.0
            outside = max(quote.bid - trade.price, trade.price - quote.ask) / mid
            gap = self.quote_gap.mean
            if self.quote_gap.n >= lim.warmup_quotes and gap > 0 and outside < lim.outside_fraction:
                self.stale_evidence += self._stale_evidence(outside, trade.price, quote)
                if self.stale_evidence + age / gap >= lim.stale_factor:
                    out += self._emit("stale_quote", age, gap, lim.stale_factor * gap,
                                      trade.event_time, trade.symbol)
            if outside >= lim.outside_fraction:
                out += self._emit("fat_finger", outside, 0.0, lim.outside_fraction,
                                  trade.event_time, trade.symbol)
        self.minute_count += 1
        burst = self._volume_burst(trade.event_time)
        if burst is not None:
            observed, baseline, limit = burst
            out += self._emit("volume_burst", observed, baseline, limit, trade.event_time,
                              trade.symbol)
            self.minute_alerted = True
        return out

    def _trade_rate(self, at: datetime) -> float:
        """Expected trades per second now: the slower of two baselines never hides a burst.

        The per-minute average lags when activity steps up (a session opens, another
        closes); the quotes of the last `volume_quote_seconds`, times the symbol's usual
        trades per quote, follow at once, and a burst adds trades, not quotes.
        """
        lim = self.limits
        recent = self.recent_quotes
        oldest = at - timedelta(seconds=lim.volume_quote_seconds)
        while recent and recent[0] <= oldest:
            recent.popleft()
        by_quotes = self.trades_per_quote.mean * len(recent) / lim.volume_quote_seconds
        return max(self.minute_trades.mean / 60.0, by_quotes)

    def _volume_burst(self, at: datetime) -> tuple[float, float, float] | None:
        """CUSUM of the trade arrivals: rate `volume_factor` x baseline against the baseline.

        The log-likelihood ratio of a Poisson stream at m x rate against one at rate gains
        ln m per trade and loses (m - 1) x rate per second of event time; the statistic is
        that ratio since the start of the current run (never below 0). It alerts at
        `volume_cusum` + ln(rate per second), which keeps the false-alert rate per day alike
        for busy and quiet symbols: a busy one alerts within a second or two, a quiet one as
        soon as its evidence suffices. Returns (trades per minute in the run, baseline per
        minute, threshold per minute).
        """
        lim = self.limits
        m = lim.volume_factor
        ready = self.minute_trades.n >= lim.warmup_minutes and self.minute_trades.mean > 0
        rate = self._trade_rate(at) if ready else 0.0
        if self.cusum_at is not None and ready:
            self.cusum -= (m - 1.0) * rate * (at - self.cusum_at).total_seconds()
        self.cusum_at = at
        if not ready or self.cusum <= 0.0:
            self.cusum, self.run_start, self.run_trades = 0.0, at, 0
        self.cusum += math.log(m)
        self.run_trades += 1
        if (not ready or self.run_trades < lim.volume_min_trades
                or self.cusum < lim.volume_cusum + math.log(rate)):
            return None
        assert self.run_start is not None
        span = max((at - self.run_start).total_seconds(), 1.0)
        observed = self.run_trades * 60.0 / span
        self.cusum, self.run_start, self.run_trades = 0.0, at, 0
        return observed, rate * 60.0, m * rate * 60.0


Observation = Trade | Quote | CrossedQuote


def detect(
    state: SymbolDetector | None, record: Observation, limits: Thresholds
) -> tuple[SymbolDetector, list[Alert]]:
    """Stateful step per symbol: run the detectors the record concerns."""
    detector = state or SymbolDetector(limits)
    if isinstance(record, Quote):
        return detector, detector.on_quote(record)
    if isinstance(record, CrossedQuote):
        return detector, detector.on_crossed(record)
    return detector, detector.on_trade(record)


def _parse(
    item: SourceItem, topic: str | None, symbols: frozenset[str], quotes_topic: str
) -> Trade | Heartbeat | Quote | CrossedQuote | DeadLetter:
    if topic != quotes_topic:
        return parse_trade(item, flow=FLOW, symbols=symbols)
    parsed = parse_quote(item, flow=FLOW, symbols=symbols)
    if isinstance(parsed, DeadLetter) and parsed.code == "crossed_quote":
        obj = json.loads(parsed.origin.payload)
        return CrossedQuote(obj["symbol"], float(obj["bid"]), float(obj["ask"]),
                            parse_event_time(obj["event_time"]))
    return parsed


def parse(
    item: SourceItem, symbols: frozenset[str], quotes_topic: str = QUOTES_TOPIC.name
) -> Trade | Heartbeat | Quote | CrossedQuote | DeadLetter:
    """Validate a record; a quote rejected only for being crossed becomes a `CrossedQuote`."""
    topic = origin_of(item).topic
    metrics.count_in(FLOW, topic)
    return _parse(item, topic, symbols, quotes_topic)


def parse_batch(
    items: list[SourceItem], symbols: frozenset[str], quotes_topic: str = QUOTES_TOPIC.name
) -> list[DeadLetter | tuple[str, list[Trade | Heartbeat | Quote | CrossedQuote]]]:
    """`parse` over a whole input batch: dead letters, then one record list per symbol.

    A symbol's records keep their order, which is all its detectors depend on.
    """
    records: list[Any] = []  # CrossedQuote too, grouped like the others
    counts: dict[str, int] = {}
    for item in items:
        topic = (item.msg if isinstance(item, KafkaError) else item).topic or ""
        counts[topic] = counts.get(topic, 0) + 1
        records.append(_parse(item, topic, symbols, quotes_topic))
    for topic, n in counts.items():
        metrics.count_in_many(FLOW, topic, n)
    return by_symbol(records)


def detect_batch(
    state: SymbolDetector | None, records: list[Trade | Heartbeat | Quote | CrossedQuote],
    limits: Thresholds,
) -> tuple[SymbolDetector | None, list[Alert]]:
    """Stateful step per symbol: `detect` over the symbol's records of one input batch."""
    alerts: list[Alert] = []
    for record in records:
        if isinstance(record, Heartbeat):
            continue  # carries nothing the detectors use
        state, found = detect(state, record, limits)
        alerts.extend(found)
    return state, alerts


def is_observation(item: object) -> TypeGuard[Observation]:
    """Filter predicate: heartbeats carry nothing the detectors use."""
    return isinstance(item, Trade | Quote | CrossedQuote)


def to_kafka(alert: Alert) -> KafkaSinkMessage[bytes, bytes]:
    """The `alerts` topic record, keyed by symbol."""
    return KafkaSinkMessage(alert.symbol.encode(), to_json_bytes(alert.message()))


def to_batch(keyed: tuple[str, list[Row]]) -> RowBatch:
    """A keyed list of rows as one insert."""
    return RowBatch(table=ANOMALY_ALERTS.name, rows=keyed[1])


def build(
    source: Source[SourceItem],
    alerts_sink: Sink[KafkaSinkMessage[bytes, bytes]],
    rows_sink: Sink[RowBatch],
    dlq_sink: Sink[DeadLetter],
    *,
    symbols: frozenset[str],
    limits: Thresholds,
    flush_size: int,
    max_wait: timedelta,
    quotes_topic: str = QUOTES_TOPIC.name,
) -> Dataflow:
    """Wire the anomaly flow between any source and sinks (evaluation passes in-memory ones)."""
    flow = Dataflow(FLOW)
    items = op.input("kafka_in", flow, source)
    parsed: Stream[Any] = op.flat_map_batch(
        "parse", items, lambda batch: parse_batch(batch, symbols, quotes_topic)
    )
    # DeadLetter | (symbol, [Trade | Heartbeat | Quote | CrossedQuote, ...]) per input batch
    split = op.branch("split_dead_letters", parsed, is_dead_letter)
    op.output("dlq_out", split.trues, dlq_sink)
    keyed: KeyedStream[list[Any]] = split.falses
    found = op.stateful_map("detect", keyed, lambda s, r: detect_batch(s, r, limits))
    # (symbol, [Alert, ...])
    alerts = op.flat_map("alerts", found, lambda kv: kv[1])
    # Alert
    op.output("kafka_out", op.map("to_kafka", alerts, to_kafka), alerts_sink)
    rows = op.map("to_row", alerts, lambda a: (ANOMALY_ALERTS.name, a.row()))
    batches = batch_rows("batch", rows, flush_size=flush_size, max_wait=max_wait)
    # (table, [row, ...])
    op.output("clickhouse_out", op.map("to_batch", batches, to_batch), rows_sink)
    return flow


def from_settings(
    settings: Settings, instruments: InstrumentsProvider = reference_instruments
) -> Dataflow:
    """The anomaly flow on the configured broker and stores."""
    return build(
        kafka_source(settings, [TRADES_TOPIC.name, QUOTES_TOPIC.name]),
        KafkaSink(settings.kafka_servers.split(","), ALERTS_TOPIC.name),  # type: ignore[arg-type]
        ClickHouseSink(settings, FLOW, (ALERTS_SPEC,)),
        DeadLetterSink(settings),
        symbols=instruments().symbols,
        limits=Thresholds.from_settings(settings),
        flush_size=settings.sink_flush_size,
        max_wait=timedelta(seconds=settings.sink_flush_wait_seconds),
    )


def __getattr__(name: str) -> Dataflow:
    # `flow` is built on first access so importing the module needs no settings or files.
    if name == "flow":
        return from_settings(get_settings())
    raise AttributeError(name)
