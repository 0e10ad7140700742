"""Time `dbt build` of the batch marts on one backfilled day at the default rates.

Starts a private embedded ClickHouse server on a free port, fills raw_trades and raw_quotes
with one UTC day at 10 trades/s and 50 quotes/s (864,000 trades, 4,320,000 quotes) generated
in ClickHouse, then prints the time of a full `dbt build`, of an incremental run after one late
hour, and the mart row counts. Target: full build <= 60 s.

    .venv/bin/python bench/dbt_build.py
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
        print(f"generated {TRADES:,} trades and {QUOTES:,} quotes in {time.monotonic() - t0:.1f}s")

        t0 = time.monotonic()
        assert run_dbt(settings, ["build", "--quiet"]) == 0, "dbt build failed"
        full = time.monotonic() - t0
        print(f"dbt build (one day, full): {full:.1f}s  (target <= 60 s)")
        print(f"  slowest: {_slowest(settings)}")

        late = DAY + timedelta(hours=13)
        insert_trades(c, "raw_trades", late, 3600, 3_600, first=10**9)
        insert_quotes(c, "raw_quotes", late, 3600, 18_000, first=10**9)
        t0 = time.monotonic()
        assert run_dbt(settings, ["build", "--quiet"]) == 0, "incremental dbt build failed"
        print(f"dbt build (incremental, one late hour): {time.monotonic() - t0:.1f}s")
        print(f"  slowest: {_slowest(settings)}")
        for table in ("fct_trades", "hourly_rollup", "daily_rollup", "rpt_daily_pnl"):
            print(f"  {table}: {int(str(c.command(f'SELECT count() FROM {table}'))):,} rows")
        c.close()
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
