from datetime import timedelta

import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

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
