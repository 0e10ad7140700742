import json
import math
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, TestingSource, run_main

from flowforge_pipeline.flows import anomaly
from flows.helpers import SYMBOLS, messages, quote, trade

LIMITS = anomaly.Thresholds(warmup_quotes=20, warmup_minutes=2, merge_seconds=30)


def _run(msgs: list) -> tuple[list, list, list]:
    alerts: list = []
    rows: list = []
    dead: list = []
    flow = anomaly.build(
        TestingSource(msgs),
        TestingSink(alerts),
        TestingSink(rows),
        TestingSink(dead),
        symbols=SYMBOLS,
        limits=LIMITS,
        flush_size=10,
        max_wait=timedelta(seconds=1),
    )
    run_main(flow)
    return [json.loads(m.value) for m in alerts], rows, dead


def _calm(n: int) -> list:
    return [
        quote(i, bid=99.0 + 0.001 * (i % 3), ask=101.0 + 0.001 * (i % 3), at=timedelta(seconds=i))
        for i in range(n)
    ]


def test_no_alert_during_warmup_then_spread_and_crossed() -> None:
    qs = [quote(0, bid=90.0, ask=110.0)]  # 10x spread before the baseline exists: silent
    qs += _calm(200)[1:]
    qs += [
        quote(500, bid=94.0, ask=106.0, at=timedelta(seconds=200)),  # 6x spread
        quote(501, bid=94.0, ask=106.0, at=timedelta(seconds=201)),  # same episode
        quote(502, bid=101.0, ask=100.0, at=timedelta(seconds=202)),
    ]  # crossed
    alerts, rows, dead = _run(messages("quotes", qs))
    kinds = [a["alert_type"] for a in alerts]
    assert kinds == ["spread_blowout", "crossed_book"]
    spread = alerts[0]
    assert spread["observed"] == 12.0
    assert abs(spread["baseline"] - 2.0) < 0.1  # the wild first quote is diluted
    assert spread["severity"] == "low"
    assert spread["event_time"].startswith("2024-03-04T10:03:20")
    assert sum(len(b.rows) for b in rows) == 2
    assert dead == []


def test_fat_finger_and_bad_input_goes_to_dead_letters() -> None:
    msgs = (
        messages("quotes", _calm(30))
        + messages(
            "trades",
            [
                trade(1, price=101.0, at=timedelta(seconds=30)),
                trade(2, price=110.0, at=timedelta(seconds=31)),  # 9.9% outside the quote
            ],
        )
        + messages("trades", [b"{not json"], first_offset=9)
    )
    alerts, _, dead = _run(msgs)
    assert [a["alert_type"] for a in alerts] == ["fat_finger"]
    assert alerts[0]["alert_id"] == "AAA-fat_finger-20240304T100031.000000"
    assert [d.code for d in dead] == ["invalid_json"]


def test_severity_grades() -> None:
    assert anomaly.severity(3.5, 3.0) == "low"
    assert anomaly.severity(7.0, 3.0) == "medium"
    assert anomaly.severity(13.0, 3.0) == "high"


def test_stale_quote_seen_from_a_trade_outside_the_frozen_quote() -> None:
    # a quote a second for 100 s, then the book freezes while trades walk away from it
    msgs = messages("quotes", _calm(100)) + messages(
        "trades",
        [
            trade(1, price=100.5, at=timedelta(seconds=101)),  # inside the old quote: no alert
            trade(2, price=101.2, at=timedelta(seconds=101.5)),  # outside, quote 2.5 gaps old
        ],
    )
    alerts, _, _ = _run(msgs)
    assert [a["alert_type"] for a in alerts] == ["stale_quote"]
    assert alerts[0]["event_time"].startswith("2024-03-04T10:01:41.5")
    assert 2.4 < alerts[0]["observed"] < 2.6  # the quote's age in seconds


def test_trade_outside_a_fresh_quote_is_not_stale() -> None:
    msgs = messages("quotes", _calm(100)) + messages(
        "trades",
        [
            trade(1, price=101.2, at=timedelta(seconds=99, milliseconds=500)),  # half a gap old
        ],
    )
    alerts, _, _ = _run(msgs)
    assert alerts == []


def _calendar(close: str) -> anomaly.SessionCalendar:
    """AAA and BBB trade 09:00 to `close` UTC (a reference equity with other hours)."""
    import dataclasses

    from flowforge_pipeline.generator.instruments import load_instruments

    equity = next(i for i in load_instruments() if i.asset_class == "equity")
    return anomaly.SessionCalendar(
        dataclasses.replace(equity, symbol=s, session_timezone="UTC", session_open="09:00",
                            session_close=close)
        for s in ("AAA", "BBB"))


def _frozen_without_trades(batch_size: int, close: str) -> list:
    """AAA quotes every second for 55 s then freezes with no trade; BBB goes on to 300 s."""
    aaa = [quote(i, at=timedelta(seconds=i)) for i in range(55)]
    bbb = [quote(1000 + i, symbol="BBB", at=timedelta(seconds=i)) for i in range(300)]
    bbb_trades = [trade(i, symbol="BBB", price=101.0, at=timedelta(seconds=i + 0.5))
                  for i in range(300)]
    msgs = sorted(messages("quotes", aaa + bbb) + messages("trades", bbb_trades),
                  key=lambda m: json.loads(m.value)["event_time"])
    alerts: list = []
    flow = anomaly.build(TestingSource(msgs, batch_size=batch_size), TestingSink(alerts),
                         TestingSink([]), TestingSink([]), symbols=SYMBOLS, limits=LIMITS,
                         flush_size=10, max_wait=timedelta(seconds=1),
                         calendar=_calendar(close))
    run_main(flow)
    return [json.loads(m.value) for m in alerts]


def test_frozen_quote_with_no_trades_alerts_on_the_clock_once_the_silence_is_long() -> None:
    # usual gap 1 s, sessions of 90 min: 5,400 quotes, ln 5400 + 2.5 = 11.1 gaps of silence
    alerts = _frozen_without_trades(batch_size=1, close="10:30")
    assert [(a["symbol"], a["alert_type"]) for a in alerts] == [("AAA", "stale_quote")]
    limit = math.log(5400) + anomaly.Thresholds().stale_clock_margin
    assert alerts[0]["event_time"].startswith("2024-03-04T10:01:05.")  # 54 s + 11.1 s
    assert abs(alerts[0]["observed"] - limit) < 0.05  # the quote's age in seconds
    # the event time is the crossing itself, however far apart the clock's ticks are
    assert _frozen_without_trades(batch_size=97, close="10:30") == alerts


def test_silence_after_the_session_closed_is_not_stale() -> None:
    # the same quotes, but the session closes at 10:01, 6 s after AAA's last quote
    assert _frozen_without_trades(batch_size=1, close="10:01") == []


def _detect(quotes: list, trades: list, limits: anomaly.Thresholds = LIMITS) -> list:
    """Feed parsed records through one symbol's detector in event-time order."""
    items = messages("quotes", quotes) + messages("trades", trades)
    records = [anomaly.parse(item, SYMBOLS) for item in items]
    records.sort(key=lambda r: r.event_time)
    state, out = None, []
    for record in records:
        state, alerts = anomaly.detect(state, record, limits)
        out += alerts
    return out


def _tape(seconds: int, quote_every: float, trade_every: float, start: float = 0.0) -> tuple:
    """Evenly spaced quotes (calm book) and at-touch trades from `start` for `seconds`."""
    qs = [quote(i, at=timedelta(seconds=start + i * quote_every))
          for i in range(int(seconds / quote_every))]
    ts = [trade(i, price=101.0, at=timedelta(seconds=start + 0.1 + i * trade_every))
          for i in range(int(seconds / trade_every))]
    return qs, ts


def test_volume_burst_on_a_quiet_symbol_alerts_once_its_evidence_suffices() -> None:
    # 0.2 trades/s with a quote a second for 10 minutes, then 5x the trades, quotes unchanged
    qs, ts = _tape(900, 1.0, 5.0)
    burst = [trade(10_000 + i, price=101.0, at=timedelta(seconds=600.05 + i)) for i in range(60)]
    burst = [t for t in burst if t["event_time"] not in {x["event_time"] for x in ts}]
    alerts = [a for a in _detect(qs, ts + burst) if a.alert_type == "volume_burst"]
    assert len(alerts) == 1
    delay = (alerts[0].event_time - anomaly.parse_event_time(burst[0]["event_time"]))
    assert 5.0 < delay.total_seconds() < 20.0  # a quiet symbol needs a few seconds of evidence
    assert 10.0 < alerts[0].baseline < 14.0  # 12 trades a minute
    assert alerts[0].observed > 3 * alerts[0].baseline


def test_activity_step_seen_in_the_quotes_too_is_not_a_volume_burst() -> None:
    # 10 minutes at 0.2 trades/s, then 4x trades *and* 4x quotes: busier, not a burst
    qs, ts = _tape(600, 1.0, 5.0)
    qs2, ts2 = _tape(300, 0.25, 1.25, start=600.0)
    qs2 = [dict(q, quote_id=f"b-{i}") for i, q in enumerate(qs2)]
    ts2 = [dict(t, trade_id=f"b-{i}") for i, t in enumerate(ts2)]
    assert [a.alert_type for a in _detect(qs + qs2, ts + ts2)] == []
    # the same step in trades without more quotes is a burst
    lagging = [a for a in _detect(qs + qs2[::4], ts + ts2) if a.alert_type == "volume_burst"]
    assert lagging


def test_stale_quote_from_prints_inside_a_frozen_quote() -> None:
    # a quote a second for 100 s, then only trades, each strictly inside the last quote
    qs, _ = _tape(100, 1.0, 5.0)
    inside = [trade(i, price=100.5, at=timedelta(seconds=99.5 + i)) for i in range(1, 6)]
    alerts = _detect(qs, inside)
    assert [a.alert_type for a in alerts] == ["stale_quote"]
    # evidence: 2.3 per inside print + age in gaps: 4 prints at 4.5 s -> 13.7 >= 12
    assert alerts[0].event_time == anomaly.parse_event_time(inside[3]["event_time"])
    # the same prints at the touch are what a live book does: no alert before 12 gaps
    at_touch = [dict(t, price=101.0) for t in inside]
    assert _detect(qs, at_touch) == []


# ---------------------------------------------------------------- arrival order
def _tape_messages(rate: float) -> list[KafkaSourceMessage]:
    """40 minutes of the generator's labeled tape as Kafka messages on 3 partitions a topic."""
    from flowforge_pipeline.generator.anomalies import AnomalyOptions
    from flowforge_pipeline.generator.instruments import load_instruments
    from flowforge_pipeline.generator.tape import Tape, to_us

    tape = Tape(load_instruments(), 7, 10.0, 50.0, anomalies=AnomalyOptions(rate_per_hour=rate))
    start = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
    offsets: dict[tuple[str, int], int] = {}
    out: list[KafkaSourceMessage] = []
    for _, records in tape.records(to_us(start), to_us(start + timedelta(minutes=40))):
        for topic, key, stamp, value in records:
            if topic not in ("trades", "quotes"):
                continue
            part = zlib.crc32(key.encode()) % 3
            offset = offsets.get((topic, part), 0)
            offsets[topic, part] = offset + 1
            out.append(KafkaSourceMessage(key=key.encode(), value=value.encode(), topic=topic,
                                          partition=part, offset=offset, timestamp=(1, stamp)))
    return out


class _Partition(StatefulSourcePartition[Any, int]):
    def __init__(self, msgs: list[KafkaSourceMessage], size: int, at: int) -> None:
        self._msgs, self._size, self._at = msgs, size, at
        self._calls = 0

    def next_batch(self) -> list[Any]:
        if self._at >= len(self._msgs):
            raise StopIteration
        self._calls += 1
        if self._calls % 2:  # like a Kafka client that has not fetched the next records yet
            return []
        batch = self._msgs[self._at:self._at + self._size]
        self._at += len(batch)
        return batch

    def snapshot(self) -> int:
        return self._at


class _Partitioned(FixedPartitionedSource[Any, int]):
    """One source partition per (topic, partition), read `sizes[topic]` records at a time."""

    def __init__(self, msgs: list[KafkaSourceMessage], sizes: dict[str, int]) -> None:
        self._parts: dict[str, list[KafkaSourceMessage]] = {}
        for m in msgs:
            self._parts.setdefault(f"{m.topic}-{m.partition}", []).append(m)
        self._sizes = sizes

    def list_parts(self) -> list[str]:
        return sorted(self._parts)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        return _Partition(self._parts[for_part], self._sizes[for_part.split("-")[0]],
                          resume_state or 0)


def _alerts_of(source: Any) -> list[str]:
    alerts: list = []
    flow = anomaly.build(source, TestingSink(alerts), TestingSink([]), TestingSink([]),
                         symbols=frozenset(load_symbols()), limits=anomaly.Thresholds(),
                         flush_size=100, max_wait=timedelta(seconds=1),
                         calendar=anomaly.reference_calendar())
    run_main(flow)
    return sorted(m.value.decode() for m in alerts)


def load_symbols() -> list[str]:
    from flowforge_pipeline.generator.instruments import load_instruments

    return [i.symbol for i in load_instruments()]


def test_alerts_do_not_depend_on_how_the_topics_interleave() -> None:
    msgs = _tape_messages(rate=240.0)
    in_order = _alerts_of(TestingSource(msgs, batch_size=500))
    kinds = {json.loads(a)["alert_type"] for a in in_order}
    assert {"stale_quote", "volume_burst", "fat_finger", "spread_blowout"} <= kinds
    # Trades read far ahead of quotes (as a backfill reads a topic of fewer, smaller
    # records), every other poll empty, through the aligned source and its markers...
    racing = _Partitioned(msgs, {"trades": 3000, "quotes": 200})
    assert _alerts_of(anomaly.AlignedSource(racing)) == in_order
    # ...and with no markers at all: every trade first, then every quote.
    trades_first = [m for m in msgs if m.topic == "trades"] + [
        m for m in msgs if m.topic == "quotes"
    ]
    assert _alerts_of(TestingSource(trades_first, batch_size=700)) == in_order
    # The order matters: fed to the detectors in that arrival order, the alerts differ.
    symbols = frozenset(load_symbols())
    states: dict[str, Any] = {}
    raw: list[str] = []
    for m in trades_first:
        rec = anomaly.parse(m, symbols)
        if isinstance(rec, anomaly.Trade | anomaly.Quote | anomaly.CrossedQuote):
            states[rec.symbol], found = anomaly.detect(states.get(rec.symbol), rec,
                                                      anomaly.Thresholds())
            raw += [json.dumps(a.message()) for a in found]
    assert len(raw) != len(in_order)
