"""Freshness of every contract item: age of its newest write against its promise."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from psycopg import sql

from flowforge_pipeline.contract.catalog import (
    CLICKHOUSE_TABLES,
    POSTGRES_TABLES,
    REDIS_KEYS,
)
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stores import clickhouse, postgres
from flowforge_pipeline.stores import redis as redis_store


def _entry(
    store: str, name: str, promise: int, newest: datetime | None, now: datetime, state: str = ""
) -> dict[str, Any]:
    age = None if newest is None else round((now - newest).total_seconds(), 1)
    if not state:
        state = "empty" if age is None else ("fresh" if age <= promise else "stale")
    return {
        "store": store,
        "item": name,
        "promise_seconds": promise,
        "newest": newest.isoformat() if newest else None,
        "age_seconds": age,
        "state": state,
    }


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value.year < 1971:  # max() of an empty ClickHouse table is the epoch
        return None
    return value if isinstance(value, datetime) else None


def clickhouse_freshness(settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """Newest write time of every ClickHouse table."""
    out = []
    # `status` must answer even when something that is not ClickHouse holds its port.
    c = clickhouse.client(settings, database="", send_receive_timeout=10)
    try:
        live = clickhouse.table_columns(c, settings.clickhouse_database)
        for t in CLICKHOUSE_TABLES:
            if t.name not in live or t.freshness.column not in live[t.name]:
                out.append(
                    _entry("clickhouse", t.name, t.freshness.max_age_seconds, None, now, "missing")
                )
                continue
            q = (
                f"SELECT max({clickhouse.quote_identifier(t.freshness.column)}) FROM "
                f"{clickhouse.quote_identifier(settings.clickhouse_database)}."
                f"{clickhouse.quote_identifier(t.name)}"
            )
            newest = _aware(c.query(q).result_rows[0][0])
            out.append(_entry("clickhouse", t.name, t.freshness.max_age_seconds, newest, now))
    finally:
        c.close()
    return out


def postgres_freshness(settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """Newest update of every live-views table."""
    out = []
    with postgres.connect(settings) as conn:
        live = postgres.table_columns(conn)
        for t in POSTGRES_TABLES:
            if t.name not in live:
                out.append(
                    _entry("postgres", t.name, t.freshness.max_age_seconds, None, now, "missing")
                )
                continue
            row = conn.execute(
                sql.SQL("SELECT max({}) FROM {}").format(
                    sql.Identifier(t.freshness.column), sql.Identifier(t.name)
                )
            ).fetchone()
            newest = _aware(row[0] if row else None)
            out.append(_entry("postgres", t.name, t.freshness.max_age_seconds, newest, now))
    return out


def redis_freshness(settings: Settings, now: datetime, sample: int = 200) -> list[dict[str, Any]]:
    """Newest `updated_at` over (a sample of) the keys of every Redis pattern."""
    out = []
    r = redis_store.client(settings)
    try:
        for item in REDIS_KEYS:
            newest: datetime | None = None
            keys = []
            for key in r.scan_iter(match=item.glob, count=500):
                keys.append(key)
                if len(keys) >= sample:
                    break
            for raw in r.mget(keys) if keys else []:
                try:
                    ts = _aware(json.loads(raw).get(item.freshness.column)) if raw else None
                except (ValueError, AttributeError):
                    ts = None
                if ts and (newest is None or ts > newest):
                    newest = ts
            out.append(_entry("redis", item.pattern, item.freshness.max_age_seconds, newest, now))
    finally:
        r.close()
    return out


def all_freshness(settings: Settings) -> list[dict[str, Any]]:
    """Freshness of every item; an unreachable store marks its items 'unreachable'."""
    now = datetime.now(UTC)
    out: list[dict[str, Any]] = []
    for store, fn, items in (
        ("clickhouse", clickhouse_freshness, [(t.name, t.freshness) for t in CLICKHOUSE_TABLES]),
        ("postgres", postgres_freshness, [(t.name, t.freshness) for t in POSTGRES_TABLES]),
        ("redis", redis_freshness, [(k.pattern, k.freshness) for k in REDIS_KEYS]),
    ):
        try:
            out.extend(fn(settings, now))
        except Exception:  # noqa: BLE001 - status must show the rest
            out.extend(
                _entry(store, name, f.max_age_seconds, None, now, "unreachable")
                for name, f in items
            )
    return out
