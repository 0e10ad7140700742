"""Upserts into the live-views tables over the Postgres wire protocol (psycopg).

Each `write_batch` is one small transaction: the rows Bytewax hands over in one activation,
coalesced to the newest row per primary key, upserted table by table. An upsert of the same
values is a no-op for a reader, so a flow replaying from its last snapshot after a crash
rewrites what it wrote before and the tables end as if it had never stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from psycopg import sql

from flowforge_pipeline.contract.catalog import table
from flowforge_pipeline.flows import metrics
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.sinks.clickhouse import with_retries
from flowforge_pipeline.stores import postgres as pg_store


@dataclass(frozen=True)
class Upsert:
    """The new content of one row of a live-views table, columns in contract order."""

    table: str
    values: tuple[Any, ...]

    def key(self) -> tuple[Any, ...]:
        """The row's primary-key values."""
        return tuple(self.values[i] for i in key_positions(self.table))


@lru_cache(maxsize=64)
def key_positions(table_name: str) -> tuple[int, ...]:
    """Positions of a contract table's primary-key columns in its column order."""
    t = table(table_name)
    names = [c.name for c in t.columns]
    return tuple(names.index(k) for k in t.primary_key)


def upsert_statement(table_name: str) -> sql.Composed:
    """`INSERT ... ON CONFLICT (pk) DO UPDATE` for every column of a contract table."""
    t = table(table_name)
    cols = [c.name for c in t.columns]
    others = [c for c in cols if c not in t.primary_key]
    return sql.SQL(
        "INSERT INTO {tbl} ({cols}) VALUES ({vals}) ON CONFLICT ({pk}) DO UPDATE SET {sets}"
    ).format(
        tbl=sql.Identifier(t.name),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
        vals=sql.SQL(", ").join(sql.Placeholder() for _ in cols),
        pk=sql.SQL(", ").join(sql.Identifier(c) for c in t.primary_key),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in others
        ),
    )


def coalesce(items: Sequence[Upsert]) -> dict[str, list[tuple[Any, ...]]]:
    """Newest values per table and primary key; a batch never writes one row twice."""
    latest: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    for item in items:
        latest.setdefault(item.table, {})[item.key()] = item.values
    return {name: list(rows.values()) for name, rows in latest.items()}


class _PostgresPartition(StatelessSinkPartition[Upsert]):
    def __init__(self, settings: Settings, flow: str) -> None:
        self._flow = flow
        self._settings = settings
        self._conn = pg_store.connect(settings, autocommit=False)
        self._statements: dict[str, sql.Composed] = {}

    def _reconnect(self) -> None:
        if self._conn.closed:
            self._conn = pg_store.connect(self._settings, autocommit=False)

    def _write(self, rows: dict[str, list[tuple[Any, ...]]]) -> None:
        self._reconnect()
        try:
            with self._conn.cursor() as cur:
                for name, values in rows.items():
                    stmt = self._statements.setdefault(name, upsert_statement(name))
                    cur.executemany(stmt, values)
            self._conn.commit()
        except psycopg.Error:
            if not self._conn.closed:
                self._conn.rollback()
            raise

    def write_batch(self, items: list[Upsert]) -> None:
        rows = coalesce(items)
        if not rows:
            return
        with_retries(
            lambda: self._write(rows),
            what=f"upsert into postgres tables {sorted(rows)}",
            flow=self._flow,
            store="postgres",
        )
        for name, values in rows.items():
            metrics.EVENTS_OUT.labels(self._flow, name).inc(len(values))

    def close(self) -> None:
        self._conn.close()


class PostgresUpsertSink(DynamicSink[Upsert]):
    """Upsert live-view rows by primary key, one transaction per Bytewax batch."""

    def __init__(self, settings: Settings, flow: str) -> None:
        """Prepare the sink; nothing connects until Bytewax builds a partition."""
        self._settings = settings
        self._flow = flow

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PostgresPartition:
        """Connect, so a wrong LIVE_VIEWS_URL fails at start naming the (masked) URL."""
        return _PostgresPartition(self._settings, self._flow)
