import json
import math

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage

from flowforge_pipeline.contract.catalog import DLQ_TOPIC
from flowforge_pipeline.flows.validation import (
    DeadLetter,
    Heartbeat,
    Quote,
    Trade,
    parse_quote,
    parse_trade,
)
from flows.helpers import SYMBOLS, T0, heartbeat, quote, trade


def _msg(value: bytes, topic: str = "trades") -> KafkaSourceMessage:
    return KafkaSourceMessage(key=None, value=value, topic=topic, partition=2, offset=7)


def _trade_bytes(**change: object) -> bytes:
    obj = trade(1)
    for k, v in change.items():
        if v is ...:
            del obj[k]
        else:
            obj[k] = v
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_an_object: list"),
        (_trade_bytes(price=...), "missing_field: price"),
        (_trade_bytes(price="12.5"), "wrong_type: price must be a number"),
        (_trade_bytes(quantity=True), "wrong_type: quantity must be a number"),
        (
            b'{"type":"trade","trade_id":"1","symbol":"AAA","price":NaN,"quantity":1,'
            b'"side":"buy","account":"a","venue":"v","event_time":"2024-01-01T00:00:00+00:00"}',
            "not_finite: price",
        ),
        (_trade_bytes(price=0), "not_positive: price"),
        (_trade_bytes(quantity=-3), "not_positive: quantity"),
        (_trade_bytes(symbol="ZZZ"), "unknown_symbol: ZZZ"),
        (_trade_bytes(side="hold"), "bad_value: side must be 'buy' or 'sell'"),
        (
            _trade_bytes(event_time="2024-01-01T00:00:00"),
            "bad_event_time: event_time has no UTC offset",
        ),
        (_trade_bytes(event_time="yesterday"), "bad_event_time"),
        (_trade_bytes(type="cancel"), "unknown_type: cancel"),
        (_trade_bytes(schema_version=2), "bad_value: unsupported schema_version 2"),
    ],
)
def test_bad_trades_become_dead_letters_with_reason(value: bytes, reason: str) -> None:
    out = parse_trade(_msg(value), flow="test", symbols=SYMBOLS)
    assert isinstance(out, DeadLetter)
    assert out.reason.startswith(reason)
    msg = out.message()
    assert set(msg) == {f.name for f in DLQ_TOPIC.fields}
    assert (msg["source_topic"], msg["partition"], msg["offset"]) == ("trades", 2, 7)
    assert msg["payload"] == value.decode("utf-8", errors="replace")


def test_valid_trade_and_heartbeat() -> None:
    t = parse_trade(_msg(_trade_bytes(schema_version=1)), flow="test", symbols=SYMBOLS)
    assert isinstance(t, Trade)
    assert (t.symbol, t.price, t.quantity, t.event_time) == ("AAA", 100.0, 1.0, T0)
    assert t.event_time.tzinfo is not None
    value = json.dumps(heartbeat("BBB", T0 - T0)).encode()
    hb = parse_trade(_msg(value), flow="t", symbols=SYMBOLS)
    assert isinstance(hb, Heartbeat) and hb.symbol == "BBB"


def test_offset_event_time_is_converted_to_utc() -> None:
    t = parse_trade(
        _msg(_trade_bytes(event_time="2024-03-04T12:00:00.000000+02:00")), flow="t", symbols=SYMBOLS
    )
    assert isinstance(t, Trade) and t.event_time == T0


@pytest.mark.parametrize(
    ("bid", "ask", "reason"),
    [
        (101.0, 100.0, "crossed_quote"),
        (100.0, 100.0, "crossed_quote"),
        (math.inf, 100.0, "not_finite: bid"),
        (-1.0, 100.0, "not_positive: bid"),
    ],
)
def test_bad_quotes(bid: float, ask: float, reason: str) -> None:
    value = json.dumps(quote(1, bid=bid, ask=ask)).encode()
    out = parse_quote(_msg(value, "quotes"), flow="t", symbols=SYMBOLS)
    assert isinstance(out, DeadLetter) and out.reason.startswith(reason)


def test_valid_quote() -> None:
    out = parse_quote(_msg(json.dumps(quote(1)).encode(), "quotes"), flow="t", symbols=SYMBOLS)
    assert isinstance(out, Quote) and (out.bid, out.ask) == (99.0, 101.0)


def test_source_error_becomes_a_dead_letter_naming_it() -> None:
    from bytewax.connectors.kafka import KafkaError as SourceError
    from confluent_kafka import KafkaError

    item = SourceError(KafkaError(KafkaError._BAD_MSG), _msg(b"\x00\x01"))
    out = parse_trade(item, flow="t", symbols=SYMBOLS)
    assert isinstance(out, DeadLetter)
    assert out.code == "kafka_error"
    assert (out.origin.partition, out.origin.offset) == (2, 7)


@pytest.mark.parametrize(
    ("change", "expect_time", "expect_price"),
    [
        ({}, T0, 100.0),
        ({"event_time": "2024-03-04T12:00:00+02:00"}, T0, 100.0),  # offset → UTC
        ({"event_time": "2024-03-04T10:00:00Z"}, T0, 100.0),
        ({"price": 7}, T0, 7.0),  # an integer price is a number
        ({"schema_version": 1, "extra": [1, {"x": None}]}, T0, 100.0),  # unknown fields ignored
    ],
)
def test_valid_trade_variants_decode_to_the_same_values(
    change: dict, expect_time: object, expect_price: float
) -> None:
    out = parse_trade(_msg(_trade_bytes(**change)), flow="test", symbols=SYMBOLS)
    assert isinstance(out, Trade)
    assert out.event_time == expect_time and out.event_time.tzinfo is not None
    assert out.event_time.utcoffset().total_seconds() == 0
    assert (out.price, out.trade_id, out.side) == (expect_price, "42-1", "buy")
    assert out.origin.offset == 7


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_trade_bytes(schema_version=True), "bad_value: unsupported schema_version True"),
        (_trade_bytes(account=""), "bad_value: account is empty"),
        (_trade_bytes(venue=None), "missing_field: venue"),
        (_trade_bytes(price=1e308 * 10), "not_finite: price"),
        (b'{"type":"trade","price":1}', "missing_field: side"),
        (_trade_bytes(type="heartbeat"), ""),  # a heartbeat with extra fields is a heartbeat
    ],
)
def test_records_the_fast_decoder_declines_get_the_field_by_field_verdict(
    value: bytes, reason: str
) -> None:
    out = parse_trade(_msg(value), flow="test", symbols=SYMBOLS)
    if reason:
        assert isinstance(out, DeadLetter)
        assert out.reason == reason
        assert out.origin.payload == value
    else:
        assert isinstance(out, Heartbeat)
