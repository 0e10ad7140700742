"""Engine connections: a pool for sessionless requests and one connection per HTTP session.

chdb keeps `SET`, `USE` and temporary tables per connection, which is exactly ClickHouse's
session scope, so a session owns one connection for its life. Requests without a session
borrow any idle pooled connection, so independent requests run in parallel instead of
queueing behind one global lock.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import chdb

from flowforge_pipeline.standins.clickhouse_server.errors import ClickHouseError, from_engine

DEFAULT_SESSION_TIMEOUT = 60
MAX_SESSION_TIMEOUT = 3600
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SERIALS = itertools.count(1)


def quote_literal(value: str) -> str:
    """A ClickHouse string literal holding `value`."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_name(name: str) -> str:
    """A ClickHouse back-quoted identifier holding `name`."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class EngineConnection:
    """One chdb connection and the state the server tracks for it."""

    def __init__(self, path: str) -> None:
        try:
            self.conn = chdb.connect(path)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise from_engine(exc) from exc
        self.raw: Any = self.conn._conn
        #: Never reused within the process, unlike id(): tells connections apart in cache keys.
        self.serial = next(_SERIALS)
        self.database = "default"
        self.applied: dict[str, str] = {}
        self.overlay: dict[str, tuple[str, str | None]] = {}
        #: A client's own `SET` statement ran here: its settings are the client's to keep.
        self.client_set = False

    def run(self, sql: str) -> Any:
        """Run a statement whose result the server does not return."""
        return self.query(sql, "TabSeparated", {})

    def query(self, sql: str, fmt: str, params: dict[str, str]) -> Any:
        """Run a statement and return the engine's whole result.

        Raises:
            ClickHouseError: the engine's error.

        """
        try:
            return self.raw.query(sql, fmt, params=params)
        except Exception as exc:
            self.flush_failed()
            raise from_engine(exc) from exc

    def flush_failed(self) -> None:
        """Discard what a failed query left behind on this connection.

        chdb keeps the output a failed query had begun (a JSON document closed as if it had
        finished, for one) and puts it in front of the next result on the same connection,
        or writes it into the next query's output file; one throwaway query takes it.
        """
        try:
            self.raw.query("SELECT 1", "TabSeparated", params={})
        except Exception:  # noqa: S110 - the original error is what the client gets
            pass

    def use(self, database: str) -> None:
        """Switch the connection's current database."""
        if database != self.database:
            self.run(f"USE {quote_name(database)}")
            self.database = database

    def refresh_database(self) -> None:
        """Re-read the current database after a `USE` the client sent."""
        self.database = bytes(self.run("SELECT currentDatabase()").bytes()).decode().strip()

    def apply_pooled(self, database: str, settings: dict[str, str]) -> None:
        """Bring a pooled connection to exactly this request's database and settings.

        A pooled connection carries nothing from one request to the next that the client did
        not ask for: settings of the previous request that this one lacks go back to their
        defaults, and identical ones are not sent again (clients repeat the same settings on
        every request, so this keeps the common case free).
        """
        self.use(database)
        changes = [f"{k} = DEFAULT" for k in self.applied if k not in settings]
        changes += [
            f"{k} = {quote_literal(v)}" for k, v in settings.items() if self.applied.get(k) != v
        ]
        if changes:
            self.applied = {}
            self.run("SET " + ", ".join(changes))
            self.applied = dict(settings)

    def apply_session(self, settings: dict[str, str], before_set_statement: bool) -> None:
        """Give a session's connection this request's URL settings on top of its own.

        URL settings last for one request, but clients send the same ones with every
        request, so they stay applied (remembered with the session's own value underneath)
        until a request without them, or with another value, comes; reverting and
        re-applying each time would cost three extra engine round trips per request. Before
        a `SET` statement everything is reverted, so the client's SET lands on the
        session's own values.
        """
        if before_set_statement:
            self.revert_overlay()
            return
        changes: list[str] = []
        for name, (_, previous) in list(self.overlay.items()):
            if name not in settings:
                changes.append(_assignment(name, previous))
                del self.overlay[name]
        fresh = [k for k in settings if k not in self.overlay]
        previous_values = self._current_values(fresh) if fresh else {}
        for name, value in settings.items():
            if name in self.overlay and self.overlay[name][0] == value:
                continue
            changes.append(f"{name} = {quote_literal(value)}")
        if not changes:
            return
        try:
            self.run("SET " + ", ".join(changes))
        except ClickHouseError:
            for name in fresh:
                previous_values.setdefault(name, None)
            self.overlay.update({k: ("", previous_values.get(k)) for k in fresh})
            self.revert_overlay()
            raise
        for name, value in settings.items():
            prior = self.overlay[name][1] if name in self.overlay else previous_values.get(name)
            self.overlay[name] = (value, prior)

    def _current_values(self, names: list[str]) -> dict[str, str | None]:
        """Each setting's session value, or None when it is at its default."""
        quoted = ", ".join(quote_literal(k) for k in names)
        result = self.run(
            f"SELECT name, value, changed FROM system.settings WHERE name IN ({quoted})"
        )
        values: dict[str, str | None] = {}
        for line in bytes(result.bytes()).decode().splitlines():
            name, value, changed = line.split("\t")
            values[name] = _unescape_tsv(value) if changed == "1" else None
        return values

    def revert_overlay(self) -> None:
        """Put back the session's own values of every URL setting still applied."""
        if self.overlay:
            overlay, self.overlay = self.overlay, {}
            known = {k: v for k, (_, v) in overlay.items() if _SETTING_NAME.match(k)}
            try:
                self.run("SET " + ", ".join(_assignment(k, v) for k, v in known.items()))
            except ClickHouseError:
                for name, value in known.items():
                    try:
                        self.run("SET " + _assignment(name, value))
                    except ClickHouseError:
                        continue

    def close(self) -> None:
        """Release the connection."""
        self.conn.close()


def _assignment(name: str, value: str | None) -> str:
    return f"{name} = DEFAULT" if value is None else f"{name} = {quote_literal(value)}"


def _unescape_tsv(value: str) -> str:
    return value.replace("\\t", "\t").replace("\\n", "\n").replace("\\'", "'").replace("\\\\", "\\")


def check_setting_names(settings: dict[str, str]) -> None:
    """Reject a setting name that is not an identifier before it reaches any SQL text.

    Raises:
        ClickHouseError: UNKNOWN_SETTING, as ClickHouse answers for any name it does not know.

    """
    for name in settings:
        if not _SETTING_NAME.match(name):
            raise ClickHouseError("UNKNOWN_SETTING", f"Unknown setting '{name}'")


class Pool:
    """Idle connections for requests without a session; grows on demand."""

    def __init__(self, path: str, max_idle: int = 16) -> None:
        self._path = path
        self._idle: list[EngineConnection] = []
        self._lock = threading.Lock()
        self._max_idle = max_idle

    def acquire(self) -> EngineConnection:
        """Borrow an idle connection, opening a new one when none is free."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return EngineConnection(self._path)

    def release(self, conn: EngineConnection, healthy: bool = True) -> None:
        """Return a connection; one left in an unknown state is closed instead."""
        if healthy:
            with self._lock:
                if len(self._idle) < self._max_idle:
                    self._idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@dataclass
class Session:
    """One client session: its connection, its lock and when it expires."""

    key: tuple[str, str]
    conn: EngineConnection
    timeout: float
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


def parse_session_timeout(raw: str | None) -> int:
    """The session timeout in seconds, within ClickHouse's bounds.

    Raises:
        ClickHouseError: INVALID_SESSION_TIMEOUT.

    """
    if raw is None or raw == "":
        return DEFAULT_SESSION_TIMEOUT
    try:
        value = int(raw)
    except ValueError:
        raise ClickHouseError(
            "INVALID_SESSION_TIMEOUT", f"Invalid session timeout: '{raw}'"
        ) from None
    if value < 0:
        raise ClickHouseError("INVALID_SESSION_TIMEOUT", f"Invalid session timeout: '{raw}'")
    if value > MAX_SESSION_TIMEOUT:
        raise ClickHouseError(
            "INVALID_SESSION_TIMEOUT",
            f"Session timeout must not be greater than {MAX_SESSION_TIMEOUT} seconds "
            "(you can change this value in the config)",
        )
    return value


class SessionManager:
    """Named sessions, each with its own connection, closed after their idle timeout."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._sessions: dict[tuple[str, str], Session] = {}
        self._lock = threading.Lock()

    def acquire(self, user: str, session_id: str, timeout: int, check: bool) -> Session:
        """Lock the session for one request, creating it unless `check` demands it exists.

        Raises:
            ClickHouseError: SESSION_NOT_FOUND or SESSION_IS_LOCKED.

        """
        self.expire_idle()
        key = (user, session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                if check:
                    raise ClickHouseError("SESSION_NOT_FOUND", f"Session {session_id} not found")
                session = Session(key, EngineConnection(self._path), timeout)
                self._sessions[key] = session
            if not session.lock.acquire(blocking=False):
                raise ClickHouseError(
                    "SESSION_IS_LOCKED", f"Session {session_id} is locked by a concurrent client"
                )
            session.timeout = timeout
        return session

    def release(self, session: Session) -> None:
        """Unlock the session after its request and restart its idle clock."""
        session.last_used = time.monotonic()
        session.lock.release()

    def expire_idle(self) -> None:
        """Close sessions idle for longer than their timeout."""
        now = time.monotonic()
        expired: list[Session] = []
        with self._lock:
            for key, session in list(self._sessions.items()):
                if now - session.last_used > session.timeout and session.lock.acquire(
                    blocking=False
                ):
                    del self._sessions[key]
                    expired.append(session)
        for session in expired:
            session.conn.close()

    def close(self) -> None:
        """Close every session's connection."""
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.conn.close()
