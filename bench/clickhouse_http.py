"""Benchmark the embedded ClickHouse's HTTP interface.

Prints the SELECT 1 round trip (p50/p95) through clickhouse-connect over HTTP, and the
throughput of a 1M-row insert in 10k-row batches over HTTP versus clickhouse-connect's
in-process chdb client (`clickhouse_connect.get_client(interface="chdb", ...)`), which is
the same engine without the HTTP hop.

Both sides make the same call (`client.insert(table, batch, column_names=...)`) on the same
batch objects, built before the clock starts. The in-process client needs its own process
(chdb allows one engine per process, and the server owns one), so it runs as a worker that
waits for orders; the rounds alternate between the two sides (HTTP first in odd rounds,
in-process first in even ones), and the ratio is taken per round, so load from other work on
the machine weighs on both alike. The reported ratio is the median of the rounds.

The HTTP client uses clickhouse-connect's defaults (lz4-compressed inserts) unless
`--compress` says otherwise; the setting is printed with the figures.

Before each timed insert both engines are left to finish their background merges, and each
round's table is dropped once counted, so one side's merges never run during the other
side's timing.

Run: .venv/bin/python bench/clickhouse_http.py [--rounds 5] [--compress lz4|zstd|none]
     [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import clickhouse_connect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import Figure, add_json_option, emit, free_port  # noqa: E402

ROWS = 1_000_000
BATCH = 10_000
COLUMNS = ["id", "sym", "px"]
SELECT1_TARGET_MS = 2.0
RATIO_TARGET = 0.9


def make_batches() -> list[list[tuple[int, str, float]]]:
    return [
        [(i, f"sym{i % 500}", i * 0.5) for i in range(start, start + BATCH)]
        for start in range(0, ROWS, BATCH)
    ]


def create(client: Any, table: str) -> None:
    client.command(
        f"CREATE TABLE {table} (id UInt64, sym String, px Float64) ENGINE = MergeTree ORDER BY id"
    )


def warm_up(client: Any, batches: list[list[tuple[int, str, float]]]) -> None:
    """First parts, first connections and code paths, outside the timing."""
    create(client, "warm")
    for batch in batches[:5]:
        client.insert("warm", batch, column_names=COLUMNS)


def settle(client: Any, timeout: float = 10.0) -> None:
    """Wait until the engine runs no background merges (outside the timing).

    Parts of an earlier round are merged in the background; those merges would take CPU
    from whichever side runs next on this 2-core machine, and they are no part of the
    insert being timed.
    """
    deadline = time.monotonic() + timeout
    while client.command("SELECT count() FROM system.merges") and time.monotonic() < deadline:
        time.sleep(0.05)


def timed_insert(client: Any, table: str, batches: list[list[tuple[int, str, float]]]) -> float:
    create(client, table)
    start = time.perf_counter()
    for batch in batches:
        client.insert(table, batch, column_names=COLUMNS)
    elapsed = time.perf_counter() - start
    count = client.command(f"SELECT count() FROM {table}")
    if count != ROWS:
        raise SystemExit(f"{table}: {count} rows stored, {ROWS} inserted")
    # Its parts would be merged in the background while the other side runs.
    client.command(f"DROP TABLE {table} SYNC")
    return elapsed


def wait_for_client(port: int, compress: str) -> Any:
    # Poll /ping first: a client created before the server listens logs a driver error.
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=port, compress=False if compress == "none" else compress
    )


def worker(data_dir: str) -> None:
    """The in-process side: one order per line on stdin (`run TABLE`, `settle`), JSON out."""
    client = clickhouse_connect.get_client(interface="chdb", path=data_dir)
    gc.freeze()  # as in main(): the setup's objects weigh on no collection
    batches = make_batches()
    warm_up(client, batches)
    settle(client)
    print("ready", flush=True)
    for line in sys.stdin:
        order = line.split()
        if order[0] == "settle":
            settle(client)
            print(json.dumps({"settled": True}), flush=True)
        else:
            print(json.dumps({"seconds": timed_insert(client, order[1], batches)}), flush=True)


class Worker:
    """The in-process client's process."""

    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"in-process worker exited with {self.proc.wait()}")
        return line

    def insert(self, table: str) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {table}\n")
        self.proc.stdin.flush()
        return float(json.loads(self._read())["seconds"])

    def settle(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("settle\n")
        self.proc.stdin.flush()
        self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def select1(client: Any) -> tuple[float, float, int]:
    for _ in range(200):
        client.query("SELECT 1")
    samples = []
    for _ in range(2000):
        t0 = time.perf_counter()
        client.query("SELECT 1")
        samples.append((time.perf_counter() - t0) * 1000)
    q = statistics.quantiles(samples, n=100)
    return q[49], q[94], len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="insert rounds per side")
    parser.add_argument(
        "--compress", choices=["lz4", "zstd", "none"], default="lz4",
        help="the HTTP client's compression (clickhouse-connect's default: lz4)",
    )
    add_json_option(parser)
    args = parser.parse_args()

    http_s: list[float] = []
    local_s: list[float] = []
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="flowforge-chbench-") as tmp:
        port = free_port()
        # free_port loads the pipeline's stack modules into this process only; frozen, their
        # objects are not traversed by this process's collections, which run every few
        # inserts over the prebuilt batches on both sides alike and would otherwise cost the
        # HTTP side alone ~20 ms more each (~5 % of its time). The worker freezes its setup
        # the same way, before building its batches.
        gc.freeze()
        # The server runs as its own process, as in the local stack: client and server
        # must not share one interpreter lock.
        server = subprocess.Popen(
            [
                sys.executable, "-m", "flowforge_pipeline.standins.clickhouse_server",
                "--port", str(port), "--data-dir", str(Path(tmp) / "http"),
            ],
            stderr=subprocess.DEVNULL,
        )
        batches = make_batches()  # while the server starts
        local = None
        try:
            client = wait_for_client(port, args.compress)
            p50, p95, n = select1(client)
            print(f"SELECT 1 round trip over HTTP: p50 {p50:.2f} ms, p95 {p95:.2f} ms ({n} runs)")
            warm_up(client, batches)
            local = Worker(Path(tmp) / "local")
            for r in range(args.rounds):
                loads.append(os.getloadavg()[0])
                table = f"bench_{r}"

                def run_http(table: str = table, worker: Worker = local) -> float:
                    settle(client)
                    worker.settle()
                    return timed_insert(client, table, batches)

                def run_local(table: str = table, worker: Worker = local) -> float:
                    settle(client)
                    worker.settle()
                    return worker.insert(table)

                if r % 2 == 0:
                    h = run_http()
                    s = run_local()
                else:
                    s = run_local()
                    h = run_http()
                http_s.append(h)
                local_s.append(s)
                print(
                    f"round {r + 1}: HTTP {h:.2f} s ({ROWS / h:,.0f} rows/s), in-process "
                    f"{s:.2f} s ({ROWS / s:,.0f} rows/s), ratio {s / h:.2f} "
                    f"(load average {loads[-1]:.1f})",
                    flush=True,
                )
        finally:
            if local is not None:
                local.close()
            server.terminate()
            server.wait()

    ratios = [s / h for h, s in zip(http_s, local_s, strict=True)]
    ratio = statistics.median(ratios)
    http_rate = ROWS / statistics.median(http_s)
    local_rate = ROWS / statistics.median(local_s)
    print(
        f"1M rows in {BATCH}-row batches over HTTP (compress={args.compress}), median of "
        f"{args.rounds}: {ROWS / http_rate:.2f} s ({http_rate:,.0f} rows/s)"
    )
    print(
        f"1M rows in {BATCH}-row batches in-process (clickhouse-connect chdb client), median of "
        f"{args.rounds}: {ROWS / local_rate:.2f} s ({local_rate:,.0f} rows/s)"
    )
    print(
        f"HTTP / in-process throughput ratio: {ratio:.2f} (median of rounds "
        f"{', '.join(f'{x:.2f}' for x in ratios)}; target >= {RATIO_TARGET})"
    )
    emit(
        args.json,
        "clickhouse_http",
        [
            Figure("SELECT 1 round trip over HTTP, p50", round(p50, 2), "ms",
                   f"<= {SELECT1_TARGET_MS:g} ms", p50 <= SELECT1_TARGET_MS),
            Figure("SELECT 1 round trip over HTTP, p95", round(p95, 2), "ms"),
            Figure(f"1M-row insert in 10k batches over HTTP (compress={args.compress})",
                   round(http_rate), "rows/s"),
            Figure("1M-row insert in 10k batches, in-process chdb client",
                   round(local_rate), "rows/s"),
            Figure("HTTP / in-process insert throughput", round(ratio, 2), "x",
                   f">= {RATIO_TARGET}", ratio >= RATIO_TARGET),
        ],
        extra={
            "compress": args.compress,
            "rounds": args.rounds,
            "http_seconds": [round(x, 3) for x in http_s],
            "in_process_seconds": [round(x, 3) for x in local_s],
            "ratios": [round(x, 3) for x in ratios],
            "load_average_per_round": [round(x, 2) for x in loads],
        },
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
