"""Time `dbt build` of the batch marts on one backfilled day at the default rates.

Starts a private embedded ClickHouse server on a free port, fills raw_trades and raw_quotes
with one UTC day at 10 trades/s and 50 quotes/s (864,000 trades, 4,320,000 quotes) generated
in ClickHouse, then prints the time of a full `dbt build`, of an incremental run after one late
hour (unless `--no-incremental`), and the mart row counts. Target: full build <= 60 s.

    .venv/bin/python bench/dbt_build.py [--no-incremental] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchlib import Figure, add_json_option, emit

from flowforge_pipeline.contract.apply import init_clickhouse
from flowforge_pipeline.dbt_runner import run_dbt
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stores.clickhouse import client
from flowforge_pipeline.synthetic import insert_quotes, insert_trades

DAY = datetime(2025, 3, 3, tzinfo=UTC)
TRADES, QUOTES = 864_000, 4_320_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _slowest(settings: Settings, n: int = 4) -> str:
    """The `n` slowest nodes of the last dbt run, from its run_results.json."""
    path = settings.state_path / "dbt" / "target" / "run_results.json"
    results = json.loads(path.read_text())["results"]
    top = sorted(results, key=lambda r: -r["execution_time"])[:n]
    return ", ".join(f"{r['unique_id'].split('.')[-1]} {r['execution_time']:.1f}s" for r in top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-incremental", action="store_true",
                        help="skip the incremental build after one late hour")
    add_json_option(parser)
    args = parser.parse_args()
    figures: list[Figure] = []
    extra: dict[str, object] = {"trades": TRADES, "quotes": QUOTES, "day": DAY.date().isoformat()}
    state = Path(tempfile.mkdtemp(prefix="flowforge-bench-"))
    port = _free_port()
    settings = Settings(FLOWFORGE_STATE_DIR=str(state), LOCAL_CLICKHOUSE_PORT=port)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowforge_pipeline.standins.clickhouse_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(state / "clickhouse"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        init_clickhouse(settings)
        c = client(settings)
        t0 = time.monotonic()
        insert_trades(c, "raw_trades", DAY, 86_400, TRADES)
        insert_quotes(c, "raw_quotes", DAY, 86_400, QUOTES)
        generated = time.monotonic() - t0
        print(f"generated {TRADES:,} trades and {QUOTES:,} quotes in {generated:.1f}s")
        extra["generate_seconds"] = round(generated, 1)

        t0 = time.monotonic()
        assert run_dbt(settings, ["build", "--quiet"]) == 0, "dbt build failed"
        full = time.monotonic() - t0
        print(f"dbt build (one day, full): {full:.1f}s  (target <= 60 s)")
        print(f"  slowest: {_slowest(settings)}")
        figures.append(Figure(
            f"dbt build, one backfilled day ({TRADES:,} trades, {QUOTES:,} quotes), full",
            round(full, 1), "s", "<= 60 s", full <= 60))
        extra["slowest_full"] = _slowest(settings)
        if args.no_incremental:
            _counts(c, figures)
            c.close()
            return
        late = DAY + timedelta(hours=13)
        insert_trades(c, "raw_trades", late, 3600, 3_600, first=10**9)
        insert_quotes(c, "raw_quotes", late, 3600, 18_000, first=10**9)
        t0 = time.monotonic()
        assert run_dbt(settings, ["build", "--quiet"]) == 0, "incremental dbt build failed"
        incremental = time.monotonic() - t0
        print(f"dbt build (incremental, one late hour): {incremental:.1f}s")
        print(f"  slowest: {_slowest(settings)}")
        figures.append(Figure("dbt build, incremental after one late hour",
                              round(incremental, 1), "s"))
        extra["slowest_incremental"] = _slowest(settings)
        _counts(c, figures)
        c.close()
    finally:
        server.terminate()
        server.wait(30)
        emit(args.json, "dbt_build", figures, extra=extra)


def _counts(c: Any, figures: list[Figure]) -> None:
    for table in ("fct_trades", "hourly_rollup", "daily_rollup", "rpt_daily_pnl"):
        n = int(str(c.command(f"SELECT count() FROM {table}")))
        print(f"  {table}: {n:,} rows")
        figures.append(Figure(f"{table} rows", n, "rows"))


if __name__ == "__main__":
    main()
