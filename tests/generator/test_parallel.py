"""Processes taking turns (`generate --workers N`): every record exactly once, in order."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from flowforge_pipeline.generator import parallel
from flowforge_pipeline.generator.instruments import load_instruments
from flowforge_pipeline.generator.pacing import pump
from flowforge_pipeline.generator.producer import JsonLinesSink, KafkaSink
from flowforge_pipeline.generator.tape import Batch, Record, Tape, to_us
from flowforge_pipeline.settings import Settings

START = to_us(datetime(2026, 11, 25, 14, 29, tzinfo=UTC))
END = START + 4 * 60_000_000


def _tape() -> Tape:
    return Tape(load_instruments(), 5, 10, 50)


def _partitions(settings: Settings, topic: str) -> list[list[tuple[str, int, str]]]:
    """Every record of `topic`, partition by partition in offset order: (key, ts, value)."""
    md = AdminClient({"bootstrap.servers": settings.kafka_servers}).list_topics(topic, timeout=10)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_servers,
            "group.id": "parallel-test",
            "enable.auto.commit": False,
        }
    )
    out: dict[int, list[tuple[str, int, str]]] = defaultdict(list)
    consumer.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    idle = 0
    while idle < 6:
        msgs = consumer.consume(10_000, 0.5)
        idle = 0 if msgs else idle + 1
        for m in msgs:
            assert m.error() is None
            out[m.partition()].append((m.key().decode(), m.timestamp()[1], m.value().decode()))
    consumer.close()
    return [out[p] for p in sorted(out)]


def test_turns_into_kafka_deliver_each_record_once_in_order(fresh_kafka: Settings) -> None:
    """Three processes, blocks of ~2000 records: each partition holds exactly what one
    process would have sent there, in the same order (no duplicate, no gap, no reordering)."""
    tape = _tape()
    assert len(parallel.blocks(tape, START, END, 2000)) >= 4
    counts = parallel.backfill(
        tape, START, END, partial(KafkaSink, fresh_kafka, None), 3, 500, block_records=2000
    )
    expected: dict[str, list[Record]] = defaultdict(list)
    for batch in tape.batches(START, END):
        for record in batch.records():
            expected[record[0]].append(record)
    assert counts.total == sum(len(v) for v in expected.values())
    for topic in ("trades", "quotes"):
        got = _partitions(fresh_kafka, topic)
        assert sum(len(p) for p in got) == len(expected[topic]), topic
        for records in got:
            keys = {key for key, _, _ in records}
            wanted = [(k, ts, v) for _, k, ts, v in expected[topic] if k in keys]
            assert records == wanted, topic


class SlowReport(RuntimeError):
    """A failure whose message takes a moment to build (as when it is looked up remotely)."""

    def __str__(self) -> str:
        time.sleep(0.3)
        return "sink failed"


class FailingSink(JsonLinesSink):
    """Appends like `--output` does, but fails on records in [fail_us, until_us)."""

    def __init__(self, target: str, fail_us: int, until_us: int) -> None:
        super().__init__(target, append=True)
        self._fail_us, self._until_us = fail_us, until_us

    def write(self, batch: Batch | list[Record]) -> None:
        assert isinstance(batch, Batch)
        times = batch.times
        if ((times >= self._fail_us) & (times < self._until_us)).any():
            self.flush()
            raise SlowReport()
        super().write(batch)


def test_a_failed_block_is_never_followed_by_a_later_one(tmp_path: Path) -> None:
    """The process whose block fails halts the others before passing its turn on (and before
    reporting), so what arrived is a prefix of the tape: never a later block after a gap."""
    tape = _tape()
    blocks = parallel.blocks(tape, START, END, 1000)
    assert len(blocks) >= 4
    # Fail in the middle of the second block; the other process has the third one ready.
    fail_us = blocks[1][0] * 60_000_000 + 30_000_000
    until_us = blocks[2][0] * 60_000_000
    whole = tmp_path / "whole.jsonl"
    sink = JsonLinesSink(str(whole))
    pump(tape.batches(START, END), sink, START, None, 100)
    sink.close()
    out = tmp_path / "out.jsonl"
    out.write_text("")
    with pytest.raises(parallel.WorkerError, match="sink failed"):
        sink_of = partial(FailingSink, str(out), fail_us, until_us)
        parallel.backfill(tape, START, END, sink_of, 2, 100, block_records=1000)
    sent = out.read_text().splitlines()
    assert 0 < len(sent) < len(whole.read_text().splitlines())
    assert sent == whole.read_text().splitlines()[: len(sent)]
