"""ClickHouse batch inserts with bounded retries, then the `table_update` broadcast.

Each item the sink receives is one batch for one table, inserted in one statement (atomic
per block in ClickHouse). Only after the insert has succeeded is the contract's
`table_update` message published, so a dashboard never refreshes for rows that are not there.

Restarts are made exact by the table itself: at start each partition reads, per resume key
(the Kafka partition for raw tables, the symbol for windowed tables), the newest position
already stored, and skips replayed rows at or before it. Rows of one key arrive in position
order, so what is stored for a key is always a prefix of what the flow produces.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from clickhouse_connect.driver.client import Client

from flowforge_pipeline.contract.catalog import TABLE_UPDATE_CHANNEL, table
from flowforge_pipeline.flows import metrics
from flowforge_pipeline.flows.common import iso, to_json_bytes, utc_now
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stores import clickhouse as ch_store
from flowforge_pipeline.stores import redis as redis_store
from flowforge_pipeline.stores.clickhouse import quote_identifier

Row = tuple[Any, ...]
log = logging.getLogger(__name__)


class InsertFailed(RuntimeError):
    """An insert kept failing after the bounded retries; the flow stops rather than drop rows."""


@dataclass(frozen=True)
class TableSpec:
    """How a flow writes one contract table.

    Attributes:
        table: contract table name.
        columns: columns the flow sends, in row order (defaults such as `ingested_at` omitted).
        resume_key: columns identifying an ordered sequence of rows (e.g. kafka_partition).
        resume_position: column increasing along that sequence (e.g. kafka_offset).
        first_time: column giving a row's oldest event time, for the broadcast.
        last_time: column giving a row's newest event time, for the broadcast.

    """

    table: str
    columns: tuple[str, ...]
    resume_key: tuple[str, ...]
    resume_position: str
    first_time: str
    last_time: str

    def __post_init__(self) -> None:
        known = {c.name for c in table(self.table).columns}
        unknown = set(self.columns) - known
        if unknown:
            raise ValueError(f"{self.table} has no column(s) {sorted(unknown)}")

    def index(self, column: str) -> int:
        """Position of `column` in a row."""
        return self.columns.index(column)


@dataclass(frozen=True)
class RowBatch:
    """Rows for one insert into one table."""

    table: str
    rows: list[Row]


def _utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def stored_positions(client: Client, spec: TableSpec) -> dict[Row, Any]:
    """The newest stored position per resume key of a table."""
    keys = ", ".join(quote_identifier(k) for k in spec.resume_key)
    pos = quote_identifier(spec.resume_position)
    result = client.query(
        f"SELECT {keys}, max({pos}) FROM {quote_identifier(spec.table)} GROUP BY {keys}"
    )
    n = len(spec.resume_key)
    return {tuple(_utc(v) for v in r[:n]): _utc(r[n]) for r in result.result_rows}


def unseen_rows(spec: TableSpec, rows: Sequence[Row], marks: dict[Row, Any]) -> list[Row]:
    """Rows whose position is after the stored one for their key (all rows of a new key)."""
    key_idx = [spec.index(k) for k in spec.resume_key]
    pos_idx = spec.index(spec.resume_position)
    out: list[Row] = []
    for row in rows:
        mark = marks.get(tuple(row[i] for i in key_idx))
        if mark is None or row[pos_idx] > mark:
            out.append(row)
    return out


def advance_marks(spec: TableSpec, rows: Sequence[Row], marks: dict[Row, Any]) -> None:
    """Record the newest position per key after a successful insert."""
    key_idx = [spec.index(k) for k in spec.resume_key]
    pos_idx = spec.index(spec.resume_position)
    for row in rows:
        key = tuple(row[i] for i in key_idx)
        mark = marks.get(key)
        if mark is None or row[pos_idx] > mark:
            marks[key] = row[pos_idx]


def table_update(spec: TableSpec, rows: Sequence[Row], flushed_at: datetime) -> dict[str, Any]:
    """The contract's `table_update` message for a successful insert of `rows`."""
    first = min(row[spec.index(spec.first_time)] for row in rows)
    last = max(row[spec.index(spec.last_time)] for row in rows)
    message = {
        "type": "table_update",
        "table": spec.table,
        "rows": len(rows),
        "min_event_time": iso(first),
        "max_event_time": iso(last),
        "flushed_at": iso(flushed_at),
    }
    return message


def unreachable(exc: BaseException) -> bool:
    """True when `exc` means the store cannot be reached right now (down or restarting).

    Connection-level errors of each store's client: the store may come back, so the write is
    worth retrying for as long as it takes. Anything else (a rejected statement, bad data) is
    not going to change by waiting.
    """
    import psycopg
    import redis
    from clickhouse_connect.driver.exceptions import OperationalError

    from flowforge_pipeline.stores.errors import UNAVAILABLE

    kinds = (
        *UNAVAILABLE,  # a reconnect through the store module: e.g. PostgresUnavailable
        OperationalError,
        redis.ConnectionError,
        redis.TimeoutError,
        psycopg.OperationalError,
        ConnectionError,
        TimeoutError,
    )
    return isinstance(exc, kinds)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def with_retries(
    action: Callable[[], Any],
    *,
    what: str,
    attempts: int = 5,
    first_delay: float = 0.25,
    sleep: Callable[[float], None] = time.sleep,
    flow: str = "",
    store: str = "",
    max_delay: float = 2.0,
) -> Any:
    """Run `action`, retrying with doubling back-off.

    Errors that mean the store is unreachable (see `unreachable`) are retried without bound
    when `store` is named: a store being restarted must not stop the flow, and while it is
    down the flow says so in `flowforge_sink_store_down_since_seconds{flow, store}` (read by
    `status`) and in its log. Any other error is retried `attempts` times, then raises
    `InsertFailed`: the flow stops with a clear error and Bytewax recovery resumes it from
    its last snapshot once restarted, so nothing is dropped.
    """
    delay = first_delay
    failures = 0
    down_since: float | None = None
    while True:
        try:
            result = action()
        except Exception as exc:  # noqa: BLE001 - any failure of the client is retried
            if store and unreachable(exc):
                if down_since is None:
                    down_since = time.time()
                    metrics.store_down(flow, store, down_since)
                    log.warning(
                        "%s: %s unreachable, retrying until it is back: %s",
                        flow or "sink", store, _first_line(exc),
                    )
            else:
                failures += 1
                if failures >= attempts:
                    raise InsertFailed(
                        f"{what} failed after {attempts} attempts: {_first_line(exc)}"
                    ) from exc
            sleep(delay)
            delay = min(delay * 2, max_delay)
            continue
        if down_since is not None:
            metrics.store_down(flow, store, 0.0)
            log.warning(
                "%s: %s reachable again after %.1f s", flow or "sink", store,
                time.time() - down_since,
            )
        return result


class _ClickHousePartition(StatelessSinkPartition[RowBatch]):
    def __init__(self, settings: Settings, flow: str, specs: dict[str, TableSpec]) -> None:
        self._flow = flow
        self._specs = specs
        self._ch = ch_store.client(settings, compress=False)
        ch_store.load_insert_path()
        self._redis = redis_store.client(settings)
        self._marks = {name: stored_positions(self._ch, spec) for name, spec in specs.items()}

    def write_batch(self, items: list[RowBatch]) -> None:
        for batch in items:
            self._write(batch)

    def _write(self, batch: RowBatch) -> None:
        spec = self._specs[batch.table]
        rows = unseen_rows(spec, batch.rows, self._marks[batch.table])
        skipped = len(batch.rows) - len(rows)
        if skipped:
            metrics.SKIPPED_ON_RESUME.labels(self._flow, spec.table).inc(skipped)
        if not rows:
            return
        # Everything the broadcast needs except `flushed_at` is computed before the insert, so
        # the gap between the insert committing and its announcement is as short as it can be
        # (a crash inside that gap is the one case where a stored batch goes unannounced).
        announce = table_update(spec, rows, utc_now())
        started = time.perf_counter()
        attempts = 0

        def insert() -> None:
            nonlocal attempts
            attempts += 1
            todo = rows
            if attempts > 1:
                # A failed attempt may have committed before its answer was lost (a server
                # killed mid-insert): insert only what the table still lacks.
                self._marks[batch.table] = stored_positions(self._ch, spec)
                todo = unseen_rows(spec, rows, self._marks[batch.table])
            if todo:
                self._ch.insert(spec.table, todo, column_names=list(spec.columns))

        with_retries(
            insert,
            what=f"insert of {len(rows)} rows into clickhouse table {spec.table}",
            flow=self._flow,
            store="clickhouse",
        )
        inserted = time.perf_counter()
        announce["flushed_at"] = iso(utc_now())
        message = to_json_bytes(announce)
        with_retries(
            lambda: self._redis.publish(TABLE_UPDATE_CHANNEL.name, message),
            what=f"publish on {TABLE_UPDATE_CHANNEL.name}",
            attempts=3,
            flow=self._flow,
            store="redis",
        )
        metrics.INSERT_SECONDS.labels(self._flow, spec.table).observe(inserted - started)
        metrics.BATCH_ROWS.labels(self._flow, spec.table).observe(len(rows))
        metrics.EVENTS_OUT.labels(self._flow, spec.table).inc(len(rows))
        advance_marks(spec, rows, self._marks[batch.table])
        metrics.BROADCASTS.labels(self._flow, spec.table).inc()
        last = max(row[spec.index(spec.last_time)] for row in rows)
        metrics.observe_event_time(self._flow, last)

    def close(self) -> None:
        self._ch.close()
        self._redis.close()


class ClickHouseSink(DynamicSink[RowBatch]):
    """Insert `RowBatch`es into contract tables and broadcast each successful insert."""

    def __init__(self, settings: Settings, flow: str, specs: Sequence[TableSpec]) -> None:
        """Prepare the sink; nothing connects until Bytewax builds a partition."""
        self._settings = settings
        self._flow = flow
        self._specs = {s.table: s for s in specs}

    def build(
        self, step_id: str, worker_index: int, worker_count: int
    ) -> _ClickHousePartition:
        """Connect (ClickHouse and Redis are pinged, so a wrong URL fails here)."""
        return _ClickHousePartition(self._settings, self._flow, self._specs)

