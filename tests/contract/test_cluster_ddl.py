"""CLICKHOUSE_CLUSTER: ON CLUSTER DDL, replicated engines, Distributed tables, dbt's cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

from flowforge_pipeline.contract import apply, catalog
from flowforge_pipeline.contract.ddl import (
    all_clickhouse_ddl,
    clickhouse_create,
    clickhouse_create_database,
    clickhouse_distributed,
    clickhouse_table_ddl,
    pipeline_clickhouse_tables,
    replicated_engine,
    shard_key,
)
from flowforge_pipeline.dbt_runner import dbt_env
from flowforge_pipeline.settings import Settings, SettingsError, load_settings

REPO = Path(__file__).resolve().parents[2]

VWAP_COLUMNS = """(
    `symbol` LowCardinality(String) COMMENT 'instrument symbol',
    `window_start` DateTime64(3, 'UTC') COMMENT 'window start (inclusive, UTC)',
    `window_end` DateTime64(3, 'UTC') COMMENT 'window end (exclusive, UTC)',
    `vwap` Float64 COMMENT 'sum(price*quantity)/sum(quantity)',
    `volume` Float64 COMMENT 'sum(quantity)',
    `notional` Float64 COMMENT 'sum(price*quantity)',
    `trade_count` UInt64 COMMENT 'number of trades',
    `high` Float64 COMMENT 'highest trade price',
    `low` Float64 COMMENT 'lowest trade price',
    `ingested_at` DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'when the row was inserted'
)"""

SINGLE_SERVER_VWAP = (
    "CREATE TABLE IF NOT EXISTS `flowforge`.`vwap_5min`\n"
    + VWAP_COLUMNS
    + "\nENGINE = ReplacingMergeTree(ingested_at)"
    "\nPARTITION BY toYYYYMM(window_start)"
    "\nORDER BY (`symbol`, `window_start`)"
)

CLUSTER_VWAP_LOCAL = (
    "CREATE TABLE IF NOT EXISTS `flowforge`.`vwap_5min_local` ON CLUSTER `ff_prod`\n"
    + VWAP_COLUMNS
    + "\nENGINE = ReplicatedReplacingMergeTree("
    "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}', ingested_at)"
    "\nPARTITION BY toYYYYMM(window_start)"
    "\nORDER BY (`symbol`, `window_start`)"
)

CLUSTER_VWAP_DISTRIBUTED = (
    "CREATE TABLE IF NOT EXISTS `flowforge`.`vwap_5min` ON CLUSTER `ff_prod`\n"
    + VWAP_COLUMNS
    + "\nENGINE = Distributed('ff_prod', 'flowforge', 'vwap_5min_local', cityHash64(`symbol`))"
)


def test_single_server_ddl_is_the_catalog_table_as_is():
    assert clickhouse_create(catalog.VWAP_5MIN, "flowforge") == SINGLE_SERVER_VWAP
    assert clickhouse_table_ddl(catalog.VWAP_5MIN, "flowforge") == [
        ("vwap_5min", SINGLE_SERVER_VWAP)
    ]
    single = all_clickhouse_ddl("flowforge")
    assert single == [clickhouse_create(t, "flowforge") for t in pipeline_clickhouse_tables()]
    assert len(single) == 5
    for statement in single:
        assert "ON CLUSTER" not in statement
        assert "Replicated" not in statement
        assert "Distributed" not in statement
    assert clickhouse_create_database("flowforge") == "CREATE DATABASE IF NOT EXISTS `flowforge`"


def test_cluster_ddl_is_a_replicated_local_table_and_a_distributed_one():
    assert clickhouse_table_ddl(catalog.VWAP_5MIN, "flowforge", "ff_prod") == [
        ("vwap_5min_local", CLUSTER_VWAP_LOCAL),
        ("vwap_5min", CLUSTER_VWAP_DISTRIBUTED),
    ]
    assert clickhouse_create_database("flowforge", "ff_prod") == (
        "CREATE DATABASE IF NOT EXISTS `flowforge` ON CLUSTER `ff_prod`"
    )


def test_every_pipeline_table_gets_local_then_distributed_under_its_contract_name():
    statements = all_clickhouse_ddl("flowforge", "ff_prod")
    tables = pipeline_clickhouse_tables()
    assert len(statements) == 2 * len(tables)
    for i, t in enumerate(tables):
        local, dist = statements[2 * i], statements[2 * i + 1]
        assert local.startswith(
            f"CREATE TABLE IF NOT EXISTS `flowforge`.`{t.name}_local` ON CLUSTER `ff_prod`\n("
        )
        assert "ENGINE = ReplicatedReplacingMergeTree(" in local
        assert dist.startswith(
            f"CREATE TABLE IF NOT EXISTS `flowforge`.`{t.name}` ON CLUSTER `ff_prod`\n("
        )
        key = "kafka_partition" if t.name.startswith("raw_") else "symbol"
        assert dist.endswith(
            f"ENGINE = Distributed('ff_prod', 'flowforge', '{t.name}_local', cityHash64(`{key}`))"
        )
        # same columns in both, so `contract check` sees the contract on the Distributed table
        assert local.split("\n)\n")[0].split("\n", 1)[1] == dist.split("\n)\n")[0].split("\n", 1)[1]


def test_raw_tables_shard_by_kafka_partition_the_rest_by_symbol():
    keys = {t.name: shard_key(t) for t in pipeline_clickhouse_tables()}
    assert keys == {
        "raw_trades": "cityHash64(`kafka_partition`)",
        "raw_quotes": "cityHash64(`kafka_partition`)",
        "vwap_5min": "cityHash64(`symbol`)",
        "rolling_volatility": "cityHash64(`symbol`)",
        "anomaly_alerts": "cityHash64(`symbol`)",
    }


@pytest.mark.parametrize(
    ("engine", "expected"),
    [
        (
            "ReplacingMergeTree(ingested_at)",
            "ReplicatedReplacingMergeTree("
            "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}', ingested_at)",
        ),
        (
            "ReplacingMergeTree",
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', "
            "'{replica}')",
        ),
        (
            "MergeTree",
            "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')",
        ),
        (
            "MergeTree()",
            "ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')",
        ),
        (
            "SummingMergeTree((a, b))",
            "ReplicatedSummingMergeTree("
            "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}', (a, b))",
        ),
    ],
)
def test_replicated_engine(engine: str, expected: str):
    assert replicated_engine(engine) == expected


@pytest.mark.parametrize("engine", ["Log", "Memory", "ReplicatedMergeTree('/p', '{replica}')"])
def test_replicated_engine_refuses_what_it_cannot_replicate(engine: str):
    with pytest.raises(ValueError, match="cannot replicate engine"):
        replicated_engine(engine)


def test_distributed_needs_a_cluster():
    with pytest.raises(ValueError, match="needs a cluster"):
        clickhouse_distributed(catalog.VWAP_5MIN, "flowforge", "")


def test_cluster_setting_defaults_to_empty_and_is_validated(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CLICKHOUSE_CLUSTER", raising=False)
    assert Settings(_env_file=None).clickhouse_cluster == ""  # type: ignore[call-arg]
    monkeypatch.setenv("CLICKHOUSE_CLUSTER", "ff-prod_2")
    assert load_settings().clickhouse_cluster == "ff-prod_2"
    monkeypatch.setenv("CLICKHOUSE_CLUSTER", "prod`; DROP")
    with pytest.raises(SettingsError, match="CLICKHOUSE_CLUSTER"):
        load_settings()


class _FakeClient:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> str:
        self.log.append(sql)
        return "0"  # system.databases: not there yet

    def close(self) -> None:
        pass


def test_init_creates_database_and_only_missing_tables_on_the_cluster(
    monkeypatch: pytest.MonkeyPatch,
):
    log: list[str] = []
    monkeypatch.setattr(apply.clickhouse, "client", lambda s, **kw: _FakeClient(log))
    monkeypatch.setattr(
        apply.clickhouse, "ensure_database", lambda s: pytest.fail("single-server path used")
    )
    # a node that already has vwap_5min_local (an earlier init stopped half-way)
    monkeypatch.setattr(
        apply.clickhouse, "table_columns", lambda c, db: {"vwap_5min_local": {"symbol": "String"}}
    )
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, CLICKHOUSE_DATABASE="flowforge", CLICKHOUSE_CLUSTER="ff_prod"
    )
    created = apply.init_clickhouse(settings)
    ddl = [s for s in log if s.startswith("CREATE")]
    assert ddl[0] == "CREATE DATABASE IF NOT EXISTS `flowforge` ON CLUSTER `ff_prod`"
    expected = [
        s for s in all_clickhouse_ddl("flowforge", "ff_prod") if "`vwap_5min_local`" not in s
    ]
    assert ddl[1:] == expected
    assert CLUSTER_VWAP_DISTRIBUTED in ddl
    assert created[0] == "clickhouse database flowforge on cluster ff_prod"
    assert "clickhouse table flowforge.vwap_5min_local" not in created
    assert "clickhouse table flowforge.vwap_5min" in created
    assert "clickhouse table flowforge.raw_trades_local" in created


def _render_profile_value(template: str, env: dict[str, str]) -> str:
    """Render one profiles.yml value the way dbt does: `env_var(name, default)`."""
    jenv = jinja2.Environment(autoescape=False)  # noqa: S701 - YAML values, not HTML
    return jenv.from_string(template).render(env_var=lambda k, d="": env.get(k, d))


def test_dbt_profile_passes_the_cluster_only_when_set():
    profile = yaml.safe_load((REPO / "dbt" / "profiles.yml").read_text())
    template = profile["flowforge"]["outputs"]["default"]["cluster"]
    one = Settings(_env_file=None, CLICKHOUSE_CLUSTER="")  # type: ignore[call-arg]
    many = Settings(_env_file=None, CLICKHOUSE_CLUSTER="ff_prod")  # type: ignore[call-arg]
    assert _render_profile_value(template, dbt_env(one)) == ""
    assert _render_profile_value(template, dbt_env(many)) == "ff_prod"
