"""The server driven by clickhouse-connect, as the flows and FlowForge drive it."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import clickhouse_connect
import pandas as pd
import pyarrow as pa
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from flowforge_pipeline.standins.clickhouse_server import ClickHouseHTTPServer


def table_name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("compress", [True, False, "zstd", "gzip", "br"])
def test_large_insert_arrives_whole(server: ClickHouseHTTPServer, compress: object) -> None:
    c = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, compress=compress)
    t = table_name()
    c.command(f"CREATE TABLE {t} (id UInt64, s String, f Float64) ENGINE = MergeTree ORDER BY id")
    n = 250_000
    rows = [(i, f"row-{i}", i / 3) for i in range(n)]
    summary = c.insert(t, rows, column_names=["id", "s", "f"])
    assert summary.written_rows == n
    assert c.query(f"SELECT count(), sum(id), uniqExact(s) FROM {t}").result_rows == [
        (n, n * (n - 1) // 2, n)
    ]
    c.close()


def test_query_types_and_dataframes(client: Client) -> None:
    t = table_name()
    client.command(
        f"CREATE TABLE {t} (id UInt32, name String, ts DateTime64(3, 'UTC'), x Nullable(Float64))"
        " ENGINE = MergeTree ORDER BY id"
    )
    ts = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    client.insert(
        t, [(1, "a", ts, None), (2, "b", ts, 2.5)], column_names=["id", "name", "ts", "x"]
    )
    df = pd.DataFrame({"id": [3, 4], "name": ["c", "d"], "ts": [ts, ts], "x": [1.0, None]})
    client.insert_df(t, df)
    client.insert_arrow(
        t,
        pa.table(
            {
                "id": pa.array([5], pa.uint32()),
                "name": ["e"],
                "ts": pa.array([ts], pa.timestamp("ms", tz="UTC")),
                "x": pa.array([7.0]),
            }
        ),
    )
    result = client.query(f"SELECT id, name, ts, x FROM {t} ORDER BY id")
    assert [r[0] for r in result.result_rows] == [1, 2, 3, 4, 5]
    row = result.result_rows[1]
    assert (row[0], row[1], row[2].replace(tzinfo=None), row[3]) == (
        2,
        "b",
        ts.replace(tzinfo=None),
        2.5,
    )
    assert result.result_rows[0][3] is None
    out = client.query_df(f"SELECT id, name FROM {t} ORDER BY id")
    assert out["name"].tolist() == ["a", "b", "c", "d", "e"]
    arrow = client.query_arrow(f"SELECT id FROM {t} ORDER BY id")
    assert arrow.column("id").to_pylist() == [1, 2, 3, 4, 5]


def test_streaming_row_blocks(client: Client) -> None:
    total = 0
    blocks = 0
    with client.query_row_block_stream("SELECT number FROM numbers(1000000)") as stream:
        for block in stream:
            blocks += 1
            total += sum(r[0] for r in block)
    assert blocks > 1
    assert total == 1_000_000 * 999_999 // 2


def test_mid_stream_error_is_raised(client: Client) -> None:
    sql = "SELECT number, throwIf(number = 900000) FROM numbers(1000000)"
    settings = {"max_threads": 1, "max_block_size": 65536}
    with pytest.raises(DatabaseError) as info:
        with client.query_row_block_stream(sql, settings=settings) as stream:
            for _ in stream:
                pass
    assert "395" in str(info.value)


def test_parameters_and_settings(client: Client) -> None:
    assert client.query(
        "SELECT {a:UInt32} + {b:UInt32}", parameters={"a": 2, "b": 40}
    ).result_rows == [(42,)]
    assert client.query("SELECT %(s)s", parameters={"s": "it's"}).result_rows == [("it's",)]
    got = client.query("SELECT getSetting('max_threads')", settings={"max_threads": 3})
    assert got.result_rows == [(3,)]
    # a per-request setting does not leak into the next request
    assert client.query("SELECT getSetting('max_threads')").result_rows != [(3,)]


def test_command_and_summary(client: Client) -> None:
    t = table_name()
    assert client.command(f"CREATE TABLE {t} (a UInt8) ENGINE = MergeTree ORDER BY a") is not None
    summary = client.command(f"INSERT INTO {t} SELECT number FROM numbers(7)")
    assert summary.written_rows == 7
    assert client.command(f"SELECT count() FROM {t}") == 7
    assert client.command("SELECT 'x', 2") == ["x", "2"]


def test_sessions_keep_temporary_tables_and_settings(server: ClickHouseHTTPServer) -> None:
    c = clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, session_id=f"s-{uuid.uuid4()}"
    )
    c.command("CREATE TEMPORARY TABLE tmp (a UInt8)")
    c.command("INSERT INTO tmp VALUES (1), (2)")
    c.command("SET max_threads = 2")
    assert c.command("SELECT sum(a) FROM tmp") == 3
    assert c.command("SELECT getSetting('max_threads')") == 2
    other = clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, session_id=f"s-{uuid.uuid4()}"
    )
    with pytest.raises(DatabaseError) as info:
        other.command("SELECT sum(a) FROM tmp")
    assert "UNKNOWN_TABLE" in str(info.value)


def test_session_is_locked_while_in_use(server: ClickHouseHTTPServer) -> None:
    sid = f"s-{uuid.uuid4()}"
    busy = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, session_id=sid)
    other = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, session_id=sid)
    started = threading.Event()

    def slow() -> None:
        started.set()
        while True:  # the other client may hold the session for an instant first
            try:
                busy.command("SELECT sleep(2)")
                return
            except DatabaseError as exc:
                if "SESSION_IS_LOCKED" not in str(exc):
                    raise

    th = threading.Thread(target=slow)
    th.start()
    started.wait()
    errors = []
    while th.is_alive():
        try:
            other.command("SELECT 1")
        except DatabaseError as exc:
            errors.append(str(exc))
            break
        threading.Event().wait(0.05)
    th.join()
    assert errors and "SESSION_IS_LOCKED" in errors[0]


def test_errors_carry_codes(client: Client) -> None:
    with pytest.raises(DatabaseError) as info:
        client.query("SELECT * FROM no_such_table")
    assert "code: 60" in str(info.value)
    with pytest.raises(DatabaseError) as info:
        client.command("SELEC 1")
    assert "code: 62" in str(info.value)


def test_auth(server: ClickHouseHTTPServer) -> None:
    alice = clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, username="alice", password="s3cret"
    )
    assert alice.command("SELECT currentUser() != ''") == 1
    with pytest.raises(DatabaseError) as info:
        clickhouse_connect.get_client(
            host="127.0.0.1", port=server.port, username="alice", password="nope"
        )
    assert "516" in str(info.value)
    reader = clickhouse_connect.get_client(
        host="127.0.0.1", port=server.port, username="reader", password="r3ad"
    )
    assert reader.command("SELECT 1") == 1
    with pytest.raises(DatabaseError) as info:
        reader.command("CREATE TABLE nope_ro (a UInt8) ENGINE = Memory")
    assert "164" in str(info.value)


def test_access_control_statements_are_refused(client: Client) -> None:
    with pytest.raises(DatabaseError) as info:
        client.command("CREATE USER bob IDENTIFIED BY 'x'")
    assert "configured in the pipeline settings" in str(info.value)
    with pytest.raises(DatabaseError):
        client.command("GRANT SELECT ON *.* TO bob")


def test_database_parameter(server: ClickHouseHTTPServer) -> None:
    admin = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
    admin.command("CREATE DATABASE IF NOT EXISTS other_db")
    admin.command("CREATE TABLE IF NOT EXISTS other_db.marker (a UInt8) ENGINE = Memory")
    scoped = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, database="other_db")
    assert scoped.command("SELECT currentDatabase()") == "other_db"
    assert scoped.command("EXISTS TABLE marker") == 1
    assert admin.command("SELECT currentDatabase()") == "default"
