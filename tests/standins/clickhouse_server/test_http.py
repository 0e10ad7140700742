"""The HTTP interface itself: what curl and any other plain HTTP client sees."""

from __future__ import annotations

import gzip
import http.client
import json
import re
import socket
import subprocess
import time
import uuid
import zlib
from urllib.parse import urlencode

import brotli
import lz4.frame
import pytest
import zstandard

from flowforge_pipeline.standins.clickhouse_server import ClickHouseHTTPServer


def request(
    server: ClickHouseHTTPServer,
    body: bytes | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    path: str = "/",
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    url = path + ("?" + urlencode(params) if params else "")
    conn.request(method, url, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def curl(*args: str) -> str:
    return subprocess.run(["curl", "-sS", *args], check=True, capture_output=True, text=True).stdout


def test_curl_examples(base_url: str) -> None:
    assert curl(f"{base_url}/ping") == "Ok.\n"
    assert curl(f"{base_url}/?query=SELECT%201") == "1\n"
    curl(
        base_url,
        "--data-binary",
        "CREATE TABLE curl_t (id UInt32, name String) ENGINE = MergeTree ORDER BY id",
    )
    curl(
        f"{base_url}/?query=INSERT%20INTO%20curl_t%20FORMAT%20CSV",
        "--data-binary",
        "1,one\n2,two\n",
    )
    curl(base_url, "--data-binary", "INSERT INTO curl_t VALUES (3, 'three')")
    out = curl(base_url, "--data-binary", "SELECT * FROM curl_t ORDER BY id FORMAT JSONEachRow")
    assert [json.loads(line)["name"] for line in out.splitlines()] == ["one", "two", "three"]
    out = curl(
        f"{base_url}/?param_id=2", "--data-binary", "SELECT name FROM curl_t WHERE id = {id:UInt32}"
    )
    assert out == "two\n"


def test_ping_head_options_and_root(server: ClickHouseHTTPServer) -> None:
    assert request(server, method="GET", path="/ping")[2] == b"Ok.\n"
    assert request(server, method="GET", path="/replicas_status")[2] == b"Ok.\n"
    assert request(server, method="GET", path="/")[2] == b"Ok.\n"
    status, headers, body = request(server, method="HEAD", path="/ping")
    assert status == 200 and body == b""
    status, headers, _ = request(server, method="OPTIONS", path="/")
    assert status == 204 and headers["access-control-allow-origin"] == "*"


def test_get_is_readonly(server: ClickHouseHTTPServer) -> None:
    status, headers, body = request(
        server, method="GET", params={"query": "CREATE TABLE ro_t (a UInt8) ENGINE = Memory"}
    )
    assert headers["x-clickhouse-exception-code"] == "164"
    assert body.startswith(b"Code: 164. DB::Exception:") and b"(READONLY)" in body
    status, _, body = request(server, method="GET", params={"query": "SELECT 2"})
    assert (status, body) == (200, b"2\n")


def test_query_from_url_and_body_joined(server: ClickHouseHTTPServer) -> None:
    status, _, body = request(server, b"FROM numbers(3)", params={"query": "SELECT sum(number)"})
    assert (status, body) == (200, b"3\n")


def test_format_header_only_for_rows(server: ClickHouseHTTPServer) -> None:
    _, headers, _ = request(server, b"SELECT 1 FORMAT JSONCompact")
    assert headers["x-clickhouse-format"] == "JSONCompact"
    assert "x-clickhouse-query-id" in headers and "x-clickhouse-timezone" in headers
    _, headers, _ = request(server, b"CREATE TABLE IF NOT EXISTS hdr_t (a UInt8) ENGINE = Memory")
    assert "x-clickhouse-format" not in headers
    _, headers, _ = request(server, b"INSERT INTO hdr_t SELECT number FROM numbers(5)")
    assert "x-clickhouse-format" not in headers
    assert json.loads(headers["x-clickhouse-summary"])["written_rows"] == "5"
    _, headers, _ = request(server, b"SELECT count() FROM hdr_t", params={"query_id": "my-qid"})
    assert headers["x-clickhouse-query-id"] == "my-qid"


@pytest.mark.parametrize(
    ("sql", "code", "status"),
    [
        ("SELECT * FROM missing_table", 60, 404),
        ("SELEC 1", 62, 400),
        ("SELECT 1; SELECT 2", 62, 400),
        ("SELECT no_such_function(1)", 46, 404),
        ("CREATE USER bob", 48, 501),
        ("", 62, 400),
    ],
)
def test_errors(server: ClickHouseHTTPServer, sql: str, code: int, status: int) -> None:
    got_status, headers, body = request(server, sql.encode())
    assert got_status == status
    assert headers["x-clickhouse-exception-code"] == str(code)
    assert body.startswith(f"Code: {code}. DB::Exception: ".encode())
    assert body.endswith(b")\n") and body.count(b"\n") == 1


def test_unknown_setting(server: ClickHouseHTTPServer) -> None:
    status, headers, body = request(server, b"SELECT 1", params={"no_such_setting": "1"})
    assert (status, headers["x-clickhouse-exception-code"]) == (404, "115")


def test_auth_ways(server: ClickHouseHTTPServer) -> None:
    assert (
        request(
            server, b"SELECT currentUser() != ''", params={"user": "alice", "password": "s3cret"}
        )[0]
        == 200
    )
    assert (
        request(
            server,
            b"SELECT 1",
            headers={"X-ClickHouse-User": "alice", "X-ClickHouse-Key": "s3cret"},
        )[0]
        == 200
    )
    import base64

    good = base64.b64encode(b"alice:s3cret").decode()
    assert request(server, b"SELECT 1", headers={"Authorization": f"Basic {good}"})[0] == 200
    bad = base64.b64encode(b"alice:wrong").decode()
    status, headers, body = request(server, b"SELECT 1", headers={"Authorization": f"Basic {bad}"})
    assert (status, headers["x-clickhouse-exception-code"]) == (403, "516")
    assert b"(AUTHENTICATION_FAILED)" in body


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "lz4"])
def test_request_and_response_compression(server: ClickHouseHTTPServer, encoding: str) -> None:
    table = f"c_{encoding}"
    request(server, f"CREATE TABLE {table} (a UInt32) ENGINE = MergeTree ORDER BY a".encode())
    payload = b"".join(f"{i}\n".encode() for i in range(100_000))
    # two frames back to back, as a client compressing block by block sends them
    half = len(payload) // 2
    cut = payload.rfind(b"\n", 0, half) + 1
    parts = (payload[:cut], payload[cut:])
    compressors = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "br": brotli.compress,
        "zstd": zstandard.ZstdCompressor().compress,
        "lz4": lz4.frame.compress,
    }
    body = (
        b"".join(compressors[encoding](p) for p in parts)
        if encoding != "br"
        else brotli.compress(payload)
    )
    status, _, _ = request(
        server,
        body,
        params={"query": f"INSERT INTO {table} FORMAT TSV"},
        headers={"Content-Encoding": encoding},
    )
    assert status == 200
    status, headers, data = request(
        server,
        f"SELECT a FROM {table} ORDER BY a".encode(),
        params={"enable_http_compression": "1"},
        headers={"Accept-Encoding": encoding},
    )
    assert headers["content-encoding"] == encoding
    decompressors = {
        "gzip": gzip.decompress,
        "deflate": zlib.decompress,
        "br": brotli.decompress,
        "zstd": lambda d: zstandard.ZstdDecompressor().decompressobj().decompress(d),
        "lz4": lz4.frame.decompress,
    }
    assert decompressors[encoding](data) == payload


def test_corrupt_compressed_body(server: ClickHouseHTTPServer) -> None:
    status, headers, body = request(
        server, b"not gzip at all", headers={"Content-Encoding": "gzip"}
    )
    assert headers["x-clickhouse-exception-code"] == "271"
    assert request(server, b"SELECT 1")[2] == b"1\n"


def test_lz4_bodies_after_broken_ones(server: ClickHouseHTTPServer) -> None:
    """A body cut off or corrupt mid-frame leaves nothing behind for later lz4 bodies."""
    request(server, b"CREATE TABLE lz4_after (a UInt32) ENGINE = MergeTree ORDER BY a")
    payload = b"".join(f"{i}\n".encode() for i in range(200_000))
    frame = lz4.frame.compress(payload)
    params = {"query": "INSERT INTO lz4_after FORMAT TSV"}
    lz4_body = {"Content-Encoding": "lz4"}
    middle = len(frame) // 2
    corrupt = (
        frame[:middle] + bytes(b ^ 0x5A for b in frame[middle : middle + 64]) + frame[middle + 64 :]
    )
    for broken in (frame[:middle], corrupt):
        _, headers, _ = request(server, broken, params=params, headers=lz4_body)
        assert headers["x-clickhouse-exception-code"] == "271"  # CANNOT_DECOMPRESS
        for _ in range(2):
            status, _, body = request(server, frame, params=params, headers=lz4_body)
            assert status == 200, body
    status, _, body = request(server, b"SELECT count(), sum(a) FROM lz4_after")
    assert body == f"800000\t{4 * sum(range(200_000))}\n".encode()


def test_chunked_insert_body_with_tricky_statement(server: ClickHouseHTTPServer) -> None:
    request(server, b"CREATE TABLE chunked_t (a UInt32, s String) ENGINE = MergeTree ORDER BY a")
    head = b"INSERT INTO /* FORMAT Bogus */ chunked_t -- FORMAT Nope\n(a, s) FORMAT TSV\n"
    rows = b"".join(f"{i}\tFORMAT $x$ 'q\n".encode() for i in range(50_000))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    pieces = [head[:10], head[10:], *[rows[i : i + 70_001] for i in range(0, len(rows), 70_001)]]
    conn.request("POST", "/", body=iter(pieces), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    resp.read()
    assert (
        request(server, b"SELECT count(), countIf(s = 'FORMAT $x$ \\'q') FROM chunked_t")[2]
        == b"50000\t50000\n"
    )


def test_serial_inserts_run_on_one_thread_unless_the_client_chose(
    server: ClickHouseHTTPServer,
) -> None:
    """A Native/RowBinary insert runs with max_threads = 1, except where the client set it.

    The column's DEFAULT records the max_threads each insert ran with.
    """
    request(
        server,
        b"CREATE TABLE threads_t (a UInt8, th UInt64 DEFAULT getSetting('max_threads')) "
        b"ENGINE = MergeTree ORDER BY a",
    )

    def insert(
        a: int,
        statement: str = "INSERT INTO threads_t (a)",
        fmt: str = "RowBinary",
        data: bytes | None = None,
        **params: str,
    ) -> None:
        query = f"{statement} FORMAT {fmt}"
        status, _, body = request(
            server, bytes([a]) if data is None else data, params={"query": query, **params}
        )
        assert status == 200, body

    default = int(request(server, b"SELECT getSetting('max_threads')")[2])
    assert default > 1  # else the rows below could not tell the two apart
    insert(1)
    insert(2, max_threads="3")
    insert(3, statement="INSERT INTO threads_t (a) SETTINGS max_threads = 4")
    insert(4, fmt="TSV", data=b"4\n")  # not a serial format: the engine's own choice
    insert(5, statement="INSERT INTO threads_t (a) -- a comment at the end\n")
    sid = f"s-{uuid.uuid4()}"
    assert request(server, b"SET max_threads = 5", params={"session_id": sid})[0] == 200
    insert(6, session_id=sid)
    rows = request(server, b"SELECT a, th FROM threads_t ORDER BY a")[2].decode().split()
    assert rows == [str(x) for x in (1, 1, 2, 3, 3, 4, 4, default, 5, 1, 6, 5)]


def test_dollar_quoted_query_is_one_statement(server: ClickHouseHTTPServer) -> None:
    status, _, body = request(server, b"SELECT $tag$ ; SELECT 2 $tag$ AS s")
    assert (status, body) == (200, b" ; SELECT 2 \n")


def test_mid_stream_error_is_tagged(server: ClickHouseHTTPServer) -> None:
    sql = b"SELECT number, throwIf(number = 900000) FROM numbers(1000000)"
    status, headers, body = request(
        server, sql, params={"max_threads": "1", "max_block_size": "65536"}
    )
    assert status == 200
    tag = headers["x-clickhouse-exception-tag"]
    assert body.endswith(b" " + tag.encode() + b"\r\n__exception__\r\n")
    assert f"__exception__\r\n{tag}\r\nCode: 395.".encode() in body


def test_wait_end_of_query_buffers(server: ClickHouseHTTPServer) -> None:
    status, headers, body = request(
        server, b"SELECT number FROM numbers(300000)", params={"wait_end_of_query": "1"}
    )
    assert "content-length" in headers and len(body.splitlines()) == 300_000


def test_sessions(server: ClickHouseHTTPServer) -> None:
    sid = f"s-{uuid.uuid4()}"
    assert (
        request(server, b"SELECT 1", params={"session_id": sid, "session_check": "1"})[1][
            "x-clickhouse-exception-code"
        ]
        == "372"
    )
    assert request(server, b"SET max_threads = 3", params={"session_id": sid})[0] == 200
    assert (
        request(
            server,
            b"SELECT getSetting('max_threads')",
            params={"session_id": sid, "session_check": "1"},
        )[2]
        == b"3\n"
    )
    # a URL setting applies to one request only, even within a session
    assert (
        request(
            server,
            b"SELECT getSetting('max_threads')",
            params={"session_id": sid, "max_threads": "5"},
        )[2]
        == b"5\n"
    )
    assert (
        request(server, b"SELECT getSetting('max_threads')", params={"session_id": sid})[2]
        == b"3\n"
    )
    for bad in ("-1", "3601", "abc"):
        status, headers, _ = request(
            server, b"SELECT 1", params={"session_id": sid, "session_timeout": bad}
        )
        assert headers["x-clickhouse-exception-code"] == "374"


def test_malformed_requests_keep_server_running(server: ClickHouseHTTPServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n")
        reply = s.recv(65536)
        assert b"X-ClickHouse-Exception-Code" in reply
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        s.recv(65536)
    status, _, body = request(server, b"SELECT 1", headers={"Content-Encoding": "snappy-ish"})
    assert status != 200 and b"UNKNOWN_COMPRESSION_METHOD" in body
    assert request(server, b"SELECT 42")[2] == b"42\n"


_ESCAPED_NEWLINE = re.compile(r"\\n *")


def _describe(server: ClickHouseHTTPServer, table: str, **params: str) -> list[str]:
    status, _, body = request(server, f"DESCRIBE TABLE {table}".encode(), params=params)
    assert status == 200, body
    # Types print pretty (an escaped newline per tuple element): compare them on one line.
    rows = [line.split("\t") for line in body.decode().splitlines()]
    return [name + " " + _ESCAPED_NEWLINE.sub("", type_) for name, type_, *_ in rows]


def test_describe_answers_follow_every_change(server: ClickHouseHTTPServer) -> None:
    """DESCRIBE answers are remembered; DDL, SET and temporary tables must show at once."""
    table = f"desc_{uuid.uuid4().hex[:8]}"
    session = {"session_id": uuid.uuid4().hex}
    request(server, f"CREATE TABLE {table} (a UInt8) ENGINE = MergeTree ORDER BY a".encode())
    for params in ({}, session, {}, session):
        assert _describe(server, table, **params) == ["a UInt8"]

    request(server, f"ALTER TABLE {table} ADD COLUMN t Tuple(x String, y Int64)".encode())
    for params in ({}, session):
        assert _describe(server, table, **params) == ["a UInt8", "t Tuple(x String,y Int64)"]

    # A session setting changes the answer for that session only.
    plain = ["a UInt8", "t Tuple(x String,y Int64)"]
    request(server, b"SET describe_include_subcolumns = 1", params=session)
    with_subcolumns = _describe(server, table, **session)
    assert with_subcolumns[:2] == plain and "t.y Int64" in with_subcolumns
    assert _describe(server, table) == plain
    # So does a URL setting, for that request only.
    assert _describe(server, table, describe_include_subcolumns="1") == with_subcolumns
    assert _describe(server, table) == plain

    # A session's temporary table shadows the table for that session only.
    other = {"session_id": uuid.uuid4().hex}
    assert _describe(server, table, **other) == ["a UInt8", "t Tuple(x String,y Int64)"]
    request(server, f"CREATE TEMPORARY TABLE {table} (z String)".encode(), params=other)
    assert _describe(server, table, **other) == ["z String"]
    assert _describe(server, table) == ["a UInt8", "t Tuple(x String,y Int64)"]

    request(server, f"DROP TABLE {table}".encode())
    status, headers, body = request(server, f"DESCRIBE TABLE {table}".encode())
    assert status == 404 and headers["x-clickhouse-exception-code"] == "60", body
    request(server, f"CREATE TABLE {table} (b String) ENGINE = Memory".encode())
    assert _describe(server, table) == ["b String"]


def _stream_request(
    server: ClickHouseHTTPServer, sql: bytes, params: dict[str, str] | None = None
) -> tuple[int, dict[str, str], list[bytes]]:
    """Send a query; return the status, the headers and the body as the chunks it came in."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as s:
        url = "/?" + urlencode(params or {})
        s.sendall(
            f"POST {url} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(sql)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + sql
        )
        raw = b""
        while chunk := s.recv(1 << 20):
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") != "chunked":
        return status, headers, [rest]
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return status, headers, chunks
        chunks.append(rest[:size])
        rest = rest[size + 2 :]


@pytest.mark.parametrize("fmt", ["JSON", "JSONCompact", "CSVWithNames", "Parquet"])
def test_formatted_results_stream_in_chunks(server: ClickHouseHTTPServer, fmt: str) -> None:
    """Formats with a prefix or suffix stream too, as one document, not one per block."""
    rows = 400_000
    sql = f"SELECT number AS n, toString(number) AS s FROM numbers({rows}) FORMAT {fmt}"
    status, headers, chunks = _stream_request(server, sql.encode())
    assert status == 200 and headers["x-clickhouse-format"] == fmt
    assert headers["transfer-encoding"] == "chunked" and len(chunks) > 1
    assert "x-clickhouse-exception-tag" in headers
    body = b"".join(chunks)
    # The same query answered whole gives the same document, byte for byte up to timings.
    whole = request(server, sql.encode(), params={"wait_end_of_query": "1"})[2]
    if fmt.startswith("JSON"):
        doc = json.loads(body)
        assert doc["rows"] == rows and len(doc["data"]) == rows
        assert doc["meta"] == json.loads(whole)["meta"]
    elif fmt == "CSVWithNames":
        assert body == whole and body.count(b'"n","s"') == 1
    else:
        assert body[:4] == b"PAR1" and body[-4:] == b"PAR1" and len(body) == len(whole)


def test_small_formatted_result_is_one_piece(server: ClickHouseHTTPServer) -> None:
    status, headers, body = request(server, b"SELECT 1 AS x FORMAT JSONCompact")
    assert status == 200 and "content-length" in headers
    assert json.loads(body)["data"] == [[1]]
    # An early error keeps its HTTP status and code (nothing was sent yet).
    status, headers, body = request(server, b"SELECT throwIf(1) FORMAT JSON")
    assert status == 500 and headers["x-clickhouse-exception-code"] == "395", body
    # ... and leaves nothing behind for the next query on the same connection.
    status, _, body = request(
        server, b"SELECT {p:UInt8} AS x FORMAT JSONCompact", params={"param_p": "7"}
    )
    assert json.loads(body)["data"] == [[7]]


def test_formatted_stream_error_is_tagged(server: ClickHouseHTTPServer) -> None:
    sql = b"SELECT number, throwIf(number = 900000) FROM numbers(1000000) FORMAT JSONCompact"
    status, headers, chunks = _stream_request(
        server, sql, params={"max_threads": "1", "max_block_size": "65536"}
    )
    assert status == 200
    body = b"".join(chunks)
    tag = headers["x-clickhouse-exception-tag"]
    assert body.endswith(b" " + tag.encode() + b"\r\n__exception__\r\n")
    assert f"__exception__\r\n{tag}\r\nCode: 395.".encode() in body
    # The document the engine closed after the failure is not passed off as complete.
    assert b'"statistics"' not in body


def test_client_leaving_a_formatted_stream_cancels_the_query(
    server: ClickHouseHTTPServer,
) -> None:
    marker = uuid.uuid4().hex
    sql = f"SELECT number, '{marker}' FROM numbers(10000000000) FORMAT JSON".encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(sql) + sql)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    check = f"SELECT count() FROM system.processes WHERE query LIKE '%{marker}%' "
    check += "AND query NOT LIKE '%system.processes%'"
    deadline = time.monotonic() + 20
    while request(server, check.encode())[2] != b"0\n":
        assert time.monotonic() < deadline, "the query kept running after the client left"
        time.sleep(0.2)


@pytest.mark.parametrize("wait", ["0", "1"])
def test_failed_query_leaves_nothing_for_the_next_one(
    server: ClickHouseHTTPServer, wait: str
) -> None:
    """The engine keeps a failed query's closed document for the next query on the connection."""
    session = {"session_id": uuid.uuid4().hex, "wait_end_of_query": wait}
    status, _, _ = request(server, b"SELECT throwIf(1) AS boom FORMAT JSON", params=session)
    assert status == 500
    for sql in (b"SELECT 7 AS x FORMAT JSONCompact", b"SELECT 8 AS x FORMAT JSONCompact"):
        status, _, body = request(server, sql, params=session)
        assert status == 200 and b"boom" not in body, body
        assert json.loads(body)["data"] == [[int(sql[7:8])]]
