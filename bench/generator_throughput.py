"""Generator figures: backfill throughput (null sink and local broker) and real-time accuracy.

Run: .venv/bin/python bench/generator_throughput.py [--minutes N] [--realtime-seconds S]
     [--workers 0,2] [--repeat N] [--json FILE]
Starts its own in-memory tansu broker on a free port; prints one line per figure.
A backfill figure is end to end: from the start of the run (worker processes included) until
the broker has acknowledged every record, divided into the records sent. `--workers` lists
the variants: 0 is one process, N >= 2 is N processes taking turns (`generate --workers N`).
Each figure runs in its own process; CPU seconds of the generator (all its processes) and
of the broker are printed beside it (with workers, the parent's only: the processes taking
turns are not its children), steadier than wall time on a shared machine.
The default-rate variant backfills 6 event hours (1.3M records): a backfill is hours to days
of data, and a short range mostly measures the fixed cost of starting a producer, creating
topics and waiting for the last acknowledgement (60 min at the default rates, 218k records,
showed ~130k events/s where 6 hours showed ~236k on the same quiet machine).
Real time: pacing accuracy is the wall time the run took against the event time it covered
(the generator's own doing); the counts achieved against the configured rates also carry the
tape's randomness (clustered arrivals, the time-of-day activity profile), which over 60 s at
10 trades/s is several percent by design (and 1-3 % at 200 trades/s), so the counts are
printed beside the pacing without a target, with the tape's mean rates over the whole
backfill range, where that randomness averages out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import psutil
from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Figure, add_json_option, emit, free_port  # noqa: E402

from flowforge_pipeline.generator import parallel  # noqa: E402
from flowforge_pipeline.generator.instruments import load_instruments  # noqa: E402
from flowforge_pipeline.generator.pacing import Counts, Sink, pump  # noqa: E402
from flowforge_pipeline.generator.producer import KafkaSink, NullSink  # noqa: E402
from flowforge_pipeline.generator.tape import Tape, to_us  # noqa: E402
from flowforge_pipeline.settings import Settings  # noqa: E402
from flowforge_pipeline.standins.broker import argv as broker_argv  # noqa: E402
from flowforge_pipeline.standins.broker import wait_listening  # noqa: E402

START = to_us(datetime(2026, 11, 25, 14, 30, tzinfo=UTC))
TARGET_EVENTS_PER_SECOND = 200_000
TARGET_REALTIME_PERCENT = 2.0


def broker() -> tuple[subprocess.Popen[bytes], Settings]:
    """A fresh in-memory tansu broker on a free port, answering metadata requests."""
    port = free_port()
    proc = subprocess.Popen(broker_argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settings = Settings(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}", KAFKA_TOPIC_PARTITIONS=3)
    try:
        # No Kafka client before the port accepts connections: librdkafka would log a
        # "Connection refused" line for each attempt made while the broker starts.
        wait_listening(port, proc)
        AdminClient({"bootstrap.servers": settings.kafka_servers}).list_topics(timeout=10)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, settings


def _null_sink() -> Sink:
    return NullSink()


def backfill(settings: Settings | None, tps: float, qps: float, minutes: int, workers: int) -> str:
    """One backfill; returns `records seconds cpu-seconds trades quotes`."""
    tape = Tape(load_instruments(), 42, tps, qps)
    end = START + minutes * 60_000_000
    cpu0 = _cpu()
    t0 = time.perf_counter()
    sink: Sink = NullSink() if settings is None else KafkaSink(settings)
    if workers >= 2:
        factory = _null_sink if settings is None else partial(KafkaSink, settings, None)
        counts = parallel.backfill(tape, START, end, factory, workers, 5000)
    else:
        counts = pump(tape.batches(START, end), sink, START, None, 5000)
    sink.close()
    elapsed = time.perf_counter() - t0
    kinds = counts.by_kind
    return f"{counts.total} {elapsed} {_cpu() - cpu0} {kinds['trades']} {kinds['quotes']}"


def _cpu() -> float:
    """CPU seconds of this process, all threads (librdkafka's included)."""
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def one_figure(
    args: list[str], broker_pid: int | None
) -> tuple[int, float, float, float, int, int]:
    """One backfill in its own process: records, seconds, generator and broker cpu-s, trades,
    quotes."""
    b = psutil.Process(broker_pid) if broker_pid else None
    b0 = sum(b.cpu_times()[:2]) if b else 0.0
    out = subprocess.run(
        [sys.executable, __file__, "--one", *args], capture_output=True, text=True, check=False
    )
    broker_cpu = sum(b.cpu_times()[:2]) - b0 if b else 0.0
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        raise RuntimeError(f"backfill {args} failed: {out.stderr.strip()[-500:]}")
    n, seconds, cpu, trades, quotes = lines[-1].split()
    return int(n), float(seconds), float(cpu), broker_cpu, int(trades), int(quotes)


def realtime(settings: Settings, tps: float, qps: float, seconds: float) -> tuple[float, float]:
    """Real-time pacing into Kafka: (pacing error %, largest count deviation %), both absolute."""
    tape = Tape(load_instruments(), 42, tps, qps)
    sink = KafkaSink(settings)
    start = to_us(datetime.now(UTC))
    counts = Counts()
    wall0 = time.perf_counter()
    pump(tape.batches(start, start + int(seconds * 1e6)), sink, start, 1.0, 1000, counts)
    sink.close()
    wall = time.perf_counter() - wall0
    pacing = 100 * (wall - seconds) / seconds
    trades = (counts.by_kind["trades"] + counts.by_kind["heartbeats"]) / wall
    quotes = counts.by_kind["quotes"] / wall
    # Heartbeats share the trades topic; the configured rate is of trades alone.
    trades_only = counts.by_kind["trades"] / wall
    dt, dq = 100 * (trades_only - tps) / tps, 100 * (quotes - qps) / qps
    print(
        f"real time {seconds:g} s at {tps:g} trades/s + {qps:g} quotes/s: wall {wall:.3f} s "
        f"(pacing error {pacing:+.2f} %), achieved "
        f"{trades_only:.1f} trades/s ({dt:+.2f} %), {quotes:.1f} quotes/s ({dq:+.2f} %); "
        f"trades topic incl. heartbeats {trades:.1f}/s",
        flush=True,
    )
    return abs(pacing), max(abs(dt), abs(dq))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--minutes", type=int, default=360, help="event minutes at 10 + 50 /s (0: skip)"
    )
    parser.add_argument(
        "--high-minutes", type=int, default=2, help="event minutes at 1000 + 5000 /s (0: skip)"
    )
    parser.add_argument("--realtime-seconds", type=float, default=60.0)
    parser.add_argument("--workers", default="0,2")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--null", action="store_true", help="also time the generator alone")
    parser.add_argument("--one", nargs=5, default=None, help=argparse.SUPPRESS)
    add_json_option(parser)
    args = parser.parse_args()
    if args.one:
        servers, tps, qps, minutes, workers = args.one
        settings = (
            None
            if servers == "-"
            else Settings(KAFKA_BOOTSTRAP_SERVERS=servers, KAFKA_TOPIC_PARTITIONS=3)
        )
        print(backfill(settings, float(tps), float(qps), int(minutes), int(workers)))
        return
    figures: list[Figure] = []
    proc, settings = broker()
    try:
        sinks = [("null", "-"), ("kafka", settings.kafka_servers)] if args.null else []
        sinks = sinks or [("kafka", settings.kafka_servers)]
        for sink, servers in sinks:
            variants = ((10, 50, args.minutes), (1000, 5000, args.high_minutes))
            for tps, qps, minutes in [v for v in variants if v[2] > 0]:
                for workers in args.workers.split(","):
                    rates = []
                    for _ in range(args.repeat):
                        n, secs, cpu, bcpu, trades, quotes = one_figure(
                            [servers, str(tps), str(qps), str(minutes), workers],
                            proc.pid if sink == "kafka" else None,
                        )
                        rates.append(n / secs)
                        print(
                            f"backfill -> {sink:5s} {tps:g} + {qps:g} /s, {minutes} min, "
                            f"workers {workers}: {n} records in {secs:.2f} s = {n / secs:,.0f} "
                            f"events/s ({'sending process' if workers == '0' else 'parent'} "
                            f"{cpu / n * 1e6:.2f} us cpu/record"
                            + (f", broker {bcpu / n * 1e6:.2f}" if sink == "kafka" else "")
                            + f"; load {os.getloadavg()[0]:.1f})",
                            flush=True,
                        )
                    best = max(rates)
                    if workers == args.workers.split(",")[0]:
                        span = minutes * 60
                        dev = max(abs(trades / span / tps - 1), abs(quotes / span / qps - 1))
                        print(
                            f"tape over {minutes} event min: {trades / span:.2f} trades/s, "
                            f"{quotes / span:.2f} quotes/s ({100 * dev:.2f} % from the "
                            "configured rates at worst)",
                            flush=True,
                        )
                        figures.append(
                            Figure(
                                f"mean rates of the tape over {minutes} event minutes against "
                                f"the configured {tps:g} trades/s + {qps:g} quotes/s (worst)",
                                round(100 * dev, 2),
                                "%",
                            )
                        )
                    into = sink == "kafka"
                    figures.append(
                        Figure(
                            f"backfill into {'tansu' if into else 'a null sink'}, "
                            f"{tps:g} trades/s + {qps:g} quotes/s, workers {workers} "
                            f"(best of {args.repeat})",
                            round(best),
                            "events/s",
                            f">= {TARGET_EVENTS_PER_SECOND:,}" if into else None,
                            best >= TARGET_EVENTS_PER_SECOND if into else None,
                        )
                    )
        if args.realtime_seconds:
            for tps, qps in ((10, 50), (200, 1000)):
                pacing, dev = realtime(settings, tps, qps, args.realtime_seconds)
                label = f"over {args.realtime_seconds:g} s at {tps:g} trades/s + {qps:g} quotes/s"
                figures.append(
                    Figure(
                        f"real-time pacing error {label}",
                        round(pacing, 2),
                        "%",
                        f"within {TARGET_REALTIME_PERCENT:g} %",
                        pacing <= TARGET_REALTIME_PERCENT,
                    )
                )
                figures.append(
                    Figure(
                        f"real-time counts against the configured rates {label} (worst of "
                        "trades and quotes; carries the arrival process's own randomness)",
                        round(dev, 2),
                        "%",
                    )
                )
    finally:
        proc.terminate()
        proc.wait(10)
    emit(args.json, "generator_throughput", figures)


if __name__ == "__main__":
    main()
