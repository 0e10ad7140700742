"""The external-URL path, against the PostgreSQL and Redis services this machine runs."""

import json
import uuid

import psycopg
import pytest
import redis

from flowforge_pipeline.contract.apply import init_postgres
from flowforge_pipeline.contract.check import Report, check_postgres, check_redis
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stack import local
from flowforge_pipeline.stores import postgres as pg_store
from flowforge_pipeline.stores import redis as redis_store

MACHINE_PG = "postgresql://postgres@127.0.0.1:5432"
MACHINE_REDIS = "redis://127.0.0.1:6379/13"


@pytest.fixture
def external_pg_db():
    name = f"ff_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{MACHINE_PG}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{MACHINE_PG}/{name}"
    with psycopg.connect(f"{MACHINE_PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_init_and_check_on_an_external_postgres(external_pg_db):
    s = Settings(_env_file=None, LIVE_VIEWS_URL=external_pg_db)
    assert not s.postgres_is_local
    assert init_postgres(s) == [
        "postgres table live_quotes",
        "postgres table live_positions",
        "postgres table live_pnl",
    ]
    assert init_postgres(s) == []
    report = Report()
    check_postgres(s, report)
    assert report.ok, report.differences
    with pg_store.connect(s) as conn:
        conn.execute("ALTER TABLE live_positions DROP COLUMN cost_basis")
    report = Report()
    check_postgres(s, report)
    assert report.differences == [
        "postgres live_positions: missing column cost_basis (double precision)"
    ]


def test_check_on_an_external_redis():
    s = Settings(_env_file=None, REDIS_URL=MACHINE_REDIS)
    r = redis.Redis.from_url(MACHINE_REDIS, decode_responses=True)
    key = f"latest:position:T{uuid.uuid4().hex[:6]}"
    value = {
        "symbol": key.rsplit(":", 1)[1],
        "net_quantity": 5.0,
        "avg_cost": 10.5,
        "realized_pnl": 0.0,
        "last_trade_time": "2026-01-01T00:00:00.000000Z",
        "accounts": {},
        "updated_at": "2026-01-01T00:00:01.000000Z",
    }
    r.set(key, json.dumps(value))
    try:
        report = Report()
        check_redis(s, report)
        assert not [d for d in report.differences if key in d]
        r.set(key, json.dumps({**value, "net_quantity": "5"}))
        report = Report()
        check_redis(s, report)
        assert f"redis {key}: field net_quantity is str, contract says number" in report.differences
    finally:
        r.delete(key)


def test_status_reports_external_roles_as_external(tmp_path, external_pg_db):
    s = Settings(
        _env_file=None,
        FLOWFORGE_STATE_DIR=str(tmp_path),
        REDIS_URL=MACHINE_REDIS,
        LIVE_VIEWS_URL=external_pg_db,
    )
    comps = {c["name"]: c for c in local.component_status(s)}
    assert comps["valkey"]["state"] == "external" and comps["valkey"]["healthy"]
    assert comps["postgres"]["state"] == "external" and comps["postgres"]["healthy"]
    assert comps["broker"]["state"] == "stopped"  # the local broker is not running here
    services = {c.name for c in local.enabled_components(s) if c.stage == "service"}
    assert services == {"broker", "clickhouse"}


def test_unreachable_external_urls_name_the_role_and_mask_the_password(tmp_path):
    s = Settings(
        _env_file=None,
        FLOWFORGE_STATE_DIR=str(tmp_path),
        REDIS_URL="redis://:hunter2@127.0.0.1:1/0",
    )
    with pytest.raises(redis_store.RedisUnavailable) as err:
        local.up(s, echo=lambda _: None)
    assert str(err.value).startswith("redis at redis://:****@127.0.0.1:1/0 unreachable:")
    assert "hunter2" not in str(err.value)
    s = Settings(_env_file=None, LIVE_VIEWS_URL="postgresql://u:hunter2@127.0.0.1:1/db")
    with pytest.raises(pg_store.PostgresUnavailable) as err2:
        pg_store.connect(s)
    assert str(err2.value).startswith("postgres at postgresql://u:****@127.0.0.1:1/db unreachable:")
    assert "\n" not in str(err2.value)
