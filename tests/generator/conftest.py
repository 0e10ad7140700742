"""Generator test fixtures: a private tansu broker and a generated trading day."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pytest
from confluent_kafka.admin import AdminClient

from flowforge_pipeline.generator.instruments import load_instruments
from flowforge_pipeline.generator.tape import Tape, iso_times, to_us
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stack import local
from flowforge_pipeline.standins.broker import argv as broker_argv
from flowforge_pipeline.standins.broker import wait_listening

#: A Wednesday: every session instrument trades.
TRADING_DAY = datetime(2026, 11, 25, tzinfo=UTC)


def _free_port() -> int:
    return local.free_ports(1)[0]


@contextmanager
def running_broker(partitions: int = 2) -> Iterator[Settings]:
    """A fresh in-memory tansu broker on a free port, stopped on exit."""
    port = _free_port()
    proc = subprocess.Popen(
        broker_argv(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    settings = Settings(
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}", KAFKA_TOPIC_PARTITIONS=partitions
    )
    try:
        # A client only once the port listens: librdkafka logs every refused connection.
        wait_listening(port, proc)
        AdminClient({"bootstrap.servers": settings.kafka_servers}).list_topics(timeout=10)
        yield settings
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def generator_kafka() -> Iterator[Settings]:
    """Settings pointing at a fresh in-memory tansu broker on a free port."""
    with running_broker() as settings:
        yield settings


@pytest.fixture
def fresh_kafka() -> Iterator[Settings]:
    """A broker of the test's own: its topics hold only what the test writes."""
    with running_broker() as settings:
        yield settings


@dataclass
class Day:
    """A generated trading day: per-symbol numpy columns, plus whole-stream checks."""

    trades: dict[str, np.ndarray]  # rows: time_us, price, quantity, prevailing bid, ask
    quotes: dict[str, np.ndarray]  # rows: time_us, bid, ask, bid_size, ask_size
    heartbeats: dict[str, np.ndarray]  # time_us
    records: int
    timestamps_ok: bool
    ordered: bool
    event_time_ok: bool


@pytest.fixture(scope="session")
def trading_day() -> Day:
    """One full UTC day, seed 7, 10 trades/s and 5 quotes/s, no anomalies."""
    tape = Tape(load_instruments(), seed=7, trades_per_second=10, quotes_per_second=5)
    start = to_us(TRADING_DAY)
    trades: dict[str, list[tuple[float, ...]]] = {}
    quotes: dict[str, list[tuple[float, ...]]] = {}
    beats: dict[str, list[int]] = {}
    last_quote: dict[str, tuple[float, ...]] = {}
    n = 0
    last_t = 0
    ordered = stamps = iso = True
    for times, records in tape.records(start, start + 86_400_000_000):
        for t, (topic, key, ts, value) in zip(times.tolist(), records, strict=True):
            n += 1
            ordered &= t >= last_t
            last_t = t
            stamps &= ts == t // 1000
            msg = json.loads(value)
            iso &= msg["event_time"] == iso_times(np.array([t]))[0] if n % 997 == 0 else True
            if topic == "quotes":
                row = (t, msg["bid"], msg["ask"], msg["bid_size"], msg["ask_size"])
                quotes.setdefault(key, []).append(row)
                last_quote[key] = row
            elif msg["type"] == "heartbeat":
                beats.setdefault(key, []).append(t)
            else:
                q = last_quote[key]
                trades.setdefault(key, []).append((t, msg["price"], msg["quantity"], q[1], q[2]))
    return Day(
        trades={k: np.array(v) for k, v in trades.items()},
        quotes={k: np.array(v) for k, v in quotes.items()},
        heartbeats={k: np.array(v) for k, v in beats.items()},
        records=n,
        timestamps_ok=stamps,
        ordered=ordered,
        event_time_ok=iso,
    )
