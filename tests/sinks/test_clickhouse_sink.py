import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis as redis_lib

from flowforge_pipeline.contract.catalog import TABLE_UPDATE_CHANNEL
from flowforge_pipeline.flows.raw_sink import TRADES_SPEC
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.sinks.clickhouse import ClickHouseSink, RowBatch
from flowforge_pipeline.stores import clickhouse as ch_store
from flowforge_pipeline.stores.clickhouse import ClickHouseUnavailable

T0 = datetime(2023, 5, 1, 12, 0, tzinfo=UTC)


def _rows(tag: str, partition: int, offsets: range) -> list[tuple]:
    return [
        (f"{tag}-{o}", "AAPL", 100.0 + o, 1.0, "buy", "acct", "XNAS",
         T0 + timedelta(seconds=o), partition, o)
        for o in offsets
    ]


def _messages(sub: redis_lib.client.PubSub) -> list[dict]:
    out = []
    while (m := sub.get_message(timeout=0.5)) is not None:
        if m["type"] == "message":
            out.append(json.loads(m["data"]))
    return out


def test_insert_then_broadcast_and_skip_what_is_stored_on_restart(stack_settings: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    partition = 900 + uuid.uuid4().int % 1000  # a partition no other test writes
    r = redis_lib.Redis.from_url(stack_settings.redis, decode_responses=True)
    sub = r.pubsub()
    sub.subscribe(TABLE_UPDATE_CHANNEL.name)
    sub.get_message(timeout=2)  # subscription confirmation

    sink = ClickHouseSink(stack_settings, "test", [TRADES_SPEC])
    part = sink.build("out", 0, 1)
    part.write_batch([RowBatch("raw_trades", _rows(tag, partition, range(0, 10)))])
    part.close()

    # restart: the replayed batch overlaps what is stored (offsets 5..9) and adds 10..14
    part = sink.build("out", 0, 1)
    part.write_batch([RowBatch("raw_trades", _rows(tag, partition, range(5, 15)))])
    part.write_batch([RowBatch("raw_trades", _rows(tag, partition, range(0, 15)))])  # all stored
    part.close()

    ch = ch_store.client(stack_settings)
    count = ch.command(
        "SELECT count() FROM raw_trades WHERE kafka_partition = {p:Int32}",
        parameters={"p": partition},
    )
    distinct = ch.command(
        "SELECT uniqExact(trade_id) FROM raw_trades WHERE kafka_partition = {p:Int32}",
        parameters={"p": partition},
    )
    assert (int(count), int(distinct)) == (15, 15)

    messages = [m for m in _messages(sub) if m["table"] == "raw_trades"]
    assert [m["rows"] for m in messages] == [10, 5]  # nothing published for the skipped batch
    assert messages[0]["type"] == "table_update"
    assert set(messages[0]) == {f.name for f in TABLE_UPDATE_CHANNEL.fields}
    assert messages[0]["min_event_time"] == T0.isoformat(timespec="microseconds")
    assert messages[1]["max_event_time"] == (T0 + timedelta(seconds=14)).isoformat(
        timespec="microseconds"
    )


def test_wrong_url_fails_at_start_naming_role_and_url(stack_settings: Settings) -> None:
    bad = stack_settings.model_copy(update={"local_clickhouse_port": 1})
    with pytest.raises(ClickHouseUnavailable, match=r"clickhouse at http://default@127\.0\.0\.1:1"):
        ClickHouseSink(bad, "test", [TRADES_SPEC]).build("out", 0, 1)


_FIRST_WRITE = """
import sys, psutil
from datetime import UTC, datetime
from flowforge_pipeline.flows.raw_sink import TRADES_SPEC
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.sinks.clickhouse import ClickHouseSink, RowBatch
part = ClickHouseSink(Settings(), "test", [TRADES_SPEC]).build("out", 0, 1)
proc = psutil.Process()
before = proc.memory_info().rss
t = datetime(2023, 5, 2, tzinfo=UTC)
part.write_batch([RowBatch("raw_trades", [(sys.argv[1], "AAPL", 1.0, 1.0, "buy", "a", "XNAS",
                                           t, 990, 0)])])
print(before, proc.memory_info().rss)
part.close()
"""


def test_a_writer_is_at_its_working_memory_once_built(stack_settings: Settings) -> None:
    """clickhouse-connect loads numpy/pandas/pyarrow on its first insert (~80 MiB): the sink
    loads them when built, so a flow whose first row comes late (the anomaly flow's first
    alert) neither waits for imports then nor shows a memory step mid-run."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_", "CLICKHOUSE_"))}
    env.update(
        LOCAL_CLICKHOUSE_PORT=str(stack_settings.local_clickhouse_port),
        LOCAL_REDIS_PORT=str(stack_settings.local_redis_port),
    )
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_WRITE, uuid.uuid4().hex],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )
    before, after = map(int, out.stdout.split())
    assert after - before < 20 * 2**20, (before, after)
