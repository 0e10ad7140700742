"""Sinks for generated records: the Kafka topics, a JSON-lines file, or nothing.

Kafka output is idempotent (no duplicates on producer retries), keyed by symbol with the event
time as record timestamp, and every delivery error is collected and raised at the end: a
record that did not arrive is never ignored.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

from confluent_kafka import KafkaError, Message, Producer

from flowforge_pipeline.contract.catalog import GROUND_TRUTH_TOPIC, QUOTES_TOPIC, TRADES_TOPIC
from flowforge_pipeline.generator.pacing import Sink
from flowforge_pipeline.generator.tape import Batch, Record
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stores.kafka import ensure_topics, producer_config

GENERATOR_TOPICS = (TRADES_TOPIC, QUOTES_TOPIC, GROUND_TRUTH_TOPIC)


class DeliveryError(RuntimeError):
    """The broker rejected records; the message gives the count and the first reason."""


class NullSink(Sink):
    """Discards records: measures the generator alone."""

    def write(self, batch: Batch | list[Record]) -> None:
        """Drop the records."""


class JsonLinesSink(Sink):
    """One JSON object per line: topic, key, Kafka timestamp (ms) and the exact value."""

    def __init__(self, target: str, append: bool = False) -> None:
        self._own = target != "-"
        self._keys: dict[str, str] = {}
        mode = "a" if append else "w"
        self._fh: IO[str] = Path(target).open(mode, encoding="utf-8") if self._own else sys.stdout

    def write(self, batch: Batch | list[Record]) -> None:
        """Append the records, value embedded verbatim so its bytes stay comparable."""
        batch = Batch.of(batch) if isinstance(batch, list) else batch
        keys = self._keys
        for k in batch.keys:
            if k not in keys:
                keys[k] = json.dumps(k)
        self._fh.write(
            "".join(
                f'{{"topic":"{t}","key":{keys[k]},"timestamp":{ts},"value":{v}}}\n'
                for t, k, ts, v in zip(
                    batch.topics, batch.keys, batch.timestamps, batch.values, strict=True
                )
            )
        )

    def flush(self) -> None:
        """Hand what was written to the operating system."""
        self._fh.flush()

    def close(self) -> None:
        """Flush, and close the file unless it is stdout."""
        self._fh.flush()
        if self._own:
            self._fh.close()


class KafkaSink(Sink):
    """Idempotent producer to the contract's topics (created if missing, never deleted)."""

    def __init__(self, settings: Settings, partitions: int | None = None, **extra: Any) -> None:
        ensure_topics(settings, GENERATOR_TOPICS, partitions)
        # Only failed deliveries are reported: a Python callback per acknowledged record
        # costs about a quarter of the producer's time, and failures are all we act on.
        config = {
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
        }
        self._producer = Producer(producer_config(settings, **{**config, **extra}))
        self._failed = 0
        self._first_error: str | None = None
        self._closed = False

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failed += 1
            self._first_error = self._first_error or err.str()

    def write(self, batch: Batch | list[Record]) -> None:
        """Queue records; when librdkafka's queue is full, serve callbacks until it drains."""
        batch = Batch.of(batch) if isinstance(batch, list) else batch
        produce = self._producer.produce
        # Positional arguments (partition -1 = by key, callbacks from the configuration):
        # keyword arguments cost more than half again as much per call.
        for topic, key, ts, value in zip(
            batch.topics, batch.keys, batch.timestamps, batch.values, strict=True
        ):
            try:
                produce(topic, value, key, -1, None, None, ts)
            except BufferError:
                self._produce_when_room(topic, value, key, ts)
        self._producer.poll(0)
        self._raise_if_failed()

    def _produce_when_room(self, topic: str, value: str, key: str, ts: int) -> None:
        while True:
            self._producer.poll(0.05)
            try:
                self._producer.produce(topic, value, key, -1, None, None, ts)
                return
            except BufferError:
                continue

    def poll(self) -> None:
        """Serve delivery callbacks."""
        self._producer.poll(0)
        self._raise_if_failed()

    def flush(self) -> None:
        """Wait until every record so far is acknowledged; raise if any was not."""
        remaining = self._producer.flush(60)
        if remaining:
            raise DeliveryError(f"{remaining} records not delivered within 60 s")
        self._raise_if_failed()

    def close(self) -> None:
        """Wait for every record to be acknowledged; raise if any was not.

        Then the producer's threads and connections go at once, rather than whenever the
        garbage collector breaks the cycle through the delivery callback (a producer left
        connected logs a "Disconnected" line when its broker stops). Closing twice is a no-op.
        """
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._producer.close()

    def _raise_if_failed(self) -> None:
        if self._failed:
            raise DeliveryError(
                f"{self._failed} records not delivered to Kafka: {self._first_error}"
            )


def open_sink(
    output: str | None, settings: Settings, partitions: int | None, append: bool = False
) -> Sink:
    """The sink for `--output`: a path or '-' writes JSON lines, none writes to Kafka.

    `append` keeps what a file holds (processes taking turns on one backfill).
    """
    if output is None:
        return KafkaSink(settings, partitions)
    return JsonLinesSink(output, append)
