"""`init`: create what the contract says the pipeline owns, and nothing that exists already.

Topics, the ClickHouse database and pipeline-owned tables, and the live-views tables.
dbt-owned marts are left to dbt. Every statement is `IF NOT EXISTS` and the return value
lists what was actually created, so a second run reports (and changes) nothing.
"""

from __future__ import annotations

from flowforge_pipeline.contract.catalog import POSTGRES_TABLES
from flowforge_pipeline.contract.ddl import (
    clickhouse_create_database,
    clickhouse_table_ddl,
    pipeline_clickhouse_tables,
    postgres_create,
)
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stores import clickhouse, kafka, postgres


def init_kafka(settings: Settings) -> list[str]:
    """Create missing topics."""
    return [f"kafka topic {name}" for name in kafka.ensure_topics(settings)]


def init_clickhouse(settings: Settings) -> list[str]:
    """Create the database and the pipeline-owned tables that are missing.

    With `CLICKHOUSE_CLUSTER` set the database and tables are created `ON CLUSTER`: per
    catalog table a replicated `<name>_local` and a `Distributed` table named as the contract
    (`contract.ddl`). A node that already has a table is not asked to create it again.
    """
    created: list[str] = []
    db = settings.clickhouse_database
    cluster = settings.clickhouse_cluster
    if cluster:
        if _create_cluster_database(settings):
            created.append(f"clickhouse database {db} on cluster {cluster}")
    elif clickhouse.ensure_database(settings):
        created.append(f"clickhouse database {db}")
    c = clickhouse.client(settings)
    try:
        existing = set(clickhouse.table_columns(c, db))
        for t in pipeline_clickhouse_tables():
            for name, statement in clickhouse_table_ddl(t, db, cluster):
                if name not in existing:
                    c.command(statement)
                    created.append(f"clickhouse table {db}.{name}")
    finally:
        c.close()
    return created


def _create_cluster_database(settings: Settings) -> bool:
    """`CREATE DATABASE ... ON CLUSTER` unless the node we talk to has it; True if created."""
    c = clickhouse.client(settings, database="")
    try:
        exists = c.command(
            "SELECT count() FROM system.databases WHERE name = {db:String}",
            parameters={"db": settings.clickhouse_database},
        )
        if int(str(exists)):
            return False
        c.command(
            clickhouse_create_database(settings.clickhouse_database, settings.clickhouse_cluster)
        )
        return True
    finally:
        c.close()


def init_postgres(settings: Settings) -> list[str]:
    """Create the live-views tables that are missing (local Postgres path)."""
    created: list[str] = []
    with postgres.connect(settings) as conn:
        existing = set(postgres.table_columns(conn))
        for t in POSTGRES_TABLES:
            if t.name not in existing:
                conn.execute(postgres_create(t).encode())
                created.append(f"postgres table {t.name}")
    return created


def init_all(settings: Settings) -> list[str]:
    """Apply the contract to every store; returns what was created."""
    return init_kafka(settings) + init_clickhouse(settings) + init_postgres(settings)
