"""Sinks wait for a store that is down (and say so), and never insert a batch twice."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis
from clickhouse_connect.driver.exceptions import OperationalError

from flowforge_pipeline.flows import metrics
from flowforge_pipeline.flows.components import stores_down
from flowforge_pipeline.flows.raw_sink import TRADES_SPEC
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.sinks.clickhouse import ClickHouseSink, InsertFailed, RowBatch, with_retries
from flowforge_pipeline.stores import clickhouse as ch_store
from flowforge_pipeline.stores.postgres import PostgresUnavailable

T0 = datetime(2023, 5, 2, 12, 0, tzinfo=UTC)


def _down_since(flow: str, store: str) -> float:
    return float(metrics.STORE_DOWN_SINCE.labels(flow, store)._value.get())


def test_an_unreachable_store_is_retried_past_the_attempts_and_reported() -> None:
    calls: list[int] = []
    seen_while_down: list[float] = []

    def action() -> str:
        calls.append(1)
        if len(calls) <= 12:  # far more failures than `attempts`
            raise redis.ConnectionError("Connection refused")
        return "done"

    def sleep(_: float) -> None:
        seen_while_down.append(_down_since("test-flow", "redis"))

    got = with_retries(action, what="x", attempts=3, sleep=sleep, flow="test-flow", store="redis")
    assert got == "done"
    assert len(calls) == 13
    assert all(v > 0 for v in seen_while_down)  # reported down while retrying
    assert _down_since("test-flow", "redis") == 0  # and reachable again after


def test_a_failed_reconnect_counts_as_unreachable() -> None:
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        if len(calls) <= 8:  # the sink reconnects through the store module
            raise PostgresUnavailable("postgres at postgresql://x@127.0.0.1:1/x unreachable")

    with_retries(action, what="x", attempts=3, sleep=lambda _: None, flow="f", store="postgres")
    assert len(calls) == 9


def test_other_errors_stay_bounded() -> None:
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise ValueError("Cannot parse input")

    with pytest.raises(InsertFailed, match="failed after 3 attempts: Cannot parse input"):
        with_retries(action, what="x", attempts=3, sleep=lambda _: None, flow="f", store="redis")
    assert len(calls) == 3


def test_status_reads_the_stores_a_flow_waits_for() -> None:
    text = (
        '# HELP flowforge_sink_store_down_since_seconds ...\n'
        'flowforge_sink_store_down_since_seconds{flow="vwap",store="clickhouse"} 1.7e+09\n'
        'flowforge_sink_store_down_since_seconds{flow="vwap",store="redis"} 0.0\n'
    )
    assert stores_down(text) == {"clickhouse": 1.7e9}
    assert stores_down("") == {}


def test_an_insert_whose_answer_was_lost_is_not_inserted_again(stack_settings: Settings) -> None:
    """The server committed the insert but the client saw an error (a server killed mid-answer):
    the retry must not store the rows a second time."""
    tag = uuid.uuid4().hex[:8]
    partition = 2000 + uuid.uuid4().int % 1000  # a partition no other test writes
    rows = [
        (f"{tag}-{o}", "AAPL", 100.0 + o, 1.0, "buy", "acct", "XNAS",
         T0 + timedelta(seconds=o), partition, o)
        for o in range(20)
    ]
    part = ClickHouseSink(stack_settings, "test", (TRADES_SPEC,)).build("s", 0, 1)
    real_insert = part._ch.insert
    answers: list[str] = []

    def insert_then_lose_the_answer(*args: object, **kwargs: object) -> object:
        result = real_insert(*args, **kwargs)  # type: ignore[arg-type]
        if not answers:
            answers.append("lost")
            raise OperationalError("Error HTTPConnectionPool: Connection aborted")
        return result

    part._ch.insert = insert_then_lose_the_answer  # type: ignore[method-assign]
    try:
        part.write_batch([RowBatch("raw_trades", rows)])
    finally:
        part.close()
    ch = ch_store.client(stack_settings)
    stored = int(ch.command(
        "SELECT count() FROM raw_trades WHERE kafka_partition = {p:UInt32}",
        parameters={"p": partition},
    ))
    ch.close()
    assert answers == ["lost"]
    assert stored == len(rows)
