"""`init` and `contract check` against the real local ClickHouse server and PostgreSQL."""

import uuid

import psycopg
import pytest

from flowforge_pipeline.contract.apply import init_all, init_clickhouse, init_postgres
from flowforge_pipeline.contract.check import run_check
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stores import clickhouse


@pytest.fixture
def private(stack_settings: Settings):
    """A fresh ClickHouse database and Postgres database on the shared stand-ins."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    admin_url = stack_settings.postgres.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    settings = stack_settings.model_copy(
        update={
            "clickhouse_database": name,
            "live_views_url": type(stack_settings.live_views_url)(
                stack_settings.postgres.rsplit("/", 1)[0] + "/" + name
            ),
        }
    )
    yield settings
    c = clickhouse.client(stack_settings, database="")
    c.command(f"DROP DATABASE IF EXISTS {name}")


def test_check_passes_after_init_and_second_init_changes_nothing(private):
    created = init_all(private)
    assert f"clickhouse table {private.clickhouse_database}.raw_trades" in created
    assert "postgres table live_pnl" in created
    assert init_all(private) == []
    report = run_check(private)
    assert report.ok, report.differences
    assert any("not built yet (dbt owns it)" in n for n in report.notes)


def test_require_dbt_turns_unbuilt_marts_into_differences(private):
    init_clickhouse(private)
    init_postgres(private)
    report = run_check(private, require_dbt=True)
    assert (
        f"clickhouse {private.clickhouse_database}.fct_trades: table missing" in report.differences
    )


def test_check_reports_dropped_column_changed_type_and_missing_table(private):
    init_clickhouse(private)
    init_postgres(private)
    db = private.clickhouse_database
    c = clickhouse.client(private)
    c.command("ALTER TABLE raw_trades DROP COLUMN venue")
    c.command("ALTER TABLE raw_quotes MODIFY COLUMN bid String")
    c.command("ALTER TABLE vwap_5min ADD COLUMN surprise UInt8")
    c.command("DROP TABLE rolling_volatility")
    with psycopg.connect(private.postgres, autocommit=True) as conn:
        conn.execute("ALTER TABLE live_quotes DROP COLUMN spread_bps")
        conn.execute("ALTER TABLE live_pnl ALTER COLUMN total_pnl TYPE text")
    diffs = run_check(private).differences
    assert f"clickhouse {db}.raw_trades: missing column venue (LowCardinality(String))" in diffs
    assert f"clickhouse {db}.raw_quotes: column bid is String, contract says Float64" in diffs
    assert f"clickhouse {db}.vwap_5min: extra column surprise (UInt8)" in diffs
    assert f"clickhouse {db}.rolling_volatility: table missing" in diffs
    assert "postgres live_quotes: missing column spread_bps (double precision)" in diffs
    assert "postgres live_pnl: column total_pnl is text, contract says double precision" in diffs
    assert len(diffs) == 6, diffs


def test_check_validates_redis_values_against_the_contract(stack_settings):
    import redis

    r = redis.Redis.from_url(stack_settings.redis, decode_responses=True)
    r.set("latest:vwap:ZZTEST", '{"symbol": "ZZTEST", "vwap": "not-a-number"}')
    try:
        diffs = run_check(stack_settings).differences
    finally:
        r.delete("latest:vwap:ZZTEST")
    assert "redis latest:vwap:ZZTEST: field vwap is str, contract says number" in diffs
    assert "redis latest:vwap:ZZTEST: missing field window_start (string)" in diffs


def test_check_cli_exit_codes(private, monkeypatch):
    from click.testing import CliRunner

    from flowforge_pipeline import settings as settings_mod
    from flowforge_pipeline.cli import cli

    monkeypatch.setattr(settings_mod, "get_settings", lambda: private)
    monkeypatch.setattr("flowforge_pipeline.contract.cli.get_settings", lambda: private)
    init_all(private)
    ok = CliRunner().invoke(cli, ["contract", "check"])
    assert ok.exit_code == 0 and "items match the contract" in ok.output
    clickhouse.client(private).command("ALTER TABLE raw_trades DROP COLUMN side")
    bad = CliRunner().invoke(cli, ["contract", "check"])
    assert bad.exit_code == 1
    assert f"clickhouse {private.clickhouse_database}.raw_trades: missing column side" in bad.output
