"""Sustained ceiling of the flows together: feed at a fixed rate for 60 s, is lag bounded?

Starts a private local stack (broker, ClickHouse server, Valkey, Postgres on random ports),
starts the registered flows with recovery as `up` does, then for each rate in turn feeds
trades and quotes (1:5, live event times, keyed by symbol) at exactly that rate for
`--seconds` and samples every flow's `flowforge_flow_events_in_total` once a second. A
flow's lag is what was produced on the topics it reads minus what it has read. A rate is
**sustained** when, for every flow, the lag stayed at most `--max-lag-seconds` of input
through the second half of the step and did not grow over it (the slope of a least-squares
line through the second half's samples is under 5% of the rate), and the feeder itself
reached 95% of the rate (a feeder starved of CPU proves nothing about the flows). The
rates step up until one is not sustained; the ceiling is the highest sustained rate.

To say what bounds it, each step also reports the achieved feed rate, the CPU used by each
process group (the flows one by one, the ClickHouse server, the broker, this feeder) as a
share of the machine's cores, how busy the whole machine was (other work included) and the
load average: a flow that lags while its own CPU share is low and the machine is busy is
starved of CPU, not slow.

With `--json FILE` the figures (ceiling against the 20,000 events/s target, each rate's
verdict) and, per rate, a series of every flow's lag in seconds of input over time are written
through `benchlib` for the `make bench` report.

Run: .venv/bin/python bench/flows_ceiling.py [--rates 10000 20000 30000 40000 50000]
     [--seconds 60] [--only raw_sink vwap] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
from benchlib import Figure, Series, add_json_option, emit, private_stack, stop_private_stack
from confluent_kafka import Producer
from flows_latency import ONLY, events_in_by_topic, flow_components, start_flows

from flowforge_pipeline.flows.common import reference_instruments
from flowforge_pipeline.settings import Settings

#: Topics each flow reads (positions, vwap and volatility count trades only).
READS = {
    "raw_sink": ("trades", "quotes"),
    "vwap": ("trades",),
    "volatility": ("trades",),
    "positions": ("trades",),
    "live_views": ("trades", "quotes"),
    "anomaly": ("trades", "quotes"),
}
TICK = 0.01  # the feeder sends one slice of records every 10 ms
#: The ceiling the flows are meant to sustain together (events/s).
TARGET_EVENTS_PER_S = 20_000


class Feeder(threading.Thread):
    """Produces trades and quotes at a fixed rate with live event times (cheap templates)."""

    def __init__(self, settings: Settings, rate: int, seconds: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.rate, self.seconds = rate, seconds
        self.rng = random.Random(seed)
        self.symbols = sorted(reference_instruments().symbols)
        self.price = {s: 100.0 + 10 * i for i, s in enumerate(self.symbols)}
        self.producer = Producer({
            "bootstrap.servers": settings.kafka_servers, "linger.ms": 5,
            "batch.num.messages": 10000, "queue.buffering.max.messages": 2_000_000,
        })
        self.sent = {"trades": 0, "quotes": 0}
        self.lock = threading.Lock()
        self.finished_at = 0.0
        self.seed = seed

    def _slice(self, n: int, ts: bytes, first: int) -> None:
        rng, produce = self.rng, self.producer.produce
        trades = quotes = 0
        for i in range(first, first + n):
            sym = self.symbols[rng.randrange(len(self.symbols))]
            key = sym.encode()
            p = self.price[sym] = round(self.price[sym] * (1 + rng.gauss(0, 0.0005)), 2)
            if i % 6 == 0:
                side = "buy" if rng.random() < 0.5 else "sell"
                value = (
                    f'{{"type":"trade","trade_id":"c{self.seed}-{i}","symbol":"{sym}",'
                    f'"price":{p},"quantity":{rng.randint(1, 50)}.0,"side":"{side}",'
                    f'"account":"acct-{rng.randint(1, 8)}","venue":"XBEN","event_time":"'
                ).encode() + ts
                produce("trades", key=key, value=value)
                trades += 1
            else:
                value = (
                    f'{{"quote_id":"c{self.seed}-{i}","symbol":"{sym}","bid":{p - 0.01:.2f},'
                    f'"ask":{p + 0.01:.2f},"bid_size":5.0,"ask_size":7.0,"event_time":"'
                ).encode() + ts
                produce("quotes", key=key, value=value)
                quotes += 1
        self.producer.poll(0)
        with self.lock:
            self.sent["trades"] += trades
            self.sent["quotes"] += quotes

    def run(self) -> None:
        started = time.monotonic()
        done = 0
        while (elapsed := time.monotonic() - started) < self.seconds:
            due = int(elapsed * self.rate)
            if due > done:
                ts = datetime.now(UTC).isoformat(timespec="microseconds").encode() + b'"}'
                self._slice(due - done, ts, done)
                done = due
            time.sleep(max(0.0, TICK - (time.monotonic() - started - elapsed)))
        self.producer.flush(60)
        self.finished_at = time.monotonic()

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.sent)


@dataclass
class Sampler:
    """CPU seconds per process group between two calls (a group's own processes only)."""

    groups: dict[str, list[psutil.Process]]
    last: dict[str, float] = field(default_factory=dict)

    def cpu(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, procs in self.groups.items():
            total = 0.0
            for p in procs:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            out[name] = total - self.last.get(name, 0.0)
            self.last[name] = total
        return out


def process_groups(flow_pids: dict[str, int]) -> dict[str, list[psutil.Process]]:
    """This process (the feeder), each flow, and the stack's services by role."""
    me = psutil.Process()
    groups: dict[str, list[psutil.Process]] = {"feeder": [me]}
    flow_of = {pid: f for f, pid in flow_pids.items()}
    roles = (("clickhouse", ("clickhouse", "chdb")), ("broker", ("tansu", "calfkit", "kafka")),
             ("valkey", ("valkey", "redis")), ("postgres", ("postgres",)))
    for child in me.children(recursive=True):
        owner = next((flow_of[p.pid] for p in [child, *child.parents()] if p.pid in flow_of), None)
        if owner is not None:
            groups.setdefault(owner, []).append(child)
            continue
        cmd = " ".join(child.cmdline()).lower()
        role = next((r for r, words in roles if any(w in cmd for w in words)), "other")
        groups.setdefault(role, []).append(child)
    return groups


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y) points."""
    if len(points) < 2:
        return 0.0
    ts = [t for t, _ in points]
    ys = [y for _, y in points]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    den = sum((t - mt) ** 2 for t in ts)
    return sum((t - mt) * (y - my) for t, y in points) / den if den else 0.0


def consumed(settings: Settings, flow: str) -> int | None:
    try:
        got = events_in_by_topic(settings, flow)
    except OSError:
        return None
    return int(sum(got.get(t, 0.0) for t in READS.get(flow, ("trades", "quotes"))))


def step(
    settings: Settings, flows: list[str], rate: int, seconds: float, max_lag_s: float,
    sampler: Sampler, seed: int,
) -> dict[str, object]:
    base = {f: consumed(settings, f) or 0 for f in flows}
    feeder = Feeder(settings, rate, seconds, seed)
    sampler.cpu()
    psutil.cpu_percent()  # start the machine-wide busy counter
    started = time.monotonic()
    feeder.start()
    lags: dict[str, list[tuple[float, float]]] = {f: [] for f in flows}
    while feeder.is_alive() or time.monotonic() - started < seconds:
        time.sleep(1.0)
        t = time.monotonic() - started
        sent = feeder.snapshot()
        for f in flows:
            got = consumed(settings, f)
            if got is None:
                continue
            produced = sum(sent[topic] for topic in READS.get(f, ("trades", "quotes")))
            lags[f].append((t, produced - (got - base[f])))
        if t > seconds + 60:
            break
    feed_seconds = (feeder.finished_at or time.monotonic()) - started
    cpu = sampler.cpu()
    machine_busy = psutil.cpu_percent() / 100  # every process on the machine, not only ours
    load_1m = os.getloadavg()[0]
    sent = feeder.snapshot()
    per_flow: dict[str, object] = {}
    sustained = True
    for f in flows:
        second_half = [(t, y) for t, y in lags[f] if t >= seconds / 2]
        growth = slope(second_half)  # events/s the lag grows by
        final = lags[f][-1][1] if lags[f] else float("inf")
        worst = max((y for _, y in second_half), default=final)
        ok = max(final, worst) <= max_lag_s * rate and growth < 0.05 * rate
        sustained &= ok
        per_flow[f] = {"final_lag_events": int(final), "lag_growth_per_s": round(growth),
                       "bounded": ok}
    # drain what is left so the next step starts level
    drain_started = time.monotonic()
    while time.monotonic() - drain_started < 120:
        sent = feeder.snapshot()
        behind = [f for f in flows if (consumed(settings, f) or 0) - base[f]
                  < sum(sent[t] for t in READS.get(f, ("trades", "quotes")))]
        if not behind:
            break
        time.sleep(0.5)
    cores = psutil.cpu_count() or 1
    # a feeder starved of CPU sends less than the rate over a longer time: that step says
    # nothing about the flows, so it is never counted as sustained
    feed_reached_rate = sum(sent.values()) / feed_seconds >= 0.95 * rate
    return {
        "rate": rate,
        "achieved_feed_rate": round(sum(sent.values()) / seconds),
        "feed_seconds": round(feed_seconds, 1),
        "feed_reached_rate": feed_reached_rate,
        "sustained": sustained and feed_reached_rate,
        "flows": per_flow,
        "drain_seconds_after_feed": round(time.monotonic() - drain_started, 1),
        "cpu_share_of_machine": {k: round(v / (feed_seconds * cores), 3) for k, v in cpu.items()},
        "ours_share_of_machine": round(sum(cpu.values()) / (feed_seconds * cores), 3),
        "machine_busy": round(machine_busy, 3),
        "load_1m": round(load_1m, 1),
        "lag_events": lags,
    }


def write_json(
    path: Path | None, flows: list[str], results: list[dict[str, object]],
    summary: dict[str, object],
) -> None:
    """The figures and, per rate, every flow's lag (seconds of input) over time."""
    ceiling = summary["ceiling_events_per_s"]
    all_six = len(flows) == len(READS)
    what = "all six flows" if all_six else " + ".join(flows)
    figures = [Figure(
        f"sustained ceiling, {what} together (60 s per rate, lag bounded)",
        ceiling if ceiling is not None else "none of the rates",
        "events/s", f">= {TARGET_EVENTS_PER_S:,}",
        isinstance(ceiling, int) and ceiling >= TARGET_EVENTS_PER_S,
    )]
    series: dict[str, Series] = {}
    for r in results:
        rate = int(r["rate"])  # type: ignore[call-overload]
        per_flow = r["flows"]
        assert isinstance(per_flow, dict)
        worst = max(per_flow.values(), key=lambda f: f["final_lag_events"])
        figures.append(Figure(
            f"{rate:,} events/s: sustained (feed achieved {r['achieved_feed_rate']:,}/s; "
            f"largest final lag {worst['final_lag_events']:,} events)",
            "yes" if r["sustained"] else "no",
        ))
        lags = r["lag_events"]
        assert isinstance(lags, dict)
        series[f"lag_at_{rate}"] = Series(
            "seconds since the feed started", "lag (seconds of input)",
            {f: [(round(t, 1), round(y / rate, 3)) for t, y in pts] for f, pts in lags.items()},
        )
    extra = {"summary": summary,
             "steps": [{k: v for k, v in r.items() if k != "lag_events"} for r in results]}
    emit(path, "flows_ceiling", figures, series, extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", type=int, nargs="*",
                        default=[10_000, 20_000, 30_000, 40_000, 50_000, 60_000])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--max-lag-seconds", type=float, default=5.0)
    parser.add_argument("--only", nargs="*", default=[], help="run only these flows")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every rate even after one is not sustained")
    add_json_option(parser)
    args = parser.parse_args()
    ONLY.update(args.only)
    state, settings = private_stack("flowforge-ceiling-")
    procs: list[subprocess.Popen] = []
    try:
        procs = start_flows(settings, state)
        flows = [c.name.removeprefix("flow-") for c in flow_components()]
        sampler = Sampler(process_groups(
            {f: p.pid for f, p in zip(flows, procs, strict=True)}
        ))
        results: list[dict[str, object]] = []
        for i, rate in enumerate(args.rates):
            r = step(settings, flows, rate, args.seconds, args.max_lag_seconds, sampler, i)
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "lag_events"}), flush=True)
            if not r["sustained"] and not args.keep_going:
                break
        ok = [r["rate"] for r in results if r["sustained"]]
        summary = {
            "cores": os.cpu_count(), "flows": flows, "seconds_per_rate": args.seconds,
            "ceiling_events_per_s": max(ok) if ok else None,
            "first_rate_not_sustained": next(
                (r["rate"] for r in results if not r["sustained"]), None),
        }
        print(json.dumps(summary, indent=2))
        write_json(args.json, flows, results, summary)
    finally:
        stop_private_stack(settings, procs)


if __name__ == "__main__":
    main()
