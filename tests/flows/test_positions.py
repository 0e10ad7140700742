from datetime import timedelta

import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from flowforge_pipeline.contract.catalog import POSITION_KEY
from flowforge_pipeline.flows import positions
from flowforge_pipeline.flows.positions import Book
from flows.helpers import SYMBOLS, heartbeat, messages, trade


@pytest.mark.parametrize(
    ("trades", "net", "avg", "realized"),
    [
        ([(10, 100.0), (10, 110.0)], 20, 105.0, 0.0),  # build a long
        ([(10, 100.0), (-4, 110.0)], 6, 100.0, 40.0),  # partial close at a profit
        ([(10, 100.0), (-10, 90.0)], 0, 0.0, -100.0),  # flat: avg cost resets
        ([(10, 100.0), (-15, 120.0)], -5, 120.0, 200.0),  # flip: remainder opens at price
        ([(-5, 50.0), (-5, 60.0), (4, 40.0)], -6, 55.0, 60.0),  # short, buy back cheaper
    ],
)
def test_average_cost_book(trades: list, net: float, avg: float, realized: float) -> None:
    book = Book()
    for q, p in trades:
        book.apply(q, p)
    assert (book.net_quantity, book.avg_cost, book.realized_pnl) == pytest.approx(
        (net, avg, realized)
    )


def _run(payloads: list, workers: int = 1, batch_size: int = 1) -> dict:
    out: list = []
    dead: list = []
    flow = positions.build(
        TestingSource(messages("trades", payloads), batch_size=batch_size),
        TestingSink(out),
        TestingSink(dead),
        symbols=SYMBOLS,
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert dead == []
    return {lv.key: lv.value for lv in out}


@pytest.mark.parametrize("workers", [1, 2])
def test_net_position_per_symbol_and_account(workers: int) -> None:
    payloads = [
        trade(1, quantity=10, price=100.0, account="a"),
        trade(2, quantity=4, price=110.0, side="sell", account="b"),
        heartbeat("AAA", timedelta(seconds=5)),
        trade(3, quantity=3, price=105.0, side="sell", account="a"),
        trade(4, symbol="BBB", quantity=2, price=7.0, account="a"),
    ]
    latest = _run(payloads, workers)
    aaa = latest[POSITION_KEY.key(symbol="AAA")]
    assert set(aaa) == {f.name for f in POSITION_KEY.fields}
    assert aaa["net_quantity"] == 3.0
    assert aaa["accounts"]["a"] == {"net_quantity": 7.0, "avg_cost": 100.0, "realized_pnl": 15.0}
    assert aaa["accounts"]["b"] == {"net_quantity": -4.0, "avg_cost": 110.0, "realized_pnl": 0.0}
    assert aaa["realized_pnl"] == 15.0
    assert latest[POSITION_KEY.key(symbol="BBB")]["net_quantity"] == 2.0


@pytest.mark.parametrize("workers", [1, 2])
def test_whole_input_batches_end_in_the_values_of_single_records(workers: int) -> None:
    payloads: list = []
    for i in range(400):
        payloads.append(
            trade(
                i,
                symbol="AAA" if i % 3 else "BBB",
                quantity=1 + i % 7,
                price=100.0 + (i % 11),
                side="sell" if i % 4 == 0 else "buy",
                account=f"acct-{i % 5}",
                at=timedelta(seconds=i),
            )
        )
        if i % 50 == 0:
            payloads.append(heartbeat("AAA", timedelta(seconds=i)))

    def books(latest: dict) -> dict:
        return {
            k: {f: v for f, v in value.items() if f != "updated_at"} for k, value in latest.items()
        }

    assert books(_run(payloads, workers, batch_size=64)) == books(_run(payloads, 1))
