"""The generator writes to a real broker: keys, timestamps, bytes, topic retention, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from flowforge_pipeline.cli import cli
from flowforge_pipeline.generator.producer import DeliveryError, KafkaSink
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.standins.broker import argv as broker_argv
from flowforge_pipeline.stores.kafka import BrokerUnavailable

from .conftest import _free_port

RANGE = ("2026-11-25T14:30Z", "2026-11-25T14:31Z")


def _read_all(settings: Settings, topic: str, expected: int) -> list[tuple[str, int, str]]:
    partitions = (
        AdminClient({"bootstrap.servers": settings.kafka_servers})
        .list_topics(topic, timeout=10)
        .topics[topic]
        .partitions
    )
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_servers,
            "group.id": "gen-test",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    out: list[tuple[str, int, str]] = []
    idle = 0
    while len(out) < expected and idle < 20:
        batch = consumer.consume(5000, 0.5)
        idle = 0 if batch else idle + 1
        for msg in batch:
            assert msg.error() is None
            out.append((msg.key().decode(), msg.timestamp()[1], msg.value().decode()))
    consumer.close()
    return out


def test_backfill_to_kafka_matches_file_output(generator_kafka: Settings, tmp_path: Path) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": generator_kafka.kafka_servers, "KAFKA_TOPIC_PARTITIONS": "2"}
    args = [
        "generate",
        "--seed",
        "5",
        "--anomalies",
        "--anomaly-rate",
        "2000",
        "--backfill",
        *RANGE,
    ]
    from flowforge_pipeline.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == 0, result.output
        assert "generate done: sent" in result.output
    finally:
        get_settings.cache_clear()
    out = tmp_path / "tape.jsonl"
    CliRunner().invoke(cli, [*args, "--output", str(out)], env=env)
    lines = out.read_text().splitlines()
    for topic in ("trades", "quotes", "ground_truth"):
        expected = sorted(
            (d["key"], d["timestamp"], line[line.index('"value":') + 8 : -1])
            for line in lines
            if (d := json.loads(line))["topic"] == topic
        )
        assert expected, topic
        got = sorted(_read_all(generator_kafka, topic, len(expected)))
        assert got == expected, topic
    admin = AdminClient({"bootstrap.servers": generator_kafka.kafka_servers})
    md = admin.list_topics(timeout=10)
    assert len(md.topics["trades"].partitions) == 2
    resource = ConfigResource(ConfigResource.Type.TOPIC, "trades")
    config = admin.describe_configs([resource])[resource].result()
    assert config["retention.ms"].value == "-1"


def test_sink_surfaces_delivery_errors() -> None:
    """Records the broker never acknowledges end in DeliveryError, not in silence."""
    port = _free_port()
    broker = subprocess.Popen(
        broker_argv(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        settings = Settings(KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}")
        deadline = 0
        while True:
            try:
                sink = KafkaSink(settings, 1, **{"message.timeout.ms": 1500})
                break
            except BrokerUnavailable:
                deadline += 1
                assert deadline < 5
    finally:
        broker.terminate()
        broker.wait(10)
    sink.write([("trades", "AAPL", 0, "{}")])
    with pytest.raises(DeliveryError, match="not delivered"):
        sink.close()


def test_ctrl_c_flushes_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "live.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flowforge_pipeline.cli",
            "generate",
            "--seed",
            "1",
            "--trades-per-second",
            "200",
            "--quotes-per-second",
            "200",
            "--output",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        while not out.exists() or out.stat().st_size == 0:
            assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "generate stopped: sent" in err
    sent = int(err.split("sent ")[1].split(" trades")[0])
    lines = out.read_text().splitlines()
    trades = [line for line in lines if '"type":"trade"' in line]
    assert len(trades) == sent
