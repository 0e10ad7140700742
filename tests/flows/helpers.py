"""Building Kafka-like records for flow tests without a broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.connectors.kafka import KafkaSourceMessage

SYMBOLS = frozenset({"AAA", "BBB"})
T0 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="microseconds")


def trade(
    n: int,
    symbol: str = "AAA",
    price: float = 100.0,
    quantity: float = 1.0,
    at: timedelta = timedelta(0),
    side: str = "buy",
    account: str = "acct-1",
) -> dict[str, Any]:
    return {
        "type": "trade",
        "trade_id": f"42-{n}",
        "symbol": symbol,
        "price": price,
        "quantity": quantity,
        "side": side,
        "account": account,
        "venue": "XNAS",
        "event_time": iso(T0 + at),
    }


def heartbeat(symbol: str, at: timedelta) -> dict[str, Any]:
    return {"type": "heartbeat", "symbol": symbol, "event_time": iso(T0 + at)}


def quote(
    n: int, symbol: str = "AAA", bid: float = 99.0, ask: float = 101.0, at: timedelta = timedelta(0)
) -> dict[str, Any]:
    return {
        "quote_id": f"42-{n}",
        "symbol": symbol,
        "bid": bid,
        "ask": ask,
        "bid_size": 10.0,
        "ask_size": 12.0,
        "event_time": iso(T0 + at),
    }


def messages(
    topic: str, payloads: list[dict[str, Any] | bytes], partition: int = 0, first_offset: int = 0
) -> list[KafkaSourceMessage[bytes | None, bytes | None]]:
    out = []
    for i, p in enumerate(payloads):
        value = p if isinstance(p, bytes) else json.dumps(p).encode()
        out.append(
            KafkaSourceMessage(
                key=b"k", value=value, topic=topic, partition=partition, offset=first_offset + i
            )
        )
    return out
