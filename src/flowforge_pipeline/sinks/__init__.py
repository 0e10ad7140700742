"""Sinks shared by the flows: ClickHouse batch inserts with broadcast, Redis values, Kafka DLQ."""
