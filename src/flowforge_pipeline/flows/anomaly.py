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
  With a `SessionCalendar`, the same evidence is also checked on the clock (`Tick`s from
  the `order` step, so a freeze with no trade at all is seen): it alerts where the evidence
  reaches ln(quotes in a session at the usual gap) + `stale_clock_margin`, counting the age
  from the last quote or the session's open, and only while the session is open (a close
  stops the quotes and is no alert). The alert's event time is that crossing, exact
  whatever the ticks' spacing, so the alerts stay a function of the events.
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

**Event-time order.** The detectors see each symbol's quotes and trades merged in event-time
order (ties: quote first, then topic offset), whatever order the two topics' partitions
happened to be read in, so the alerts are a function of the events alone. `AlignedSource`
wraps the Kafka source: it reads no partition more than `ALIGN_SLACK` of event time ahead of
the slowest one (record timestamps are event times) and, after each batch, hands the flow a
`Progress` marker: every record still to come has an event time at or after its watermark
(the least newest timestamp over the partitions; a partition with nothing more to read —
`IDLE_POLLS` empty polls over `ALIGN_IDLE` — counts as `ALIGN_LATENESS` before the wall
clock). The `order` step holds records back until
the watermark passes them, then releases them sorted. Event-time delay is unchanged (alerts
carry event time); live, a record waits until every partition has shown a later one (at the
default rates a few hundred milliseconds; about `ALIGN_IDLE` + `ALIGN_LATENESS` when a
partition idles).
Sources without markers (the evaluation's tape, tests) get the same watermark from the
records: the least newest event time over the (topic, partition) pairs seen once both
topics have been seen, and every held record is released at end of input.

Alerts of one symbol and type closer than `merge_seconds` to the previous one belong to the
same episode and are merged (only the first is emitted). Severity grades the observed value
against its threshold: < 2x low, < 4x medium, else high. Alert ids are deterministic
(symbol, type, event time), so a replay writes the same rows.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeGuard

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaError, KafkaSink, KafkaSinkMessage
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource, Source, StatefulSourcePartition
from bytewax.operators import KeyedStream, StatefulBatchLogic
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
    Origin,
    Quote,
    Trade,
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
    stale_clock_margin: float = 2.5
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
    origin: Origin


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
    stale_clocked: bool = False
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
        self.stale_clocked = False
        self.minute_quotes += 1
        recent = self.recent_quotes
        recent.append(quote.event_time)
        oldest = quote.event_time - timedelta(seconds=lim.volume_quote_seconds)
        while recent[0] <= oldest:  # bounded even when no trade prunes it
            recent.popleft()
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

    def stale_clock(self, now: datetime, calendar: SessionCalendar, symbol: str) -> list[Alert]:
        """The stale check on the clock: every record of the symbol before `now` is in.

        The evidence (age in usual gaps plus what the trades since the quote said) grows
        with silence; the alert comes where it reaches ln(quotes per session at the usual
        gap) + `stale_clock_margin`, the age counted from the quote or the session's open,
        whichever is later, and only inside an open session. At most once per quote.
        """
        lim = self.limits
        quote, gap = self.last_quote, self.quote_gap.mean
        if (quote is None or self.stale_clocked or self.quote_gap.n < lim.warmup_quotes
                or gap <= 0):
            return []
        session = calendar.session_seconds(symbol)
        if session is None:
            return []
        limit = math.log(max(session / gap, 2.0)) + lim.stale_clock_margin
        need = timedelta(seconds=max(limit - self.stale_evidence, 0.0) * gap)
        for lo, hi in calendar.open_after(symbol, quote.event_time):
            if lo >= now:
                return []
            since = max(quote.event_time, lo)
            cross = since + need
            if cross < hi:
                if cross >= now:
                    return []
                self.stale_clocked = True
                age = (cross - quote.event_time).total_seconds()
                return self._emit("stale_quote", age, gap, limit * gap, cross, symbol)
        return []

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


@dataclass(frozen=True)
class Tick:
    """From the `order` step: every record of `symbol` before `event_time` has been released."""

    symbol: str
    event_time: datetime


class SessionCalendar:
    """When each symbol's session is open (UTC), from the instrument reference.

    `instruments`: objects with `symbol`, `session_minutes` and `sessions_utc(day)` (the
    generator's `Instrument`). Pieces of one session split at UTC midnight are joined.
    """

    def __init__(self, instruments: Iterable[Any]) -> None:
        self._inst = {i.symbol: i for i in instruments}
        self._days: dict[tuple[str, int], list[tuple[datetime, datetime]]] = {}

    def knows(self, symbol: str) -> bool:
        """Whether the calendar has `symbol`'s sessions."""
        return symbol in self._inst

    def session_seconds(self, symbol: str) -> float | None:
        """Length of one session of `symbol`; None for a symbol the calendar lacks."""
        inst = self._inst.get(symbol)
        return None if inst is None else float(inst.session_minutes * 60)

    def _pieces(self, symbol: str, ordinal: int) -> list[tuple[datetime, datetime]]:
        key = (symbol, ordinal)
        got = self._days.get(key)
        if got is None:
            day = date.fromordinal(ordinal)
            midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
            got = [(midnight + timedelta(minutes=lo), midnight + timedelta(minutes=hi))
                   for lo, hi, _ in self._inst[symbol].sessions_utc(day)]
            self._days[key] = got
        return got

    def open_after(self, symbol: str, at: datetime) -> list[tuple[datetime, datetime]]:
        """Open spans [lo, hi) of `symbol` that end after `at`, through the next UTC day."""
        day = at.astimezone(UTC).date().toordinal()
        spans: list[tuple[datetime, datetime]] = []
        for ordinal in (day - 1, day, day + 1):
            for lo, hi in self._pieces(symbol, ordinal):
                if spans and spans[-1][1] >= lo:
                    spans[-1] = (spans[-1][0], max(spans[-1][1], hi))
                else:
                    spans.append((lo, hi))
        return [(lo, hi) for lo, hi in spans if hi > at]


Observation = Trade | Quote | CrossedQuote


def detect(
    state: SymbolDetector | None, record: Observation | Tick, limits: Thresholds,
    calendar: SessionCalendar | None = None,
) -> tuple[SymbolDetector | None, list[Alert]]:
    """Stateful step per symbol: the clocked stale check up to the record, then its own."""
    if isinstance(record, Tick):
        if state is None or calendar is None:
            return state, []
        return state, state.stale_clock(record.event_time, calendar, record.symbol)
    detector = state or SymbolDetector(limits)
    if calendar is not None:
        early = detector.stale_clock(record.event_time, calendar, record.symbol)
        if early:
            return detector, early + detect(detector, record, limits)[1]
    if isinstance(record, Quote):
        return detector, detector.on_quote(record)
    if isinstance(record, CrossedQuote):
        return detector, detector.on_crossed(record)
    return detector, detector.on_trade(record)


#: How far (event time) the aligned source lets a partition read ahead of the slowest one.
ALIGN_SLACK = timedelta(seconds=30)
#: A partition with nothing more to read counts as this far behind the wall clock.
ALIGN_LATENESS = timedelta(seconds=1)
#: A partition has nothing more to read after this many empty polls over this long.
IDLE_POLLS = 3
ALIGN_IDLE = timedelta(seconds=2)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEVER = -(2**62)


def _us(ts: datetime) -> int:
    """Microseconds since the epoch (exact, unlike a float timestamp)."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True)
class Progress:
    """From `AlignedSource`: every record still to come has event time >= `watermark_us`."""

    watermark_us: int


class _Alignment:
    """Read progress of the partitions one worker reads (shared by their readers)."""

    def __init__(self, slack: timedelta, lateness: timedelta) -> None:
        self.slack_us = _us(_EPOCH + slack)
        self.lateness_us = _us(_EPOCH + lateness)
        self.newest: dict[str, int] = {}
        self.drained: dict[str, bool] = {}
        self.emitted = _NEVER

    def polled(self, part: str, got: int, now_us: int, state: list[int]) -> None:
        """Note a poll of `part` that gave `got` records; `state` is [empty polls, last us].

        An empty poll alone does not mean the partition has nothing more: the client may
        not have fetched the next records yet. It counts as drained after `IDLE_POLLS`
        empty polls in a row spanning `ALIGN_IDLE` of wall time.
        """
        if got:
            state[0], state[1] = 0, now_us
        else:
            state[0] += 1
        self.drained[part] = state[0] >= IDLE_POLLS and now_us - state[1] >= _us(
            _EPOCH + ALIGN_IDLE)

    def watermark(self, now_us: int) -> int:
        """The least event time any partition may still deliver."""
        floor = now_us - self.lateness_us
        return min(
            (max(t, floor) if self.drained[p] else t for p, t in self.newest.items()),
            default=_NEVER,
        )

    def ahead(self, part: str, now_us: int) -> bool:
        """Whether `part` has read more than the slack past the watermark."""
        return self.newest[part] > self.watermark(now_us) + self.slack_us


class _AlignedPartition(StatefulSourcePartition[Any, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any], key: str,
                 shared: _Alignment) -> None:
        self._inner, self._key, self._shared = inner, key, shared
        self._waiting = False
        self._idle = [0, time.time_ns() // 1000]
        shared.newest[key] = _NEVER
        shared.drained[key] = False

    def next_batch(self) -> list[Any]:
        shared, key = self._shared, self._key
        now_us = time.time_ns() // 1000
        self._waiting = shared.ahead(key, now_us)
        batch: list[Any] = []
        if not self._waiting:
            try:
                batch = list(self._inner.next_batch())
            except StopIteration:
                shared.drained[key] = True
                shared.newest[key] = 2**62  # never holds the others back again
                raise
            shared.polled(key, len(batch), now_us, self._idle)
            for item in reversed(batch):  # the newest timestamp is on the last message
                msg = item.msg if isinstance(item, KafkaError) else item
                stamp = getattr(msg, "timestamp", None)
                if stamp and stamp[0]:  # (type, ms); type 0: not available
                    shared.newest[key] = max(shared.newest[key], stamp[1] * 1000)
                    break
        mark = shared.watermark(now_us)
        if mark > shared.emitted:
            shared.emitted = mark
            batch.append(Progress(mark))
        return batch

    def next_awake(self) -> datetime | None:
        if self._waiting:
            return datetime.now(UTC) + timedelta(milliseconds=20)
        return self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._inner.close()


class AlignedSource(FixedPartitionedSource[Any, Any]):
    """A partitioned source whose partitions are read in step by event time, with markers.

    No partition reads more than `slack` of event time (record timestamps) past the slowest
    one, so records held back for ordering stay few; after a batch that advances the
    watermark, a `Progress` marker follows it. One alignment per worker process, so the
    markers speak for every partition only when one worker reads them all, as `up` runs
    the flow; with several workers the `order` step would need the least of their marks.
    """

    def __init__(self, inner: FixedPartitionedSource[Any, Any], *,
                 slack: timedelta = ALIGN_SLACK, lateness: timedelta = ALIGN_LATENESS) -> None:
        self._inner = inner
        self._shared = _Alignment(slack, lateness)

    def list_parts(self) -> list[str]:
        """The wrapped source's partitions."""
        return self._inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _AlignedPartition:
        """The wrapped partition, reporting its progress to the shared alignment."""
        inner = self._inner.build_part(step_id, for_part, resume_state)
        return _AlignedPartition(inner, for_part, self._shared)


def _parse(
    item: SourceItem, topic: str | None, symbols: frozenset[str], quotes_topic: str
) -> Trade | Heartbeat | Quote | CrossedQuote | DeadLetter:
    if topic != quotes_topic:
        return parse_trade(item, flow=FLOW, symbols=symbols)
    parsed = parse_quote(item, flow=FLOW, symbols=symbols)
    if isinstance(parsed, DeadLetter) and parsed.code == "crossed_quote":
        obj = json.loads(parsed.origin.payload)
        return CrossedQuote(obj["symbol"], float(obj["bid"]), float(obj["ask"]),
                            parse_event_time(obj["event_time"]), parsed.origin)
    return parsed


def parse(
    item: SourceItem, symbols: frozenset[str], quotes_topic: str = QUOTES_TOPIC.name
) -> Trade | Heartbeat | Quote | CrossedQuote | DeadLetter:
    """Validate a record; a quote rejected only for being crossed becomes a `CrossedQuote`."""
    topic = origin_of(item).topic
    metrics.count_in(FLOW, topic)
    return _parse(item, topic, symbols, quotes_topic)


Arrival = Trade | Heartbeat | Quote | CrossedQuote | Progress
ORDER_KEY = "all"


def parse_batch(
    items: list[Any], symbols: frozenset[str], quotes_topic: str = QUOTES_TOPIC.name
) -> list[DeadLetter | tuple[str, list[Arrival]]]:
    """`parse` over a whole input batch: its dead letters, then one list for the `order` step."""
    out: list[DeadLetter | tuple[str, list[Arrival]]] = []
    records: list[Arrival] = []
    counts: dict[str, int] = {}
    for item in items:
        if isinstance(item, Progress):
            records.append(item)
            continue
        topic = (item.msg if isinstance(item, KafkaError) else item).topic or ""
        counts[topic] = counts.get(topic, 0) + 1
        parsed = _parse(item, topic, symbols, quotes_topic)
        if isinstance(parsed, DeadLetter):
            out.append(parsed)
        else:
            records.append(parsed)
    for topic, n in counts.items():
        metrics.count_in_many(FLOW, topic, n)
    if records:
        out.append((ORDER_KEY, records))
    return out


Held = tuple[int, int, int, int, int, Any]  # (event us, rank, partition, offset, arrival, record)
OrderState = tuple[list[Held], dict[tuple[str, int], int], int | None, int]


#: Least event time between two rounds of `Tick`s (an alert's event time does not depend on it).
TICK_EVERY_US = 1_000_000


class EventOrder(StatefulBatchLogic[list[Arrival], list[tuple[str, list[Observation | Tick]]],
                                    OrderState]):
    """Releases records in event-time order once no partition can still deliver an earlier one.

    Order key: event time, quotes before trades, then the topic's partition and offset, so a
    symbol's sequence is a function of its events. The watermark is the newest `Progress`
    marker's or, with no markers, the least newest event time over the (topic, partition)
    pairs seen so far (each is in event-time order), once both topics have been seen.
    Heartbeats only move the watermark. A record behind what was already released (out of
    order within its own partition) goes out with the next release. After a release that
    moved the watermark by at least `TICK_EVERY_US`, every symbol of `tick_symbols` gets a
    `Tick` at the watermark after its records (the clock of the stale check).
    """

    def __init__(self, quotes_topic: str, resume: OrderState | None = None,
                 tick_symbols: Iterable[str] = ()) -> None:
        self.quotes_topic = quotes_topic
        self.tick_symbols = sorted(tick_symbols)
        self.ticked = _NEVER  # not in the snapshot: a restart only ticks once more
        heap, newest, marked, seq = resume or ([], {}, None, 0)
        self.heap = list(heap)
        self.newest = dict(newest)
        self.marked = marked
        self.seq = seq  # arrival count: the last tie-break, for records without an origin

    def _release(self, upto: int | None) -> list[tuple[str, list[Observation | Tick]]]:
        heap = self.heap
        groups: dict[str, list[Observation | Tick]] = {}
        while heap and (upto is None or heap[0][0] < upto):
            record = heapq.heappop(heap)[5]
            group = groups.get(record.symbol)
            if group is None:
                groups[record.symbol] = [record]
            else:
                group.append(record)
        if upto is not None and self.tick_symbols and upto >= self.ticked + TICK_EVERY_US:
            self.ticked = upto
            at = _EPOCH + timedelta(microseconds=upto)
            for symbol in self.tick_symbols:
                groups.setdefault(symbol, []).append(Tick(symbol, at))
        return list(groups.items())

    def on_batch(
        self, values: list[list[Arrival]]
    ) -> tuple[Iterable[list[tuple[str, list[Observation | Tick]]]], bool]:
        """Hold the batch's records, release what the watermark has passed, grouped by symbol."""
        heap, newest, quotes_topic = self.heap, self.newest, self.quotes_topic
        for records in values:
            for record in records:
                if isinstance(record, Progress):
                    self.marked = max(self.marked or _NEVER, record.watermark_us)
                    continue
                t = _us(record.event_time)
                origin = record.origin
                where = (origin.topic, origin.partition)
                if t > newest.get(where, _NEVER):
                    newest[where] = t
                if isinstance(record, Heartbeat):
                    continue
                self.seq += 1
                rank = 0 if origin.topic == quotes_topic else 1
                heapq.heappush(heap, (t, rank, origin.partition, origin.offset, self.seq, record))
        upto = self.marked
        if upto is None:  # no markers: both topics must have been seen
            topics = {topic for topic, _ in newest}
            upto = min(newest.values()) if len(topics) >= 2 else _NEVER
        released = self._release(upto)
        return ([released] if released else []), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[list[tuple[str, list[Observation | Tick]]]], bool]:
        """End of input: nothing earlier can come, release everything held."""
        released = self._release(None)
        return ([released] if released else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> OrderState:
        """Held records are immutable, so copies of the containers suffice."""
        return list(self.heap), dict(self.newest), self.marked, self.seq


def detect_batch(
    state: SymbolDetector | None, records: list[Observation | Tick], limits: Thresholds,
    calendar: SessionCalendar | None = None,
) -> tuple[SymbolDetector | None, list[Alert]]:
    """Stateful step per symbol: `detect` over the symbol's records of one release."""
    alerts: list[Alert] = []
    for record in records:
        state, found = detect(state, record, limits, calendar)
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
    calendar: SessionCalendar | None = None,
) -> Dataflow:
    """Wire the anomaly flow between any source and sinks (evaluation passes in-memory ones).

    With a `calendar`, the stale check also runs on the clock of the `order` step for the
    calendar's symbols among `symbols` (without one, only on the symbol's own records).
    """
    ticked = [] if calendar is None else [s for s in symbols if calendar.knows(s)]
    flow = Dataflow(FLOW)
    items = op.input("kafka_in", flow, source)
    parsed: Stream[Any] = op.flat_map_batch(
        "parse", items, lambda batch: parse_batch(batch, symbols, quotes_topic)
    )
    # DeadLetter | ("all", [Trade | Heartbeat | Quote | CrossedQuote | Progress, ...])
    split = op.branch("split_dead_letters", parsed, is_dead_letter)
    op.output("dlq_out", split.trues, dlq_sink)
    arrivals: KeyedStream[list[Arrival]] = split.falses
    ordered = op.stateful_batch(
        "order", arrivals, lambda resume: EventOrder(quotes_topic, resume, ticked)
    )
    # ("all", [(symbol, [Trade | Quote | CrossedQuote | Tick, ...]), ...]) in event-time order
    keyed: KeyedStream[list[Observation | Tick]] = op.flat_map(
        "by_symbol", ordered, lambda kv: kv[1])
    found = op.stateful_map("detect", keyed, lambda s, r: detect_batch(s, r, limits, calendar))
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
        AlignedSource(kafka_source(settings, [TRADES_TOPIC.name, QUOTES_TOPIC.name])),
        KafkaSink(settings.kafka_servers.split(","), ALERTS_TOPIC.name),  # type: ignore[arg-type]
        ClickHouseSink(settings, FLOW, (ALERTS_SPEC,)),
        DeadLetterSink(settings),
        symbols=instruments().symbols,
        limits=Thresholds.from_settings(settings),
        flush_size=settings.sink_flush_size,
        max_wait=timedelta(seconds=settings.sink_flush_wait_seconds),
        calendar=reference_calendar(),
    )


def reference_calendar() -> SessionCalendar:
    """Sessions from the instrument reference file the generator also uses."""
    from flowforge_pipeline.generator.instruments import load_instruments

    return SessionCalendar(load_instruments())


def __getattr__(name: str) -> Dataflow:
    # `flow` is built on first access so importing the module needs no settings or files.
    if name == "flow":
        return from_settings(get_settings())
    raise AttributeError(name)
