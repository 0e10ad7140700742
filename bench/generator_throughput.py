"""Generator figures: backfill throughput (null sink and local broker) and real-time accuracy.

Run: .venv/bin/python bench/generator_throughput.py [--minutes N] [--realtime-seconds S]
     [--workers 0,1] [--repeat N] [--baseline DIR]
Starts its own in-memory tansu broker on a free port; prints one line per figure.
`--workers` lists the backfill variants: 0 computes minutes in the sending process, N >= 1 in
N worker processes (what `generate --backfill` does, default 1). `--baseline DIR` also runs
every backfill figure with the package found in DIR/src (e.g. an older commit extracted with
`git archive <commit> src | tar -x -C DIR`), alternating with the current code, so a noisy,
shared machine affects both alike; compare the ratios. Each figure is its own process.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
from confluent_kafka.admin import AdminClient

from flowforge_pipeline.generator.instruments import load_instruments
from flowforge_pipeline.generator.pacing import Counts, pump
from flowforge_pipeline.generator.producer import KafkaSink, NullSink
from flowforge_pipeline.generator.tape import Tape, to_us
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.standins.broker import argv as broker_argv

START = to_us(datetime(2026, 11, 25, 14, 30, tzinfo=UTC))


def broker() -> tuple[subprocess.Popen[bytes], Settings]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        broker_argv(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}", KAFKA_TOPIC_PARTITIONS=3)
    for _ in range(100):
        try:
            AdminClient({"bootstrap.servers": settings.kafka_servers}).list_topics(timeout=1)
            break
        except Exception:
            time.sleep(0.1)
    return proc, settings


def backfill(
    sink_name: str, settings: Settings | None, tps: float, qps: float, minutes: int, workers: int
) -> None:
    tape = Tape(load_instruments(), 42, tps, qps)
    end = START + minutes * 60_000_000
    t_start = time.perf_counter()
    if workers:
        from flowforge_pipeline.generator import parallel

        batches = parallel.records(tape, START, end, workers)
    else:
        batches = tape.records(START, end)
    started = time.perf_counter() - t_start
    sink = NullSink() if settings is None else KafkaSink(settings)
    if workers:
        time.sleep(1.0)  # time the steady state; the start is reported on its own
    t0 = time.perf_counter()
    cpu0 = _cpu()
    counts = pump(batches, sink, START, None, 5000)
    sink.close()
    elapsed = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    # Workers are gone (and never reaped by this process) by now: count the sender only.
    who = "sending process" if workers else "process"
    start = f"; starting the workers took {started:.2f} s before" if workers else ""
    print(
        f"backfill -> {sink_name:5s} rates {tps:g}/{qps:g} per s, {minutes} min of event "
        f"time, workers {workers}: {counts.total} records in {elapsed:.2f} s = "
        f"{counts.total / elapsed:,.0f} events/s ({who} {cpu:.2f} cpu-s = "
        f"{counts.total / cpu:,.0f} events per cpu-second{start})",
        flush=True,
    )


def _cpu() -> float:
    """CPU seconds of this process, all threads (librdkafka's included)."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def one_figure(args: list[str], pythonpath: str | None, label: str) -> None:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run(
        [sys.executable, __file__, "--one", *args], env=env, capture_output=True, text=True
    )
    line = out.stdout.strip() or out.stderr.strip().splitlines()[-1]
    print(f"{label:8s} {line}", flush=True)


def realtime(settings: Settings, tps: float, qps: float, seconds: float) -> None:
    """Real-time pacing into Kafka: records sent vs records whose event time has come."""
    tape = Tape(load_instruments(), 42, tps, qps)
    sink = KafkaSink(settings)
    start = to_us(datetime.now(UTC))
    counts = Counts()
    wall0 = time.perf_counter()
    pump(tape.records(start, start + int(seconds * 1e6)), sink, start, 1.0, 1000, counts)
    sink.close()
    wall = time.perf_counter() - wall0
    trades = counts.by_kind["trades"] / wall
    quotes = counts.by_kind["quotes"] / wall
    print(
        f"real time {seconds:g} s at {tps:g} trades/s + {qps:g} quotes/s: wall {wall:.3f} s "
        f"(pacing error {100 * (wall - seconds) / seconds:+.2f} %), achieved "
        f"{trades:.1f} trades/s ({100 * (trades - tps) / tps:+.2f} %), "
        f"{quotes:.1f} quotes/s ({100 * (quotes - qps) / qps:+.2f} %)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--realtime-seconds", type=float, default=60.0)
    parser.add_argument("--workers", default="0,1")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--baseline", default=None, metavar="DIR")
    parser.add_argument("--one", nargs=6, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        sink, servers, tps, qps, minutes, workers = args.one
        settings = (
            None
            if servers == "-"
            else Settings(KAFKA_BOOTSTRAP_SERVERS=servers, KAFKA_TOPIC_PARTITIONS=3)
        )
        backfill(sink, settings, float(tps), float(qps), int(minutes), int(workers))
        return
    proc, settings = broker()
    try:
        for sink, servers in (("null", "-"), ("kafka", settings.kafka_servers)):
            for tps, qps, minutes in ((10, 50, args.minutes), (1000, 5000, 1)):
                for _ in range(args.repeat):
                    figure = [sink, servers, str(tps), str(qps), str(minutes)]
                    if args.baseline:
                        one_figure([*figure, "0"], str(Path(args.baseline) / "src"), "baseline")
                    for workers in args.workers.split(","):
                        one_figure([*figure, workers], None, "current")
        if args.realtime_seconds:
            realtime(settings, 10, 50, args.realtime_seconds)
            realtime(settings, 200, 1000, args.realtime_seconds)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
