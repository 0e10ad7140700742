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

A full trading day (`--hours 24`: 864,000 trades + 4,320,000 quotes) takes longer than the
whole `make bench` budget on a 2-core machine, so `make bench` backfills one hour and also
prints an estimate for the full day, labelled as such: the streaming stages scaled by
24 / hours plus the measured full-day dbt build of bench/dbt_build.py (when its result file
is there).

Run: .venv/bin/python bench/backfill_day.py [--hours 24] [--start 2026-11-24T00:00:00Z]
     [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchlib import Figure, add_json_option, emit, free_port
from soak import READS, Watermarks, flow_metrics

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours to backfill")
    parser.add_argument("--start", default="2026-11-24T00:00:00Z")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per stage")
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
    ok = True
    t_stack = time.monotonic()
    try:
        local.up(settings, echo=lambda _: None, stages=("service",))
        stack_seconds = time.monotonic() - t_stack
        apps = [c for c in COMPONENTS if c.stage == "app" and c.name != "airflow"]
        t0 = time.monotonic()
        local._start_stage(settings, apps, options, lambda _: None)  # noqa: SLF001
        stages["flows and generator started"] = time.monotonic() - t0

        def wait(what: str, done: object) -> None:
            deadline = time.monotonic() + args.timeout
            while not done():  # type: ignore[operator]
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{what}: not done after {args.timeout:.0f}s")
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

        def drained() -> bool:
            for flow in FLOW_NAMES:
                try:
                    read, _ = flow_metrics(settings, flow)
                except OSError:
                    return False
                if any(read.get(t, 0.0) < on_topics[t] for t in READS[flow]):
                    return False
            return True

        wait("flows drained", drained)
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
        figures += [
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
        local.down(settings, echo=lambda _: None)
    for f in figures:
        print(f"{f.name}: {f.value} {f.unit}")
    emit(args.json, "backfill_day", figures, extra=extra)
    if ok:
        import shutil

        shutil.rmtree(state, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
