"""Dead letters to the contract's `dlq` topic (confluent-kafka producer).

Each write waits until the broker acknowledged every record: Bytewax may snapshot the source
offsets right after, and a dead letter still in the producer's buffer at a crash would be gone.
"""

from __future__ import annotations

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from flowforge_pipeline.contract.catalog import DLQ_TOPIC
from flowforge_pipeline.flows import metrics
from flowforge_pipeline.flows.common import to_json_bytes
from flowforge_pipeline.flows.validation import DeadLetter
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stores import kafka as kafka_store


class DeliveryFailed(RuntimeError):
    """The broker did not acknowledge a dead letter; the flow stops rather than lose it."""


class _DeadLetterPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, settings: Settings, topic: str) -> None:
        self._topic = topic
        self._servers = settings.kafka_servers
        self._producer = Producer(kafka_store.producer_config(settings))
        try:
            self._producer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise kafka_store.BrokerUnavailable(
                f"kafka broker at {self._servers} unreachable: {exc.args[0].str()}"
            ) from None
        self._errors: list[str] = []

    def _delivered(self, err: KafkaError | None, _: Message) -> None:
        if err is not None:
            self._errors.append(err.str())

    def write_batch(self, items: list[DeadLetter]) -> None:
        for letter in items:
            self._producer.produce(
                self._topic,
                key=letter.origin.topic.encode(),
                value=to_json_bytes(letter.message()),
                on_delivery=self._delivered,
            )
            self._producer.poll(0)
            metrics.DEAD_LETTERS.labels(letter.flow, letter.code).inc()
        remaining = self._producer.flush(30)
        if remaining or self._errors:
            detail = self._errors[0] if self._errors else f"{remaining} not acknowledged in 30 s"
            self._errors.clear()
            raise DeliveryFailed(f"dead letters to {self._topic} at {self._servers}: {detail}")

    def close(self) -> None:
        self._producer.flush(10)


class DeadLetterSink(DynamicSink[DeadLetter]):
    """Send dead letters, keyed by source topic, as the contract's JSON message."""

    def __init__(self, settings: Settings, topic: str = DLQ_TOPIC.name) -> None:
        """Prepare the sink; nothing connects until Bytewax builds a partition."""
        self._settings = settings
        self._topic = topic

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> _DeadLetterPartition:
        """Connect; fails at once naming the bootstrap servers if the broker is unreachable."""
        return _DeadLetterPartition(self._settings, self._topic)
