"""Latency and throughput ceiling of the four flows on a private local stack.

Phase 1, live at the default rates (10 trades/s, 50 quotes/s over the instrument universe),
long enough for every symbol to cross at least one 5-minute window boundary:
  * event → visible in ClickHouse: `ingested_at - event_time` of every raw row;
  * insert → broadcast received: receive time of each `table_update` minus its `flushed_at`;
  * window end → `latest:vwap` updated: first time a new window is seen in Redis (polled
    every 20 ms) minus the window's end.
Phase 2, ceiling: the flows are stopped (SIGINT, state snapshotted), a backlog of historical
(backfill) events is produced, the flows are restarted from their recovery state and the time
for all four to consume the backlog is read from their /metrics endpoints; events/s is the
backlog size over the slowest flow's drain time (process start included).

Every serving item's freshness (Redis keys, live tables and the other ClickHouse tables
too) is measured by `bench/freshness.py`.

Run: .venv/bin/python bench/flows_latency.py [--live-seconds 330] [--backlog 600000]
     [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis as redis_lib
from benchlib import Figure, add_json_option, emit, private_stack, stop_private_stack
from confluent_kafka import Producer

from flowforge_pipeline.contract.catalog import TABLE_UPDATE_CHANNEL, VWAP_KEY
from flowforge_pipeline.flows.common import reference_instruments
from flowforge_pipeline.flows.components import FLOW_COMPONENTS, metrics_port
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stack.components import Component, UpOptions
from flowforge_pipeline.stores import clickhouse as ch_store


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="microseconds")


class Tape:
    """Random-walk trades and quotes over the reference instruments."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.symbols = sorted(reference_instruments().symbols)
        self.price = dict.fromkeys(self.symbols, 100.0)
        self.n = 0

    def trade(self, when: datetime) -> tuple[bytes, bytes]:
        sym = self.rng.choice(self.symbols)
        self.price[sym] = round(self.price[sym] * (1 + self.rng.gauss(0, 0.0005)), 2)
        self.n += 1
        value = {
            "type": "trade", "trade_id": f"b-{self.n}", "symbol": sym, "price": self.price[sym],
            "quantity": float(self.rng.randint(1, 50)), "side": self.rng.choice(("buy", "sell")),
            "account": f"acct-{self.rng.randint(1, 8)}", "venue": "XBEN", "event_time": iso(when),
        }
        return sym.encode(), json.dumps(value).encode()

    def quote(self, when: datetime) -> tuple[bytes, bytes]:
        sym = self.rng.choice(self.symbols)
        p = self.price[sym]
        self.n += 1
        value = {
            "quote_id": f"b-{self.n}", "symbol": sym, "bid": round(p - 0.01, 2),
            "ask": round(p + 0.01, 2), "bid_size": 5.0, "ask_size": 7.0, "event_time": iso(when),
        }
        return sym.encode(), json.dumps(value).encode()


ONLY: set[str] = set()  # flow names given with --only; empty: every registered flow


def flow_components() -> list[Component]:
    return [c for c in FLOW_COMPONENTS if not ONLY or c.name.removeprefix("flow-") in ONLY]


def start_flows(settings: Settings, logdir: Path) -> list[subprocess.Popen]:
    procs = []
    for comp in flow_components():
        assert comp.prepare is not None
        comp.prepare(settings)
        log = (logdir / f"{comp.name}.log").open("ab")
        procs.append(subprocess.Popen(
            comp.argv(settings, UpOptions()), env={**os.environ, **comp.env(settings)},
            stdout=log, stderr=subprocess.STDOUT,
        ))
    try:
        for comp in flow_components():
            deadline = time.monotonic() + 180  # a busy shared machine starts them slowly
            while True:
                try:
                    comp.ready(settings)
                    break
                except Exception:  # noqa: BLE001
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
    except BaseException:
        for p in procs:  # the caller never gets them: stop them here
            p.kill()
            p.wait()
        raise
    return procs


def events_in_by_topic(settings: Settings, flow: str) -> dict[str, float]:
    """`flowforge_flow_events_in_total` of one flow, per topic label."""
    url = f"http://127.0.0.1:{metrics_port(settings, flow)}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("flowforge_flow_events_in_total{"):
            labels, value = line.rsplit(" ", 1)
            topic = labels.split('topic="', 1)[1].split('"', 1)[0]
            out[topic] = out.get(topic, 0.0) + float(value)
    return out


def live_phase(settings: Settings, seconds: float) -> dict[str, object]:
    tape = Tape()
    producer = Producer({"bootstrap.servers": settings.kafka_servers, "linger.ms": 5})
    r = redis_lib.Redis.from_url(settings.redis, decode_responses=True)
    sub = r.pubsub()
    sub.subscribe(TABLE_UPDATE_CHANNEL.name)
    broadcast_ms: list[float] = []
    window_ms: list[float] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            m = sub.get_message(timeout=0.1)
            if m and m["type"] == "message":
                got = datetime.now(UTC)
                msg = json.loads(m["data"])
                flushed = datetime.fromisoformat(msg["flushed_at"])
                broadcast_ms.append((got - flushed).total_seconds() * 1000)

    def poll_vwap() -> None:
        keys = [VWAP_KEY.key(symbol=s) for s in tape.symbols]
        seen: dict[str, str] = {}
        polling_since = datetime.now(UTC)
        while not stop.is_set():
            now = datetime.now(UTC)
            for key, raw in zip(keys, r.mget(keys), strict=True):
                if raw is None:
                    continue
                value = json.loads(raw)
                if seen.get(key) != value["window_end"]:
                    end = datetime.fromisoformat(value["window_end"])
                    if end >= polling_since:  # a window that ended while we watched
                        window_ms.append((now - end).total_seconds() * 1000)
                    seen[key] = value["window_end"]
            time.sleep(0.02)

    threads = [threading.Thread(target=listen), threading.Thread(target=poll_vwap)]
    for t in threads:
        t.start()
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * 60)  # 10 trades + 50 quotes per second
        while sent < due:
            now = datetime.now(UTC)
            key, value = tape.trade(now) if sent % 6 == 0 else tape.quote(now)
            producer.produce("trades" if sent % 6 == 0 else "quotes", key=key, value=value)
            sent += 1
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(10)
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    ch = ch_store.client(settings)
    visible = [float(v) for (v,) in ch.query(
        "SELECT dateDiff('millisecond', event_time, ingested_at) FROM raw_trades "
        "UNION ALL SELECT dateDiff('millisecond', event_time, ingested_at) FROM raw_quotes"
    ).result_rows]
    windows = int(ch.command("SELECT count() FROM vwap_5min"))
    return {
        "events_sent": sent,
        "vwap_windows_closed": windows,
        "event_to_clickhouse_ms": (pct(visible, 0.5), pct(visible, 0.99), len(visible)),
        "insert_to_broadcast_ms": (pct(broadcast_ms, 0.5), pct(broadcast_ms, 0.99),
                                   len(broadcast_ms)),
        "window_end_to_latest_vwap_ms": (pct(window_ms, 0.5), pct(window_ms, 0.99),
                                         len(window_ms)),
    }


def stop_flows(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGINT)  # Bytewax stops at an epoch boundary, state snapshotted
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def ceiling_phase(
    settings: Settings, backlog: int, procs: list[subprocess.Popen], logdir: Path
) -> dict[str, object]:
    """Produce the backlog while the flows are stopped, then time their drain from restart.

    Producing first keeps the producer's CPU out of the measurement (2 shared cores).
    """
    tape = Tape(seed=2)
    flows = [c.name.removeprefix("flow-") for c in flow_components()]
    stop_flows(procs)
    procs.clear()
    start_time = datetime(2025, 1, 6, 0, 0, tzinfo=UTC)
    producer = Producer({"bootstrap.servers": settings.kafka_servers, "linger.ms": 50,
                         "batch.num.messages": 10000, "queue.buffering.max.messages": 2000000})
    n_trades = 0
    t_produce = time.monotonic()
    for i in range(backlog):
        when = start_time + timedelta(milliseconds=20 * i)
        if i % 6 == 0:
            key, value = tape.trade(when)
            producer.produce("trades", key=key, value=value)
            n_trades += 1
        else:
            key, value = tape.quote(when)
            producer.produce("quotes", key=key, value=value)
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(120)
    produce_s = time.monotonic() - t_produce
    t_produce = time.monotonic()
    procs.extend(start_flows(settings, logdir))
    expected = {"trades": n_trades, "quotes": backlog - n_trades}
    done: dict[str, float] = {}
    deadline = time.monotonic() + 900
    while len(done) < len(flows) and time.monotonic() < deadline:
        for f in flows:
            if f in done:
                continue
            try:
                got = events_in_by_topic(settings, f)
            except OSError:
                continue  # still starting
            # a flow is through once every topic it reads has reached the backlog's count
            if "trades" in got and all(got[t] >= expected.get(t, 0) for t in got):
                done[f] = time.monotonic() - t_produce
        time.sleep(0.25)
    slowest = max(done.values()) if len(done) == len(flows) else float("nan")
    return {
        "backlog_events": backlog,
        "backlog_trades": n_trades,
        "produce_seconds": round(produce_s, 1),
        "drain_seconds_per_flow_incl_start": {f: round(t, 1) for f, t in done.items()},
        "events_per_second_all_flows": round(backlog / slowest) if done else None,
    }


#: p99 targets (ms) of the live figures.
TARGETS_MS = {
    "event_to_clickhouse_ms": ("event → visible in ClickHouse (raw tables)", 2000.0),
    "insert_to_broadcast_ms": ("insert → broadcast received", 100.0),
    "window_end_to_latest_vwap_ms": ("window end → latest:vwap updated", 1000.0),
}


def write_json(path: Path | None, results: dict[str, object]) -> None:
    """The live latencies (p50, p99 against their targets) and the drain rate."""
    figures: list[Figure] = []
    live = results.get("live")
    if isinstance(live, dict):
        for key, (what, limit) in TARGETS_MS.items():
            p50, p99, n = live[key]
            if not n:
                figures.append(Figure(f"{what}: p99", "no samples", "ms", f"<= {limit:,.0f} ms"))
                continue
            figures.append(Figure(f"{what}: p50 (n={n})", round(p50, 1), "ms"))
            figures.append(Figure(f"{what}: p99", round(p99, 1), "ms", f"<= {limit:,.0f} ms",
                                  p99 <= limit))
    ceiling = results.get("ceiling")
    if isinstance(ceiling, dict):
        figures.append(Figure(
            f"backlog of {ceiling['backlog_events']:,} events drained by every flow",
            ceiling["events_per_second_all_flows"] or "not drained", "events/s"))
    emit(path, "flows_latency", figures, extra=results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--live-seconds", type=float, default=330.0)
    parser.add_argument("--backlog", type=int, default=600_000)
    parser.add_argument("--only", nargs="*", default=[], help="run only these flows")
    add_json_option(parser)
    args = parser.parse_args()
    ONLY.update(args.only)
    state, settings = private_stack("flowforge-bench-")
    procs: list[subprocess.Popen] = []
    try:
        procs = start_flows(settings, state)
        results: dict[str, object] = {"cores": os.cpu_count()}
        if args.live_seconds > 0:
            results["live"] = live_phase(settings, args.live_seconds)
            print(json.dumps(results, indent=2), flush=True)
        if args.backlog > 0:
            results["ceiling"] = ceiling_phase(settings, args.backlog, procs, state)
        print(json.dumps(results, indent=2))
        write_json(args.json, results)
    finally:
        stop_private_stack(settings, procs)


if __name__ == "__main__":
    main()
