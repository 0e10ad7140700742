import json

from click.testing import CliRunner

from flowforge_pipeline.cli import cli
from flowforge_pipeline.contract import catalog
from flowforge_pipeline.contract.ddl import (
    clickhouse_create,
    pipeline_clickhouse_tables,
    postgres_create,
)

SEED_ITEMS = {
    "clickhouse": {
        "raw_trades",
        "raw_quotes",
        "vwap_5min",
        "rolling_volatility",
        "hourly_rollup",
        "daily_rollup",
        "fct_trades",
        "dim_instruments",
        "rpt_daily_pnl",
        "anomaly_alerts",
    },
    "postgres": {"live_positions", "live_quotes", "live_pnl"},
    "redis_keys": {
        "latest:vwap:{symbol}",
        "latest:position:{symbol}",
        "latest:volatility:{symbol}",
    },
    "channels": {"flowforge:broadcast:table_update"},
    "topics": {"trades", "quotes", "alerts", "dlq", "ground_truth"},
}


def test_export_prints_every_serving_item_as_json():
    result = CliRunner().invoke(cli, ["contract", "export"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    names = {
        "clickhouse": {t["name"] for t in data["clickhouse"]},
        "postgres": {t["name"] for t in data["postgres"]},
        "redis_keys": {k["pattern"] for k in data["redis_keys"]},
        "channels": {c["name"] for c in data["channels"]},
        "topics": {t["name"] for t in data["topics"]},
    }
    assert names == SEED_ITEMS


def test_every_item_has_columns_writer_and_freshness():
    for t in (*catalog.CLICKHOUSE_TABLES, *catalog.POSTGRES_TABLES):
        assert t.columns and t.writer and t.freshness.max_age_seconds > 0
        assert t.column(t.freshness.column)  # the promise is measured on a real column
        store_type = "clickhouse" if t.store == "clickhouse" else "postgres"
        assert all(getattr(c, store_type) for c in t.columns), t.name
        if t.store == "clickhouse":
            assert t.engine and t.order_by and set(t.order_by) <= {c.name for c in t.columns}
        else:
            assert t.primary_key and set(t.primary_key) <= {c.name for c in t.columns}
    for k in catalog.REDIS_KEYS:
        assert k.freshness.column in {f.name for f in k.fields}


def test_clickhouse_ddl_quotes_identifiers_and_carries_engine_and_order_key():
    ddl = clickhouse_create(catalog.RAW_TRADES, "flowforge")
    assert ddl.startswith("CREATE TABLE IF NOT EXISTS `flowforge`.`raw_trades`")
    assert "ENGINE = ReplacingMergeTree(ingested_at)" in ddl
    assert "ORDER BY (`symbol`, `event_time`, `trade_id`)" in ddl
    assert "`ingested_at` DateTime64(3, 'UTC') DEFAULT now64(3)" in ddl


def test_init_creates_only_pipeline_owned_clickhouse_tables():
    owned = {t.name for t in pipeline_clickhouse_tables()}
    assert owned == {
        "raw_trades",
        "raw_quotes",
        "vwap_5min",
        "rolling_volatility",
        "anomaly_alerts",
    }


def test_postgres_ddl_has_primary_key():
    ddl = postgres_create(catalog.LIVE_PNL)
    assert 'PRIMARY KEY ("account", "symbol")' in ddl
