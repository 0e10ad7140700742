"""A real embedded ClickHouse server for the whole folder, on a random free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from flowforge_pipeline.standins.clickhouse_server import ClickHouseHTTPServer, start_server

USERS = {
    "default": ("", False),
    "alice": ("s3cret", False),
    "reader": ("r3ad", True),
}


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseHTTPServer]:
    srv = start_server("127.0.0.1", 0, tmp_path_factory.mktemp("chdata"), USERS)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def base_url(server: ClickHouseHTTPServer) -> str:
    return f"http://127.0.0.1:{server.port}"


@pytest.fixture()
def client(server: ClickHouseHTTPServer) -> Iterator[Client]:
    c = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
    yield c
    c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """The server as its own process, as `up` starts it."""
    env = dict(os.environ, CLICKHOUSE_USER="default", CLICKHOUSE_PASSWORD="", CLICKHOUSE_URL="")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowforge_pipeline.standins.clickhouse_server",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "server exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as r:
                if r.read() == b"Ok.\n":
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("server did not answer /ping")
