"""DDL rendered from the contract catalog, for ClickHouse and for the live-views Postgres."""

from __future__ import annotations

from flowforge_pipeline.contract.catalog import (
    CLICKHOUSE_TABLES,
    POSTGRES_TABLES,
    Table,
)


def _ch_ident(name: str) -> str:
    return "`" + name.replace("`", "\\`") + "`"


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def clickhouse_create(table: Table, database: str) -> str:
    """`CREATE TABLE IF NOT EXISTS` for a pipeline-owned ClickHouse table."""
    cols = []
    for c in table.columns:
        line = f"    {_ch_ident(c.name)} {c.clickhouse}"
        if c.default:
            line += f" DEFAULT {c.default}"
        if c.description:
            line += " COMMENT '" + c.description.replace("\\", "\\\\").replace("'", "\\'") + "'"
        cols.append(line)
    parts = [
        f"CREATE TABLE IF NOT EXISTS {_ch_ident(database)}.{_ch_ident(table.name)}\n(\n"
        + ",\n".join(cols)
        + "\n)",
        f"ENGINE = {table.engine}",
    ]
    if table.partition_by:
        parts.append(f"PARTITION BY {table.partition_by}")
    parts.append("ORDER BY (" + ", ".join(_ch_ident(c) for c in table.order_by) + ")")
    return "\n".join(parts)


def postgres_create(table: Table) -> str:
    """`CREATE TABLE IF NOT EXISTS` for a live-views table (local Postgres path)."""
    cols = [f"    {_pg_ident(c.name)} {c.postgres} NOT NULL" for c in table.columns]
    pk = ", ".join(_pg_ident(c) for c in table.primary_key)
    return (
        f"CREATE TABLE IF NOT EXISTS {_pg_ident(table.name)} (\n"
        + ",\n".join(cols)
        + f",\n    PRIMARY KEY ({pk})\n)"
    )


def pipeline_clickhouse_tables() -> tuple[Table, ...]:
    """The ClickHouse tables `init` creates; dbt owns and creates the rest."""
    return tuple(t for t in CLICKHOUSE_TABLES if t.owner == "pipeline")


def all_clickhouse_ddl(database: str) -> list[str]:
    """Every pipeline-owned ClickHouse CREATE statement."""
    return [clickhouse_create(t, database) for t in pipeline_clickhouse_tables()]


def all_postgres_ddl() -> list[str]:
    """Every live-views CREATE statement."""
    return [postgres_create(t) for t in POSTGRES_TABLES]
