import math
import random
from datetime import timedelta

import numpy as np
import pytest
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from flowforge_pipeline.contract.catalog import VOLATILITY_KEY
from flowforge_pipeline.flows import volatility
from flows.helpers import heartbeat, messages, trade

MPY = {"AAA": 252 * 390, "BBB": 365 * 1440}
S = timedelta(seconds=1)
M = timedelta(minutes=1)


def _run(payloads: list, workers: int = 1, batch_size: int = 1):
    rows: list = []
    latest: list = []
    dead: list = []
    flow = volatility.build(
        TestingSource(messages("trades", payloads), batch_size=batch_size),
        TestingSink(rows),
        TestingSink(latest),
        TestingSink(dead),
        minutes_per_year=MPY,
        lateness=S,
        flush_size=50,
        max_wait=timedelta(seconds=30),
    )
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    table = sorted((r for b in rows for r in b.rows), key=lambda r: (r[0], r[1], r[2]))
    return table, latest, dead


def _tape(seed: int = 7, minutes: int = 180) -> list:
    rng = random.Random(seed)
    out, n = [], 0
    for sym in ("AAA", "BBB"):
        price = 100.0
        for second in range(0, minutes * 60, 20):
            if rng.random() < 0.15:  # some minutes have no trade at all
                continue
            price = round(price * math.exp(rng.gauss(0, 0.001)), 2)
            out.append(trade(n, symbol=sym, price=price, at=second * S))
            n += 1
    out.sort(key=lambda t: t["event_time"])
    return out


def _expected(tape: list, symbol: str) -> dict:
    samples: dict = {}
    for t in tape:
        if t["symbol"] == symbol and t["type"] == "trade":
            samples[t["event_time"][:16]] = t["price"]  # last price per minute
    minutes = sorted(samples)
    prices = np.array([samples[m] for m in minutes])
    rets = np.log(prices[1:] / prices[:-1])
    ends = np.array([np.datetime64(m, "us") + np.timedelta64(1, "m") for m in minutes[1:]])
    out = {}
    for end in ends:
        for name, minutes_in, min_obs in (("1h", 60, 30), ("24h", 1440, 240)):
            sel = rets[(ends > end - np.timedelta64(minutes_in, "m")) & (ends <= end)]
            vol = float(np.std(sel, ddof=1) * np.sqrt(MPY[symbol])) if len(sel) >= min_obs else None
            out[(str(end), name)] = (vol, len(sel))
    return out


def test_volatility_equals_independent_numpy_computation() -> None:
    tape = _tape(minutes=360)
    # the last minute stays open (no later event): close it with a heartbeat per symbol
    tape += [heartbeat(s, 400 * M) for s in ("AAA", "BBB")]
    table, latest, dead = _run(tape)
    assert dead == []
    checked = 0
    for sym in ("AAA", "BBB"):
        expected = _expected(tape, sym)
        got = {
            (str(np.datetime64(r[2].replace(tzinfo=None))), r[1]): (r[3], r[4])
            for r in table
            if r[0] == sym
        }
        assert set(got) == set(expected)
        for k, (vol, n) in expected.items():
            assert got[k][1] == n
            if vol is None:
                assert got[k][0] is None
            else:
                assert got[k][0] == pytest.approx(vol, rel=1e-9)
                checked += 1
    assert checked > 300
    newest = {lv.key: lv.value for lv in latest}[VOLATILITY_KEY.key(symbol="AAA")]
    assert set(newest) == {f.name for f in VOLATILITY_KEY.fields}
    assert newest["n_obs_24h"] >= 240 and newest["vol_24h"] is not None
    assert any(r[1] == "24h" and r[3] is None for r in table)  # null before 240 returns


def test_late_trade_for_a_closed_minute_is_dead_lettered() -> None:
    payloads = [
        trade(1, price=100, at=10 * S),
        trade(2, price=101, at=70 * S),
        trade(3, price=102, at=130 * S),
        trade(4, price=1, at=30 * S),
    ]
    table, _, dead = _run(payloads)
    assert [d.reason for d in dead] == ["late"]
    assert [(r[1], r[4]) for r in table] == [("1h", 1), ("24h", 1)]


@pytest.mark.parametrize("workers", [2])
def test_two_workers_give_the_same_figures(workers: int) -> None:
    tape = _tape(minutes=90)
    assert _run(tape, workers)[0] == _run(tape)[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_whole_input_batches_give_the_figures_of_single_records(workers: int) -> None:
    tape = _tape(seed=11, minutes=90)
    tape.insert(500, {**tape[400], "trade_id": "late-one"})  # its minute has closed by now
    single_rows, single_latest, single_dead = _run(tape, 1, batch_size=1)
    rows, latest, dead = _run(tape, workers, batch_size=97)
    assert rows == single_rows and len(rows) > 100
    assert {lv.key: lv.value["as_of"] for lv in latest} == {
        lv.key: lv.value["as_of"] for lv in single_latest
    }
    assert [d.reason for d in dead] == [d.reason for d in single_dead] == ["late"]
