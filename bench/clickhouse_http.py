"""Benchmark the embedded ClickHouse's HTTP interface.

Prints the SELECT 1 round trip (p50/p95) through clickhouse-connect over HTTP, and the
throughput of a 1M-row insert in 10k-row batches over HTTP versus clickhouse-connect's
in-process chdb client (`clickhouse_connect.get_client(interface="chdb", ...)`), which is
the same engine without the HTTP hop. The in-process run needs its own process: chdb
allows one engine per process, and this process already hosts the server's.

Run: .venv/bin/python bench/clickhouse_http.py
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import clickhouse_connect

ROWS = 1_000_000
BATCH = 10_000


def make_batches() -> list[list[tuple[int, str, float]]]:
    return [
        [(i, f"sym{i % 500}", i * 0.5) for i in range(start, start + BATCH)]
        for start in range(0, ROWS, BATCH)
    ]


def insert_all(client: object) -> float:
    batches = make_batches()
    client.command(  # type: ignore[attr-defined]
        "CREATE TABLE bench (id UInt64, sym String, px Float64) ENGINE = MergeTree ORDER BY id"
    )
    # warm up: first parts, first connections and code paths, outside the timing
    client.command(  # type: ignore[attr-defined]
        "CREATE TABLE warm (id UInt64, sym String, px Float64) ENGINE = MergeTree ORDER BY id"
    )
    for batch in batches[:5]:
        client.insert("warm", batch, column_names=["id", "sym", "px"])  # type: ignore[attr-defined]
    start = time.perf_counter()
    for batch in batches:
        client.insert("bench", batch, column_names=["id", "sym", "px"])  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - start
    assert client.command("SELECT count() FROM bench") == ROWS  # type: ignore[attr-defined]
    return elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_client(port: int) -> object:
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
    return clickhouse_connect.get_client(host="127.0.0.1", port=port)


def in_process(data_dir: str) -> None:
    client = clickhouse_connect.get_client(interface="chdb", path=data_dir)
    print(json.dumps({"seconds": insert_all(client)}))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        # The server runs as its own process, as in the local stack: client and server
        # must not share one interpreter lock.
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flowforge_pipeline.standins.clickhouse_server",
                "--port",
                str(port),
                "--data-dir",
                str(Path(tmp) / "http"),
            ],
            stderr=subprocess.DEVNULL,
        )
        try:
            client = wait_for_client(port)
            for _ in range(200):
                client.query("SELECT 1")
            samples = []
            for _ in range(2000):
                t0 = time.perf_counter()
                client.query("SELECT 1")
                samples.append((time.perf_counter() - t0) * 1000)
            q = statistics.quantiles(samples, n=100)
            print(
                f"SELECT 1 round trip over HTTP: p50 {q[49]:.2f} ms, p95 {q[94]:.2f} ms "
                f"({len(samples)} queries)"
            )
            http_s = insert_all(client)
        finally:
            server.terminate()
            server.wait()
        out = subprocess.run(
            [sys.executable, __file__, "--in-process", str(Path(tmp) / "local")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        local_s = json.loads(out.strip().splitlines()[-1])["seconds"]
    http_rate, local_rate = ROWS / http_s, ROWS / local_s
    print(f"1M rows in {BATCH}-row batches over HTTP: {http_s:.2f} s ({http_rate:,.0f} rows/s)")
    print(
        f"1M rows in {BATCH}-row batches in-process (clickhouse-connect chdb client): "
        f"{local_s:.2f} s ({local_rate:,.0f} rows/s)"
    )
    print(f"HTTP / in-process throughput ratio: {http_rate / local_rate:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--in-process":
        in_process(sys.argv[2])
    else:
        main()
