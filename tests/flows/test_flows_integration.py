"""The four flows as real processes on the real broker, ClickHouse and Valkey.

One backfilled hour with malformed records mixed in; every flow is SIGKILLed mid-stream and
restarted from its Bytewax recovery directory; then the serving layer is checked against SQL
over the raw table.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from bytewax.recovery import init_db_dir
from confluent_kafka import Consumer, Producer, TopicPartition

from fixtures.services import free_port
from flowforge_pipeline.contract.apply import init_clickhouse
from flowforge_pipeline.contract.catalog import (
    DLQ_TOPIC,
    POSITION_KEY,
    QUOTES_TOPIC,
    TABLE_UPDATE_CHANNEL,
    TRADES_TOPIC,
    VWAP_KEY,
    Topic,
)
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stores import clickhouse as ch_store
from flowforge_pipeline.stores.kafka import ensure_topics

FLOWS = ("raw_sink", "vwap", "volatility", "positions")
T0 = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
HERE = Path(__file__).parent


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="microseconds")


@dataclass
class Env:
    settings: Settings
    trades: str
    quotes: str
    dlq: str
    symbols: list[str]
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def metrics(self, flow: str) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_ports[flow]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("flowforge_")
        }

    def start(self, flow: str, cluster: tuple[int, str] | None = None) -> None:
        """Start a flow with recovery, or as one process of a cluster (`(index, addresses)`)."""
        name = flow if cluster is None else f"{flow}-{cluster[0]}"
        if cluster is None:
            recovery = self.workdir / "recovery" / flow
            if not recovery.exists():
                recovery.mkdir(parents=True)
                init_db_dir(recovery, 1)
            extra = ["-r", str(recovery), "-s", "1", "-b", "0"]
        else:
            extra = ["-i", str(cluster[0]), "-a", cluster[1]]
        env = {
            **os.environ,
            **self.settings.as_env(),
            "PYTHONPATH": str(HERE),
            "FF_TEST_TRADES": self.trades,
            "FF_TEST_QUOTES": self.quotes,
            "FF_TEST_DLQ": self.dlq,
            "FF_TEST_SYMBOLS": ",".join(self.symbols),
            "BYTEWAX_DATAFLOW_API_ENABLED": "1",
            "BYTEWAX_DATAFLOW_API_PORT": str(self.metrics_ports.setdefault(name, free_port())),
            "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(self.workdir),
        }
        log = (self.workdir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", f"factories:{flow}()", *extra],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self, flow: str) -> None:
        proc = self.procs.pop(flow)
        proc.kill()
        proc.wait()

    def assert_running(self) -> None:
        for flow, proc in self.procs.items():
            log = (self.workdir / f"{flow}.log").read_text(errors="replace")[-3000:]
            assert proc.poll() is None, f"{flow} exited:\n{log}"

    def stop_all(self) -> None:
        for flow in list(self.procs):
            self.kill(flow)


def private_env(
    stack_settings: Settings,
    workdir: Path,
    name: str,
    letter: str,
    n_symbols: int = 3,
    topics: tuple[Topic, ...] = (TRADES_TOPIC, QUOTES_TOPIC, DLQ_TOPIC),
    **updates: Any,
) -> Env:
    """A test's own ClickHouse database `<name>_<tag>`, topics `test-<tag>-<topic>` (3
    partitions; only `topics` are created) and symbols `<letter><TAG><i>` on the shared stack."""
    tag = uuid.uuid4().hex[:8]
    settings = stack_settings.model_copy(update={"clickhouse_database": f"{name}_{tag}", **updates})
    init_clickhouse(settings)
    names = {t.name: f"test-{tag}-{t.name}" for t in (TRADES_TOPIC, QUOTES_TOPIC, DLQ_TOPIC)}
    ensure_topics(settings, tuple(replace(t, name=names[t.name]) for t in topics), partitions=3)
    symbols = [f"{letter}{tag[:5].upper()}{i}" for i in range(n_symbols)]
    return Env(settings, names["trades"], names["quotes"], names["dlq"], symbols, workdir)


@pytest.fixture(scope="module")
def env(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = private_env(
        stack_settings, tmp_path_factory.mktemp("flows"), "flows", "S", sink_flush_wait_seconds=0.5
    )
    yield e
    e.stop_all()


@dataclass
class Tape:
    trades: list[dict[str, Any]]
    quotes: list[dict[str, Any]]
    bad_trades: list[bytes]
    bad_quotes: list[bytes]


def make_tape(symbols: list[str], seconds: int, seed: int = 3) -> Tape:
    rng = random.Random(seed)
    trades, quotes = [], []
    for s_idx, sym in enumerate(symbols):
        price = 100.0 + 10 * s_idx
        t = 0.0
        n = 0
        while t < seconds:
            t += rng.expovariate(1.5)
            price = round(price * math.exp(rng.gauss(0, 0.0005)), 2)
            when = T0 + timedelta(seconds=t)
            trades.append(
                {
                    "type": "trade",
                    "trade_id": f"{sym}-{n}",
                    "symbol": sym,
                    "price": price,
                    "quantity": float(rng.randint(1, 20)),
                    "side": rng.choice(["buy", "sell"]),
                    "account": f"acct-{rng.randint(1, 4)}",
                    "venue": "XTST",
                    "event_time": iso(when),
                }
            )
            if n % 5 == 0:
                quotes.append(
                    {
                        "quote_id": f"{sym}-q{n}",
                        "symbol": sym,
                        "bid": price - 0.01,
                        "ask": price + 0.01,
                        "bid_size": 5.0,
                        "ask_size": 6.0,
                        "event_time": iso(when),
                    }
                )
            n += 1
    trades.sort(key=lambda x: x["event_time"])
    quotes.sort(key=lambda x: x["event_time"])
    good = json.dumps(trades[0])
    bad_trades = []
    kinds: list[Callable[[int], bytes]] = [
        lambda i: b"{broken json " + str(i).encode(),
        lambda i: good.replace('"price": ', '"px": ').encode(),
        lambda i: good.replace('"quantity": ', '"quantity": -').encode(),
        lambda i: good.replace(f'"symbol": "{symbols[0]}"', '"symbol": "NOPE"').encode(),
        lambda i: json.dumps({**trades[0], "price": "abc"}).encode(),
        lambda i: good.replace('"price": ', '"price": NaN, "x": ').encode(),
        lambda i: json.dumps({**trades[0], "event_time": "2024-06-03T09:00:00"}).encode(),
    ]
    for i in range(140):
        bad_trades.append(kinds[i % len(kinds)](i))
    q = quotes[0]
    bad_quotes = [json.dumps({**q, "bid": q["ask"] + 1}).encode() for _ in range(20)]
    return Tape(trades, quotes, bad_trades, bad_quotes)


def produce(
    settings: Settings,
    topic: str,
    records: list[bytes | dict[str, Any]],
    key: Callable[[Any], bytes],
) -> None:
    p = Producer({"bootstrap.servers": settings.kafka_servers, "linger.ms": 20})
    for r in records:
        value = r if isinstance(r, bytes) else json.dumps(r).encode()
        p.produce(topic, key=key(r), value=value)
        p.poll(0)
    assert p.flush(30) == 0


def _key(r: Any) -> bytes:
    return r["symbol"].encode() if isinstance(r, dict) else b"bad"


def wait_for(what: str, check: Callable[[], bool], env: Env, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        env.assert_running()
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.3)


def read_topic(settings: Settings, topic: str) -> list[dict[str, Any]]:
    c = Consumer(
        {
            "bootstrap.servers": settings.kafka_servers,
            "group.id": "unused",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(3)])
    out, eof = [], set()
    deadline = time.monotonic() + 30
    while len(eof) < 3 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            eof.add(m.partition())
            continue
        out.append(json.loads(m.value()))
    c.close()
    return out


class Broadcasts:
    """Subscribed before the flows start; the server buffers messages until drained."""

    def __init__(self, settings: Settings) -> None:
        self._sub = redis_lib.Redis.from_url(settings.redis).pubsub()
        self._sub.subscribe(TABLE_UPDATE_CHANNEL.name)

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while (m := self._sub.get_message(timeout=1.0)) is not None:
            if m["type"] == "message":
                out.append(json.loads(m["data"]))
        self._sub.close()
        return out


def test_backfilled_hour_with_crashes_and_bad_input(env: Env) -> None:
    s = env.settings
    tape = make_tape(env.symbols, seconds=3600)
    half = T0 + timedelta(minutes=30)
    first = [t for t in tape.trades if t["event_time"] < iso(half)]
    second = tape.trades[len(first) :]
    closing = [
        {"type": "heartbeat", "symbol": sym, "event_time": iso(T0 + timedelta(minutes=62))}
        for sym in env.symbols
    ]
    ch = ch_store.client(s)
    r = redis_lib.Redis.from_url(s.redis, decode_responses=True)
    broadcasts = Broadcasts(s)

    def count(table: str) -> int:
        return int(ch.command(f"SELECT count() FROM {table}"))

    mid = len(first) // 2
    produce(s, env.trades, first[:mid] + tape.bad_trades + first[mid:], _key)
    produce(s, env.quotes, tape.quotes + tape.bad_quotes, _key)
    for flow in FLOWS:
        env.start(flow)

    # SIGKILL each flow as soon as it has written something, then restart it
    probes = {
        "raw_sink": lambda: count("raw_trades") > 0,
        "vwap": lambda: count("vwap_5min") > 0,
        "volatility": lambda: count("rolling_volatility") > 0,
        "positions": lambda: bool(r.exists(POSITION_KEY.key(symbol=env.symbols[0]))),
    }
    for flow, probe in probes.items():
        wait_for(f"{flow} to write", probe, env)
        env.kill(flow)
    for flow in FLOWS:
        env.start(flow)

    produce(s, env.trades, second + closing, _key)
    n_trades, n_quotes = len(tape.trades), len(tape.quotes)
    wait_for(
        "raw tables",
        lambda: count("raw_trades") == n_trades and count("raw_quotes") == n_quotes,
        env,
    )
    wait_for("12 windows per symbol", lambda: count("vwap_5min") >= 36, env)
    wait_for(
        "volatility up to the hour",
        lambda: (
            int(
                ch.command(
                    "SELECT countIf(as_of >= toDateTime64('2024-06-03 10:00:00', 3, 'UTC')) "
                    "FROM rolling_volatility"
                )
            )
            >= 6
        ),
        env,
    )

    signed = dict(
        ch.query(
            "SELECT symbol, sum(if(side = 'buy', quantity, -quantity)) "
            "FROM raw_trades GROUP BY symbol"
        ).result_rows
    )

    def positions_match() -> bool:
        for sym in env.symbols:
            raw = r.get(POSITION_KEY.key(symbol=sym))
            if raw is None or abs(json.loads(raw)["net_quantity"] - signed[sym]) > 1e-6:
                return False
        return True

    wait_for("positions equal to SQL", positions_match, env)
    time.sleep(1.5)  # let a last flush (if any were wrongly pending) land before counting
    env.assert_running()
    messages = broadcasts.drain()

    # raw: every valid record exactly once, plain count() without FINAL
    assert count("raw_trades") == int(ch.command("SELECT uniqExact(trade_id) FROM raw_trades"))
    assert count("raw_trades") == n_trades
    assert count("raw_quotes") == n_quotes
    # every raw insert announced exactly once: announced rows add up to stored rows
    raw_rows = sum(m["rows"] for m in messages if m["table"] == "raw_trades")
    assert raw_rows == n_trades

    # vwap: each window exactly once and equal to SQL over raw_trades
    assert count("vwap_5min") == 36
    assert int(ch.command("SELECT uniqExact(symbol, window_start) FROM vwap_5min")) == 36
    rows = ch.query(
        "SELECT v.symbol, v.window_start, v.vwap, s.vwap, v.trade_count, s.n, v.high, s.hi, "
        "v.low, s.lo FROM vwap_5min AS v INNER JOIN ("
        " SELECT symbol, toStartOfInterval(event_time, INTERVAL 5 MINUTE) AS ws,"
        " sum(price * quantity) / sum(quantity) AS vwap, count() AS n, max(price) AS hi,"
        " min(price) AS lo FROM raw_trades GROUP BY symbol, ws"
        ") AS s ON v.symbol = s.symbol AND toDateTime64(s.ws, 3, 'UTC') = v.window_start"
    ).result_rows
    assert len(rows) == 36
    for _sym, _ws, got, want, n_got, n_want, hi, hi_want, lo, lo_want in rows:
        assert abs(got - want) / want <= 1e-9
        assert (n_got, hi, lo) == (n_want, hi_want, lo_want)
    latest = json.loads(r.get(VWAP_KEY.key(symbol=env.symbols[0])))
    assert latest["window_start"] == iso(T0 + timedelta(minutes=55))

    # volatility: no (symbol, window, as_of) doubled
    assert count("rolling_volatility") == int(
        ch.command("SELECT uniqExact(symbol, window, as_of) FROM rolling_volatility")
    )

    # dead letters: every malformed record, with its reason and position
    dlq = read_topic(s, env.dlq)
    raw_dlq = [d for d in dlq if d["flow"] == "raw_sink"]
    bad_positions = {(d["source_topic"], d["partition"], d["offset"]) for d in raw_dlq}
    assert len(bad_positions) == len(tape.bad_trades) + len(tape.bad_quotes)
    assert {d["payload"].encode() for d in raw_dlq} == set(tape.bad_trades + tape.bad_quotes)
    reasons = {d["reason"].split(":")[0] for d in raw_dlq}
    assert reasons == {
        "invalid_json",
        "missing_field",
        "not_positive",
        "unknown_symbol",
        "wrong_type",
        "not_finite",
        "bad_event_time",
        "crossed_quote",
    }
    for flow in ("vwap", "volatility", "positions"):
        got = {d["offset"] for d in dlq if d["flow"] == flow and d["reason"] != "late"}
        assert len(got) >= 1
        assert {(d["partition"], d["offset"]) for d in dlq if d["flow"] == flow} == {
            (d["partition"], d["offset"]) for d in raw_dlq if d["source_topic"] == env.trades
        }

    # metrics endpoint of the restarted raw sink: it read at least the second half
    m = env.metrics("raw_sink")
    assert m[f'flowforge_flow_events_in_total{{flow="raw_sink",topic="{env.trades}"}}'] >= len(
        second
    )
    assert m['flowforge_sink_batch_rows_count{flow="raw_sink",table="raw_trades"}'] >= 1
    assert m['flowforge_sink_broadcasts_total{flow="raw_sink",table="raw_trades"}'] >= 1
    env.assert_running()


def test_vwap_with_two_processes_equals_the_tape(stack_settings: Settings, tmp_path: Path) -> None:
    e = private_env(stack_settings, tmp_path, "scale", "P", 4, (TRADES_TOPIC, DLQ_TOPIC))
    settings, trades, symbols = e.settings, e.trades, e.symbols
    tape = make_tape(symbols, seconds=1200, seed=11).trades
    closing = [
        {"type": "heartbeat", "symbol": sym, "event_time": iso(T0 + timedelta(minutes=27))}
        for sym in symbols
    ]
    expected: dict[tuple[str, datetime], list[float]] = {}
    for t in tape:
        ts = datetime.fromisoformat(t["event_time"])
        start = ts.replace(minute=ts.minute - ts.minute % 5, second=0, microsecond=0)
        acc = expected.setdefault((t["symbol"], start), [0.0, 0.0, 0])
        acc[0] += t["price"] * t["quantity"]
        acc[1] += t["quantity"]
        acc[2] += 1
    produce(settings, trades, tape + closing, _key)
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    try:
        e.start("vwap", cluster=(0, addresses))
        e.start("vwap", cluster=(1, addresses))
        ch = ch_store.client(settings)
        wait_for(
            "every window",
            lambda: int(ch.command("SELECT count() FROM vwap_5min")) >= len(expected),
            e,
        )
        time.sleep(1.0)  # a doubled row, if any, would land now
        rows = ch.query("SELECT symbol, window_start, vwap, trade_count FROM vwap_5min").result_rows
    finally:
        e.stop_all()
    assert len(rows) == len(expected)
    for sym, ws, vwap, n in rows:
        notional, volume, count = expected[(sym, ws.replace(tzinfo=UTC))]
        assert n == count
        assert abs(vwap - notional / volume) / vwap <= 1e-9


def test_thousand_malformed_among_hundred_thousand_valid(
    stack_settings: Settings, tmp_path: Path
) -> None:
    e = private_env(stack_settings, tmp_path, "bad", "B")
    settings, symbols = e.settings, e.symbols
    base = make_tape(symbols, seconds=60)
    valid = make_tape(symbols, seconds=22_300, seed=5).trades[:100_000]
    assert len(valid) == 100_000
    kinds = base.bad_trades[:7]  # one of each kind of malformed trade
    # made unique without changing what is wrong with them
    bad = [
        b'{"n": %d, ' % i + k[1:] if k.startswith(b'{"') else k + b" %d" % i
        for i, k in ((i, kinds[i % 7]) for i in range(1_000))
    ]
    rng = random.Random(9)
    mixed: list[bytes | dict[str, Any]] = list(valid)
    for b in bad:
        mixed.insert(rng.randrange(len(mixed) + 1), b)
    produce(settings, e.trades, mixed, _key)
    ch = ch_store.client(settings)
    try:
        e.start("raw_sink")
        wait_for(
            "all valid trades stored",
            lambda: int(ch.command("SELECT count() FROM raw_trades")) >= len(valid),
            e,
        )

        def dead_letters() -> list[dict[str, Any]]:
            return [d for d in read_topic(settings, e.dlq) if d["flow"] == "raw_sink"]

        wait_for("all dead letters", lambda: len(dead_letters()) >= len(bad), e, timeout=60)
        e.assert_running()
        stored = int(ch.command("SELECT count() FROM raw_trades"))
        distinct = int(ch.command("SELECT uniqExact(trade_id) FROM raw_trades"))
    finally:
        e.stop_all()
    assert stored == distinct == len(valid)
    letters = dead_letters()
    assert len({(d["partition"], d["offset"]) for d in letters}) == len(bad)
    assert {d["payload"].encode() for d in letters} == set(bad)
    assert {d["reason"].split(":")[0] for d in letters} == {
        "invalid_json",
        "missing_field",
        "not_positive",
        "unknown_symbol",
        "wrong_type",
        "not_finite",
        "bad_event_time",
    }
