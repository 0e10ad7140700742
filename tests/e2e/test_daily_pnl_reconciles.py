"""Daily PnL from dbt reconciles with the positions the stream computed.

A generator backfill spanning midnight UTC goes through the real raw_sink and positions flows
(child processes, per-test topics, on the session's local stack); `dbt build` then folds the raw
trades into `rpt_daily_pnl`. The last day's close of every account and symbol must equal the
per-account books the positions flow wrote to `latest:position:{symbol}`.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from confluent_kafka import Producer
from pydantic import SecretStr

from flowforge_pipeline.contract.apply import init_clickhouse
from flowforge_pipeline.contract.catalog import DLQ_TOPIC, POSITION_KEY, QUOTES_TOPIC, TRADES_TOPIC
from flowforge_pipeline.dbt_runner import run_dbt
from flowforge_pipeline.flows.common import reference_instruments
from flowforge_pipeline.settings import LOCALHOST, Settings
from flowforge_pipeline.stores.clickhouse import client
from flowforge_pipeline.stores.kafka import ensure_topics

FACTORIES = Path(__file__).resolve().parents[1] / "flows"  # the real flows on per-test topics
START, END = "2026-11-24T23:00:00Z", "2026-11-25T01:00:00Z"  # Tuesday into Wednesday
LAST_DAY = "2026-11-25"
REL = 1e-9


def _generate(path: Path) -> list[dict[str, Any]]:
    """The generator's backfill as JSON lines: topic, key, timestamp, value."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flowforge_pipeline.cli",
            "generate",
            "--backfill",
            START,
            END,
            "--trades-per-second",
            "2",
            "--quotes-per-second",
            "4",
            "--seed",
            "11",
            "--output",
            str(path),
        ],
        check=True,
        timeout=120,
    )
    return [json.loads(line) for line in path.read_text().splitlines()]


def _produce(settings: Settings, topics: dict[str, str], records: list[dict[str, Any]]) -> None:
    p = Producer({"bootstrap.servers": settings.kafka_servers, "linger.ms": 20})
    for r in records:
        p.produce(
            topics[r["topic"]],
            key=r["key"].encode(),
            value=json.dumps(r["value"]).encode(),
            timestamp=r["timestamp"],
        )
        p.poll(0)
    assert p.flush(60) == 0


@pytest.fixture(scope="module")
def reconciled(
    stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, list[dict[str, Any]]]]:
    """A backfill run through raw_sink and positions, then `dbt build` over it."""
    tag = uuid.uuid4().hex[:8]
    port = stack_settings.local_redis_port
    settings = stack_settings.model_copy(
        update={
            "clickhouse_database": f"pnl_{tag}",
            # a Redis database of its own: the generator's symbols are everyone's symbols
            "redis_url": SecretStr(f"redis://{LOCALHOST}:{port}/{random.randint(1, 15)}"),
            "sink_flush_size": 5000,
            "sink_flush_wait_seconds": 0.5,
        }
    )
    init_clickhouse(settings)
    r = redis_lib.Redis.from_url(settings.redis, decode_responses=True)
    r.flushdb()
    topics = {t.name: f"test-{tag}-{t.name}" for t in (TRADES_TOPIC, QUOTES_TOPIC, DLQ_TOPIC)}
    ensure_topics(
        settings,
        tuple(replace(t, name=topics[t.name]) for t in (TRADES_TOPIC, QUOTES_TOPIC, DLQ_TOPIC)),
        partitions=3,
    )
    workdir = tmp_path_factory.mktemp("pnl")
    records = _generate(workdir / "tape.jsonl")
    trades = [x["value"] for x in records if x["value"].get("type") == "trade"]
    assert trades and {t["event_time"][:10] for t in trades} == {"2026-11-24", LAST_DAY}
    _produce(settings, topics, records)

    env = {
        **os.environ,
        **settings.as_env(),
        "PYTHONPATH": str(FACTORIES),
        "FF_TEST_TRADES": topics["trades"],
        "FF_TEST_QUOTES": topics["quotes"],
        "FF_TEST_DLQ": topics["dlq"],
        "FF_TEST_SYMBOLS": ",".join(sorted(reference_instruments().symbols)),
    }
    procs = {
        flow: subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", f"factories:{flow}()"],
            env=env,
            stdout=(workdir / f"{flow}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        for flow in ("raw_sink", "positions")
    }
    last = {}
    for t in trades:
        last[t["symbol"]] = max(last.get(t["symbol"], ""), t["event_time"])
    ch = client(settings)
    try:
        deadline = time.monotonic() + 120
        while True:
            for flow, proc in procs.items():
                log = (workdir / f"{flow}.log").read_text(errors="replace")[-2000:]
                assert proc.poll() is None, f"{flow} exited:\n{log}"
            stored = int(ch.command("SELECT count() FROM raw_trades"))
            values = {s: r.get(POSITION_KEY.key(symbol=s)) for s in last}
            booked = all(
                v and json.loads(v)["last_trade_time"][:26] == last[s][:26]
                for s, v in values.items()
            )
            if stored == len(trades) and booked:
                break
            assert time.monotonic() < deadline, f"raw_trades {stored}/{len(trades)}, {booked=}"
            time.sleep(0.5)
    finally:
        ch.close()
        for proc in procs.values():
            proc.kill()
            proc.wait()
    assert run_dbt(settings, ["build", "--quiet"]) == 0, "dbt build failed"
    positions = [json.loads(r.get(POSITION_KEY.key(symbol=s)) or "{}") for s in sorted(last)]
    r.flushdb()
    r.close()
    yield settings, positions


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-9)


def test_last_day_pnl_equals_the_streamed_positions(
    reconciled: tuple[Settings, list[dict[str, Any]]],
) -> None:
    settings, positions = reconciled
    stream = {
        (account, p["symbol"]): book for p in positions for account, book in p["accounts"].items()
    }
    ch = client(settings)
    try:
        rows = ch.query(
            "SELECT account, symbol, net_quantity, avg_cost, realized_pnl FROM rpt_daily_pnl "
            "WHERE trade_date = {d:Date}",
            parameters={"d": LAST_DAY},
        ).result_rows
    finally:
        ch.close()
    batch = {(a, s): (q, c, pnl) for a, s, q, c, pnl in rows}
    assert len(stream) > 20 and set(batch) == set(stream)
    assert any(abs(b["realized_pnl"]) > 0 for b in stream.values())
    wrong = []
    for key, book in sorted(stream.items()):
        q, cost, pnl = batch[key]
        if not (
            _close(q, book["net_quantity"])
            and _close(cost or 0.0, book["avg_cost"])
            and _close(pnl, book["realized_pnl"])
        ):
            wrong.append(f"{key}: dbt {(q, cost, pnl)} stream {book}")
    assert not wrong, f"{len(wrong)} of {len(stream)} differ:\n" + "\n".join(wrong[:10])
