"""Backfill end to end: generator → flows → ClickHouse → dbt build, wall time of each stage.

What `up --backfill START END` does, on a private stack (random ports, temporary state
directory; no Airflow): the stand-ins and `init`, then the six flows with recovery and the
generator backfilling [START, START + --hours) at the default rates (10 trades/s + 50
quotes/s of simulated time) as fast as it can, the flows reading while it writes. Then
`dbt build` of the marts. Stages, each timed from the moment the flows and the generator
are launched:

  * generator done: every record of the range is on the topics (the generator exited 0);
  * flows drained: every flow has read every record on the topics it reads;
  * ClickHouse complete: raw_trades and raw_quotes hold every trade and quote and the counts
    of every flow-written table have stopped changing;
  * dbt build: a full `dbt build` of the marts over what the flows stored.

Where the time goes: every `--sample` seconds (default 5) the run records, for each flow, the
records it has read and the CPU seconds of its process, and the CPU seconds of the generator,
the broker and the ClickHouse server. The result gives each flow's drain time, its CPU
seconds and records per CPU second, and charts of records read and CPU use over time.

`--max-minutes M` bounds the drain: when the flows have not read everything M minutes after
the launch, the run stops and reports what it measured up to then (each flow's share read and
its rate over the last minute) plus, labelled PROJECTION, when each flow would finish at that
rate; no end-to-end total is claimed then and the exit code is 1.

A full trading day (`--hours 24`: 864,000 trades + 4,320,000 quotes, 5.3M records with the
heartbeats) is the end-to-end figure of the issue; `make bench` runs it with `--max-minutes 9`
(about 6 minutes when measured on a busy 2-core machine). For a run of fewer than 24 hours an
estimate for the full day is printed too, labelled as such: the streaming stages scaled by
24 / hours plus the measured full-day dbt build of bench/dbt_build.py (when its result file
is there).

Run: .venv/bin/python bench/backfill_day.py [--hours 24] [--start 2026-11-24T00:00:00Z]
     [--sample 5] [--max-minutes M] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from benchlib import Figure, Series, add_json_option, emit, free_port
from soak import READS, Watermarks, flow_metrics, rss_mib

from flowforge_pipeline.dbt_runner import run_dbt
from flowforge_pipeline.flows.components import FLOW_NAMES
from flowforge_pipeline.generator.cli import generate_argv
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stack import local, process
from flowforge_pipeline.stack.components import UpOptions
from flowforge_pipeline.stack.registry import COMPONENTS
from flowforge_pipeline.stores import clickhouse as ch_store

TABLES = ("raw_trades", "raw_quotes", "vwap_5min", "rolling_volatility", "anomaly_alerts")
RESULTS = Path(__file__).resolve().parent / "results"


def counts(c: object) -> dict[str, int]:
    return {t: int(str(c.command(f"SELECT count() FROM {t}"))) for t in TABLES}  # type: ignore[attr-defined]


def cpu_seconds(rec: process.ProcessRecord) -> float | None:
    """User + system CPU seconds of a component's process and its children; None when gone."""
    try:
        proc = psutil.Process(rec.pid)
        if abs(proc.create_time() - rec.create_time) > 1.0:
            return None
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
    except psutil.Error:
        return None
    return float(total)


class Sampler(threading.Thread):
    """Every `interval` s: records read by each flow, CPU seconds and RSS of every component.

    `read[flow]`, `cpu[name]` and `rss[name]` are lists of (seconds since `t0`, value); a
    component that has exited keeps its last figures (the generator finishes first).
    """

    def __init__(self, settings: Settings, t0: float, interval: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.t0, self.interval = settings, t0, interval
        self.read: dict[str, list[tuple[float, float]]] = {}
        self.cpu: dict[str, list[tuple[float, float]]] = {}
        self.rss: dict[str, list[tuple[float, float]]] = {}
        self.halt = threading.Event()

    def sample(self) -> None:
        now = time.monotonic() - self.t0
        for rec in process.records(self.settings.state_path):
            secs = cpu_seconds(rec)
            if secs is not None:
                self.cpu.setdefault(rec.name, []).append((round(now, 2), round(secs, 2)))
            mib = rss_mib(rec)
            if mib is not None:
                self.rss.setdefault(rec.name, []).append((round(now, 2), round(mib, 1)))
        for flow in FLOW_NAMES:
            try:
                got, _ = flow_metrics(self.settings, flow)
            except OSError:
                continue
            total = sum(got.get(t, 0.0) for t in READS[flow])
            self.read.setdefault(flow, []).append((round(now, 2), total))

    def run(self) -> None:
        while not self.halt.is_set():
            t = time.monotonic()
            self.sample()
            self.halt.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        self.sample()


def rate_over(points: list[tuple[float, float]], seconds: float) -> float:
    """Mean slope (per second) of `points` over their last `seconds`."""
    if len(points) < 2:
        return 0.0
    t_end, v_end = points[-1]
    start = next(((t, v) for t, v in points if t >= t_end - seconds), points[0])
    return (v_end - start[1]) / (t_end - start[0]) if t_end > start[0] else 0.0


def where_time_goes(
    sampler: Sampler, need: dict[str, int], drained_at: dict[str, float],
) -> tuple[list[Figure], dict[str, object]]:
    """Per flow: drain time (or share read), CPU seconds, records per CPU second.

    CPU seconds are each process's own since it started (its start-up included).
    """
    figures: list[Figure] = []
    detail: dict[str, object] = {}
    for flow in FLOW_NAMES:
        pts = sampler.read.get(flow, [])
        cpu = sampler.cpu.get(f"flow-{flow}", [])
        read = pts[-1][1] if pts else 0.0
        used = max(c for _, c in cpu) if cpu else 0.0
        per_cpu = read / used if used > 0 else 0.0
        wall = cpu[-1][0] - cpu[0][0] if len(cpu) >= 2 else 0.0
        row: dict[str, object] = {
            "records_to_read": need[flow], "records_read": int(read),
            "cpu_seconds": round(used, 1), "records_per_cpu_second": round(per_cpu),
            "mean_cores": round(used / wall, 2) if wall else None,
        }
        if flow in drained_at:
            row["drained_at_seconds"] = round(drained_at[flow], 1)
            figures.append(Figure(
                f"where the time goes: {flow} drained at (CPU {used:.1f} s, "
                f"{per_cpu:,.0f} records per CPU-second)", round(drained_at[flow], 1), "s"))
        else:
            rate = rate_over(pts, 60.0)
            left = need[flow] - read
            row["rate_last_minute"] = round(rate)
            row["projected_drain_seconds"] = (
                round(pts[-1][0] + left / rate) if rate > 0 and pts else None)
            proj = (f"PROJECTION at that rate: done at {pts[-1][0] + left / rate:,.0f} s"
                    if rate > 0 and pts else "no progress in the last minute")
            figures.append(Figure(
                f"where the time goes: {flow} NOT drained, read {100 * read / need[flow]:.1f} % "
                f"at the stop, {rate:,.0f} records/s over the last minute (CPU {used:.1f} s, "
                f"{per_cpu:,.0f} records per CPU-second); {proj}",
                round(100 * read / need[flow], 1), "% read"))
        detail[flow] = row
    others = {}
    for name in ("generator", "broker", "clickhouse", "postgres", "valkey"):
        pts = sampler.cpu.get(name, [])
        if len(pts) >= 2:
            others[name] = round(max(c for _, c in pts), 1)
    detail["cpu_seconds_other_components"] = others
    if others:
        figures.append(Figure(
            "where the time goes: CPU seconds of the other components over the run ("
            + ", ".join(f"{k} {v:g}" for k, v in others.items()) + ")",
            round(sum(others.values()), 1), "s"))
    return figures, detail


def cpu_series(sampler: Sampler) -> Series:
    """Cores used by each component between two samples."""
    out = Series("seconds since the launch", "cores used")
    for name, pts in sorted(sampler.cpu.items()):
        line = [(round(t1 / 1, 1), round(max(0.0, c1 - c0) / (t1 - t0), 2))
                for (t0, c0), (t1, c1) in zip(pts, pts[1:], strict=False) if t1 > t0]
        if line:
            out.points[name] = line
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours to backfill")
    parser.add_argument("--start", default="2026-11-24T00:00:00Z")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per stage")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop and report progress if the flows have not drained by then")
    add_json_option(parser)
    args = parser.parse_args()
    start = datetime.fromisoformat(args.start.replace("Z", "+00:00")).astimezone(UTC)
    end = start + timedelta(hours=args.hours)

    state = Path(tempfile.mkdtemp(prefix="flowforge-backfill-"))
    state.chmod(0o755)
    settings = Settings(
        FLOWFORGE_STATE_DIR=str(state), LOCAL_KAFKA_PORT=free_port(),
        LOCAL_CLICKHOUSE_PORT=free_port(), LOCAL_POSTGRES_PORT=free_port(),
        LOCAL_REDIS_PORT=free_port(), LOCAL_AIRFLOW_PORT=free_port(),
        LOCAL_FLOW_METRICS_PORT=free_port(),
    )
    options = UpOptions(generator_args=tuple(generate_argv(seed=args.seed, backfill=(start, end))))
    stages: dict[str, float] = {}
    extra: dict[str, object] = {"start": start.isoformat(), "end": end.isoformat(),
                                "hours": args.hours, "seed": args.seed}
    figures: list[Figure] = []
    series: dict[str, Series] = {}
    sampler: Sampler | None = None
    ok = True
    t_stack = time.monotonic()
    try:
        local.up(settings, echo=lambda _: None, stages=("service",))
        stack_seconds = time.monotonic() - t_stack
        apps = [c for c in COMPONENTS if c.stage == "app" and c.name != "airflow"]
        t0 = time.monotonic()
        sampler = Sampler(settings, t0, args.sample)
        sampler.start()
        local._start_stage(settings, apps, options, lambda _: None)  # noqa: SLF001
        stages["flows and generator started"] = time.monotonic() - t0
        bound = t0 + args.max_minutes * 60 if args.max_minutes else None

        def wait(what: str, done: object) -> None:
            deadline = time.monotonic() + args.timeout
            if bound is not None:
                deadline = min(deadline, bound)
            while not done():  # type: ignore[operator]
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{what}: not done after {time.monotonic() - t0:.0f}s"
                        + (" (--max-minutes)" if deadline == bound else ""))
                time.sleep(0.25)
            stages[what] = time.monotonic() - t0
            print(f"{stages[what]:8.1f}s  {what}", flush=True)

        def generator_done() -> bool:
            code = process.finished_code(state, "generator")
            if code not in (None, 0):
                raise RuntimeError(f"generator exited {code}; see {state}/logs/generator.log")
            return code == 0

        wait("generator done", generator_done)
        marks = Watermarks(settings, ("trades", "quotes"))
        on_topics = marks.totals()
        marks.close()
        extra["records_on_topics"] = on_topics

        need = {f: sum(on_topics[t] for t in READS[f]) for f in FLOW_NAMES}
        drained_at: dict[str, float] = {}

        def drained() -> bool:
            for flow in FLOW_NAMES:
                if flow in drained_at:
                    continue
                try:
                    read, _ = flow_metrics(settings, flow)
                except OSError:
                    continue
                if all(read.get(t, 0.0) >= on_topics[t] for t in READS[flow]):
                    drained_at[flow] = time.monotonic() - t0
                    print(f"{drained_at[flow]:8.1f}s  {flow} drained", flush=True)
            return len(drained_at) == len(FLOW_NAMES)

        try:
            wait("flows drained", drained)
        finally:
            sampler.stop()
            series["backfill_flow_read"] = Series(
                "seconds since the launch", "records read", dict(sampler.read))
            series["backfill_cpu"] = cpu_series(sampler)
            series["backfill_memory"] = Series(
                "seconds since the launch", "RSS (MiB)", dict(sampler.rss))
            found, extra["where_time_goes"] = where_time_goes(sampler, need, drained_at)
            figures += found
        c = ch_store.client(settings)
        last: list[tuple[float, dict[str, int]]] = []  # (seconds, counts) at each change

        def settled() -> bool:
            now, got = time.monotonic() - t0, counts(c)
            if not last or last[-1][1] != got:
                last.append((now, got))
            return now - last[-1][0] >= 3.0  # unchanged for 3 s

        wait("ClickHouse complete", settled)
        # complete at the first sample that showed the final counts
        stages["ClickHouse complete"] = last[-1][0]
        rows = last[-1][1]
        extra["rows"] = rows
        t_dbt = time.monotonic()
        code = run_dbt(settings, ["build", "--quiet"])
        dbt_seconds = time.monotonic() - t_dbt
        if code != 0:
            raise RuntimeError(f"dbt build exited {code}")
        stages["dbt build done"] = stages["ClickHouse complete"] + dbt_seconds
        extra["marts"] = {t: int(str(c.command(f"SELECT count() FROM {t}")))
                          for t in ("fct_trades", "hourly_rollup", "daily_rollup",
                                    "rpt_daily_pnl")}
        c.close()
        produced = sum(on_topics.values())
        label = "one trading day" if args.hours >= 24 else f"{args.hours:g} h of a trading day"
        figures[:0] = [
            Figure(f"backfill {label}: records on the topics (trades + quotes + heartbeats)",
                   produced, "records"),
            Figure(f"backfill {label}: rows raw_trades / raw_quotes",
                   f"{rows['raw_trades']:,} / {rows['raw_quotes']:,}"),
            Figure(f"backfill {label}: generator done", round(stages["generator done"], 1), "s"),
            Figure(f"backfill {label}: six flows drained (with the generator)",
                   round(stages["flows drained"], 1), "s"),
            Figure(f"backfill {label}: ClickHouse complete",
                   round(stages["ClickHouse complete"], 1), "s"),
            Figure(f"backfill {label}: dbt build", round(dbt_seconds, 1), "s"),
            Figure(f"backfill {label}: total, generator start to marts built",
                   round(stages["dbt build done"], 1), "s"),
            Figure(f"backfill {label}: end to end rate through the flows",
                   round(produced / stages["flows drained"]), "records/s"),
            Figure("local stack start (services + init), not in the total",
                   round(stack_seconds, 1), "s"),
        ]
        if args.hours < 24:
            scale = 24 / args.hours
            stream = stages["ClickHouse complete"] * scale
            day_dbt = None
            try:
                doc = json.loads((RESULTS / "dbt_build.json").read_text())
                day_dbt = next(float(f["value"]) for f in doc["figures"]
                               if str(f["name"]).startswith("dbt build, one backfilled day"))
            except (OSError, ValueError, KeyError, StopIteration):
                pass
            figures.append(Figure(
                f"ESTIMATE, not measured: one full day, generator → ClickHouse complete "
                f"(measured {args.hours:g} h × {scale:g})", round(stream), "s"))
            if day_dbt is not None:
                figures.append(Figure(
                    "ESTIMATE, not measured: one full day end to end (the above + dbt build of "
                    "one day from bench/dbt_build.py)", round(stream + day_dbt), "s"))
        extra["stages_seconds"] = {k: round(v, 1) for k, v in stages.items()}
    except Exception as exc:  # noqa: BLE001 - reported, then the stack is stopped
        ok = False
        extra["failure"] = f"{type(exc).__name__}: {exc}"
        print(f"backfill failed: {extra['failure']}", file=sys.stderr)
    finally:
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        local.down(settings, echo=lambda _: None)
    extra["stages_seconds"] = {k: round(v, 1) for k, v in stages.items()}
    if not ok and "generator done" in stages:
        figures.insert(0, Figure(
            f"backfill {args.hours:g} h: generator done", round(stages["generator done"], 1), "s"))
    for f in figures:
        print(f"{f.name}: {f.value} {f.unit}")
    emit(args.json, "backfill_day", figures, series=series, extra=extra)
    if ok:
        import shutil

        shutil.rmtree(state, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
