"""`up`, `status`, `down` and `logs` through the real command line, on a private stack."""

import json
import os
import signal
import socket
import subprocess
import sys

import psycopg
import pytest
import redis

from fixtures.services import state_dir
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stack import local
from flowforge_pipeline.stores import clickhouse

pytestmark = pytest.mark.slow


def run(env, *args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "flowforge_pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def env():
    state = state_dir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("KAFKA_", "CLICKHOUSE_", "REDIS_", "LIVE_VIEWS_", "LOCAL_", "FLOWFORGE_")
        )
    }
    kafka, ch, pg, redis_port, airflow = local.free_ports(5)
    env.update(
        FLOWFORGE_STATE_DIR=str(state),
        LOCAL_KAFKA_PORT=str(kafka),
        LOCAL_CLICKHOUSE_PORT=str(ch),
        LOCAL_POSTGRES_PORT=str(pg),
        LOCAL_REDIS_PORT=str(redis_port),
        LOCAL_AIRFLOW_PORT=str(airflow),
    )
    yield env
    run(env, "down", check=False)


def settings_of(env):
    return Settings(
        _env_file=None, **{k: v for k, v in env.items() if k.startswith(("LOCAL_", "FLOWFORGE_"))}
    )


def status(env):
    proc = run(env, "status", "--json", check=False)
    return proc.returncode, json.loads(proc.stdout)


def test_up_status_down_up_keeps_data(env):
    first = run(env, "up")
    assert "stack is up" in first.stdout
    code, st = status(env)
    assert code == 0 and st["healthy"], st
    names = {c["name"]: c for c in st["components"]}
    assert {"broker", "clickhouse", "postgres", "valkey"} <= set(names)
    assert all(c["pid"] and c["state"] == "running" for c in names.values())
    assert st["services"]["clickhouse"].startswith("http://default@127.0.0.1:")
    assert {f["item"] for f in st["freshness"]} >= {
        "raw_trades",
        "live_pnl",
        "latest:vwap:{symbol}",
    }

    again = run(env, "up")
    assert "already running" in again.stdout
    _, st2 = status(env)
    assert [c["pid"] for c in st2["components"]] == [c["pid"] for c in st["components"]]

    s = settings_of(env)
    ch = clickhouse.client(s)
    ch.insert(
        "raw_trades",
        [
            [
                "t-1",
                "ZZSTACK",
                190.5,
                10.0,
                "buy",
                "acct-1",
                "XNAS",
                __import__("datetime").datetime(
                    2026, 1, 2, 15, 0, tzinfo=__import__("datetime").UTC
                ),
                0,
                1,
            ]
        ],
        column_names=[
            "trade_id",
            "symbol",
            "price",
            "quantity",
            "side",
            "account",
            "venue",
            "event_time",
            "kafka_partition",
            "kafka_offset",
        ],
    )
    with psycopg.connect(s.postgres, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO live_quotes VALUES ('ZZSTACK', 1, 2, 3, 4, 1.5, 1, 6666.7, now(), now())"
        )
    redis.Redis.from_url(s.redis).set("latest:vwap:ZZSTACK", "{}")

    down = run(env, "down")
    assert "clickhouse" in down.stdout and "stopped" in down.stdout
    code, st3 = status(env)
    assert code == 1 and all(c["state"] == "stopped" for c in st3["components"])

    run(env, "up")
    code, st4 = status(env)
    assert code == 0, st4
    ch = clickhouse.client(s)
    assert ch.command("SELECT count() FROM raw_trades WHERE trade_id = 't-1'") == 1
    with psycopg.connect(s.postgres) as conn:
        assert conn.execute("SELECT bid FROM live_quotes WHERE symbol = 'ZZSTACK'").fetchone() == (
            1.0,
        )
    assert redis.Redis.from_url(s.redis).get("latest:vwap:ZZSTACK") == b"{}"
    fresh = {f["item"]: f for f in st4["freshness"]}
    assert fresh["raw_trades"]["state"] in ("fresh", "stale")
    assert {f["state"] for f in fresh.values()} <= {"fresh", "stale", "empty", "missing"}
    assert fresh["live_quotes"]["state"] in ("fresh", "stale")


def test_a_crashed_component_is_reported_and_restarted_by_up(env):
    run(env, "up", check=False)
    _, st = status(env)
    valkey = next(c for c in st["components"] if c["name"] == "valkey")
    os.kill(valkey["pid"], signal.SIGKILL)
    code, st = status(env)
    assert code == 1
    assert next(c for c in st["components"] if c["name"] == "valkey")["state"] == "dead"
    out = run(env, "up")
    assert "valkey" in out.stdout and "started" in out.stdout
    code, st = status(env)
    assert code == 0
    assert next(c for c in st["components"] if c["name"] == "valkey")["pid"] != valkey["pid"]


def test_logs_shows_one_component_and_rejects_unknown_names(env):
    out = run(env, "logs", "postgres", "-n", "200")
    assert "starting postgres" in out.stdout
    bad = run(env, "logs", "nosuch", check=False)
    assert bad.returncode == 2 and "unknown component 'nosuch'" in bad.stderr


def test_a_port_in_use_names_the_port_and_the_setting_and_starts_nothing():
    state = state_dir()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_", "FLOWFORGE_"))}
    kafka, ch, pg = local.free_ports(3)
    env.update(
        FLOWFORGE_STATE_DIR=str(state),
        LOCAL_REDIS_PORT=str(port),
        LOCAL_KAFKA_PORT=str(kafka),
        LOCAL_CLICKHOUSE_PORT=str(ch),
        LOCAL_POSTGRES_PORT=str(pg),
    )
    try:
        proc = run(env, "up", check=False)
    finally:
        busy.close()
    assert proc.returncode == 1
    assert f"port {port} for valkey is in use; set LOCAL_REDIS_PORT to another port" in proc.stderr
    assert not list((state / "run").glob("*.pid.json")) if (state / "run").exists() else True


def test_a_bad_setting_is_one_line_on_stderr():
    env = {**os.environ, "LOCAL_REDIS_PORT": "many"}
    proc = run(env, "status", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: invalid setting LOCAL_REDIS_PORT: Input should be a valid integer, "
        "unable to parse string as an integer"
    )


def test_status_answers_when_something_silent_holds_a_store_port():
    """A port taken by something that accepts and never answers (not the store) makes the
    store unreachable in `status`, within seconds, instead of hanging the command."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    state = state_dir()
    kafka, pg, redis_port = local.free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCAL_", "FLOWFORGE_"))}
    env.update(
        FLOWFORGE_STATE_DIR=str(state),
        CLICKHOUSE_URL=f"http://default:@127.0.0.1:{port}/flowforge",
        LOCAL_KAFKA_PORT=str(kafka),
        LOCAL_POSTGRES_PORT=str(pg),
        LOCAL_REDIS_PORT=str(redis_port),
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "flowforge_pipeline.cli", "status", "--json"],
            env=env, capture_output=True, text=True, timeout=60,
        )
    finally:
        silent.close()
    assert proc.returncode == 1, proc.stderr
    fresh = json.loads(proc.stdout)["freshness"]
    states = {f["state"] for f in fresh if f["store"] == "clickhouse"}
    assert states == {"unreachable"}, fresh
