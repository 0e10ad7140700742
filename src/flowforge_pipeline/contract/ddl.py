"""DDL rendered from the contract catalog, for ClickHouse and for the live-views Postgres.

On one ClickHouse server each pipeline-owned table is created as the catalog describes it.
With `CLICKHOUSE_CLUSTER` set, each becomes two tables, both created `ON CLUSTER`:

- `<name>_local` on every node, holding one shard's rows, with the catalog's engine made
  replicated: `ReplacingMergeTree(v)` becomes
  `ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', v)`;
- `<name>`, a `Distributed` table over the `_local` tables of every shard.

The `Distributed` table carries the contract's name, so FlowForge, dbt's sources, the sinks and
`contract check` use the same names on one server and on a cluster; only DDL knows the `_local`
tables (the suffix is also dbt-clickhouse's default `local_suffix`).

Sharding key (`shard_key`): a ReplacingMergeTree collapses duplicates only within a shard, so a
row re-delivered after a restart must reach the shard holding its first copy. Tables carrying
`kafka_partition` (raw_trades, raw_quotes) are sharded by it: all rows of one Kafka partition
then live on one shard, each batch's rows of a partition arrive there in one atomic insert,
and the sink's resume query (`max(kafka_offset)` per partition) cannot see a later offset on
one shard while an earlier one is missing on another. The other tables are sharded by their
first order-key column (`symbol`), which also keeps a symbol's reads on one shard.
"""

from __future__ import annotations

import re

from flowforge_pipeline.contract.catalog import (
    CLICKHOUSE_TABLES,
    POSTGRES_TABLES,
    Table,
)

#: ZooKeeper/Keeper path of a replicated table; the macros come from each node's config.
REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
#: Replica name macro of each node's config.
REPLICA_NAME = "{replica}"
#: Suffix of the per-node tables under a `Distributed` table.
LOCAL_SUFFIX = "_local"

_ENGINE = re.compile(r"^(\w*MergeTree)\s*(?:\((.*)\))?$", re.DOTALL)


def _ch_ident(name: str) -> str:
    return "`" + name.replace("`", "\\`") + "`"


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ch_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _on_cluster(cluster: str) -> str:
    return f" ON CLUSTER {_ch_ident(cluster)}" if cluster else ""


def _columns(table: Table) -> str:
    cols = []
    for c in table.columns:
        line = f"    {_ch_ident(c.name)} {c.clickhouse}"
        if c.default:
            line += f" DEFAULT {c.default}"
        if c.description:
            line += " COMMENT " + _ch_string(c.description)
        cols.append(line)
    return "(\n" + ",\n".join(cols) + "\n)"


def replicated_engine(engine: str) -> str:
    """The replicated form of a `*MergeTree` engine, e.g. `ReplacingMergeTree(v)`.

    Args:
        engine: The catalog's engine clause, `MergeTree` or `<Kind>MergeTree(<args>)`.

    Returns:
        `Replicated<Kind>MergeTree('<REPLICA_PATH>', '{replica}'[, <args>])`.

    Raises:
        ValueError: The engine is not of the MergeTree family, which alone replicates.

    """
    match = _ENGINE.match(engine.strip())
    if not match or match.group(1).startswith("Replicated"):
        raise ValueError(f"cannot replicate engine {engine!r}: not a plain *MergeTree engine")
    kind, args = match.group(1), (match.group(2) or "").strip()
    params = [_ch_string(REPLICA_PATH), _ch_string(REPLICA_NAME)] + ([args] if args else [])
    return f"Replicated{kind}(" + ", ".join(params) + ")"


def shard_key(table: Table) -> str:
    """The `Distributed` sharding expression of a table (see the module docstring)."""
    names = {c.name for c in table.columns}
    column = "kafka_partition" if "kafka_partition" in names else table.order_by[0]
    return f"cityHash64({_ch_ident(column)})"


def local_name(table: Table, cluster: str = "") -> str:
    """The table that stores the rows: the contract's name, or `<name>_local` on a cluster."""
    return table.name + LOCAL_SUFFIX if cluster else table.name


def clickhouse_create(table: Table, database: str, cluster: str = "") -> str:
    """`CREATE TABLE IF NOT EXISTS` for the table storing a pipeline-owned table's rows.

    Args:
        table: A ClickHouse table of the catalog.
        database: The database holding it.
        cluster: Empty for one server; otherwise the cluster the table is created on, as
            `<name>_local` with the replicated form of its engine.

    Returns:
        One statement.

    """
    engine = replicated_engine(table.engine) if cluster else table.engine
    parts = [
        f"CREATE TABLE IF NOT EXISTS {_ch_ident(database)}.{_ch_ident(local_name(table, cluster))}"
        + _on_cluster(cluster)
        + "\n"
        + _columns(table),
        f"ENGINE = {engine}",
    ]
    if table.partition_by:
        parts.append(f"PARTITION BY {table.partition_by}")
    parts.append("ORDER BY (" + ", ".join(_ch_ident(c) for c in table.order_by) + ")")
    return "\n".join(parts)


def clickhouse_distributed(table: Table, database: str, cluster: str) -> str:
    """`CREATE TABLE IF NOT EXISTS` for the `Distributed` table carrying the contract's name.

    Args:
        table: A ClickHouse table of the catalog.
        database: The database holding it and its `_local` tables.
        cluster: The cluster of the `_local` tables.

    Returns:
        One statement; its columns are the catalog's, so `contract check` sees the contract.

    """
    if not cluster:
        raise ValueError("a Distributed table needs a cluster")
    args = ", ".join(
        (
            _ch_string(cluster),
            _ch_string(database),
            _ch_string(local_name(table, cluster)),
            shard_key(table),
        )
    )
    return (
        f"CREATE TABLE IF NOT EXISTS {_ch_ident(database)}.{_ch_ident(table.name)}"
        + _on_cluster(cluster)
        + "\n"
        + _columns(table)
        + f"\nENGINE = Distributed({args})"
    )


def clickhouse_table_ddl(table: Table, database: str, cluster: str = "") -> list[tuple[str, str]]:
    """`(table name, statement)` for every table a catalog table needs, in creation order."""
    if not cluster:
        return [(table.name, clickhouse_create(table, database))]
    return [
        (local_name(table, cluster), clickhouse_create(table, database, cluster)),
        (table.name, clickhouse_distributed(table, database, cluster)),
    ]


def clickhouse_create_database(database: str, cluster: str = "") -> str:
    """`CREATE DATABASE IF NOT EXISTS`, on every node of `cluster` when one is given."""
    return f"CREATE DATABASE IF NOT EXISTS {_ch_ident(database)}" + _on_cluster(cluster)


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


def all_clickhouse_ddl(database: str, cluster: str = "") -> list[str]:
    """Every pipeline-owned ClickHouse CREATE statement, in creation order."""
    return [
        sql
        for t in pipeline_clickhouse_tables()
        for _, sql in clickhouse_table_ddl(t, database, cluster)
    ]


def all_postgres_ddl() -> list[str]:
    """Every live-views CREATE statement."""
    return [postgres_create(t) for t in POSTGRES_TABLES]
