"""ClickHouse over its HTTP interface (clickhouse-connect), local server or production."""

from __future__ import annotations

from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from flowforge_pipeline.settings import Settings


class ClickHouseUnavailable(RuntimeError):
    """ClickHouse did not answer; the message names the URL with the password masked."""


def load_insert_path() -> None:
    """Load what clickhouse-connect imports on its first insert (numpy, pandas, pyarrow).

    It resolves them lazily, so a writer's first insert pays ~80 MiB and about a second of
    imports: a flow whose first row comes minutes after start (the anomaly flow's first alert)
    would delay that row and show the step as memory growth. A long-running writer calls this
    when it connects, so its memory is at its working level from the start.
    """
    from clickhouse_connect.driver import options

    for name in ("np", "pd", "arrow"):
        getattr(options, name)


def client(settings: Settings, *, database: str | None = None, **kwargs: Any) -> Client:
    """A connected client; `database=""` connects without selecting the pipeline database.

    Connecting pings the server, so a wrong URL or password fails here, at start,
    not at the first insert.
    """
    user, password = settings.clickhouse_credentials
    url = settings.clickhouse_http_url
    db = settings.clickhouse_database if database is None else database
    try:
        return clickhouse_connect.get_client(
            dsn=url,
            username=user,
            password=password,
            database=db or "__default__",
            connect_timeout=5,
            **kwargs,
        )
    except ClickHouseError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClickHouseUnavailable(
            f"clickhouse at {settings.service_urls()['clickhouse']} unreachable: {first}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - urllib3/socket errors surface in many types
        raise ClickHouseUnavailable(
            f"clickhouse at {settings.service_urls()['clickhouse']} unreachable: {exc}"
        ) from None


def quote_identifier(name: str) -> str:
    """Quote an identifier for ClickHouse SQL (never paste raw input)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def ensure_database(settings: Settings) -> bool:
    """Create the pipeline database if missing; True if it was created."""
    c = client(settings, database="")
    try:
        exists = c.command(
            "SELECT count() FROM system.databases WHERE name = {db:String}",
            parameters={"db": settings.clickhouse_database},
        )
        if int(str(exists)) == 0:
            c.command(
                f"CREATE DATABASE IF NOT EXISTS {quote_identifier(settings.clickhouse_database)}"
            )
            return True
        return False
    finally:
        c.close()


def table_columns(c: Client, database: str) -> dict[str, dict[str, str]]:
    """Every table of `database` with its columns and types, in column order."""
    result = c.query(
        "SELECT table, name, type FROM system.columns WHERE database = {db:String} "
        "ORDER BY table, position",
        parameters={"db": database},
    )
    out: dict[str, dict[str, str]] = {}
    for tbl, name, typ in result.result_rows:
        out.setdefault(tbl, {})[name] = typ
    return out
