"""Soak: the whole stack for 30 minutes at 10x the default generator rates.

Starts a private stack on random ports in a temporary state directory (broker, ClickHouse
server, PostgreSQL, Valkey, the six flows with recovery and the generator in real time at
100 trades/s + 500 quotes/s; Airflow only with `--airflow`) through the same code as `up`,
then every `--interval` seconds samples:

  * the resident memory (RSS) of every component, its child processes included
    (PostgreSQL backends, Airflow's children);
  * every flow's lag: records on the topics it reads (the topics' high watermarks, read just
    before and just after the flow's counters) minus the records it has read
    (`flowforge_flow_events_in_total`), in records and in seconds of input at the generator's
    rate (records behind / records per second on those topics).

Checks, after the warm-up (`--warmup-minutes`, default 5):
  * memory flat: the median RSS of the last minute is less than 10% above the median of the
    first minute after the warm-up, for every component;
  * lag bounded: no flow lags more than `--max-lag-seconds` (default 10 s of input) after the
    warm-up;
  * no error in any log: no line any component logs once the stack is healthy matches ERROR,
    CRITICAL, FATAL, PANIC, `panicked` or a Python traceback (warnings are counted, not
    failures; lines from the start-up are listed apart);
  * every process still running at the end.

Run: .venv/bin/python bench/soak.py [--minutes 30] [--json bench/results/soak.json]
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import psutil
from benchlib import Figure, Series, add_json_option, emit, free_port
from confluent_kafka import Consumer, KafkaException, TopicPartition
from flows_ceiling import READS

from flowforge_pipeline.flows.components import FLOW_NAMES, metrics_port
from flowforge_pipeline.generator.cli import generate_argv
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stack import local, process
from flowforge_pipeline.stack.components import UpOptions
from flowforge_pipeline.stack.registry import COMPONENTS

#: What counts as an error line in a component's log.
ERROR_LINE = re.compile(
    r"\b(ERROR|CRITICAL|FATAL|PANIC)\b|Traceback \(most recent call last\)|panicked"
)
WARN_LINE = re.compile(r"\b(WARN|WARNING)\b")

_stop: list[int] = []


def _on_signal(signum: int, _: FrameType | None) -> None:
    _stop.append(signum)


def rss_mib(rec: process.ProcessRecord) -> float | None:
    """RSS of a component's process and all its children, MiB; None when it is gone."""
    try:
        proc = psutil.Process(rec.pid)
        if abs(proc.create_time() - rec.create_time) > 1.0:
            return None
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        return None
    return total / 2**20


def flow_metrics(settings: Settings, flow: str) -> tuple[dict[str, float], float | None]:
    """Records read per topic and the event-time lag gauge of one flow."""
    url = f"http://127.0.0.1:{metrics_port(settings, flow)}/metrics"
    with urllib.request.urlopen(url, timeout=15) as resp:
        text = resp.read().decode()
    read: dict[str, float] = {}
    event_lag = None
    for line in text.splitlines():
        if line.startswith("flowforge_flow_events_in_total{"):
            labels, value = line.rsplit(" ", 1)
            topic = labels.split('topic="', 1)[1].split('"', 1)[0]
            read[topic] = read.get(topic, 0.0) + float(value)
        elif line.startswith("flowforge_flow_event_time_lag_seconds{"):
            event_lag = float(line.rsplit(" ", 1)[1])
    return read, event_lag


class Watermarks:
    """Records on each topic so far: the sum of its partitions' high watermarks."""

    def __init__(self, settings: Settings, topics: tuple[str, ...]) -> None:
        self.consumer = Consumer({
            "bootstrap.servers": settings.kafka_servers, "group.id": "flowforge-soak-probe",
            "enable.auto.commit": False,
        })
        meta = self.consumer.list_topics(timeout=10)
        self.parts = {t: sorted(meta.topics[t].partitions) for t in topics}

    def totals(self) -> dict[str, int]:
        """Raises KafkaException when the broker does not answer in time (a busy machine)."""
        out = {}
        for topic, parts in self.parts.items():
            out[topic] = sum(
                self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1]
                for p in parts
            )
        return out

    def close(self) -> None:
        self.consumer.close()


def log_sizes(logs: Path) -> dict[str, int]:
    """Size of every log file under `logs`: where the soak proper begins in each."""
    return {p.stem: p.stat().st_size for p in logs.glob("*.log")}


def scan_logs(logs: Path, started: dict[str, int]) -> dict[str, dict[str, object]]:
    """Error and warning lines of every log file under `logs`.

    Lines written before every component was healthy (`started`: each log's size then) are
    kept apart: PostgreSQL logs `FATAL: the database system is starting up` when the
    stack's own readiness probe connects too early, which is start-up, not the soak.
    """
    out: dict[str, dict[str, object]] = {}
    for path in sorted(logs.glob("*.log")):
        errors: list[str] = []
        early: list[str] = []
        warnings = 0
        offset = 0
        with path.open("rb") as fh:
            for raw in fh:
                line = raw.decode(errors="replace")
                before_start = offset < started.get(path.stem, 0)
                offset += len(raw)
                if ERROR_LINE.search(line):
                    (early if before_start else errors).append(line.rstrip()[:300])
                elif WARN_LINE.search(line):
                    warnings += 1
        out[path.stem] = {"errors": len(errors), "warnings": warnings, "first_errors": errors[:5],
                          "errors_during_start": early[:5]}
    return out


def median_between(points: list[tuple[float, float]], lo: float, hi: float) -> float | None:
    ys = [y for x, y in points if lo <= x <= hi]
    return statistics.median(ys) if ys else None


def start_stack(settings: Settings, options: UpOptions, airflow: bool) -> None:
    """The stand-ins and `init` as `up` does, then the apps (Airflow only when asked)."""
    echo: Callable[[str], None] = lambda line: print(line, flush=True)  # noqa: E731
    local.up(settings, options, echo=echo, stages=("service",))
    apps = [c for c in COMPONENTS if c.stage == "app" and (airflow or c.name != "airflow")]
    local._start_stage(settings, apps, options, echo)  # noqa: SLF001 - `up` without Airflow


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup-minutes", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--trades-per-second", type=float, default=100.0)
    parser.add_argument("--quotes-per-second", type=float, default=500.0)
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--max-lag-seconds", type=float, default=10.0)
    parser.add_argument("--airflow", action="store_true", help="run Airflow too")
    parser.add_argument("--keep", action="store_true", help="keep the state directory")
    add_json_option(parser)
    args = parser.parse_args()
    if args.warmup_minutes + 1 >= args.minutes:
        parser.error("--minutes must leave at least one minute after --warmup-minutes")

    state = Path(tempfile.mkdtemp(prefix="flowforge-soak-"))
    state.chmod(0o755)  # PostgreSQL runs as its own user and must reach its data directory
    settings = Settings(
        FLOWFORGE_STATE_DIR=str(state), LOCAL_KAFKA_PORT=free_port(),
        LOCAL_CLICKHOUSE_PORT=free_port(), LOCAL_POSTGRES_PORT=free_port(),
        LOCAL_REDIS_PORT=free_port(), LOCAL_AIRFLOW_PORT=free_port(),
        LOCAL_FLOW_METRICS_PORT=free_port(),
    )
    rate = {"trades": args.trades_per_second, "quotes": args.quotes_per_second}
    options = UpOptions(generator_args=tuple(generate_argv(
        trades_per_second=args.trades_per_second, quotes_per_second=args.quotes_per_second,
    )))
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    print(f"soak: state in {state}", flush=True)

    memory = Series("minutes since start", "RSS (MiB)")
    lag = Series("minutes since start", "lag (seconds of input)")
    event_lag = Series("minutes since start", "wall clock - newest event time written (s)")
    produced = Series("minutes since start", "records produced per second")
    worst_records: dict[str, float] = {}
    missed: list[tuple[float, str]] = []
    died: dict[str, float] = {}
    sampled_minutes = 0.0
    started_at = datetime.now(UTC)
    logs: dict[str, dict[str, object]] = {}
    failure = ""
    started_logs: dict[str, int] = {}
    opened: list[Watermarks] = []
    try:
        start_stack(settings, options, args.airflow)
        started_logs = log_sizes(process.log_dir(state))
        recs = {r.name: r for r in process.records(state)}
        marks = Watermarks(settings, ("trades", "quotes"))
        opened.append(marks)
        t0 = time.monotonic()
        last_total: dict[str, int] | None = None
        last_t = 0.0
        while not _stop and (elapsed := time.monotonic() - t0) < args.minutes * 60:
            minute = elapsed / 60
            for name, rec in recs.items():
                mib = rss_mib(rec)
                if mib is None:
                    died.setdefault(name, round(minute, 2))
                    continue
                memory.points.setdefault(name, []).append((round(minute, 3), round(mib, 1)))
            # each flow's counters are read between two reads of the topics' watermarks; the
            # mean of the two is the topic size at that moment (one read for all flows makes a
            # busy machine's slow probe look like lag, or like negative lag)
            reads: dict[str, tuple[dict[str, float], float | None, dict[str, float]]] = {}
            try:
                for flow in FLOW_NAMES:
                    before = marks.totals()
                    try:
                        read, ev = flow_metrics(settings, flow)
                    except OSError:
                        continue
                    after = marks.totals()
                    reads[flow] = (read, ev, {t: (before[t] + after[t]) / 2 for t in before})
                total = marks.totals()
            except KafkaException as exc:
                # the probe timed out on a busy machine: skip this sample, note it
                missed.append((round(minute, 2), str(exc)[:120]))
                if len(missed) > 30:
                    raise
                time.sleep(max(0.0, args.interval - (time.monotonic() - t0 - elapsed)))
                continue
            if last_total is not None and elapsed > last_t:
                per_s = sum(total.values()) - sum(last_total.values())
                produced.points.setdefault("trades + quotes", []).append(
                    (round(minute, 3), round(per_s / (elapsed - last_t), 1)))
            last_total, last_t = total, elapsed
            for flow, (read, ev, on_topics) in reads.items():
                behind = sum(on_topics[t] - read.get(t, 0.0) for t in READS[flow])
                seconds = behind / sum(rate[t] for t in READS[flow])
                worst_records[flow] = max(worst_records.get(flow, 0.0), behind)
                lag.points.setdefault(flow, []).append((round(minute, 3), round(seconds, 2)))
                if ev is not None:
                    event_lag.points.setdefault(flow, []).append((round(minute, 3), round(ev, 2)))
            sampled_minutes = minute
            line = "  ".join(
                f"{f}={pts[-1][1]:.1f}s" for f, pts in lag.points.items() if pts)
            print(f"{minute:6.1f} min  lag {line}", flush=True)
            time.sleep(max(0.0, args.interval - (time.monotonic() - t0 - elapsed)))
        if _stop:
            failure = f"stopped by signal {_stop[0]} after {sampled_minutes:.1f} min"
    except Exception as exc:  # noqa: BLE001 - report it in the figures, then clean up
        failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"soak failed: {failure}", file=sys.stderr, flush=True)
    finally:
        for m in opened:
            m.close()
        try:
            logs = scan_logs(process.log_dir(state), started_logs)
        except OSError as exc:
            failure = failure or f"could not read the logs: {exc}"
        local.down(settings, echo=lambda _: None)

    figures, ok = evaluate(args, memory, lag, logs, died, sampled_minutes, failure)
    for f in figures:
        mark = "" if f.met is None else ("  met" if f.met else "  NOT MET")
        print(f"{f.name}: {f.value} {f.unit}  (target {f.target}){mark}")
    emit(
        args.json, "soak", figures,
        series={"soak_memory": memory, "soak_lag": lag, "soak_event_time_lag": event_lag,
                "soak_produced": produced},
        extra={
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "started_at": started_at.isoformat(timespec="seconds"),
            "minutes_sampled": round(sampled_minutes, 2),
            "warmup_minutes": args.warmup_minutes,
            "rates_per_second": rate,
            "airflow": args.airflow,
            "max_lag_records": worst_records,
            "lag_samples_missed": missed,
            "died": died,
            "failure": failure,
            "logs": logs,
            "error_pattern": ERROR_LINE.pattern,
        },
    )
    if not args.keep:
        import shutil

        shutil.rmtree(state, ignore_errors=True)
    return 0 if ok else 1


def evaluate(
    args: argparse.Namespace, memory: Series, lag: Series, logs: dict[str, dict[str, object]],
    died: dict[str, float], sampled: float, failure: str,
) -> tuple[list[Figure], bool]:
    """The soak's figures and whether every check passed."""
    w = args.warmup_minutes
    figures = [Figure("soak duration sampled", round(sampled, 1), "min",
                      f">= {args.minutes:g} min", sampled >= args.minutes - 0.5 and not failure)]
    for name, pts in sorted(memory.points.items()):
        first = median_between(pts, w, w + 1)
        last = median_between(pts, sampled - 1, sampled)
        if first is None or last is None:
            continue
        growth = last / first - 1
        peak = max(y for x, y in pts if x >= w)
        why = " (the stand-in broker keeps every record in memory)" if name == "broker" else ""
        figures.append(Figure(
            f"memory growth after warm-up: {name} ({first:.0f} -> {last:.0f} MiB, peak "
            f"{peak:.0f}){why}", round(100 * growth, 1), "%", f"< {100 * args.max_growth:g}%",
            growth < args.max_growth))
    for flow, pts in sorted(lag.points.items()):
        after = [y for x, y in pts if x >= w]
        if not after:
            continue
        figures.append(Figure(
            f"lag after warm-up, max (median {statistics.median(after):.1f} s): {flow}",
            round(max(after), 1), "s of input", f"<= {args.max_lag_seconds:g} s",
            max(after) <= args.max_lag_seconds))
    n_errors = sum(int(str(v["errors"])) for v in logs.values())
    worst = ", ".join(f"{k} {v['errors']}" for k, v in logs.items() if v["errors"])
    figures.append(Figure(
        "error lines in the logs" + (f" ({worst})" if worst else ""), n_errors, "lines", "0",
        n_errors == 0))
    early = [str(e) for v in logs.values() for e in v.get("errors_during_start") or []]  # type: ignore[attr-defined]
    if early:
        figures.append(Figure(
            "error lines while the stack was starting (not counted above): " + " | ".join(
                e[-90:] for e in early[:3]), len(early), "lines"))
    figures.append(Figure(
        "processes that died" + (f" ({', '.join(died)})" if died else ""), len(died), "", "0",
        not died))
    ok = all(f.met is not False for f in figures)
    return figures, ok


if __name__ == "__main__":
    sys.exit(main())
