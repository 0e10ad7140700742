from datetime import timedelta

import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from flowforge_pipeline.contract.catalog import LIVE_PNL, LIVE_POSITIONS, LIVE_QUOTES
from flowforge_pipeline.flows import live_views
from flowforge_pipeline.generator.instruments import load_instruments
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.sinks.postgres import PostgresUpsertSink
from flows.helpers import SYMBOLS, heartbeat, messages, quote, trade
from flows.live_views_support import (
    assert_same_numbers,
    create_schema,
    create_sql_views,
    generated,
    read_table,
    values_only,
)


def _run(
    settings: Settings, msgs: list, workers: int = 1, symbols: frozenset[str] = SYMBOLS
) -> list:
    dead: list = []
    flow = live_views.build(
        TestingSource(msgs, batch_size=2000),
        PostgresUpsertSink(settings, "live_views"),
        TestingSink(dead),
        symbols=symbols,
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return dead


def test_rows_exact(stack_settings: Settings) -> None:
    _, settings = create_schema(stack_settings)
    msgs = messages(
        "trades",
        [
            trade(1, quantity=10, price=100.0, account="a"),
            trade(2, quantity=4, price=110.0, side="sell", account="a"),
            trade(3, quantity=5, price=50.0, side="sell", account="b", at=timedelta(seconds=1)),
        ],
    ) + messages(
        "quotes",
        [
            quote(1, bid=104.0, ask=106.0, at=timedelta(seconds=2)),
            quote(2, bid=1.0, ask=2.0, at=timedelta(seconds=1)),  # older: not the live quote
            quote(3, bid=107.0, ask=106.0, at=timedelta(seconds=3)),  # crossed: dead letter
        ],
    )
    dead = _run(settings, msgs)
    assert [d.code for d in dead] == ["crossed_quote"]
    q = read_table(settings, LIVE_QUOTES)[("AAA",)]
    assert (q["bid"], q["ask"], q["mid"], q["spread"]) == (104.0, 106.0, 105.0, 2.0)
    assert q["spread_bps"] == pytest.approx(2.0 / 105.0 * 1e4)
    pos = read_table(settings, LIVE_POSITIONS)
    assert pos[("a", "AAA")]["net_quantity"] == 6.0
    assert pos[("a", "AAA")]["avg_cost"] == 100.0
    assert pos[("a", "AAA")]["cost_basis"] == 600.0
    assert pos[("b", "AAA")]["cost_basis"] == -250.0
    pnl = read_table(settings, LIVE_PNL)
    a = pnl[("a", "AAA")]
    assert (a["realized_pnl"], a["unrealized_pnl"], a["total_pnl"]) == (40.0, 30.0, 70.0)
    b = pnl[("b", "AAA")]
    assert (b["mark_price"], b["unrealized_pnl"]) == (105.0, -5 * 55.0)
    assert pnl[("a", "*")]["total_pnl"] == 70.0
    assert pnl[("b", "*")]["unrealized_pnl"] == -275.0


@pytest.mark.parametrize("workers", [1, 2])
def test_flow_equals_materialize_sql_on_generated_tape(
    stack_settings: Settings, workers: int
) -> None:
    tape = generated(seed=11, start="2026-11-25T14:30:00+00:00", minutes=8)
    msgs = []
    for topic, recs in tape.items():
        for partition in range(3):
            part = [v for k, v in recs if hash(k) % 3 == partition]
            msgs += [
                KafkaSourceMessage(key=b"k", value=v, topic=topic, partition=partition, offset=i)
                for i, v in enumerate(part)
            ]
    _, flow_settings = create_schema(stack_settings)
    dead = _run(flow_settings, msgs, workers, frozenset(i.symbol for i in load_instruments()))
    assert dead == []
    view_settings = create_sql_views(stack_settings, values_only(tape))
    counts = assert_same_numbers(flow_settings, view_settings)
    assert counts["live_quotes"] > 20
    assert counts["live_positions"] > 100
    assert counts["live_pnl"] > counts["live_positions"] // 2


def _rows(msgs: list, batch_size: int) -> list:
    rows: list = []
    dead: list = []
    run_main(
        live_views.build(
            TestingSource(msgs, batch_size=batch_size), TestingSink(rows), TestingSink(dead),
            symbols=SYMBOLS,
        )
    )
    assert dead == []
    return rows


def _last_per_key(rows: list) -> dict:
    # every column but updated_at (the last value of each row)
    return {(r.table, r.key()): r.values[:-1] for r in rows}


def test_one_input_batch_writes_each_changed_row_once() -> None:
    msgs = messages(
        "trades",
        [
            trade(1, quantity=10, price=100.0, account="a"),
            trade(2, quantity=3, price=101.0, account="b", at=timedelta(seconds=1)),
            trade(3, quantity=4, price=110.0, side="sell", account="a", at=timedelta(seconds=2)),
            trade(4, symbol="BBB", quantity=2, price=20.0, account="a", at=timedelta(seconds=2)),
            heartbeat("BBB", timedelta(seconds=3)),
        ],
    ) + messages(
        "quotes",
        [
            quote(1, bid=104.0, ask=106.0, at=timedelta(seconds=2)),
            quote(2, bid=108.0, ask=110.0, at=timedelta(seconds=4)),  # newest: the one written
            quote(3, bid=1.0, ask=2.0, at=timedelta(seconds=3)),  # older than quote 2
            quote(4, symbol="BBB", bid=21.0, ask=23.0, at=timedelta(seconds=1)),
        ],
    )
    batched = _rows(msgs, batch_size=100)
    keys = [(r.table, r.key()) for r in batched]
    assert len(keys) == len(set(keys)), "a row was written twice from one input batch"
    assert sorted(k for k in keys if k[0] == "live_quotes") == [
        ("live_quotes", ("AAA",)), ("live_quotes", ("BBB",))
    ]
    last = _last_per_key(batched)
    assert last[("live_quotes", ("AAA",))][1:3] == (108.0, 110.0)
    assert last[("live_positions", ("a", "AAA"))][2:5] == (6.0, 100.0, 600.0)
    # a marked to 109: realized 4 x (110 - 100), unrealized 6 x (109 - 100)
    assert last[("live_pnl", ("a", "AAA"))][4:8] == (109.0, 40.0, 54.0, 94.0)
    # a's total over AAA and BBB (2 x (22 - 20) unrealized)
    assert last[("live_pnl", ("a", "*"))][5:8] == (40.0, 58.0, 98.0)
    assert last[("live_pnl", ("b", "*"))][5:8] == (0.0, 24.0, 24.0)
    # record by record (one record per input batch) ends on the same values per row
    one_by_one = _rows(msgs, batch_size=1)
    assert len(one_by_one) > len(batched)
    assert _last_per_key(one_by_one) == last
