"""Postgres wire protocol client (psycopg) for the live views: Materialize or PostgreSQL."""

from __future__ import annotations

import psycopg

from flowforge_pipeline.settings import Settings, mask_url


class PostgresUnavailable(RuntimeError):
    """The live-views database did not answer; the message names the URL, password masked."""


def connect(
    settings: Settings, *, autocommit: bool = True
) -> psycopg.Connection[tuple[object, ...]]:
    """A connection to the live-views database."""
    try:
        return psycopg.connect(settings.postgres, autocommit=autocommit, connect_timeout=5)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PostgresUnavailable(
            f"postgres at {mask_url(settings.postgres)} unreachable: {first}"
        ) from None


def table_columns(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, dict[str, str]]:
    """Tables of the current schema with their columns and types."""
    rows = conn.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    ).fetchall()
    out: dict[str, dict[str, str]] = {}
    for tbl, col, typ in rows:
        out.setdefault(str(tbl), {})[str(col)] = str(typ)
    return out
