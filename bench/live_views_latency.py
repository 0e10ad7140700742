"""Event → row visible to a psycopg reader, for the live-views flow at the default rates.

A private local stack (services only), the live-views flow started as `up` starts it
(its own process, recovery on), and the real generator in real time at its default rates
(10 trades/s + 50 quotes/s over the instrument universe) → broker → flow → Postgres.
A reader on its own autocommit connection polls `live_quotes` and `live_positions` every
`--poll-ms`; whenever a row shows a newer `quote_time` / `last_trade_time` than before, the
latency is the reader's clock minus that event time (the generator stamps event time with
the wall clock when it emits). Polling adds up to one poll interval. Quotes the flow
superseded within one batch are never visible and so are not counted.

Run: .venv/bin/python bench/live_views_latency.py [--seconds 90] [--warmup 10] [--poll-ms 5]
     [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from benchlib import Figure, add_json_option, emit, private_stack, stop_private_stack

from flowforge_pipeline.flows.components import FLOW_COMPONENTS
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stack.components import UpOptions

#: Event → row visible to a reader, p99 (ms), at the default rates.
TARGET_P99_MS = 500.0



def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def start_flow(settings: Settings, logdir: Path) -> subprocess.Popen:
    comp = next(c for c in FLOW_COMPONENTS if c.name == "flow-live_views")
    assert comp.prepare is not None
    comp.prepare(settings)
    log = (logdir / "flow-live_views.log").open("ab")
    proc = subprocess.Popen(comp.argv(settings, UpOptions()),
                            env={**os.environ, **comp.env(settings)},
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            comp.ready(settings)
            return proc
        except Exception:  # noqa: BLE001
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def start_generator(settings: Settings, logdir: Path) -> subprocess.Popen:
    log = (logdir / "generator.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "flowforge_pipeline.cli", "generate"],
                            env={**os.environ, **settings.as_env()},
                            stdout=log, stderr=subprocess.STDOUT)


def measure(settings: Settings, seconds: float, warmup: float, poll_s: float
            ) -> dict[str, object]:
    quotes_ms: list[float] = []
    positions_ms: list[float] = []
    seen_q: dict[str, datetime] = {}
    seen_p: dict[tuple[str, str], datetime] = {}
    polls = 0
    with psycopg.connect(settings.postgres, autocommit=True) as conn:
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < warmup + seconds:
            q_rows = conn.execute("SELECT symbol, quote_time FROM live_quotes").fetchall()
            p_rows = conn.execute(
                "SELECT account, symbol, last_trade_time FROM live_positions").fetchall()
            now = datetime.now(UTC)
            counting = elapsed >= warmup
            polls += 1
            for sym, at in q_rows:
                if seen_q.get(sym) != at:
                    if counting and sym in seen_q:
                        quotes_ms.append((now - at).total_seconds() * 1000)
                    seen_q[sym] = at
            for acct, sym, at in p_rows:
                if seen_p.get((acct, sym)) != at:
                    if counting and (acct, sym) in seen_p:
                        positions_ms.append((now - at).total_seconds() * 1000)
                    seen_p[(acct, sym)] = at
            time.sleep(poll_s)
    both = quotes_ms + positions_ms
    return {
        "measured_seconds": seconds,
        "reader_polls": polls,
        "event_to_visible_ms_p50_p99_n": {
            "live_quotes": (pct(quotes_ms, 0.5), pct(quotes_ms, 0.99), len(quotes_ms)),
            "live_positions": (pct(positions_ms, 0.5), pct(positions_ms, 0.99),
                               len(positions_ms)),
            "all": (pct(both, 0.5), pct(both, 0.99), len(both)),
        },
    }


def write_json(path: Path | None, results: dict[str, object]) -> None:
    """p50 and p99 per table and over both, p99 against the 500 ms target."""
    figures = []
    per_table = results["event_to_visible_ms_p50_p99_n"]
    assert isinstance(per_table, dict)
    for name, (p50, p99, n) in per_table.items():
        what = "both tables" if name == "all" else name
        figures.append(Figure(f"event → row visible to a psycopg reader, {what}: p50 (n={n})",
                              p50, "ms"))
        figures.append(Figure(f"event → row visible to a psycopg reader, {what}: p99", p99,
                              "ms", f"<= {TARGET_P99_MS:.0f} ms", p99 <= TARGET_P99_MS))
    emit(path, "live_views_latency", figures, extra=results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=10.0, help="ignored first seconds")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="reader poll interval")
    add_json_option(parser)
    args = parser.parse_args()
    state, settings = private_stack("flowforge-bench-")
    procs: list[subprocess.Popen] = []
    try:
        procs.append(start_flow(settings, state))
        procs.append(start_generator(settings, state))
        results: dict[str, object] = {
            "cores": os.cpu_count(),
            "rates": {"trades_per_second": settings.generator_trades_per_second,
                      "quotes_per_second": settings.generator_quotes_per_second},
            **measure(settings, args.seconds, args.warmup, args.poll_ms / 1000.0),
        }
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"a process exited early; logs in {state}")
        print(json.dumps(results, indent=2))
        write_json(args.json, results)
    finally:
        stop_private_stack(settings, procs)


if __name__ == "__main__":
    main()
