"""The server as its own process: restart, kill -9, graceful stop, one owner per directory."""

from __future__ import annotations

import http.client
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect

from .conftest import free_port, spawn_server, wait_ready


def test_restart_keeps_data_and_second_server_refuses(tmp_path: Path) -> None:
    port = free_port()
    proc = spawn_server(tmp_path, port)
    try:
        wait_ready(port, proc)
        c = clickhouse_connect.get_client(host="127.0.0.1", port=port)
        c.command("CREATE TABLE kept (a UInt32) ENGINE = MergeTree ORDER BY a")
        c.insert("kept", [(i,) for i in range(1000)], column_names=["a"])
        second = spawn_server(tmp_path, free_port())
        assert second.wait(timeout=60) != 0
        err = second.stderr.read().decode() if second.stderr else ""
        assert "already owned by another running server" in err
        assert len(err.strip().splitlines()) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    proc = spawn_server(tmp_path, port)
    try:
        wait_ready(port, proc)
        c = clickhouse_connect.get_client(host="127.0.0.1", port=port)
        assert c.command("SELECT count(), sum(a) FROM kept") == ["1000", "499500"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_kill_9_leaves_only_whole_inserts(tmp_path: Path) -> None:
    port = free_port()
    proc = spawn_server(tmp_path, port)
    acked: list[int] = []
    stop = threading.Event()
    try:
        wait_ready(port, proc)
        c = clickhouse_connect.get_client(host="127.0.0.1", port=port)
        c.command("CREATE TABLE batches (batch UInt32, i UInt32) ENGINE = MergeTree ORDER BY batch")

        def writer() -> None:
            w = clickhouse_connect.get_client(host="127.0.0.1", port=port)
            batch = 0
            while not stop.is_set():
                try:
                    w.insert(
                        "batches", [(batch, i) for i in range(5000)], column_names=["batch", "i"]
                    )
                except Exception:
                    return
                acked.append(batch)
                batch += 1

        th = threading.Thread(target=writer)
        th.start()
        while len(acked) < 20:
            time.sleep(0.02)
        proc.kill()
        proc.wait(timeout=30)
        stop.set()
        th.join(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = spawn_server(tmp_path, port)
    try:
        wait_ready(port, proc)
        c = clickhouse_connect.get_client(host="127.0.0.1", port=port)
        counts = dict(c.query("SELECT batch, count() FROM batches GROUP BY batch").result_rows)
        assert set(acked) <= set(counts)
        assert set(counts.values()) == {5000}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_graceful_stop_finishes_inflight_insert(tmp_path: Path) -> None:
    port = free_port()
    proc = spawn_server(tmp_path, port)
    try:
        wait_ready(port, proc)
        c = clickhouse_connect.get_client(host="127.0.0.1", port=port)
        c.command("CREATE TABLE slow (a UInt32) ENGINE = MergeTree ORDER BY a")
        halfway = threading.Event()

        def body() -> Iterator[bytes]:
            yield b"INSERT INTO slow FORMAT TSV\n"
            for part in range(10):
                yield b"".join(f"{part * 1000 + i}\n".encode() for i in range(1000))
                if part == 4:
                    halfway.set()
                    time.sleep(1.0)

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        result: dict[str, object] = {}

        def send() -> None:
            conn.request("POST", "/", body=body(), encode_chunked=True)
            resp = conn.getresponse()
            result["status"] = resp.status
            result["body"] = resp.read()

        th = threading.Thread(target=send)
        th.start()
        halfway.wait(timeout=30)
        proc.send_signal(signal.SIGTERM)
        th.join(timeout=60)
        assert result.get("status") == 200, (
            result,
            proc.stderr.read() if proc.poll() is not None and proc.stderr else "",
        )
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    proc = spawn_server(tmp_path, port)
    try:
        wait_ready(port, proc)
        c = clickhouse_connect.get_client(host="127.0.0.1", port=port)
        assert c.command("SELECT count() FROM slow") == 10_000
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
