"""Turning raw Kafka records into typed trades and quotes, or dead letters with a reason.

Every check the contract implies lives here, once, so all flows reject the same records for
the same reasons. A rejected record keeps its original bytes and its topic/partition/offset,
so it can be found, fixed and replayed; nothing is dropped silently.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

from bytewax.connectors.kafka import KafkaError

from flowforge_pipeline.flows.common import SourceItem, iso, parse_event_time, utc_now

#: The message payload version the flows understand (contract field `schema_version`).
SCHEMA_VERSION = 1

#: Reason codes (the part of a reason before ':'); metrics are labelled with them.
REASONS = (
    "invalid_json",
    "not_an_object",
    "unknown_type",
    "missing_field",
    "wrong_type",
    "not_finite",
    "not_positive",
    "bad_value",
    "unknown_symbol",
    "crossed_quote",
    "bad_event_time",
    "late",
    "kafka_error",
)


class Rejected(ValueError):
    """A record cannot be used; `reason` is '<code>: <detail>' (or just '<code>')."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


@dataclass(frozen=True)
class Origin:
    """Where a record came from, with its bytes as received (kept for the dead-letter topic)."""

    topic: str
    partition: int
    offset: int
    payload: bytes


@dataclass(frozen=True)
class Trade:
    """A valid trade."""

    trade_id: str
    symbol: str
    price: float
    quantity: float
    side: str
    account: str
    venue: str
    event_time: datetime
    origin: Origin

    @property
    def signed_quantity(self) -> float:
        """+quantity for a buy, -quantity for a sell (the account's point of view)."""
        return self.quantity if self.side == "buy" else -self.quantity


@dataclass(frozen=True)
class Heartbeat:
    """Advances event time of a quiet symbol; never stored."""

    symbol: str
    event_time: datetime
    origin: Origin


@dataclass(frozen=True)
class Quote:
    """A valid, uncrossed top-of-book quote."""

    quote_id: str
    symbol: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    event_time: datetime
    origin: Origin


@dataclass(frozen=True)
class DeadLetter:
    """A record a flow could not use, bound for the contract's `dlq` topic."""

    flow: str
    origin: Origin
    reason: str
    failed_at: datetime

    @property
    def code(self) -> str:
        """The reason code, e.g. 'late' or 'missing_field'."""
        return self.reason.split(":", 1)[0]

    def message(self) -> dict[str, Any]:
        """The JSON object the contract defines for the dead-letter topic."""
        return {
            "flow": self.flow,
            "source_topic": self.origin.topic,
            "partition": self.origin.partition,
            "offset": self.origin.offset,
            "reason": self.reason,
            "payload": self.origin.payload.decode("utf-8", errors="replace"),
            "failed_at": iso(self.failed_at),
        }


def origin_of(item: SourceItem) -> Origin:
    """Topic, partition, offset and bytes of a source item (message or read error)."""
    msg = item.msg if isinstance(item, KafkaError) else item
    return Origin(
        topic=msg.topic or "",
        partition=msg.partition if msg.partition is not None else -1,
        offset=msg.offset if msg.offset is not None else -1,
        payload=msg.value or b"",
    )


def _decode(payload: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected("invalid_json", str(exc).split(":", 1)[0]) from None
    if not isinstance(obj, dict):
        raise Rejected("not_an_object", type(obj).__name__)
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise Rejected("bad_value", f"unsupported schema_version {str(version)[:20]}")
    return obj


def _text(obj: dict[str, Any], name: str) -> str:
    if name not in obj or obj[name] is None:
        raise Rejected("missing_field", name)
    value = obj[name]
    if not isinstance(value, str):
        raise Rejected("wrong_type", f"{name} must be a string")
    if not value:
        raise Rejected("bad_value", f"{name} is empty")
    return value


def _positive(obj: dict[str, Any], name: str) -> float:
    if name not in obj or obj[name] is None:
        raise Rejected("missing_field", name)
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Rejected("wrong_type", f"{name} must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise Rejected("not_finite", name)
    if number <= 0:
        raise Rejected("not_positive", name)
    return number


def _symbol(obj: dict[str, Any], symbols: frozenset[str]) -> str:
    symbol = _text(obj, "symbol")
    if symbol not in symbols:
        raise Rejected("unknown_symbol", symbol[:40])
    return symbol


def _event_time(obj: dict[str, Any]) -> datetime:
    if "event_time" not in obj or obj["event_time"] is None:
        raise Rejected("missing_field", "event_time")
    try:
        return parse_event_time(obj["event_time"])
    except ValueError as exc:
        raise Rejected("bad_event_time", str(exc)) from None


def decode_trade(origin: Origin, symbols: frozenset[str]) -> Trade | Heartbeat:
    """Validate a trades-topic record.

    Raises:
        Rejected: with the first problem found.

    """
    obj = _decode(origin.payload)
    kind = obj.get("type", "trade")
    if kind == "heartbeat":
        return Heartbeat(_symbol(obj, symbols), _event_time(obj), origin)
    if kind != "trade":
        raise Rejected("unknown_type", str(kind)[:40])
    side = _text(obj, "side")
    if side not in ("buy", "sell"):
        raise Rejected("bad_value", "side must be 'buy' or 'sell'")
    return Trade(
        trade_id=_text(obj, "trade_id"),
        symbol=_symbol(obj, symbols),
        price=_positive(obj, "price"),
        quantity=_positive(obj, "quantity"),
        side=side,
        account=_text(obj, "account"),
        venue=_text(obj, "venue"),
        event_time=_event_time(obj),
        origin=origin,
    )


def decode_quote(origin: Origin, symbols: frozenset[str]) -> Quote:
    """Validate a quotes-topic record; a crossed or locked book (bid >= ask) is rejected.

    Raises:
        Rejected: with the first problem found.

    """
    obj = _decode(origin.payload)
    quote = Quote(
        quote_id=_text(obj, "quote_id"),
        symbol=_symbol(obj, symbols),
        bid=_positive(obj, "bid"),
        ask=_positive(obj, "ask"),
        bid_size=_positive(obj, "bid_size"),
        ask_size=_positive(obj, "ask_size"),
        event_time=_event_time(obj),
        origin=origin,
    )
    if quote.bid >= quote.ask:
        raise Rejected("crossed_quote", f"bid {quote.bid} >= ask {quote.ask}")
    return quote


def parse_trade(
    item: SourceItem, *, flow: str, symbols: frozenset[str]
) -> Trade | Heartbeat | DeadLetter:
    """A trades-topic item as a trade or heartbeat, or as a dead letter naming the problem."""
    origin = origin_of(item)
    if isinstance(item, KafkaError):
        return DeadLetter(flow, origin, f"kafka_error: {item.err}", utc_now())
    try:
        return decode_trade(origin, symbols)
    except Rejected as exc:
        return DeadLetter(flow, origin, str(exc), utc_now())


def parse_quote(item: SourceItem, *, flow: str, symbols: frozenset[str]) -> Quote | DeadLetter:
    """A quotes-topic item as a quote, or as a dead letter naming the problem."""
    origin = origin_of(item)
    if isinstance(item, KafkaError):
        return DeadLetter(flow, origin, f"kafka_error: {item.err}", utc_now())
    try:
        return decode_quote(origin, symbols)
    except Rejected as exc:
        return DeadLetter(flow, origin, str(exc), utc_now())


def late(flow: str, record: Trade | Quote | Heartbeat) -> DeadLetter:
    """The dead letter for a record whose window had already closed."""
    return DeadLetter(flow, record.origin, "late", utc_now())


def is_dead_letter(item: object) -> TypeGuard[DeadLetter]:
    """Branch predicate: True for dead letters."""
    return isinstance(item, DeadLetter)


def is_trade(item: object) -> TypeGuard[Trade]:
    """Branch predicate: True for trades (heartbeats are not stored)."""
    return isinstance(item, Trade)
