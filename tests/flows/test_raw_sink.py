from datetime import timedelta

from bytewax.testing import TestingSink, TestingSource, run_main

from flowforge_pipeline.flows import raw_sink
from flowforge_pipeline.flows.validation import DeadLetter
from flowforge_pipeline.sinks.clickhouse import RowBatch
from flows.helpers import SYMBOLS, heartbeat, messages, quote, trade


def _run(items: list, flush_size: int = 50) -> tuple[list[RowBatch], list[DeadLetter]]:
    batches: list[RowBatch] = []
    dead: list[DeadLetter] = []
    flow = raw_sink.build(
        TestingSource(items),
        TestingSink(batches),
        TestingSink(dead),
        symbols=SYMBOLS,
        flush_size=flush_size,
        max_wait=timedelta(seconds=30),
    )
    run_main(flow)
    return batches, dead


def test_trades_and_quotes_go_to_their_tables_in_batches_without_heartbeats() -> None:
    trades = [trade(i, at=timedelta(seconds=i)) for i in range(120)]
    trades.insert(10, heartbeat("BBB", timedelta(seconds=10)))
    quotes = [quote(i, at=timedelta(seconds=i)) for i in range(7)]
    items = messages("trades", trades, partition=1) + messages("quotes", quotes, partition=0)
    batches, dead = _run(items)
    assert dead == []
    by_table: dict[str, list] = {}
    for b in batches:
        by_table.setdefault(b.table, []).append(b.rows)
    # the first 50 arrive well within the max wait, so the threshold doubles to 100;
    # the remaining 70 flush at end of input
    assert [len(rows) for rows in by_table["raw_trades"]] == [50, 70]
    assert [len(rows) for rows in by_table["raw_quotes"]] == [7]
    stored = [row for rows in by_table["raw_trades"] for row in rows]
    assert [r[0] for r in stored] == [f"42-{i}" for i in range(120)]
    assert {r[raw_sink.TRADES_SPEC.index("kafka_partition")] for r in stored} == {1}
    # the heartbeat occupied offset 10 and is not stored
    offsets = [r[raw_sink.TRADES_SPEC.index("kafka_offset")] for r in stored]
    assert 10 not in offsets and offsets == sorted(offsets)


def test_bad_records_are_dead_lettered_and_the_rest_stored() -> None:
    items = messages("trades", [trade(1), b"garbage", trade(2, price=-1), trade(3)]) + messages(
        "quotes", [quote(1, bid=5, ask=4)]
    )
    batches, dead = _run(items)
    assert sorted(d.reason.split(":")[0] for d in dead) == [
        "crossed_quote",
        "invalid_json",
        "not_positive",
    ]
    assert sorted(r[0] for b in batches for r in b.rows) == ["42-1", "42-3"]


def test_whole_input_batches_give_the_rows_and_dead_letters_of_single_records() -> None:
    trades = [trade(i, at=timedelta(seconds=i)) for i in range(300)]
    trades[17] = b"{broken"
    trades[200] = trade(200, symbol="ZZZ")
    quotes = [quote(i, at=timedelta(seconds=i)) for i in range(90)]
    items = messages("trades", trades, partition=1) + messages("quotes", quotes, partition=0)
    items = [
        m
        for pair in zip(items[:300], items[300:] + [None] * 210, strict=True)
        for m in pair
        if m is not None
    ]

    def run(batch_size: int) -> tuple[dict[str, list], list[str]]:
        batches: list[RowBatch] = []
        dead: list[DeadLetter] = []
        flow = raw_sink.build(
            TestingSource(items, batch_size=batch_size),
            TestingSink(batches),
            TestingSink(dead),
            symbols=SYMBOLS,
            flush_size=50,
            max_wait=timedelta(seconds=30),
        )
        run_main(flow)
        rows: dict[str, list] = {}
        for b in batches:
            rows.setdefault(b.table, []).extend(b.rows)
        return rows, sorted(f"{d.origin.offset}:{d.reason}" for d in dead)

    single_rows, single_dead = run(1)
    batch_rows_, batch_dead = run(64)
    assert batch_rows_ == single_rows
    assert (
        batch_dead
        == single_dead
        == sorted(
            [
                "17:invalid_json: Expecting property name enclosed in double quotes",
                "200:unknown_symbol: ZZZ",
            ]
        )
    )
    assert len(single_rows["raw_trades"]) == 298 and len(single_rows["raw_quotes"]) == 90
