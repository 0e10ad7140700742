from datetime import datetime, timedelta

import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main
from confluent_kafka import KafkaError, Message

from flowforge_pipeline.contract.catalog import VWAP_KEY
from flowforge_pipeline.flows import vwap
from flowforge_pipeline.flows.validation import DeadLetter
from flowforge_pipeline.sinks.clickhouse import RowBatch
from flowforge_pipeline.sinks.redis import LatestValue
from flows.helpers import SYMBOLS, T0, heartbeat, messages, trade

S = timedelta(seconds=1)
M = timedelta(minutes=1)


def _run(payloads: list, workers: int = 1, lateness: timedelta = S, batch_size: int = 1):
    rows: list[RowBatch] = []
    latest: list[LatestValue] = []
    dead: list[DeadLetter] = []
    flow = vwap.build(
        TestingSource(messages("trades", payloads), batch_size=batch_size),
        TestingSink(rows),
        TestingSink(latest),
        TestingSink(dead),
        symbols=SYMBOLS,
        lateness=lateness,
        flush_size=50,
        max_wait=timedelta(seconds=30),
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    table = sorted((r for b in rows for r in b.rows), key=lambda r: (r[0], r[1]))
    return table, latest, dead


def test_window_maths_and_boundaries() -> None:
    payloads = [
        trade(1, price=10.0, quantity=1, at=0 * M),
        trade(2, price=20.0, quantity=3, at=4 * M + 59 * S),  # last second of window 1
        trade(3, price=30.0, quantity=2, at=5 * M),  # first instant of window 2
        trade(4, symbol="BBB", price=7.0, quantity=4, at=1 * M),
    ]
    table, latest, dead = _run(payloads)
    assert dead == []
    assert table == [
        ("AAA", T0, T0 + 5 * M, 70.0 / 4, 4.0, 70.0, 2, 20.0, 10.0),
        ("AAA", T0 + 5 * M, T0 + 10 * M, 30.0, 2.0, 60.0, 1, 30.0, 30.0),
        ("BBB", T0, T0 + 5 * M, 7.0, 4.0, 28.0, 1, 7.0, 7.0),
    ]
    newest = {lv.key: lv.value for lv in latest}
    assert newest[VWAP_KEY.key(symbol="AAA")]["window_start"] == (T0 + 5 * M).isoformat(
        timespec="microseconds"
    )
    assert set(newest[VWAP_KEY.key(symbol="BBB")]) == {f.name for f in VWAP_KEY.fields}


def test_windows_are_aligned_to_the_clock() -> None:
    table, _, _ = _run([trade(1, at=7 * M + 30 * S)])
    assert (table[0][1], table[0][2]) == (T0 + 5 * M, T0 + 10 * M)


def test_late_trade_is_dead_lettered_not_counted() -> None:
    payloads = [
        trade(1, price=10.0, at=1 * M),
        trade(2, price=11.0, at=6 * M),  # watermark passes 5m: window 1 closes
        trade(3, price=99.0, at=2 * M),  # too late for window 1
        trade(4, price=12.0, at=6 * M - 500 * timedelta(milliseconds=1) + 6 * M),
    ]
    table, _, dead = _run(payloads)
    assert [d.reason for d in dead] == ["late"]
    assert dead[0].origin.offset == 2
    assert table[0][3] == 10.0 and table[0][6] == 1


def test_out_of_order_within_lateness_is_kept() -> None:
    payloads = [
        trade(1, price=10.0, at=5 * M + 200 * timedelta(milliseconds=1)),
        trade(2, price=20.0, at=5 * M - 300 * timedelta(milliseconds=1)),
    ]
    table, _, dead = _run(payloads, lateness=S)
    assert dead == []
    assert [r[6] for r in table] == [1, 1]


def test_heartbeat_only_window_gives_no_row() -> None:
    payloads = [heartbeat("AAA", 1 * M), heartbeat("AAA", 6 * M), trade(1, at=11 * M)]
    table, _, _ = _run(payloads)
    assert [r[1] for r in table] == [T0 + 10 * M]


def _tape(n: int) -> list:
    out = []
    for i in range(n):
        sym = "AAA" if i % 3 else "BBB"
        out.append(
            trade(
                i,
                symbol=sym,
                price=100 + (i * 7919 % 101) / 10,
                quantity=1 + i % 5,
                at=i * 1300 * timedelta(milliseconds=1),
            )
        )
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_same_windows_every_run_and_with_two_workers(workers: int) -> None:
    tape = _tape(3000)
    first, _, dead = _run(tape)
    again, _, _ = _run(tape, workers=workers)
    assert dead == []
    assert again == first
    assert sum(r[6] for r in first) == 3000


@pytest.mark.parametrize("workers", [1, 2])
def test_whole_input_batches_give_the_windows_of_single_records(workers: int) -> None:
    payloads: list = []
    for i in range(600):
        sym = "AAA" if i % 3 else "BBB"
        payloads.append(
            trade(i, symbol=sym, price=100.0 + i % 13, quantity=1 + i % 5, at=i * 2 * S)
        )
        if i % 97 == 0:
            payloads.append(heartbeat("BBB", i * 2 * S))
    payloads.insert(450, trade(9999, price=1.0, at=0 * S))  # its window closed long ago
    payloads.insert(100, b"not json")
    single, _, single_dead = _run(payloads, 1)
    batched, latest, dead = _run(payloads, workers, batch_size=128)
    assert batched == single and len(single) >= 8
    assert sorted(d.reason.split(":")[0] for d in dead) == ["invalid_json", "late"]
    assert sorted(d.origin.offset for d in dead) == sorted(d.origin.offset for d in single_dead)
    newest = {lv.key: lv.value["window_start"] for lv in latest}
    assert set(newest) == {VWAP_KEY.key(symbol="AAA"), VWAP_KEY.key(symbol="BBB")}


def _records(payloads: list) -> list:
    parsed = vwap.parse_batch(messages("trades", payloads), SYMBOLS)
    return [r for item in parsed if not isinstance(item, DeadLetter) for r in item[1]]


def test_consumer_batches_parse_like_single_messages() -> None:
    payloads: list = [trade(i, price=10.0 + i, at=i * S) for i in range(5)]
    payloads.insert(2, b"not json")
    payloads.insert(4, heartbeat("BBB", 3 * S))
    payloads.insert(5, trade(77, symbol="ZZZ"))
    single = vwap.parse_batch(messages("trades", payloads), SYMBOLS)
    consumed = vwap.ConsumedBatch([
        Message(topic="trades", partition=0, offset=m.offset, key=m.key, value=m.value)
        for m in messages("trades", payloads)
    ])
    batched = vwap.parse_batch([consumed], SYMBOLS)

    def comparable(items: list) -> list:
        return [(i.origin, i.reason) if isinstance(i, DeadLetter) else i for i in items]

    assert comparable(batched) == comparable(single)
    assert sorted(i.reason.split(":")[0] for i in batched if isinstance(i, DeadLetter)) == [
        "invalid_json",
        "unknown_symbol",
    ]
    error = Message(topic="trades", partition=0, offset=9, value=b"x",
                    error=KafkaError(KafkaError._MSG_TIMED_OUT))
    (letter,) = vwap.parse_batch([vwap.ConsumedBatch([error])], SYMBOLS)
    assert isinstance(letter, DeadLetter) and letter.reason.startswith("kafka_error")
    assert letter.origin.offset == 9


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _logic(clock: _Clock, state: vwap.VwapState | None = None) -> vwap.VwapLogic:
    return vwap.VwapLogic(state or vwap.VwapState(""), S, clock)


def _out(result: tuple) -> list:
    return [x for out in result[0] for x in out]


def test_live_window_closes_on_the_wall_clock_without_a_further_record() -> None:
    clock = _Clock(T0 + 4 * M + 59 * S + 200 * timedelta(milliseconds=1))
    logic = _logic(clock)
    recs = _records([trade(1, price=10.0, at=4 * M + 59 * S)])
    assert _out(logic.on_item(recs)) == []
    assert logic.notify_at() == T0 + 5 * M + S  # window end + lateness
    clock.now = T0 + 5 * M + 500 * timedelta(milliseconds=1)
    assert _out(logic.on_notify()) == []  # not yet: within the lateness
    clock.now = T0 + 5 * M + S
    (row,) = _out(logic.on_notify())
    assert row[:4] == ("AAA", T0, T0 + 5 * M, 10.0)
    assert logic.notify_at() is None
    # a trade delivered later than the lateness after its event time is late
    (letter,) = _out(logic.on_item(_records([trade(2, at=5 * M - S)])))
    assert isinstance(letter, DeadLetter) and letter.reason == "late"


def test_replay_never_waits_on_the_wall_clock() -> None:
    logic = _logic(_Clock(T0 + 24 * 60 * M))
    assert _out(logic.on_item(_records([trade(1, at=1 * M)]))) == []
    assert logic.notify_at() is None
    assert _out(logic.on_notify()) == []
    assert [r[1] for r in _out(logic.on_eof())] == [T0]


def test_resume_from_a_snapshot_gives_the_windows_of_an_uninterrupted_run() -> None:
    recs = [r for r in _records(_tape(1350)) if r.symbol == "AAA"][:900]
    clock = _Clock(T0 + 24 * 60 * M)
    whole = _logic(clock)
    want = [x for i in range(0, 900, 100) for x in _out(whole.on_item(recs[i : i + 100]))]
    first = _logic(clock)
    got = [x for i in range(0, 500, 100) for x in _out(first.on_item(recs[i : i + 100]))]
    snap = first.snapshot()
    first.on_item(recs[500:600])  # work after the snapshot is lost with the process
    resumed = _logic(clock, snap)
    got += [x for i in range(500, 900, 100) for x in _out(resumed.on_item(recs[i : i + 100]))]
    assert got == want and len(want) >= 3
    assert not any(isinstance(x, DeadLetter) for x in want)
