"""The ClickHouse HTTP interface in front of one chdb database directory.

One process owns the directory (chdb allows no other), and every other process reaches it
the way it would reach a ClickHouse server: clickhouse-connect, dbt-clickhouse and curl work
unchanged. The request handling follows ClickHouse's `HTTPHandler`: the query comes from the
`query` parameter and the body joined by a newline, an INSERT's inline data streams straight
into the engine, other URL parameters are settings for that request only, and errors carry
ClickHouse's codes, bodies and HTTP statuses.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import fcntl
import logging
import os
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from flowforge_pipeline.standins.clickhouse_server import compression
from flowforge_pipeline.standins.clickhouse_server.cache import Answer, Classifier, SchemaAnswers
from flowforge_pipeline.standins.clickhouse_server.errors import ClickHouseError, from_engine
from flowforge_pipeline.standins.clickhouse_server.sessions import (
    EngineConnection,
    Pool,
    Session,
    SessionManager,
    check_setting_names,
    parse_session_timeout,
    quote_literal,
)
from flowforge_pipeline.standins.clickhouse_server.sql import (
    IncompleteInput,
    InsertSplit,
    Statement,
    analyse_once,
    find_insert_data,
    is_access_control,
    is_plain_describe,
    with_output_file,
)

log = logging.getLogger(__name__)

# URL parameters that are not settings (ClickHouse's HTTPHandler reserves the same names).
RESERVED_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "query_id",
        "session_id",
        "session_timeout",
        "session_check",
        "user",
        "password",
        "quota_key",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "stacktrace",
        "role",
        "client_protocol_version",
        "close_session",
        "http_response_buffer_size",
    }
)
# Settings that only steer the HTTP layer; the engine has nothing to do with them.
TRANSPORT_SETTINGS = frozenset(
    {
        "enable_http_compression",
        "http_zlib_compression_level",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "add_http_cors_header",
        "http_wait_end_of_query",
        "cancel_http_readonly_queries_on_client_close",
        "http_write_exception_in_output_format",
        "http_response_headers",
    }
)
# Output formats whose per-block pieces concatenate into one valid stream: these stream
# through chdb's streaming API. chdb formats each streamed block as a document of its own, so
# a format with a prefix or suffix (JSON, ...WithNames, Parquet, ...) streams through a pipe
# the engine writes its one document into instead (`_Request._stream_formatted`).
STREAMABLE_FORMATS = frozenset(
    f.lower()
    for f in (
        "Native",
        "TabSeparated",
        "TSV",
        "TabSeparatedRaw",
        "TSVRaw",
        "CSV",
        "JSONEachRow",
        "JSONCompactEachRow",
        "JSONStringsEachRow",
        "JSONCompactStringsEachRow",
        "NDJSON",
        "JSONLines",
        "RowBinary",
        "Values",
        "TSKV",
        "LineAsString",
        "CustomSeparated",
        "Null",
    )
)
_READ_CHUNK = 1 << 20
# A formatted result that ends within this many bytes is answered in one piece (ClickHouse's
# default response buffer is as large); a longer one streams.
_STREAM_AFTER = 1 << 20
# What a streamed formatted result keeps back until the engine reports success (see
# `_stream_formatted`).
_HOLD_BACK = 1 << 16
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_PIPE_SIZE = 1 << 20
LOCK_FILE = ".flowforge-clickhouse.lock"
_INSERT_APPEND = 1 << 20
# Input formats parsed as one stream, never in parallel: an insert of data in one of these
# runs its pipeline on the request's thread (`_Request._one_thread`).
_SERIAL_FORMATS = frozenset(
    ("native", "rowbinary", "rowbinarywithnames", "rowbinarywithnamesandtypes",
     "rowbinarywithdefaults")
)
_ONE_THREAD = "SETTINGS max_threads = 1"
# How long a stop waits for just-accepted connections to reach their first request.
_START_GRACE = 5.0
# How much of a body's start is searched for where an INSERT's data begins (more on need).
_SPLIT_WINDOW = 1 << 16
_SERVER_NAME = socket.gethostname()


@dataclass(frozen=True)
class User:
    """A configured user: its password and whether it may only read."""

    password: str
    readonly: bool = False


@dataclass
class Summary:
    """Figures for X-ClickHouse-Summary."""

    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    result_rows: int = 0
    result_bytes: int = 0
    started: float = 0.0

    def header(self) -> str:
        """The header's JSON, with every figure a string as ClickHouse writes it."""
        elapsed_ns = int((time.perf_counter() - self.started) * 1e9)
        # Every value is an integer written as a JSON string: nothing needs escaping.
        return (
            f'{{"read_rows":"{self.read_rows}","read_bytes":"{self.read_bytes}",'
            f'"written_rows":"{self.written_rows}","written_bytes":"{self.written_bytes}",'
            f'"total_rows_to_read":"{self.read_rows}","result_rows":"{self.result_rows}",'
            f'"result_bytes":"{self.result_bytes}","elapsed_ns":"{elapsed_ns}"}}'
        )

    def add_result(self, res: Any) -> None:
        """Add the figures of one engine result."""
        self.read_rows += int(res.storage_rows_read())
        self.read_bytes += int(res.storage_bytes_read())
        self.written_rows += int(res.rows_written())
        self.written_bytes += int(res.bytes_written())
        self.result_rows += int(res.rows_read())
        self.result_bytes += int(res.bytes_read())


class Engine:
    """The database directory, its connection pool and its sessions."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = str(data_dir.resolve())
        # chdb refuses a second owner too, but only with a generic initialisation error; an
        # advisory lock of our own names the real cause before the engine is touched.
        self._lock_file = (data_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise DataDirInUse(
                f"data directory {self.path} is already owned by another running server "
                "(stop it first, or pass a different --data-dir)"
            ) from None
        try:
            # Held for the server's life: chdb shuts the engine down with the last connection.
            self.root = EngineConnection(self.path)
        except ClickHouseError:
            self._lock_file.close()
            raise
        self.timezone = bytes(self.root.run("SELECT timezone()").bytes()).decode().strip() or "UTC"
        self.pool = Pool(self.path)
        self.sessions = SessionManager(self.path)
        self.schema = SchemaAnswers()
        self.classifier = Classifier()

    @staticmethod
    def classify_uncached(conn: EngineConnection, sql: str) -> str:
        """The engine's query class of a text that is not worth remembering."""
        return str(conn.raw.classify_query(sql)["query_class"].name)

    def classify(self, conn: EngineConnection, sql: str) -> str:
        """The engine's query class of `sql` (READ_ONLY, MUTATING, CONTROL, ...)."""
        return self.classifier.classify(sql, lambda text: self.classify_uncached(conn, text))

    def close(self) -> None:
        """Close every connection; the engine stops with the last one."""
        self.sessions.close()
        self.pool.close()
        self.root.close()
        self._lock_file.close()


class DataDirInUse(RuntimeError):
    """Another process already serves this data directory."""


class _Headers:
    """A request's header fields: case-insensitive, the first of repeated fields wins.

    http.server hands every request's header block to the email package's parser, a general
    MIME parser that costs more than everything else the server does around a short query;
    HTTP header fields need only this.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        self._fields = fields

    def get(self, name: str, default: str | None = None) -> str | None:
        """The field's value, or `default` when the request has no such field."""
        return self._fields.get(name.lower(), default)

    def text(self, name: str) -> str:
        """The field's value, or "" when the request has no such field."""
        return self._fields.get(name.lower(), "")


class _HeadError(Exception):
    """A request's header block that cannot be read: answered 431 as http.server does."""


_MAX_HEADER_LINE = 65536
_MAX_HEADERS = 100
_HTTP_VERSION = re.compile(r"HTTP/(\d{1,10})\.(\d{1,10})")


def _read_headers(rfile: Any) -> _Headers:
    """Read header fields up to the blank line that ends them (obsolete line folding too)."""
    fields: dict[str, str] = {}
    last = ""
    last_is_first = False
    count = 0
    while True:
        line = rfile.readline(_MAX_HEADER_LINE + 1)
        if len(line) > _MAX_HEADER_LINE:
            raise _HeadError("Line too long")
        if line in (b"\r\n", b"\n", b""):
            return _Headers(fields)
        count += 1
        if count > _MAX_HEADERS:
            raise _HeadError(f"got more than {_MAX_HEADERS} headers")
        text = line.decode("iso-8859-1")
        if text[0] in " \t":
            # A folded continuation of the previous field (RFC 9112 5.2).
            if last_is_first:
                fields[last] = (fields[last] + " " + text.strip()).strip()
            continue
        name, sep, value = text.partition(":")
        if not sep:
            continue
        last = name.strip().lower()
        last_is_first = last not in fields
        if last_is_first:
            fields[last] = value.strip()


def _parse_query(query: str) -> dict[str, str]:
    """A URL query string's parameters; a repeated name keeps its last value (as parse_qsl)."""
    params: dict[str, str] = {}
    if not query:
        return params
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "+" in part:
            name = name.replace("+", " ")
            value = value.replace("+", " ")
        if "%" in part:
            name = unquote(name)
            value = unquote(value)
        params[name] = value
    return params


class _Body:
    """The request body as raw chunks, honouring Content-Length or chunked encoding."""

    def __init__(self, handler: Handler) -> None:
        self._rfile = handler.rfile
        te = handler.fields.text("Transfer-Encoding").lower()
        self.chunked = "chunked" in te
        length = handler.fields.get("Content-Length")
        try:
            self._remaining = int(length) if length is not None else 0
        except ValueError:
            raise ClickHouseError("BAD_ARGUMENTS", f"Invalid Content-Length: {length}") from None
        self.done = not self.chunked and self._remaining == 0

    def chunks(self) -> Iterator[bytes]:
        """Yield the raw body until its end."""
        if self.chunked:
            yield from self._chunked()
            return
        while self._remaining > 0:
            data = self._rfile.read(min(self._remaining, _READ_CHUNK))
            if not data:
                raise ClickHouseError("CANNOT_READ_ALL_DATA", "Unexpected end of request body")
            self._remaining -= len(data)
            yield data
        self.done = True

    def _chunked(self) -> Iterator[bytes]:
        while True:
            line = self._rfile.readline(1024)
            if not line:
                raise ClickHouseError("CANNOT_READ_ALL_DATA", "Unexpected end of chunked body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ClickHouseError(
                    "CANNOT_READ_ALL_DATA", "Malformed chunk size in chunked request body"
                ) from None
            if size == 0:
                while self._rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass
                self.done = True
                return
            while size > 0:
                data = self._rfile.read(min(size, _READ_CHUNK))
                if not data:
                    raise ClickHouseError("CANNOT_READ_ALL_DATA", "Unexpected end of chunked body")
                size -= len(data)
                yield data
            self._rfile.readline(16)


class _Response:
    """Writes one response: buffered in a single send, or streamed in chunks."""

    def __init__(self, handler: Handler, query_id: str, encoding: str | None) -> None:
        self.handler = handler
        self.query_id = query_id
        self.encoding = encoding
        self.headers: list[tuple[str, str]] = []
        self.on_complete: Callable[[], None] | None = None

    def complete(self) -> None:
        """Release the request's engine connection just before the last byte goes out.

        A client may send its next request on the same session the moment it has read the
        response; the session must already be free by then, or it would see
        SESSION_IS_LOCKED for strictly sequential use.
        """
        hook, self.on_complete = self.on_complete, None
        if hook is not None:
            hook()

    def _head(self, status: int, extra: list[tuple[str, str]]) -> bytes:
        parts = [
            _status_line(status),
            "Date: ",
            _http_date(),
            "\r\nX-ClickHouse-Server-Display-Name: ",
            _SERVER_NAME,
            "\r\nX-ClickHouse-Query-Id: ",
            self.query_id,
            "\r\nX-ClickHouse-Timezone: ",
            self.handler.app.engine.timezone,
            "\r\n",
        ]
        for name, value in self.headers:
            parts += (name, ": ", value, "\r\n")
        for name, value in extra:
            parts += (name, ": ", value, "\r\n")
        if self.handler.close_connection:
            parts.append("Connection: Close\r\n\r\n")
        else:
            parts.append("Connection: Keep-Alive\r\nKeep-Alive: timeout=30\r\n\r\n")
        return "".join(parts).encode("latin-1")

    def send_whole(self, status: int, body: bytes, content_type: str) -> None:
        """Send headers and body in one write (TCP_NODELAY: no Nagle wait between them)."""
        if self.encoding and body:
            enc = compression.encoder(self.encoding)
            body = enc.compress(body) + enc.flush()
            self.headers.append(("Content-Encoding", self.encoding))
        extra = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        head = self._head(status, extra)
        payload = head if self.handler.command == "HEAD" else head + body
        self.complete()
        self.handler.connection.sendall(payload)

    def start_stream(self, content_type: str, first: bytes) -> _Stream:
        """Send headers and the first chunk together, then stream the rest chunked."""
        tag = secrets.token_hex(8)
        extra = [
            ("Content-Type", content_type),
            ("Transfer-Encoding", "chunked"),
            ("X-ClickHouse-Exception-Tag", tag),
        ]
        enc = compression.encoder(self.encoding) if self.encoding else None
        if enc is not None:
            self.headers.append(("Content-Encoding", self.encoding or ""))
        stream = _Stream(self.handler, tag, enc, self)
        self.handler.connection.sendall(self._head(200, extra) + stream.frame(first))
        return stream


class _Stream:
    """A chunked response body in progress."""

    def __init__(
        self,
        handler: Handler,
        tag: str,
        enc: compression.Encoder | None,
        response: _Response,
    ) -> None:
        self.response = response
        self.handler = handler
        self.tag = tag
        self.enc = enc

    def frame(self, data: bytes) -> bytes:
        """Compress (when asked) and wrap one piece of the body as an HTTP chunk."""
        if self.enc is not None:
            data = self.enc.compress(data)
        if not data:
            return b""
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    def send(self, data: bytes) -> None:
        """Send one piece of the body as soon as the engine produced it."""
        out = self.frame(data)
        if out:
            self.handler.connection.sendall(out)

    def finish(self) -> None:
        """Flush the compressor and end the chunked body."""
        tail = b""
        if self.enc is not None:
            flushed = self.enc.flush()
            if flushed:
                tail = f"{len(flushed):x}\r\n".encode() + flushed + b"\r\n"
        self.response.complete()
        self.handler.connection.sendall(tail + b"0\r\n\r\n")

    def fail(self, err: ClickHouseError) -> None:
        """Signal an error after rows were sent, the way ClickHouse 25.11+ does."""
        message = err.body().rstrip("\n").encode()
        block = (
            b"\r\n__exception__\r\n"
            + self.tag.encode()
            + b"\r\n"
            + message
            + b"\n"
            + f"{len(message)} ".encode()
            + self.tag.encode()
            + b"\r\n__exception__\r\n"
        )
        self.send(block)
        self.finish()


class Handler(BaseHTTPRequestHandler):
    """One HTTP connection; each request runs one query."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    server_version = "ClickHouse"
    sys_version = ""

    @property
    def app(self) -> ClickHouseHTTPServer:
        """The server this connection belongs to."""
        return self.server.app

    fields: _Headers
    raw_requestline: bytes

    def parse_request(self) -> bool:
        """Read the request line and header fields, as http.server does, without its MIME parser.

        Returns False when an error response has been sent instead.
        """
        self.command = None  # type: ignore[assignment]
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:
            version = _HTTP_VERSION.fullmatch(words[-1])
            if version is None:
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({words[-1]!r})")
                return False
            number = (int(version[1]), int(version[2]))
            if number >= (2, 0):
                self.send_error(
                    HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                    f"Invalid HTTP version ({version[1]}.{version[2]})",
                )
                return False
            self.close_connection = number < (1, 1)
            self.request_version = words[-1]
        if len(words) != 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        self.command, self.path = words[0], words[1]
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")
        try:
            self.fields = _read_headers(self.rfile)
        except _HeadError as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, str(err))
            return False
        connection = self.fields.text("Connection").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        if (
            self.fields.text("Expect").lower() == "100-continue"
            and self.request_version >= "HTTP/1.1"
        ):
            return bool(self.handle_expect_100())
        return True

    def setup(self) -> None:
        """Disable Nagle: a response is one write, and waiting for an ACK costs ~40 ms."""
        # The server counted this connection as starting when it accepted it; the count
        # passes to its first request (begin_request) or ends with the connection (finish).
        self.starting = True
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def finish(self) -> None:
        """Close the connection; one that never counted a request in stops starting."""
        try:
            super().finish()
        finally:
            if self.starting:
                self.starting = False
                self.app.connection_started()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Access log at debug level: one line per request would drown the stack's logs."""
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802
        """Run the request's query (or answer the ping)."""
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        """Run the request's query (or answer the ping)."""
        self._dispatch()

    def do_HEAD(self) -> None:  # noqa: N802
        """Run the request's query (or answer the ping)."""
        self._dispatch()

    def do_OPTIONS(self) -> None:  # noqa: N802
        """Answer a CORS preflight as ClickHouse does."""
        head = (
            "HTTP/1.1 204 No Content\r\n"
            "Access-Control-Allow-Origin: *\r\n"
            "Access-Control-Allow-Methods: POST, GET, OPTIONS\r\n"
            "Access-Control-Allow-Headers: origin, x-requested-with, x-clickhouse-format, "
            "x-clickhouse-user, x-clickhouse-key, Authorization\r\n"
            "Access-Control-Max-Age: 86400\r\nContent-Length: 0\r\n\r\n"
        )
        if self.starting:  # a preflight is no request to wait for
            self.starting = False
            self.app.connection_started()
        self._drain_body()
        self.connection.sendall(head.encode())

    def _drain_body(self) -> None:
        try:
            for _ in _Body(self).chunks():
                pass
        except ClickHouseError:
            self.close_connection = True

    def _dispatch(self) -> None:
        first, self.starting = self.starting, False
        if not self.app.begin_request(first):
            self.close_connection = True
            err = ClickHouseError("ABORTED", "Server is shutting down")
            err.code = 236
            self._send_error(err, _Response(self, str(uuid.uuid4()), None))
            return
        try:
            self._handle()
        finally:
            if self.app.stopping:
                self.close_connection = True
            self.app.end_request()

    def _handle(self) -> None:
        path, _, query = self.path.partition("?")
        if not path.startswith("/") or "#" in self.path:
            url = urlsplit(self.path)
            path, query = url.path, url.query
        params = _parse_query(query)
        query_id = params.get("query_id") or str(uuid.uuid4())
        response = _Response(self, query_id, None)
        if path in ("/ping", "/replicas_status") or (
            path == "/" and self.command in ("GET", "HEAD") and "query" not in params
        ):
            self._drain_body()
            response.send_whole(200, b"Ok.\n", "text/html; charset=UTF-8")
            return
        body = None
        try:
            body = _Body(self)
            user, readonly = self.app.authenticate(self, params)
            if self.command in ("GET", "HEAD"):
                readonly = readonly or 2
            if params.get("compress") == "1" or params.get("decompress") == "1":
                raise ClickHouseError(
                    "NOT_IMPLEMENTED",
                    "ClickHouse's own compression format (compress=1, decompress=1) is not "
                    "supported by this server; use HTTP Content-Encoding / Accept-Encoding",
                )
            if params.get("enable_http_compression") in ("1", "true"):
                response.encoding = compression.choose_encoding(
                    self.fields.text("Accept-Encoding")
                )
            request = _Request(self, params, body, user, readonly, response)
            request.run()
        except ClickHouseError as err:
            if body is None or not body.done:
                self.close_connection = True
            self._send_error(err, response)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # never let one bad request take the server down
            log.exception("unexpected failure serving a request")
            self.close_connection = True
            self._send_error(ClickHouseError("UNKNOWN_EXCEPTION", repr(exc)), response)

    def _send_error(self, err: ClickHouseError, response: _Response) -> None:
        response.encoding = None
        response.headers = [("X-ClickHouse-Exception-Code", str(err.code))]
        try:
            response.send_whole(int(err.status), err.body().encode(), "text/plain; charset=UTF-8")
        except OSError:
            self.close_connection = True


class _Request:
    """One query: parse, authorise, run, answer."""

    def __init__(
        self,
        handler: Handler,
        params: dict[str, str],
        body: _Body,
        user: str,
        readonly: int,
        response: _Response,
    ) -> None:
        self.handler = handler
        self.app = handler.app
        self.params = params
        self.body = body
        self.user = user
        self.readonly = readonly
        self.response = response
        self.summary = Summary(started=time.perf_counter())
        encoding = handler.fields.text("Content-Encoding").strip().lower()
        compression.check_encoding(encoding)
        self.chunks = compression.decode(body.chunks(), encoding)
        self.query_params = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        self.settings = {
            k: v
            for k, v in params.items()
            if k not in RESERVED_PARAMS
            and k not in TRANSPORT_SETTINGS
            and not k.startswith("param_")
        }
        check_setting_names(self.settings)
        self.database = params.get("database") or handler.fields.get("X-ClickHouse-Database")

    # ------------------------------------------------------------------ query text
    def _read_statement(self) -> tuple[bytes | bytearray, InsertSplit | None]:
        url_query = self.params.get("query", "")
        # The body's first piece is used as it is when nothing precedes it (the usual case):
        # it may be a whole insert block, not worth copying just to look at its start.
        buf: bytes | bytearray = url_query.encode() + b"\n" if url_query else b""
        at_eof = False
        while True:
            try:
                split = _find_insert_data(buf, at_eof)
                break
            except IncompleteInput:
                chunk = next(self.chunks, None)
                if chunk is None:
                    at_eof = True
                elif not buf:
                    buf = chunk
                else:
                    if not isinstance(buf, bytearray):
                        buf = bytearray(buf)
                    buf += chunk
        if split is None and not at_eof:
            rest = list(self.chunks)
            if rest:
                buf = b"".join([buf, *rest])
        return buf, split

    # ------------------------------------------------------------------ connections
    def _acquire(self) -> tuple[EngineConnection, Session | None]:
        session_id = self.params.get("session_id")
        if session_id:
            timeout = parse_session_timeout(self.params.get("session_timeout"))
            check = self.params.get("session_check") in ("1", "true")
            session = self.app.engine.sessions.acquire(self.user, session_id, timeout, check)
            return session.conn, session
        if "session_check" in self.params and self.params["session_check"] in ("1", "true"):
            raise ClickHouseError("SESSION_NOT_FOUND", "Session check requires session_id")
        return self.app.engine.pool.acquire(), None

    def run(self) -> None:
        buf, split = self._read_statement()
        sql = ""
        stmt: Statement | None = None
        if split is None:
            sql = buf.decode("utf-8", errors="replace")
            stmt = analyse_once(sql)
        conn, session = self._acquire()
        healthy = True
        old_db = conn.database

        def release() -> None:
            if session is not None:
                try:
                    if self.database:
                        conn.use(old_db)
                finally:
                    self.app.engine.sessions.release(session)
            else:
                self.app.engine.pool.release(conn, healthy)

        self.response.on_complete = release
        try:
            if session is None:
                try:
                    conn.apply_pooled(self.database or "default", self.settings)
                except ClickHouseError:
                    healthy = False
                    raise
            else:
                if self.database:
                    conn.use(self.database)
                is_set = stmt is not None and stmt.first_word == "SET"
                conn.apply_session(self.settings, before_set_statement=is_set)
            if split is not None:
                self._insert(conn, buf, split)
            else:
                assert stmt is not None
                if stmt.first_word == "SET":
                    conn.client_set = True
                self._query(conn, sql, stmt)
        except (BrokenPipeError, ConnectionResetError):
            healthy = False
            raise
        finally:
            self.response.complete()

    # ------------------------------------------------------------------ INSERT with data
    def _insert(self, conn: EngineConnection, buf: bytes | bytearray, split: InsertSplit) -> None:
        if self.readonly:
            self._readonly_error()
        statement = split.statement.encode("latin-1").decode("utf-8", errors="replace")
        stmt = analyse_once(statement)
        if stmt.statement_count > 1:
            self._multi_statement_error(statement, stmt.error_position)
        # The newline ends a trailing `-- comment` before the engine sees the statement's end.
        statement += "\n"
        if self._one_thread(conn, split):
            statement += _ONE_THREAD
        try:
            inserter = conn.raw.send_insert(statement, split.fmt)
        except Exception as exc:
            raise from_engine(exc) from exc
        try:
            # Pieces go to the engine as they are (one join when several are pending): an
            # insert's data is copied as few times as the engine's bytes-only call allows.
            at = split.data_offset
            head = buf[at:] if isinstance(buf, bytes) else bytes(memoryview(buf)[at:])
            pending: list[bytes] = [head] if head else []
            size = len(head)
            for chunk in self.chunks:
                pending.append(chunk)
                size += len(chunk)
                if size >= _INSERT_APPEND:
                    conn.raw.insert_append(inserter, _joined(pending))
                    pending.clear()
                    size = 0
            if pending:
                conn.raw.insert_append(inserter, _joined(pending))
            result = conn.raw.insert_done(inserter)
        except ClickHouseError:
            _cancel(conn, inserter)
            raise
        except Exception as exc:
            _cancel(conn, inserter)
            raise from_engine(exc) from exc
        self.summary.written_rows = int(result.rows_written())
        self.summary.written_bytes = int(result.bytes_written())
        self._send_empty()

    def _one_thread(self, conn: EngineConnection, split: InsertSplit) -> bool:
        """Whether this insert's pipeline runs on the request's own thread.

        Data in a serial format arrives as one stream that is parsed in one stream, so the
        engine's further pipeline threads (`max_threads` defaults to the number of cores)
        only add hand-offs: on 2 cores, twice the context switches and ~0.5 ms more per
        insert (docs/clickhouse_server.md). Unless the client chose `max_threads`
        itself: as a URL setting, in the statement's own SETTINGS clause, or with any
        SET statement on this connection.
        """
        return (
            split.fmt.lower() in _SERIAL_FORMATS
            and not split.has_settings
            and not conn.client_set
            and "max_threads" not in self.settings
        )

    # ------------------------------------------------------------------ other statements
    def _query(self, conn: EngineConnection, sql: str, stmt: Statement) -> None:
        if stmt.statement_count == 0:
            raise ClickHouseError("SYNTAX_ERROR", "Empty query")
        if stmt.statement_count > 1:
            self._multi_statement_error(sql, stmt.error_position)
        if is_access_control(stmt):
            raise ClickHouseError(
                "NOT_IMPLEMENTED",
                "Users, roles, grants, quotas and row policies cannot be managed on this "
                "server: its users and passwords are configured in the pipeline settings "
                "(CLICKHOUSE_USER, CLICKHOUSE_PASSWORD or the credentials in CLICKHOUSE_URL)",
            )
        kind = self.app.engine.classify(conn, sql)
        if self.readonly and kind in ("MUTATING", "MUTATING_GLOBAL"):
            self._readonly_error()
        if kind == "READ_ONLY":
            self._run_statement(conn, sql, stmt, kind)
            return
        # Anything else may change a table's definition, a setting or a session's state.
        schema = self.app.engine.schema
        schema.invalidate()
        try:
            self._run_statement(conn, sql, stmt, kind)
        finally:
            schema.invalidate()

    def _run_statement(self, conn: EngineConnection, sql: str, stmt: Statement, kind: str) -> None:
        returns_rows = kind in ("READ_ONLY", "UNKNOWN") and stmt.first_word not in ("SET", "USE")
        fmt = stmt.output_format or self.params.get("default_format") or "TabSeparated"
        wait = self.params.get("wait_end_of_query") in ("1", "true")
        if not returns_rows:
            result = conn.query(sql, fmt, self.query_params)
            if stmt.first_word == "USE":
                conn.refresh_database()
            self.summary.add_result(result)
            self._send_empty()
            return
        self.response.headers.append(("X-ClickHouse-Format", fmt))
        content_type = _content_type(fmt)
        if stmt.first_word in ("DESCRIBE", "DESC") and is_plain_describe(sql):
            self._describe(conn, sql, fmt, content_type)
            return
        if not wait and fmt.lower() in STREAMABLE_FORMATS:
            try:
                self._stream(conn, sql, fmt, content_type)
                return
            except ClickHouseError as err:
                # chdb streams SELECTs only; EXISTS, SHOW and the like are answered whole.
                if "Streaming query is not supported" not in err.message:
                    raise
        elif (
            not wait
            and kind == "READ_ONLY"
            and stmt.first_word in ("SELECT", "WITH")
            and not stmt.has_outfile
            and self._stream_formatted(conn, sql, stmt, fmt, content_type)
        ):
            return
        result = conn.query(sql, fmt, self.query_params)
        self.summary.add_result(result)
        self.response.headers.append(("X-ClickHouse-Summary", self.summary.header()))
        self.response.send_whole(200, bytes(result.bytes()), content_type)

    def _describe(self, conn: EngineConnection, sql: str, fmt: str, content_type: str) -> None:
        """Answer a plain DESCRIBE TABLE, from memory when nothing changed since it last ran."""
        schema = self.app.engine.schema
        # The connection is part of the key: a session's temporary table shadows a table of
        # the same name for that connection only.
        key = (
            conn.serial,
            conn.database,
            sql,
            fmt,
            tuple(self.settings.items()),
            tuple(self.query_params.items()),
        )
        answer = schema.get(key)
        if answer is None:
            generation = schema.generation
            result = conn.query(sql, fmt, self.query_params)
            answer = Answer(
                bytes(result.bytes()),
                int(result.storage_rows_read()),
                int(result.storage_bytes_read()),
                int(result.rows_read()),
                int(result.bytes_read()),
            )
            schema.put(key, answer, generation)
        self.summary.read_rows += answer.read_rows
        self.summary.read_bytes += answer.read_bytes
        self.summary.result_rows += answer.result_rows
        self.summary.result_bytes += answer.result_bytes
        self.response.headers.append(("X-ClickHouse-Summary", self.summary.header()))
        self.response.send_whole(200, answer.body, content_type)

    def _stream(self, conn: EngineConnection, sql: str, fmt: str, content_type: str) -> None:
        raw = conn.raw
        try:
            handle = raw.send_query(sql, fmt, params=self.query_params)
            first = raw.streaming_fetch_result(handle)
            second = raw.streaming_fetch_result(handle) if _has_rows(first) else None
        except Exception as exc:
            raise from_engine(exc) from exc
        first_bytes = bytes(first.bytes()) if first is not None else b""
        if first is not None:
            self.summary.add_result(first)
        if not _has_rows(second):
            # The whole result came in one block: answer it in one send.
            self.response.headers.append(("X-ClickHouse-Summary", self.summary.header()))
            self.response.send_whole(200, first_bytes, content_type)
            return
        self.response.headers.append(("X-ClickHouse-Summary", self.summary.header()))
        stream = self.response.start_stream(content_type, first_bytes)
        chunk = second
        try:
            while chunk is not None and _has_rows(chunk):
                stream.send(bytes(chunk.bytes()))
                chunk = raw.streaming_fetch_result(handle)
        except (BrokenPipeError, ConnectionResetError):
            _cancel_stream(raw, handle)
            raise
        except Exception as exc:
            self.handler.close_connection = True
            stream.fail(from_engine(exc))
            return
        stream.finish()

    def _stream_formatted(
        self, conn: EngineConnection, sql: str, stmt: Statement, fmt: str, content_type: str
    ) -> bool:
        """Stream a result in a format whose blocks do not concatenate (JSON, ...WithNames).

        chdb's streaming API formats every block as a document of its own, so for these
        formats the query writes its one, whole document into a pipe instead (`INTO OUTFILE`
        the pipe's write end), and the pipe is read as the engine writes it: the engine
        blocks while the client is slow, so at most a pipe and a window of the result are in
        memory. Output that ends within the first `_STREAM_AFTER` bytes is answered in one
        piece, so an early error still gets its HTTP status; after that an error becomes the
        tagged exception block. The engine closes a document it failed to finish as if it
        had finished it, so the last `_HOLD_BACK` bytes are only sent once it succeeded.

        Returns:
            False when the statement cannot be written to a pipe; it is then answered whole.

        """
        read_fd, write_fd = os.pipe()
        marker = "result" + secrets.token_hex(8)
        text = with_output_file(sql, stmt, f"/proc/self/fd/{write_fd}", marker)
        # The engine files a query with INTO OUTFILE under CONTROL; UNKNOWN means it does not
        # parse, i.e. the clause could not go where it was put: answer the query whole then.
        if Engine.classify_uncached(conn, text) == "UNKNOWN":
            os.close(read_fd)
            os.close(write_fd)
            return False
        with contextlib.suppress(OSError):
            fcntl.fcntl(read_fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        outcome: dict[str, Any] = {}
        params = self.query_params

        def run() -> None:
            try:
                outcome["result"] = conn.raw.query(text, fmt, params=params)
            except Exception as exc:  # reported by the reading side
                outcome["error"] = exc
                # After a failure chdb may write the unfinished document only while the
                # connection's next query starts, opening the path again: that must still be
                # this pipe (whose output is discarded), never a later request's.
                conn.flush_failed()
            finally:
                os.close(write_fd)

        worker = threading.Thread(target=run, name="clickhouse-result", daemon=True)
        worker.start()
        pending: list[bytes] = []
        size = 0
        stream: _Stream | None = None
        try:
            while True:
                data = os.read(read_fd, _READ_CHUNK)
                if not data:
                    break
                pending.append(data)
                size += len(data)
                if stream is None and size >= _STREAM_AFTER:
                    self.response.headers.append(("X-ClickHouse-Summary", self.summary.header()))
                    stream = self.response.start_stream(content_type, b"")
                if stream is not None:
                    while pending and size - len(pending[0]) >= _HOLD_BACK:
                        piece = pending.pop(0)
                        size -= len(piece)
                        stream.send(piece)
            worker.join()
        except BaseException:
            # The client went away (or the server failed): stop the engine writing first.
            os.close(read_fd)
            read_fd = -1
            if worker.is_alive():
                self._kill_query(marker)
            worker.join()
            raise
        finally:
            if read_fd >= 0:
                os.close(read_fd)
        error = outcome.get("error")
        if error is not None:
            err = from_engine(error)
            if stream is None:
                raise err from error
            self.handler.close_connection = True
            stream.fail(err)
            return True
        self.summary.add_result(outcome["result"])
        if stream is None:
            self.response.headers.append(("X-ClickHouse-Summary", self.summary.header()))
            self.response.send_whole(200, _joined(pending) if pending else b"", content_type)
            return True
        for piece in pending:
            stream.send(piece)
        stream.finish()
        return True

    def _kill_query(self, marker: str) -> None:
        """Cancel the running query whose text carries `marker`."""
        pool = self.app.engine.pool
        killer = pool.acquire()
        healthy = True
        try:
            killer.run(
                f"KILL QUERY WHERE query LIKE {quote_literal('%/* ' + marker + ' */%')} "
                "AND query NOT LIKE 'KILL%' ASYNC"
            )
        except ClickHouseError:
            healthy = False
        finally:
            pool.release(killer, healthy)

    # ------------------------------------------------------------------ answers
    def _send_empty(self) -> None:
        self.response.headers.append(("X-ClickHouse-Summary", self.summary.header()))
        self.response.send_whole(200, b"", "text/plain; charset=UTF-8")

    def _readonly_error(self) -> None:
        detail = ""
        if self.handler.command in ("GET", "HEAD"):
            detail = (
                ". For queries over HTTP, method GET implies readonly. You should use method "
                "POST for modifying queries"
            )
        raise ClickHouseError("READONLY", "Cannot execute query in readonly mode" + detail)

    @staticmethod
    def _multi_statement_error(sql: str, position: int) -> None:
        near = sql[position : position + 40].replace("\n", " ") if position >= 0 else ""
        raise ClickHouseError(
            "SYNTAX_ERROR",
            f"Syntax error (Multi-statements are not allowed): failed at position {position + 1}"
            f" (end of query): {near}",
        )


def _find_insert_data(buf: bytes | bytearray, at_eof: bool) -> InsertSplit | None:
    """`find_insert_data` on the start of the body first: an insert's data is not decoded."""
    if len(buf) > _SPLIT_WINDOW:
        try:
            return find_insert_data(str(memoryview(buf)[:_SPLIT_WINDOW], "latin-1"), False)
        except IncompleteInput:
            pass
    return find_insert_data(str(buf, "latin-1"), at_eof)


def _joined(pieces: list[bytes]) -> bytes:
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header's value, formatted once per second."""
    global _date_cache
    now = int(time.time())
    second, text = _date_cache
    if second != now:
        text = email.utils.formatdate(now, usegmt=True)
        _date_cache = (now, text)
    return text


_STATUS_LINES: dict[int, str] = {}


def _status_line(status: int) -> str:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
    return line


def _has_rows(result: Any) -> bool:
    return result is not None and (int(result.rows_read()) > 0 or int(result.size()) > 0)


def _cancel(conn: EngineConnection, inserter: Any) -> None:
    try:
        conn.raw.insert_cancel(inserter)
    except Exception:  # noqa: S110 - the insert already failed; its error is what matters
        pass


def _cancel_stream(raw: Any, handle: Any) -> None:
    try:
        raw.streaming_cancel_query(handle)
    except Exception:  # noqa: S110 - the client is gone; nothing left to tell it
        pass


def _content_type(fmt: str) -> str:
    lower = fmt.lower()
    if lower.startswith("json") and "eachrow" not in lower:
        return "application/json; charset=UTF-8"
    if lower in ("native", "rowbinary", "arrow", "arrowstream", "parquet", "orc", "avro"):
        return "application/octet-stream"
    if lower.startswith("rowbinary"):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128
    app: ClickHouseHTTPServer

    def process_request(self, request: Any, client_address: Any) -> None:
        self.app.connection_accepted()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.app.connection_started()
            raise


class ClickHouseHTTPServer:
    """The server: an engine and an HTTP listener, with a graceful stop."""

    def __init__(
        self, host: str, port: int, data_dir: Path, users: dict[str, tuple[str, bool]]
    ) -> None:
        self.users = {name: User(pw, ro) for name, (pw, ro) in users.items()}
        self.engine = Engine(data_dir)
        try:
            self.httpd = _HTTPServer((host, port), Handler)
        except OSError:
            self.engine.close()
            raise
        self.httpd.app = self
        self.stopping = False
        self._inflight = 0
        self._starting = 0  # accepted connections whose first request is not counted in yet
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._closed = False

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with port 0)."""
        return int(self.httpd.server_address[1])

    @property
    def host(self) -> str:
        """The address listened on."""
        return str(self.httpd.server_address[0])

    def connection_accepted(self) -> None:
        """Count a new connection as starting: its first request is about to be read."""
        with self._cond:
            self._starting += 1

    def connection_started(self) -> None:
        """A starting connection ended without a request."""
        with self._cond:
            self._starting -= 1
            self._cond.notify_all()

    def begin_request(self, first: bool = False) -> bool:
        """Count a request in; False once the engine is closed.

        The first request of a connection also counts its connection out of the starting
        ones. A request that reaches the server while it is stopping is still served: its
        connection was accepted before the listener closed, and the client is already
        sending (possibly a large insert) - refusing it would lose work the stop waits for.
        """
        with self._cond:
            if first:
                self._starting -= 1
                self._cond.notify_all()
            if self._closed:
                return False
            self._inflight += 1
            return True

    def end_request(self) -> None:
        """Count a request out."""
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    def authenticate(self, handler: Handler, params: dict[str, str]) -> tuple[str, int]:
        """Check the credentials given in any of ClickHouse's three ways.

        Returns:
            The user name and its readonly level (0 or 1).

        Raises:
            ClickHouseError: AUTHENTICATION_FAILED for an unknown user or a wrong password.

        """
        user = handler.fields.get("X-ClickHouse-User")
        password = handler.fields.get("X-ClickHouse-Key")
        auth = handler.fields.text("Authorization")
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise ClickHouseError(
                    "AUTHENTICATION_FAILED", "Malformed Basic authorization header"
                ) from None
            b_user, _, b_password = decoded.partition(":")
            user, password = user or b_user, password if password is not None else b_password
        if "user" in params:
            user = params["user"]
        if "password" in params:
            password = params["password"]
        user = user or "default"
        password = password or ""
        known = self.users.get(user)
        if known is None or not secrets.compare_digest(known.password, password):
            raise ClickHouseError(
                "AUTHENTICATION_FAILED",
                f"{user}: Authentication failed: password is incorrect, or there is no user "
                "with such name",
            )
        return user, 1 if known.readonly else 0

    def _serve_backlog(self) -> None:
        """Serve connections the kernel accepted before the listener closes.

        A client may already be streaming an insert into such a connection; closing the
        listener would reset it and lose work the stop promises to finish.
        """
        sock = self.httpd.socket
        sock.setblocking(False)
        while True:
            try:
                conn, addr = sock.accept()
            except OSError:
                return
            conn.setblocking(True)
            self.httpd.process_request(conn, addr)

    def serve_forever(self) -> None:
        """Serve until `stop` is called."""
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> None:
        """Serve from a background thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, name=f"clickhouse-http-{self.port}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop accepting, let in-flight requests (inserts above all) finish, close the engine.

        Safe to call from several threads (a signal handler and the main thread): every
        caller returns only once the engine is closed.
        """
        with self._cond:
            first = not self.stopping
            self.stopping = True
        if not first:
            self._stopped.wait()
            return
        try:
            self.httpd.shutdown()
            self._serve_backlog()
            self.httpd.server_close()
            deadline = time.monotonic() + timeout
            # A connection accepted just before the stop may not have reached its first
            # request yet (its thread is still reading the request line): give such
            # connections a short grace to be counted in, so the stop waits for their
            # request instead of refusing it; one that sends nothing does not hold it longer.
            grace = min(deadline, time.monotonic() + _START_GRACE)
            with self._cond:
                while self._starting > 0 and time.monotonic() < grace:
                    self._cond.wait(grace - time.monotonic())
                while self._inflight > 0 and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
            if self._thread is not None:
                self._thread.join(timeout=5)
            with self._cond:
                while self._inflight > 0 and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
                self._closed = True
            self.engine.close()
        finally:
            self._stopped.set()


def start_server(
    host: str = "127.0.0.1",
    port: int = 0,
    data_dir: Path | str = "clickhouse-data",
    users: dict[str, tuple[str, bool]] | None = None,
) -> ClickHouseHTTPServer:
    """Start a server in a background thread of this process and return it.

    Args:
        host: address to listen on.
        port: TCP port; 0 picks a free one (read it back from `.port`).
        data_dir: the database directory this process will own.
        users: user name -> (password, readonly); by default `default` with no password.

    Returns:
        The running server; call `.stop()` to shut it down.

    Raises:
        DataDirInUse: another process already serves `data_dir`.

    """
    server = ClickHouseHTTPServer(
        host, port, Path(data_dir), users if users is not None else {"default": ("", False)}
    )
    server.start()
    return server
