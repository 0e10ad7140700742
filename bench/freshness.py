"""Freshness of every serving item of the contract at the default rates: event → visible.

A private local stack (services only) and all six flows started as `up` starts them; this
script feeds trades and quotes at the default rates (10 trades/s + 50 quotes/s over the
instrument universe, live event times, one fat-finger trade every `--alert-every` seconds
on the next symbol in turn, so the anomaly flow has alerts to write) and times, for every
item of the contract catalog the flows fill (`contract/catalog.py`), how long after the
event its effect became visible to a reader of that store:

* ClickHouse tables: `ingested_at` (the server's clock at insert) minus the row's event time:
  `event_time` for `raw_trades`, `raw_quotes` and `anomaly_alerts`; the window end for
  `vwap_5min` and the minute end `as_of` for `rolling_volatility` (a window's figure cannot
  exist before the window closes, so that is its event).
* Redis keys (`MGET` of every symbol's key every `--poll-ms`): first time a new value is
  seen minus `window_end` (`latest:vwap`), `as_of` (`latest:volatility`) or
  `last_trade_time` (`latest:position`).
* The broadcast channel: receive time minus the message's `max_event_time`, and minus its
  `flushed_at` (insert → broadcast).
* Live tables (one psycopg reader, one snapshot of the three tables every `--poll-ms`):
  reader's clock minus `quote_time` (`live_quotes`), `last_trade_time` (`live_positions`),
  and for `live_pnl` the event that changed the row: the quote whose mid is the row's new
  `mark_price` (every quote here moves the mid, so a mid names its quote) or the account's
  new last trade.

Polling adds up to one poll interval to the polled items. Only events after `--warmup`
seconds count; the watchers start before the feed, so a key or row that first appears after
the warm-up (a symbol's first closed window) counts too. The load average is sampled every
5 s: on a shared machine a stall of every store at once shows there, not in the flows.
Targets: the project's own latency targets where it has one (live tables
p99 ≤ 500 ms, raw tables p99 ≤ 2 s, `latest:vwap` p99 ≤ 1 s, insert → broadcast p99 ≤
100 ms), else the item's freshness promise in the contract (newest write at most N s old).

Run: .venv/bin/python bench/freshness.py [--seconds 330] [--warmup 20] [--poll-ms 20]
     [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime

import psycopg
import redis as redis_lib
from benchlib import Figure, add_json_option, emit, private_stack, stop_private_stack
from confluent_kafka import Producer
from flows_latency import start_flows

from flowforge_pipeline.contract.catalog import (
    ANOMALY_ALERTS,
    CLICKHOUSE_TABLES,
    LIVE_PNL,
    LIVE_POSITIONS,
    LIVE_QUOTES,
    POSITION_KEY,
    RAW_QUOTES,
    RAW_TRADES,
    REDIS_KEYS,
    ROLLING_VOLATILITY,
    TABLE_UPDATE_CHANNEL,
    VOLATILITY_KEY,
    VWAP_5MIN,
    VWAP_KEY,
)
from flowforge_pipeline.flows.common import reference_instruments
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stores import clickhouse as ch_store

#: ClickHouse tables the flows fill, and the column that is each row's event.
CLICKHOUSE_EVENT = {
    RAW_TRADES.name: "event_time",
    RAW_QUOTES.name: "event_time",
    VWAP_5MIN.name: "window_end",
    ROLLING_VOLATILITY.name: "as_of",
    ANOMALY_ALERTS.name: "event_time",
}
#: Redis keys and the field that is a value's event.
REDIS_EVENT = {VWAP_KEY.pattern: "window_end", VOLATILITY_KEY.pattern: "as_of",
               POSITION_KEY.pattern: "last_trade_time"}
#: The project's own p99 targets (ms); other items are held to the contract's promise.
P99_TARGET_MS = {
    LIVE_QUOTES.name: 500.0, LIVE_POSITIONS.name: 500.0, LIVE_PNL.name: 500.0,
    RAW_TRADES.name: 2000.0, RAW_QUOTES.name: 2000.0, VWAP_KEY.pattern: 1000.0,
    f"{TABLE_UPDATE_CHANNEL.name} (insert → received)": 100.0,
}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def ms_since(at: datetime, now: datetime) -> float:
    return (now - at).total_seconds() * 1000.0


class Feed(threading.Thread):
    """Trades and quotes at fixed rates with the wall clock as event time.

    Every quote moves its symbol's mid by at least a cent, so a mid identifies its quote;
    `quote_at[(symbol, mid)]` is that quote's event time.
    """

    def __init__(self, settings: Settings, seconds: float, tps: float, qps: float,
                 alert_every: float, warmup: float) -> None:
        super().__init__(daemon=True)
        self.seconds, self.tps, self.qps = seconds, tps, qps
        self.alert_every, self.warmup = alert_every, warmup
        self.rng = random.Random(3)
        self.symbols = sorted(reference_instruments().symbols)
        self.cents = {s: 10_000 + 1_000 * i for i, s in enumerate(self.symbols)}
        self.quote_at: dict[tuple[str, float], datetime] = {}
        self.sent = 0
        self.fat_fingers = 0
        self.producer = Producer({"bootstrap.servers": settings.kafka_servers,
                                  "linger.ms": 5})

    def _quote(self, n: int, now: datetime) -> None:
        sym = self.symbols[self.rng.randrange(len(self.symbols))]
        step = self.rng.choice((-3, -2, -1, 1, 2, 3))
        self.cents[sym] = max(100, self.cents[sym] + step)
        mid = self.cents[sym] / 100.0
        bid, ask = round(mid - 0.01, 2), round(mid + 0.01, 2)
        self.quote_at[(sym, round((bid + ask) / 2.0, 6))] = now
        value = {"quote_id": f"f-{n}", "symbol": sym, "bid": bid, "ask": ask,
                 "bid_size": 5.0, "ask_size": 7.0,
                 "event_time": now.isoformat(timespec="microseconds")}
        self.producer.produce("quotes", key=sym.encode(), value=json.dumps(value).encode())

    def _trade(self, n: int, now: datetime, sym: str | None = None, factor: float = 1.0) -> None:
        sym = sym or self.symbols[self.rng.randrange(len(self.symbols))]
        value = {"type": "trade", "trade_id": f"f-{n}", "symbol": sym,
                 "price": round(self.cents[sym] / 100.0 * factor, 2),
                 "quantity": float(self.rng.randint(1, 50)),
                 "side": self.rng.choice(("buy", "sell")),
                 "account": f"acct-{self.rng.randint(1, 8)}", "venue": "XBEN",
                 "event_time": now.isoformat(timespec="microseconds")}
        self.producer.produce("trades", key=sym.encode(), value=json.dumps(value).encode())

    def run(self) -> None:
        started = time.monotonic()
        trades = quotes = 0
        next_alert = self.warmup
        n = 0
        while (elapsed := time.monotonic() - started) < self.seconds:
            now = datetime.now(UTC)
            while quotes < int(elapsed * self.qps):
                n += 1
                quotes += 1
                self._quote(n, now)
            while trades < int(elapsed * self.tps):
                n += 1
                trades += 1
                self._trade(n, now)
            if self.alert_every > 0 and elapsed >= next_alert:
                n += 1
                sym = self.symbols[self.fat_fingers % len(self.symbols)]
                self._trade(n, now, sym, factor=1.05)  # 5% above the quote: fat finger
                self.fat_fingers += 1
                next_alert += self.alert_every
            self.sent = n
            self.producer.poll(0)
            time.sleep(0.005)
        self.producer.flush(10)


class Watchers:
    """Threads that see each polled or pushed item change and time it."""

    def __init__(self, settings: Settings, symbols: list[str], poll_s: float,
                 feed: Feed) -> None:
        self.settings, self.symbols, self.poll_s, self.feed = settings, symbols, poll_s, feed
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.counting = threading.Event()
        self.stop = threading.Event()
        self.polls: dict[str, int] = defaultdict(int)
        self.threads = [threading.Thread(target=f, daemon=True)
                        for f in (self.broadcast, self.redis_keys, self.live_tables)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def broadcast(self) -> None:
        r = redis_lib.Redis.from_url(self.settings.redis, decode_responses=True)
        sub = r.pubsub()
        sub.subscribe(TABLE_UPDATE_CHANNEL.name)
        while not self.stop.is_set():
            m = sub.get_message(timeout=0.1)
            if not m or m["type"] != "message":
                continue
            now = datetime.now(UTC)
            if not self.counting.is_set():
                continue
            msg = json.loads(m["data"])
            name = TABLE_UPDATE_CHANNEL.name
            self.ms[f"{name} (insert → received)"].append(
                ms_since(datetime.fromisoformat(msg["flushed_at"]), now))
            self.ms[f"{name} (event → received)"].append(
                ms_since(datetime.fromisoformat(msg["max_event_time"]), now))

    def redis_keys(self) -> None:
        r = redis_lib.Redis.from_url(self.settings.redis, decode_responses=True)
        keys = {p.pattern: [p.key(symbol=s) for s in self.symbols] for p in REDIS_KEYS}
        seen: dict[str, str] = {}
        while not self.stop.is_set():
            for pattern, names in keys.items():
                field = REDIS_EVENT[pattern]
                raws = r.mget(names)
                now = datetime.now(UTC)
                for key, raw in zip(names, raws, strict=True):
                    if raw is None:
                        continue
                    at = json.loads(raw)[field]
                    if seen.get(key) != at:
                        if self.counting.is_set():
                            self.ms[pattern].append(ms_since(datetime.fromisoformat(at), now))
                        seen[key] = at
            self.polls["redis"] += 1
            time.sleep(self.poll_s)

    def live_tables(self) -> None:
        seen_q: dict[str, datetime] = {}
        seen_p: dict[tuple[str, str], datetime] = {}
        seen_pnl: dict[tuple[str, str], tuple[float, datetime | None]] = {}
        quote_at = self.feed.quote_at
        with psycopg.connect(self.settings.postgres, autocommit=True) as conn:
            while not self.stop.is_set():
                with conn.transaction():  # one snapshot of the three tables
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    quotes = conn.execute("SELECT symbol, quote_time FROM live_quotes").fetchall()
                    positions = conn.execute(
                        "SELECT account, symbol, last_trade_time FROM live_positions").fetchall()
                    pnl = conn.execute(
                        "SELECT p.account, p.symbol, p.mark_price, s.last_trade_time "
                        "FROM live_pnl p JOIN live_positions s USING (account, symbol) "
                        "WHERE p.symbol <> '*'").fetchall()
                now = datetime.now(UTC)
                counting = self.counting.is_set()
                for sym, at in quotes:
                    if seen_q.get(sym) != at:
                        if counting:
                            self.ms[LIVE_QUOTES.name].append(ms_since(at, now))
                        seen_q[sym] = at
                for acct, sym, at in positions:
                    if seen_p.get((acct, sym)) != at:
                        if counting:
                            self.ms[LIVE_POSITIONS.name].append(ms_since(at, now))
                        seen_p[(acct, sym)] = at
                for acct, sym, mark, traded in pnl:
                    before = seen_pnl.get((acct, sym))
                    state = (mark, traded)
                    if before == state:
                        continue
                    seen_pnl[(acct, sym)] = state
                    if not counting:
                        continue
                    events = []
                    if before is None or before[0] != mark:
                        q = quote_at.get((sym, round(mark, 6)))
                        if q is not None:
                            events.append(q)
                    if (before is None or before[1] != traded) and traded is not None:
                        events.append(traded)
                    if events:
                        self.ms[LIVE_PNL.name].append(ms_since(max(events), now))
                self.polls["postgres"] += 1
                time.sleep(self.poll_s)


def clickhouse_freshness(settings: Settings, since: datetime) -> dict[str, list[float]]:
    ch = ch_store.client(settings)
    since_ms = since.timestamp() * 1000.0
    out: dict[str, list[float]] = {}
    for name, col in CLICKHOUSE_EVENT.items():
        rows = ch.query(  # names from the contract, not input
            f"SELECT toUnixTimestamp64Milli({col}), dateDiff('millisecond', {col}, ingested_at) "
            f"FROM {name}"
        ).result_rows
        out[name] = [float(d) for at, d in rows if at >= since_ms]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=330.0,
                        help="feed time (>= 300 so every symbol closes a 5-minute window)")
    parser.add_argument("--warmup", type=float, default=20.0, help="ignored first seconds")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="Redis/Postgres poll interval")
    parser.add_argument("--alert-every", type=float, default=8.0,
                        help="seconds between injected fat-finger trades (0: none)")
    add_json_option(parser)
    args = parser.parse_args()
    state, settings = private_stack("flowforge-freshness-")
    procs: list[subprocess.Popen] = []
    try:
        procs = start_flows(settings, state)
        tps, qps = settings.generator_trades_per_second, settings.generator_quotes_per_second
        feed = Feed(settings, args.seconds, tps, qps, args.alert_every, args.warmup)
        watchers = Watchers(settings, feed.symbols, args.poll_ms / 1000.0, feed)
        watchers.start()
        feed.start()
        time.sleep(args.warmup)
        since = datetime.now(UTC)
        watchers.counting.set()
        loads: list[float] = []
        while feed.is_alive():
            loads.append(os.getloadavg()[0])
            feed.join(5.0)
        time.sleep(10)  # let the last flushes land
        watchers.join()
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"a flow exited early; logs in {state}")
        ms = {**clickhouse_freshness(settings, since), **watchers.ms}
        report(args, settings, ms, feed, watchers, loads)
    finally:
        stop_private_stack(settings, procs)


def promise_ms(item: str) -> float | None:
    for t in CLICKHOUSE_TABLES + (LIVE_QUOTES, LIVE_POSITIONS, LIVE_PNL):
        if t.name == item:
            return t.freshness.max_age_seconds * 1000.0
    for k in REDIS_KEYS:
        if k.pattern == item:
            return k.freshness.max_age_seconds * 1000.0
    return None


def report(args: argparse.Namespace, settings: Settings, ms: dict[str, list[float]],
           feed: Feed, watchers: Watchers, loads: list[float]) -> None:
    order = [*CLICKHOUSE_EVENT, *REDIS_EVENT,
             f"{TABLE_UPDATE_CHANNEL.name} (event → received)",
             f"{TABLE_UPDATE_CHANNEL.name} (insert → received)",
             LIVE_QUOTES.name, LIVE_POSITIONS.name, LIVE_PNL.name]
    figures: list[Figure] = []
    table: dict[str, dict[str, object]] = {}
    print(f"{'item':58} {'n':>6} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}  target")
    for item in order:
        values = ms.get(item, [])
        p50, p95, p99 = pct(values, 0.5), pct(values, 0.95), pct(values, 0.99)
        limit = P99_TARGET_MS.get(item)
        if limit is not None:
            target, bound = f"p99 <= {limit:,.0f} ms", limit
        else:
            promise = promise_ms(item)
            target = f"p99 <= {promise / 1000:,.0f} s (contract)" if promise else None
            bound = promise
        met = None if bound is None or not values else p99 <= bound
        table[item] = {"n": len(values), "p50_ms": p50 if values else None,
                       "p95_ms": p95 if values else None, "p99_ms": p99 if values else None,
                       "target": target, "met": met}
        print(f"{item:58} {len(values):>6} {p50:>9,.1f} {p95:>9,.1f} {p99:>9,.1f}  "
              f"{target or '-'}{'' if met is None else (' met' if met else ' NOT met')}")
        if not values:
            figures.append(Figure(f"freshness {item}: p99", "no samples", "ms", target))
            continue
        figures.append(Figure(f"freshness {item}: p50 / p95 ms (n={len(values)})",
                              f"{p50:,.0f} / {p95:,.0f}", "ms"))
        figures.append(Figure(f"freshness {item}: p99", p99, "ms", target, met))
    print(json.dumps({"feed_seconds": args.seconds, "warmup_seconds": args.warmup,
                      "events_sent": feed.sent, "fat_fingers_injected": feed.fat_fingers,
                      "polls": dict(watchers.polls),
                      "load_1m_min_mean_max": [round(min(loads, default=0), 1),
                                               round(sum(loads) / max(1, len(loads)), 1),
                                               round(max(loads, default=0), 1)],
                      "rates": {"trades_per_second": settings.generator_trades_per_second,
                                "quotes_per_second": settings.generator_quotes_per_second}}))
    emit(args.json, "freshness", figures,
         extra={"items": table, "poll_ms": args.poll_ms, "load_1m_samples": loads})


if __name__ == "__main__":
    main()
