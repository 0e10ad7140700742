"""Pieces every flow shares: UTC time, the instrument universe, the Kafka source, recovery.

Kept here so each flow module reads as wiring only, and so tests can swap the symbol
universe and the source without a broker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage

from flowforge_pipeline.settings import Settings

#: What a flow's input step emits: a message, or an error the source met reading one.
SourceItem = KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None]


def utc_now() -> datetime:
    """The current wall-clock time, timezone-aware UTC."""
    return datetime.now(UTC)


def parse_event_time(raw: object) -> datetime:
    """Parse an ISO 8601 timestamp that carries an offset; return it in UTC.

    Raises:
        ValueError: not a string, not ISO 8601, or without a UTC offset (a naive time would
            silently shift windows by the reader's timezone).

    """
    if not isinstance(raw, str):
        raise ValueError("event_time must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"event_time is not ISO 8601: {raw[:40]!r}") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("event_time has no UTC offset")
    return parsed.astimezone(UTC)


def iso(ts: datetime) -> str:
    """ISO 8601 UTC with microseconds, the contract's timestamp format."""
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def to_json_bytes(obj: dict[str, Any]) -> bytes:
    """Compact JSON as stored in Redis and sent to Kafka."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class Instruments:
    """The symbols a flow accepts and, per symbol, the minutes per year used to annualize."""

    minutes_per_year: dict[str, int]

    @property
    def symbols(self) -> frozenset[str]:
        """Symbols a trade or quote may carry; anything else is dead-lettered."""
        return frozenset(self.minutes_per_year)


@lru_cache(maxsize=1)
def reference_instruments() -> Instruments:
    """The instrument reference file the generator also uses (one source of truth)."""
    from flowforge_pipeline.generator.instruments import load_instruments

    return Instruments({i.symbol: i.minutes_per_year for i in load_instruments()})


#: Provider of the instrument universe; tests and other deployments may pass their own.
InstrumentsProvider = Callable[[], Instruments]


def kafka_source(
    settings: Settings, topics: list[str], add_config: dict[str, str] | None = None
) -> KafkaSource:
    """A Kafka source that hands read errors to the flow instead of crashing it.

    Offsets are not committed to the broker: Bytewax recovery snapshots them with the
    flow's state, which is what makes a restart neither lose nor repeat a window.
    `add_config` passes consumer properties through (e.g. a shorter `fetch.wait.max.ms`).
    """
    return KafkaSource(
        brokers=settings.kafka_servers.split(","),
        topics=topics,
        tail=True,
        batch_size=5000,
        raise_on_errors=False,
        add_config=add_config,
    )


def recovery_dir(settings: Settings, flow_name: str) -> str:
    """Where a flow's Bytewax recovery database lives in the local stack."""
    return str(settings.state_path / "recovery" / flow_name)
