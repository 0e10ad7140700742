"""Benchmark the embedded ClickHouse's HTTP interface.

Prints the SELECT 1 round trip (p50/p95) through clickhouse-connect over HTTP, and the
throughput of a 1M-row insert in 10k-row batches over HTTP versus clickhouse-connect's
in-process chdb client (`clickhouse_connect.get_client(interface="chdb", ...)`), which is
the same engine without the HTTP hop.

Two HTTP clients are timed: one with `compress=False`, as the pipeline's sinks insert into
the local server (and like the in-process client, which hands the engine uncompressed
Native bytes), and one with clickhouse-connect's default lz4 compression of every insert
body, which adds the client's compression and the server's decompression to each batch.

Every side makes the same call (`client.insert(table, batch, column_names=...)`) on the
same batch objects, built before the clock starts and frozen out of the garbage collector
(otherwise every full collection traverses the million prebuilt rows, ~40 ms each, in
whichever process is timing). The in-process client needs its own process (chdb allows one
engine per process, and the server owns one), so it runs as a worker that waits for
orders. Each round times the three sides in a different order (all six orders over six
rounds), and each ratio is taken per round, so load from other work on the machine weighs
on all sides alike. The reported ratios are the medians of the rounds.

Before each timed insert both engines are left to finish their background merges, and each
round's table is dropped once counted, so one side's merges never run during another
side's timing.

Run: .venv/bin/python bench/clickhouse_http.py [--rounds 6] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import itertools
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
# The timed sides: the two HTTP clients (by their `compress` argument) and the worker.
PLAIN, LZ4, LOCAL = "HTTP, compress=False", "HTTP, lz4 (default)", "in-process"
TABLE = {PLAIN: "plain", LZ4: "lz4", LOCAL: "local"}


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


def wait_for_client(port: int, compress: str | bool) -> Any:
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
    return clickhouse_connect.get_client(host="127.0.0.1", port=port, compress=compress)


def worker(data_dir: str) -> None:
    """The in-process side: one order per line on stdin (`run TABLE`, `settle`), JSON out."""
    client = clickhouse_connect.get_client(interface="chdb", path=data_dir)
    batches = make_batches()
    gc.freeze()  # as in main(): the setup's objects and the batches weigh on no collection
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
    parser.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="insert rounds; each times every side once, in a different order",
    )
    add_json_option(parser)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")

    seconds: dict[str, list[float]] = {PLAIN: [], LZ4: [], LOCAL: []}
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="flowforge-chbench-") as tmp:
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
        batches = make_batches()  # while the server starts
        # Frozen, the setup's objects (the stack's modules free_port loaded, the batches)
        # are not traversed by this process's collections; the worker does the same.
        gc.freeze()
        local = None
        try:
            plain = wait_for_client(port, False)
            lz4 = wait_for_client(port, "lz4")
            p50, p95, n = select1(lz4)
            print(f"SELECT 1 round trip over HTTP: p50 {p50:.2f} ms, p95 {p95:.2f} ms ({n} runs)")
            warm_up(plain, batches)
            for batch in batches[:5]:
                lz4.insert("warm", batch, column_names=COLUMNS)
            local = Worker(Path(tmp) / "local")
            orders = list(itertools.permutations((PLAIN, LZ4, LOCAL)))
            for r in range(args.rounds):
                loads.append(os.getloadavg()[0])
                for side in orders[r % len(orders)]:
                    settle(plain)
                    local.settle()
                    table = f"bench_{r}_{TABLE[side]}"
                    if side == LOCAL:
                        seconds[side].append(local.insert(table))
                    else:
                        client = plain if side == PLAIN else lz4
                        seconds[side].append(timed_insert(client, table, batches))
                print(
                    f"round {r + 1}: "
                    + ", ".join(f"{side} {seconds[side][-1]:.2f} s" for side in seconds)
                    + f"; ratios {seconds[LOCAL][-1] / seconds[PLAIN][-1]:.2f} (compress=False),"
                    f" {seconds[LOCAL][-1] / seconds[LZ4][-1]:.2f} (lz4)"
                    f" (load average {loads[-1]:.1f})",
                    flush=True,
                )
        finally:
            if local is not None:
                local.close()
            server.terminate()
            server.wait()

    rate = {side: ROWS / statistics.median(s) for side, s in seconds.items()}
    ratios = {
        side: [s / h for h, s in zip(seconds[side], seconds[LOCAL], strict=True)]
        for side in (PLAIN, LZ4)
    }
    ratio = {side: statistics.median(r) for side, r in ratios.items()}
    for side in seconds:
        print(
            f"1M rows in {BATCH}-row batches, {side}, median of {args.rounds}: "
            f"{ROWS / rate[side]:.2f} s ({rate[side]:,.0f} rows/s)"
        )
    for side in (PLAIN, LZ4):
        print(
            f"{side} / in-process throughput ratio: {ratio[side]:.2f} (median of rounds "
            f"{', '.join(f'{x:.2f}' for x in ratios[side])}; target >= {RATIO_TARGET})"
        )
    emit(
        args.json,
        "clickhouse_http",
        [
            Figure(
                "SELECT 1 round trip over HTTP, p50",
                round(p50, 2),
                "ms",
                f"<= {SELECT1_TARGET_MS:g} ms",
                p50 <= SELECT1_TARGET_MS,
            ),
            Figure("SELECT 1 round trip over HTTP, p95", round(p95, 2), "ms"),
            Figure(
                "1M-row insert in 10k batches over HTTP, compress=False (as the sinks)",
                round(rate[PLAIN]),
                "rows/s",
            ),
            Figure(
                "1M-row insert in 10k batches over HTTP, lz4 (client default)",
                round(rate[LZ4]),
                "rows/s",
            ),
            Figure(
                "1M-row insert in 10k batches, in-process chdb client", round(rate[LOCAL]), "rows/s"
            ),
            Figure(
                "HTTP (compress=False) / in-process insert throughput",
                round(ratio[PLAIN], 2),
                "x",
                f">= {RATIO_TARGET}",
                ratio[PLAIN] >= RATIO_TARGET,
            ),
            Figure(
                "HTTP (lz4) / in-process insert throughput",
                round(ratio[LZ4], 2),
                "x",
                f">= {RATIO_TARGET}",
                ratio[LZ4] >= RATIO_TARGET,
            ),
        ],
        extra={
            "rounds": args.rounds,
            "seconds": {side: [round(x, 3) for x in s] for side, s in seconds.items()},
            "ratios": {side: [round(x, 3) for x in r] for side, r in ratios.items()},
            "load_average_per_round": [round(x, 2) for x in loads],
        },
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
