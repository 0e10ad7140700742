"""Turning raw Kafka records into typed trades and quotes, or dead letters with a reason.

Every check the contract implies lives here, once, so all flows reject the same records for
the same reasons. A rejected record keeps its original bytes and its topic/partition/offset,
so it can be found, fixed and replayed; nothing is dropped silently.

Decoding is the largest share of every flow's CPU, so a well-formed record takes a fast path:
msgspec decodes and type-checks it in C against a schema, and the few remaining checks run on
typed fields. Anything the fast path does not accept outright (malformed, heartbeat, wrong
type, missing field, ...) is decoded again by the field-by-field path, which alone decides
the reason, so a dead letter's reason does not depend on which path saw the record first.
The records are msgspec `Struct`s rather than dataclasses because they are built once per
event in every flow and a frozen Struct costs a fraction of a frozen dataclass to create.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard, TypeVar

import msgspec
from bytewax.connectors.kafka import KafkaError

from flowforge_pipeline.flows.common import SourceItem, iso, parse_event_time, utc_now

_R = TypeVar("_R")

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


class Origin(msgspec.Struct, frozen=True, gc=False):
    """Where a record came from, with its bytes as received (kept for the dead-letter topic)."""

    topic: str
    partition: int
    offset: int
    payload: bytes


class Trade(msgspec.Struct, frozen=True):
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


class Heartbeat(msgspec.Struct, frozen=True):
    """Advances event time of a quiet symbol; never stored."""

    symbol: str
    event_time: datetime
    origin: Origin


class Quote(msgspec.Struct, frozen=True):
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


class _TradeWire(msgspec.Struct, gc=False):
    """A trade as the fast path expects it on the wire (unknown fields are ignored)."""

    trade_id: str
    symbol: str
    price: float
    quantity: float
    side: str
    account: str
    venue: str
    event_time: str
    type: str = "trade"
    schema_version: Any = SCHEMA_VERSION


class _QuoteWire(msgspec.Struct, gc=False):
    """A quote as the fast path expects it on the wire (unknown fields are ignored)."""

    quote_id: str
    symbol: str
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    event_time: str
    schema_version: Any = SCHEMA_VERSION


_TRADE_DECODER = msgspec.json.Decoder(_TradeWire)
_QUOTE_DECODER = msgspec.json.Decoder(_QuoteWire)
_FAST_FAILED = (msgspec.DecodeError, msgspec.ValidationError)


def _fast_time(raw: str) -> datetime | None:
    """`parse_event_time` for the common case; None where only the slow path may decide."""
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    offset = parsed.utcoffset()
    if offset is None:
        return None
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def _ok_version(version: Any) -> bool:
    return version == SCHEMA_VERSION and not isinstance(version, bool)


def _fast_trade(origin: Origin, symbols: frozenset[str]) -> Trade | None:
    """A trade if every check passes on the fast path, else None (the slow path decides)."""
    try:
        w = _TRADE_DECODER.decode(origin.payload)
    except _FAST_FAILED:
        return None
    if (
        w.type != "trade"
        or not _ok_version(w.schema_version)
        or w.side not in ("buy", "sell")
        or w.symbol not in symbols
        or not (w.trade_id and w.account and w.venue)
        or not (0 < w.price < math.inf and 0 < w.quantity < math.inf)
    ):
        return None
    ts = _fast_time(w.event_time)
    if ts is None:
        return None
    return Trade(w.trade_id, w.symbol, w.price, w.quantity, w.side, w.account, w.venue, ts, origin)


def _fast_quote(origin: Origin, symbols: frozenset[str]) -> Quote | None:
    """A quote if every check passes on the fast path, else None (the slow path decides)."""
    try:
        w = _QUOTE_DECODER.decode(origin.payload)
    except _FAST_FAILED:
        return None
    if (
        not _ok_version(w.schema_version)
        or w.symbol not in symbols
        or not w.quote_id
        or not (0 < w.bid < w.ask < math.inf)
        or not (0 < w.bid_size < math.inf and 0 < w.ask_size < math.inf)
    ):
        return None
    ts = _fast_time(w.event_time)
    if ts is None:
        return None
    return Quote(w.quote_id, w.symbol, w.bid, w.ask, w.bid_size, w.ask_size, ts, origin)


def decode_trade(origin: Origin, symbols: frozenset[str]) -> Trade | Heartbeat:
    """Validate a trades-topic record.

    Raises:
        Rejected: with the first problem found.

    """
    fast = _fast_trade(origin, symbols)
    if fast is not None:
        return fast
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
    fast = _fast_quote(origin, symbols)
    if fast is not None:
        return fast
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


def _parse(
    item: SourceItem,
    flow: str,
    symbols: frozenset[str],
    decode: Callable[[Origin, frozenset[str]], _R],
) -> _R | DeadLetter:
    """`decode` of a source item, or the dead letter naming why it cannot be used."""
    origin = origin_of(item)
    if isinstance(item, KafkaError):
        return DeadLetter(flow, origin, f"kafka_error: {item.err}", utc_now())
    try:
        return decode(origin, symbols)
    except Rejected as exc:
        return DeadLetter(flow, origin, str(exc), utc_now())


def parse_trade(
    item: SourceItem, *, flow: str, symbols: frozenset[str]
) -> Trade | Heartbeat | DeadLetter:
    """A trades-topic item as a trade or heartbeat, or as a dead letter naming the problem."""
    return _parse(item, flow, symbols, decode_trade)


def parse_quote(item: SourceItem, *, flow: str, symbols: frozenset[str]) -> Quote | DeadLetter:
    """A quotes-topic item as a quote, or as a dead letter naming the problem."""
    return _parse(item, flow, symbols, decode_quote)


def parse_trades(
    items: Iterable[SourceItem], *, flow: str, symbols: frozenset[str]
) -> list[Trade | Heartbeat | DeadLetter]:
    """`parse_trade` over a whole batch of source items, in order (one Python call per batch)."""
    return [parse_trade(item, flow=flow, symbols=symbols) for item in items]


def by_symbol(
    records: Iterable[Trade | Heartbeat | Quote | DeadLetter],
) -> list[DeadLetter | tuple[str, list[Any]]]:
    """A batch's dead letters, then one `(symbol, [record, ...])` per symbol, order kept.

    Keyed flows step once per symbol per input batch instead of once per record: a
    symbol's records keep their relative order, which is all their state depends on.
    """
    dead: list[DeadLetter | tuple[str, list[Any]]] = []
    groups: dict[str, list[Any]] = {}
    for record in records:
        if isinstance(record, DeadLetter):
            dead.append(record)
        else:
            group = groups.get(record.symbol)
            if group is None:
                groups[record.symbol] = [record]
            else:
                group.append(record)
    dead.extend(groups.items())
    return dead


def late(flow: str, record: Trade | Quote | Heartbeat) -> DeadLetter:
    """The dead letter for a record whose window had already closed."""
    return DeadLetter(flow, record.origin, "late", utc_now())


def is_dead_letter(item: object) -> TypeGuard[DeadLetter]:
    """Branch predicate: True for dead letters."""
    return isinstance(item, DeadLetter)


def is_trade(item: object) -> TypeGuard[Trade]:
    """Branch predicate: True for trades (heartbeats are not stored)."""
    return isinstance(item, Trade)
