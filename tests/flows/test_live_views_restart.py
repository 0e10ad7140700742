"""The live-views flow as a real process with recovery, SIGKILLed mid-stream and restarted.

Eight minutes of the generator's tape go through the broker on uuid-named topics; the flow
is killed once it has written rows and taken snapshots, the rest of the tape is produced
while it is down, and it is restarted from its recovery directory. The live tables must then
equal those of an uninterrupted in-process run over the same events: a replay from the last
snapshot rewrites rows, it never books a trade twice.

Run as a flow factory too: `python -m bytewax.run "test_live_views_restart:restart_flow()"`
with this directory and its parent on PYTHONPATH (topic names from FF_TEST_* variables).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.recovery import init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main
from confluent_kafka import Producer

from flowforge_pipeline.contract.catalog import (
    DLQ_TOPIC,
    LIVE_POSITIONS,
    QUOTES_TOPIC,
    TRADES_TOPIC,
)
from flowforge_pipeline.flows import live_views
from flowforge_pipeline.flows.common import kafka_source
from flowforge_pipeline.generator.instruments import load_instruments
from flowforge_pipeline.settings import Settings, get_settings
from flowforge_pipeline.sinks.kafka import DeadLetterSink
from flowforge_pipeline.sinks.postgres import PostgresUpsertSink
from flowforge_pipeline.stores.kafka import ensure_topics
from flows.live_views_support import (
    assert_same_numbers,
    create_schema,
    generated,
    read_table,
)

HERE = Path(__file__).parent


def restart_flow() -> Dataflow:
    """The live-views flow on the test's topics and Postgres schema (settings from env)."""
    s = get_settings()
    trades, quotes = os.environ["FF_TEST_TRADES"], os.environ["FF_TEST_QUOTES"]
    return live_views.build(
        kafka_source(s, [trades, quotes]),
        PostgresUpsertSink(s, live_views.FLOW),
        DeadLetterSink(s, os.environ["FF_TEST_DLQ"]),
        symbols=frozenset(os.environ["FF_TEST_SYMBOLS"].split(",")),
        quotes_topic=quotes,
    )


def _produce(settings: Settings, topic: str, records: list[tuple[str, bytes]]) -> None:
    p = Producer({"bootstrap.servers": settings.kafka_servers, "linger.ms": 20})
    for key, value in records:
        p.produce(topic, key=key.encode(), value=value)
        p.poll(0)
    assert p.flush(30) == 0


def _wait(
    what: str, check: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = 180
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"flow exited:\n{log.read_text(errors='replace')[-3000:]}"
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.3)


def _same(got: Settings, want: Settings) -> bool:
    try:
        assert_same_numbers(got, want)
    except AssertionError:
        return False
    return True


def test_live_tables_survive_sigkill_and_restart(stack_settings: Settings, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {t.name: f"test-{tag}-{t.name}" for t in (TRADES_TOPIC, QUOTES_TOPIC, DLQ_TOPIC)}
    ensure_topics(
        stack_settings,
        tuple(replace(t, name=names[t.name]) for t in (TRADES_TOPIC, QUOTES_TOPIC, DLQ_TOPIC)),
        partitions=3,
    )
    symbols = frozenset(i.symbol for i in load_instruments())
    tape = generated(seed=5, start="2026-11-25T14:30:00+00:00", minutes=8)
    first = {topic: recs[: len(recs) // 2] for topic, recs in tape.items()}
    second = {topic: recs[len(recs) // 2 :] for topic, recs in tape.items()}

    # the uninterrupted computation: the same events in one in-process run
    _, want = create_schema(stack_settings)
    msgs = [
        KafkaSourceMessage(key=k.encode(), value=v, topic=topic, partition=0, offset=i)
        for topic, recs in tape.items()
        for i, (k, v) in enumerate(recs)
    ]
    msgs.sort(key=lambda m: m.value.split(b'"event_time":"', 1)[1][:26])
    dead: list = []
    run_main(
        live_views.build(
            TestingSource(msgs, batch_size=2000),
            PostgresUpsertSink(want, live_views.FLOW),
            TestingSink(dead),
            symbols=symbols,
        )
    )
    assert dead == []

    _, got = create_schema(stack_settings)
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    log = tmp_path / "live_views.log"
    env = {
        **os.environ,
        **got.as_env(),
        "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
        "FF_TEST_TRADES": names["trades"],
        "FF_TEST_QUOTES": names["quotes"],
        "FF_TEST_DLQ": names["dlq"],
        "FF_TEST_SYMBOLS": ",".join(sorted(symbols)),
    }
    argv = [
        sys.executable,
        "-m",
        "bytewax.run",
        "test_live_views_restart:restart_flow()",
        "-r",
        str(recovery),
        "-s",
        "1",
        "-b",
        "0",
    ]

    def start() -> subprocess.Popen:
        with log.open("ab") as out:
            return subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path
            )

    def positions() -> int:
        return len(read_table(got, LIVE_POSITIONS))

    def recovery_value(query: str) -> int:
        with sqlite3.connect(next(recovery.glob("part-*.sqlite3"))) as db:
            return int(db.execute(query).fetchone()[0] or 0)

    def committed() -> int:
        return recovery_value("SELECT count(*) FROM commits")

    for topic, recs in first.items():
        _produce(stack_settings, names[topic], recs)
    proc = start()
    try:
        # mid-stream: rows written and at least one snapshot taken, then SIGKILL
        _wait("rows and a snapshot", lambda: positions() > 0 and committed() > 0, proc, log)
        proc.kill()
        proc.wait()
        written_before = positions()
        for topic, recs in second.items():
            _produce(stack_settings, names[topic], recs)
        proc = start()
        _wait("the live tables to match the uninterrupted run", lambda: _same(got, want), proc, log)
        # the second execution resumed from a snapshot (state restored, not rebuilt)
        assert recovery_value("SELECT count(*) FROM exs") == 2
        assert recovery_value("SELECT max(resume_epoch) FROM exs") > 1
    finally:
        proc.kill()
        proc.wait()
    assert written_before > 0
    counts = assert_same_numbers(got, want)
    assert counts["live_positions"] > 100
    assert counts["live_pnl"] > counts["live_positions"] // 2
