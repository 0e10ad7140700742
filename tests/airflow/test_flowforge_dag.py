"""The Airflow DAG: imports cleanly and a full run succeeds against the local stack.

Airflow is run in child processes with the environment the stack's Airflow component uses,
so its home (metadata database) lives in the test stack's state directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flowforge_pipeline.contract.apply import init_clickhouse
from flowforge_pipeline.orchestration import DAGS_DIR, airflow_env
from flowforge_pipeline.settings import Settings
from flowforge_pipeline.stores.clickhouse import client
from flowforge_pipeline.synthetic import insert_quotes, insert_trades

DAY = datetime(2025, 3, 3, tzinfo=UTC)


def _python(settings: Settings, code: str, timeout: float = 240) -> str:
    env = {**os.environ, **airflow_env(settings)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def dag_settings(stack_settings: Settings) -> Settings:
    """A fresh database with two hours of raw rows and one row in each streaming table."""
    settings = stack_settings.model_copy(
        update={"clickhouse_database": f"dag_{uuid.uuid4().hex[:10]}"}
    )
    init_clickhouse(settings)
    c = client(settings)
    try:
        start = DAY + timedelta(hours=22)
        insert_trades(c, "raw_trades", start, 7200, 3000)
        insert_quotes(c, "raw_quotes", start, 7200, 15000)
        c.command(
            "INSERT INTO vwap_5min (symbol, window_start, window_end, vwap, volume, notional, "
            "trade_count, high, low) SELECT 'AAPL', {t:DateTime64(3)}, {t:DateTime64(3)} + 300, "
            "228.5, 10, 2285, 1, 228.5, 228.5",
            parameters={"t": start},
        )
        c.command(
            "INSERT INTO rolling_volatility (symbol, window, as_of, volatility, n_obs) "
            "SELECT 'AAPL', '1h', {t:DateTime64(3)}, NULL, 0",
            parameters={"t": start},
        )
    finally:
        c.close()
    Path(airflow_env(settings)["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    return settings


def test_dagbag_has_no_import_errors(dag_settings: Settings) -> None:
    out = _python(
        dag_settings,
        "import json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"bag = DagBag(dag_folder={str(DAGS_DIR)!r})\n"
        "dag = bag.dags['flowforge_dbt']\n"
        "print(json.dumps({'errors': {k: str(v) for k, v in bag.import_errors.items()},\n"
        "  'catchup': dag.catchup, 'doc': bool(dag.doc_md), 'tasks': sorted(dag.task_dict),\n"
        "  'retries': min(t.retries for t in dag.tasks)}))",
    )
    info = json.loads(out)
    assert info["errors"] == {}
    assert info["catchup"] is False and info["doc"] is True
    assert info["retries"] >= 1
    tasks = info["tasks"]
    assert tasks[0:1] and "source_freshness" in tasks and "day_closed" in tasks
    assert "hourly.fct_trades_model_build" in tasks
    assert "hourly.hourly_rollup_model_build" in tasks
    assert "daily.rpt_daily_pnl_model_build" in tasks
    assert "daily.daily_rollup_model_build" in tasks


def test_full_dag_run_succeeds_against_the_local_stack(dag_settings: Settings) -> None:
    env = {**os.environ, **airflow_env(dag_settings)}
    migrate = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stderr[-2000:]
    # the first run after midnight UTC: the day closed, so the daily marts run too
    out = _python(
        dag_settings,
        "from datetime import datetime, UTC\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        f"dag = DagBag(dag_folder={str(DAGS_DIR)!r}).dags['flowforge_dbt']\n"
        "for t in dag.tasks:\n"
        "    t.retries = 0  # a failure should fail the test now, not after back-off\n"
        "run = dag.test(logical_date=datetime(2025, 3, 4, 0, 5, tzinfo=UTC))\n"
        "print(run.state)",
    )
    assert out == "success"
    c = client(dag_settings)
    try:
        counts = {
            t: int(str(c.command(f"SELECT count() FROM {t}")))
            for t in ("fct_trades", "hourly_rollup", "daily_rollup", "rpt_daily_pnl")
        }
    finally:
        c.close()
    assert counts["fct_trades"] == 3000
    assert counts["hourly_rollup"] > 0 and counts["daily_rollup"] > 0
    assert counts["rpt_daily_pnl"] > 0
